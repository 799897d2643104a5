//! Models shipped with candlelight, built with the recording layers, and helpers
//! to give a model deterministic weights.

#[allow(missing_docs, clippy::all)]
pub mod bert;
#[cfg(feature = "minilm")]
pub mod minilm;
pub mod mnist_cnn;
pub mod mnist_data;
pub mod seed_cnn;

pub use seed_cnn::{seed_cnn, seed_cnn_seeded, seed_cnn_sized};

use candle_core::Tensor;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};

/// Overwrites every variable of `varmap` with values drawn from a generator seeded
/// with `seed` (uniform in ±1/√fan_in, fan_in = product of all dims but the first),
/// so a randomly initialised model is the same on every run. candle's CPU random
/// generator cannot be seeded, hence this.
pub fn reseed(varmap: &VarMap, seed: u64) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..=bound)).collect();
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// A tensor of `shape` with values uniform in [0, 1) from a seeded generator.
pub fn seeded_uniform(
    shape: &[usize],
    seed: u64,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random::<f32>()).collect();
    Tensor::from_vec(values, shape, device)
}

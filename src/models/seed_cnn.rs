//! The seed's `CNN` for 1×28×28 inputs as a recorded [`Seq`]: conv 1→32 3×3, relu,
//! 2×2 max pool, conv 32→64 3×3, relu, 2×2 max pool, flatten (28→26→13→11→5, so
//! 64·5·5 = 1600), fc 1600→128, relu, fc 128→10.

use candle_core::Device;
use candle_nn::{Activation, VarBuilder, VarMap};

use crate::nn::{seq, Seq};

/// The seed CNN; children are recorded as `conv1`, `relu1`, `pool1`, `conv2`,
/// `relu2`, `pool2`, `flatten`, `fc1`, `relu3`, `fc2`.
pub fn seed_cnn(vb: VarBuilder) -> candle_core::Result<Seq> {
    Ok(seq()
        .add(
            "conv1",
            candle_nn::conv2d(1, 32, 3, Default::default(), vb.pp("conv1"))?,
        )
        .add("relu1", Activation::Relu)
        .add_fn("pool1", "max_pool2d", |x| x.max_pool2d(2))
        .add(
            "conv2",
            candle_nn::conv2d(32, 64, 3, Default::default(), vb.pp("conv2"))?,
        )
        .add("relu2", Activation::Relu)
        .add_fn("pool2", "max_pool2d", |x| x.max_pool2d(2))
        .add_fn("flatten", "flatten", |x| x.flatten_from(1))
        .add("fc1", candle_nn::linear(1600, 128, vb.pp("fc1"))?)
        .add("relu3", Activation::Relu)
        .add("fc2", candle_nn::linear(128, 10, vb.pp("fc2"))?))
}

/// The seed CNN in f32 on `device` with weights from [`super::reseed`]`(seed)`;
/// the `VarMap` holds the weights (`conv1.weight`, `fc2.bias`, ...).
pub fn seed_cnn_seeded(seed: u64, device: &Device) -> candle_core::Result<(VarMap, Seq)> {
    let varmap = VarMap::new();
    let model = seed_cnn(VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        device,
    ))?;
    super::reseed(&varmap, seed)?;
    Ok((varmap, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Module;

    #[test]
    fn seeded_models_agree_and_map_28x28_to_10() -> candle_core::Result<()> {
        let x = crate::models::seeded_uniform(&[2, 1, 28, 28], 7, &Device::Cpu)?;
        let (_, a) = seed_cnn_seeded(42, &Device::Cpu)?;
        let (_, b) = seed_cnn_seeded(42, &Device::Cpu)?;
        let (ya, yb) = (a.forward(&x)?, b.forward(&x)?);
        assert_eq!(ya.dims(), [2, 10]);
        let diff = (ya - yb)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert!(diff == 0.0, "same seed, different outputs: {diff}");
        let names: Vec<&str> = a.names().collect();
        assert_eq!(names.len(), 10);
        assert_eq!((names[0], names[9]), ("conv1", "fc2"));
        Ok(())
    }
}

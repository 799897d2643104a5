//! The seed's `CNN` (conv 1→32, conv 32→64, 2×2 max pools, fc →128→10) as a named
//! sequential container that records every child: ten layers, `conv1` `relu1`
//! `pool1` `conv2` `relu2` `pool2` `flatten` `fc1` `relu3` `fc2`.

use candle_core::Device;
use candle_nn::{Activation, VarBuilder, VarMap};

use crate::nn::{seq, Seq};

/// Flatten size after conv(3) → pool(2) → conv(3) → pool(2) on a `side`×`side` input.
pub fn flat_size(side: usize, channels: usize) -> usize {
    let s = ((side.saturating_sub(2)) / 2).saturating_sub(2) / 2;
    channels * s * s
}

/// The seed CNN for 1×1×28×28 inputs (flatten size 64·5·5 = 1600).
pub fn seed_cnn(vb: VarBuilder) -> candle_core::Result<Seq> {
    seed_cnn_sized(28, vb)
}

/// The seed CNN for 1×1×`side`×`side` inputs (`side` ≥ 10).
pub fn seed_cnn_sized(side: usize, vb: VarBuilder) -> candle_core::Result<Seq> {
    if side < 10 {
        candle_core::bail!("seed_cnn needs inputs of at least 10×10, got {side}×{side}");
    }
    let flat = flat_size(side, 64);
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
        .add("fc1", candle_nn::linear(flat, 128, vb.pp("fc1"))?)
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
    fn records_ten_layers() {
        let (_, model) = seed_cnn_seeded(1, &Device::Cpu).unwrap();
        assert_eq!(model.len(), 10);
        assert_eq!(flat_size(28, 64), 1600);
        assert!(seed_cnn_sized(
            8,
            VarBuilder::from_varmap(&VarMap::new(), candle_core::DType::F32, &Device::Cpu)
        )
        .is_err());
    }

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

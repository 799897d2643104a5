//! The shipped MNIST CNN's architecture (the seed CNN: conv 1→C1 k×k, relu, 2×2 max
//! pool, conv C1→C2 k×k, relu, 2×2 max pool, flatten, fc, relu, fc, softmax), built
//! from the sizes found in a weights file, recorded as `conv1`, `relu1`, `pool1`,
//! `conv2`, `relu2`, `pool2`, `flatten`, `fc1`, `relu3`, `fc2`, `softmax`: the
//! names `python/mnist_reference.py` gives its PyTorch modules.
//! Shared by the tests and `examples/torch_port.rs`.
#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Activation, VarBuilder, VarMap};
use candlelight::nn::{seq, Seq};

/// Layer sizes read from the weights' shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub c1: usize,
    pub k1: usize,
    pub c2: usize,
    pub k2: usize,
    pub flat: usize,
    pub hidden: usize,
    pub classes: usize,
}

/// The seed CNN's sizes for 1×28×28 inputs.
pub const SEED: Dims = Dims {
    c1: 32,
    k1: 3,
    c2: 64,
    k2: 3,
    flat: 1600,
    hidden: 128,
    classes: 10,
};

/// Reads the sizes from a weights file (`conv1.weight`, ..., `fc2.weight`) and
/// checks they chain for a 28×28 input (stride 1, no padding).
pub fn dims_of(weights: &Path) -> Result<Dims, String> {
    let w = candlelight::Run::open(weights).map_err(|e| e.to_string())?;
    let shape = |n: &str| {
        w.layer(n)
            .map(|l| l.shape.clone())
            .ok_or_else(|| format!("{}: no tensor {n:?}", weights.display()))
    };
    let (c1w, c2w, f1, f2) = (
        shape("conv1.weight")?,
        shape("conv2.weight")?,
        shape("fc1.weight")?,
        shape("fc2.weight")?,
    );
    let d = Dims {
        c1: c1w[0],
        k1: c1w[2],
        c2: c2w[0],
        k2: c2w[2],
        flat: f1[1],
        hidden: f1[0],
        classes: f2[0],
    };
    // 28 -> conv (valid) -> pool 2 -> conv (valid) -> pool 2.
    let pooled1 = (29usize.saturating_sub(d.k1)) / 2;
    let side = (pooled1 + 1).saturating_sub(d.k2) / 2;
    if d.c2 * side * side != d.flat || c1w[1] != 1 || c2w[1] != d.c1 || f2[1] != d.hidden {
        return Err(format!(
            "{}: unexpected architecture {d:?} (expected conv-pool-conv-pool-fc-fc on 1x28x28)",
            weights.display()
        ));
    }
    Ok(d)
}

/// The model; every child is recorded under its name.
pub fn cnn(vb: VarBuilder, d: Dims) -> candle_core::Result<Seq> {
    Ok(seq()
        .add(
            "conv1",
            candle_nn::conv2d(1, d.c1, d.k1, Default::default(), vb.pp("conv1"))?,
        )
        .add("relu1", Activation::Relu)
        .add_fn("pool1", "max_pool2d", |x| x.max_pool2d(2))
        .add(
            "conv2",
            candle_nn::conv2d(d.c1, d.c2, d.k2, Default::default(), vb.pp("conv2"))?,
        )
        .add("relu2", Activation::Relu)
        .add_fn("pool2", "max_pool2d", |x| x.max_pool2d(2))
        .add_fn("flatten", "flatten", |x| x.flatten_from(1))
        .add("fc1", candle_nn::linear(d.flat, d.hidden, vb.pp("fc1"))?)
        .add("relu3", Activation::Relu)
        .add("fc2", candle_nn::linear(d.hidden, d.classes, vb.pp("fc2"))?)
        .add_fn("softmax", "softmax", |x| candle_nn::ops::softmax(x, 1)))
}

/// Writes seeded weights of the seed CNN to `path` (names `conv1.weight`, ...).
pub fn write_seeded_weights(path: &Path, seed: u64) -> candle_core::Result<()> {
    let varmap = VarMap::new();
    cnn(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        SEED,
    )?;
    candlelight::models::reseed(&varmap, seed)?;
    varmap.save(path)
}

/// The model with the weights of `path`, computing in `dtype`.
pub fn load(path: &Path, dtype: DType) -> Result<Seq, String> {
    let d = dims_of(path)?;
    // SAFETY: the weights file is not modified while the model lives.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, &Device::Cpu) }
        .map_err(|e| format!("{}: {e}", path.display()))?;
    cnn(vb, d).map_err(|e| format!("{}: {e}", path.display()))
}

/// A deterministic 1×1×28×28 input in [0, 1), saved as tensor `input` in `path`
/// for the PyTorch side.
pub fn write_input(path: &Path, seed: u64) -> candle_core::Result<Tensor> {
    let x = candlelight::models::seeded_uniform(&[1, 1, 28, 28], seed, &Device::Cpu)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("input".to_string(), x.clone())]),
        path,
    )?;
    Ok(x)
}

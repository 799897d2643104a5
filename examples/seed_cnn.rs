//! The seed's `CNN` (conv 1→32, conv 32→64, 2×2 max pools, fc 1600→128→10) as a
//! named sequential container that records every child, with the flatten size
//! computed for a 1×1×28×28 input (28→26→13→11→5, so 64·5·5 = 1600). Random
//! weights from a fixed seed; writes one run and prints where:
//! `cargo run --release --example seed_cnn -- [RUNS_DIR]` (default `runs`).

use anyhow::Result;
use candle_core::{DType, Device, Module};
use candle_nn::{Activation, VarBuilder, VarMap};
use candlelight::nn::{seq, Seq};
use candlelight::Recorder;

/// Flatten size after conv(3) → pool(2) → conv(3) → pool(2) on a `side`×`side` input.
fn flat_size(side: usize, channels: usize) -> usize {
    let s = ((side - 2) / 2 - 2) / 2;
    channels * s * s
}

fn cnn(vb: VarBuilder) -> candle_core::Result<Seq> {
    let flat = flat_size(28, 64);
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

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs".into());
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = cnn(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    candlelight::models::reseed(&varmap, 42)?;
    let x = candlelight::models::seeded_uniform(&[1, 1, 28, 28], 7, &device)?;

    let (y, run) = Recorder::new("seed-cnn")
        .input("uniform noise 1x1x28x28, seed 7")
        .record(|| model.forward(&x))?;
    let path = run.save(&dir)?;
    println!("output {:?}", y.dims());
    for l in run.layers() {
        println!(
            "  {:>2} {:<8} {:<10} {}",
            l.index,
            l.name,
            l.kind.as_deref().unwrap_or("-"),
            l.shape_str()
        );
    }
    println!("wrote {}", path.display());
    Ok(())
}

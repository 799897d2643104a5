//! The seed's `CNN` (conv 1→32, conv 32→64, 2×2 max pools, fc 1600→128→10) as a
//! named sequential container that records every child
//! (`candlelight::models::seed_cnn`, for a 1×1×28×28 input). Random weights from
//! a fixed seed; writes one run and prints where:
//! `cargo run --release --example seed_cnn -- [RUNS_DIR]` (default `runs`).

use anyhow::Result;
use candle_core::{Device, Module};
use candlelight::models::seed_cnn_seeded;
use candlelight::Recorder;

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs".into());
    let device = Device::Cpu;
    let (_varmap, model) = seed_cnn_seeded(42, &device)?;
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

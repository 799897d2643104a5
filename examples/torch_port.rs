//! The candle side of a port check against PyTorch (README, "Compare with PyTorch").
//! Records the MNIST CNN on a fixed input and writes what the PyTorch reference
//! (`python/mnist_reference.py`) needs to run the same model on the same input:
//!
//! ```sh
//! cargo run --release --example torch_port -- port/     # candle run + input + weights
//! python python/mnist_reference.py port/weights.safetensors port/input.safetensors port/torch
//! candlelight diff port/candle/*.safetensors port/torch/*.safetensors
//! ```
//!
//! Weights: `weights/mnist_cnn.safetensors` when present (copied to
//! `OUT/weights.safetensors`), otherwise the seed CNN with seeded weights.

#[path = "../tests/common/cnn.rs"]
mod cnn;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Module};
use candlelight::Recorder;

fn main() -> Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "port".into()));
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let weights = out.join("weights.safetensors");
    let shipped = Path::new("weights/mnist_cnn.safetensors");
    if shipped.is_file() {
        std::fs::copy(shipped, &weights)
            .with_context(|| format!("{}: cannot copy", shipped.display()))?;
        println!("weights: {} (shipped)", shipped.display());
    } else {
        cnn::write_seeded_weights(&weights, 42)?;
        println!(
            "weights: seeded seed-CNN weights ({} not found)",
            shipped.display()
        );
    }
    let x = cnn::write_input(&out.join("input.safetensors"), 7)?;
    let model = cnn::load(&weights, DType::F32).map_err(anyhow::Error::msg)?;
    let (y, run) = Recorder::new("mnist-cnn")
        .input("input.safetensors")
        .record(|| model.forward(&x))?;
    let path = run.save(out.join("candle"))?;
    println!("candle run: {} ({} layers)", path.display(), run.len());
    println!("probabilities: {:?}", y.flatten_all()?.to_vec1::<f32>()?);
    println!(
        "next: python python/mnist_reference.py {} {} {}",
        weights.display(),
        out.join("input.safetensors").display(),
        out.join("torch").display()
    );
    Ok(())
}

//! Records the shipped MNIST CNN on each bundled sample digit (one run per digit)
//! and prints prediction vs label:
//! `cargo run --release --example record_mnist -- [RUNS_DIR]` (default `runs`).

use anyhow::Result;
use candle_core::Device;
use candlelight::models::mnist_cnn::{default_weights_path, record_sample_digits, MnistCnn};

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs".into());
    let model = MnistCnn::load(&default_weights_path(), &Device::Cpu)?;
    let runs = record_sample_digits(&model, dir.as_ref())?;
    let mut correct = 0;
    for r in &runs {
        let ok = r.predicted == r.label as u32;
        correct += ok as usize;
        println!(
            "{}: label {}, predicted {} (p = {:.3}) {}  -> {}",
            r.png.file_name().unwrap_or_default().to_string_lossy(),
            r.label,
            r.predicted,
            r.probability,
            if ok { "ok" } else { "WRONG" },
            r.run.display()
        );
    }
    println!("{correct}/{} correct", runs.len());
    Ok(())
}

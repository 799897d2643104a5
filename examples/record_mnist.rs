//! Records the shipped MNIST CNN on each bundled sample digit (one run per digit)
//! and prints prediction vs label:
//! `cargo run --release --example record_mnist -- [RUNS_DIR]` (default `runs`).

use anyhow::{Context, Result};
use candle_core::{Device, D};
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::Recorder;

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "runs".into());
    let device = Device::Cpu;
    let model = MnistCnn::load(&default_weights_path(), &device)?;
    let mut correct = 0;
    let digits = sample_digits()?;
    for (png, label) in &digits {
        let x = image_to_input(png, &device)?;
        let name = png
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (probs, run) = Recorder::new("mnist-cnn")
            .input(name.clone())
            .tag("label", label.to_string())
            .record(|| model.predict(&x))?;
        let pred = probs.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
        let p = probs.max(D::Minus1)?.squeeze(0)?.to_scalar::<f32>()?;
        let path = run
            .save(&dir)
            .with_context(|| format!("saving the run of {name}"))?;
        correct += (pred == *label as u32) as usize;
        println!(
            "{name}: label {label}, predicted {pred} (p = {p:.3}) {}  -> {}",
            if pred == *label as u32 { "ok" } else { "WRONG" },
            path.display()
        );
    }
    println!("{correct}/{} correct", digits.len());
    Ok(())
}

//! The candle side of a port check against PyTorch (README, "Compare with PyTorch"):
//! records the shipped MNIST CNN on one digit, for `python/mnist_reference.py` to
//! record the same weights on the same digit in PyTorch and `candlelight diff` to
//! compare the two runs:
//!
//! ```sh
//! cargo run --release --example torch_port -- assets/digits/digit-3.png port/candle
//! python python/mnist_reference.py weights/mnist_cnn.safetensors assets/digits/digit-3.png port/torch
//! candlelight diff port/candle/*.safetensors port/torch/*.safetensors
//! ```

use anyhow::{Context, Result};
use candle_core::{Device, D};
use candlelight::models::mnist_cnn::{default_weights_path, image_to_input, MnistCnn};
use candlelight::Recorder;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let digit = args
        .next()
        .unwrap_or_else(|| "assets/digits/digit-3.png".into());
    let out = args.next().unwrap_or_else(|| "port/candle".into());
    let device = Device::Cpu;
    let model = MnistCnn::load(&default_weights_path(), &device)?;
    let x = image_to_input(digit.as_ref(), &device)?;
    let (probs, run) = Recorder::new("mnist-cnn")
        .input(digit.clone())
        .record(|| model.predict(&x))?;
    let path = run
        .save(&out)
        .with_context(|| format!("{out}: cannot save the run"))?;
    let pred = probs.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
    println!("{digit}: predicted {pred}");
    println!("candle run: {} ({} layers)", path.display(), run.len());
    Ok(())
}

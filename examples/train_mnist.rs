//! Trains the seed's MNIST CNN on the bundled 5000-digit MNIST subset and saves its weights.
//!
//! Holds out 50 digits per class (stratified, seeded), trains on the other 4500 with AdamW,
//! prints the loss per epoch and the held-out accuracy, and writes f32 safetensors with
//! PyTorch names (`conv1.weight`, ..., `fc2.bias`).
//!
//! ```text
//! cargo run --release --example train_mnist -- [DATA_PATH] [--epochs N] [--seed S] [--out FILE]
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use candlelight::models::mnist_cnn::{self, MnistCnn};
use candlelight::models::mnist_data::{self, TrainConfig};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(about = "Train the MNIST CNN and save its weights as safetensors")]
struct Args {
    /// MNIST CSV (gzip, 784 pixels + label per row) [default: data/mnist_5k.csv.gz]
    data: Option<PathBuf>,
    /// Passes over the training set.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Samples per optimizer step.
    #[arg(long, default_value_t = TrainConfig::default().batch_size)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = TrainConfig::default().learning_rate)]
    lr: f64,
    /// Max random shift (pixels) of training images; 0 disables augmentation.
    #[arg(long, default_value_t = TrainConfig::default().max_shift)]
    max_shift: usize,
    /// Seeds the weight init, the split, the shuffles and the shifts.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Held-out digits per class.
    #[arg(long, default_value_t = 50)]
    holdout_per_class: usize,
    /// Output weights [default: <crate>/weights/mnist_cnn.safetensors]
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `path` if it exists, else the same relative path under the crate root.
fn resolve(path: &Path) -> PathBuf {
    let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    if path.exists() || path.is_absolute() || !in_crate.exists() {
        path.to_path_buf()
    } else {
        in_crate
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let data_path = resolve(
        args.data
            .as_deref()
            .unwrap_or(mnist_data::DEFAULT_DATA.as_ref()),
    );
    let out = args.out.unwrap_or_else(mnist_cnn::default_weights_path);
    let cfg = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        max_shift: args.max_shift,
        seed: args.seed,
        ..Default::default()
    };
    let device = Device::Cpu;

    let data = mnist_data::load_csv_gz(&data_path)
        .with_context(|| format!("loading MNIST data from {}", data_path.display()))?;
    let (train, held) = mnist_data::stratified_split(&data, args.holdout_per_class, cfg.seed);
    println!(
        "{}: {} samples -> {} train, {} held out",
        data_path.display(),
        data.len(),
        train.len(),
        held.len()
    );

    let (vars, model) = mnist_data::init_model(cfg.seed, &device).context("building model")?;
    let batches = train.len().div_ceil(cfg.batch_size);
    let bar = ProgressBar::new((cfg.epochs * batches) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .context("progress bar template")?,
    );
    let start = Instant::now();
    let losses = mnist_data::train(&vars, &model, &train, &cfg, |p| {
        bar.inc(1);
        bar.set_message(format!(
            "epoch {}/{} loss {:.4}",
            p.epoch + 1,
            p.epochs,
            p.loss
        ));
        if p.batch + 1 == p.batches {
            // Printed even when stderr is not a terminal (bar hidden).
            bar.suspend(|| println!("epoch {:>2}: loss {:.4}", p.epoch + 1, p.epoch_loss));
        }
    })
    .context("training")?;
    bar.finish_and_clear();
    let elapsed = start.elapsed();

    println!("per-epoch mean loss: {losses:.4?}");
    println!("training time: {:.1} s", elapsed.as_secs_f64());
    let train_acc = mnist_data::accuracy(&model, &train, 256)?;
    let held_acc = mnist_data::accuracy(&model, &held, 256)?;
    println!("train accuracy: {:.2}%", 100.0 * train_acc);
    println!(
        "held-out accuracy: {:.2}% ({} samples)",
        100.0 * held_acc,
        held.len()
    );

    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    vars.save(&out)
        .with_context(|| format!("saving weights to {}", out.display()))?;
    let reloaded = MnistCnn::load(&out, &device).context("reloading saved weights")?;
    let reloaded_acc = mnist_data::accuracy(&reloaded, &held, 256)?;
    println!(
        "saved {} (reloaded held-out accuracy {:.2}%)",
        out.display(),
        100.0 * reloaded_acc
    );
    Ok(())
}

//! `candlelight demo`: record the bundled model on sample inputs into `runs/`,
//! render `galleries/`, print the page to open.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, D};
use candlelight::gallery::{render_gallery, write_index, GalleryOptions};
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::Recorder;

use super::render::{absolute, one_line};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder to write the run files into.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,
    /// Folder of the galleries.
    #[arg(long, default_value = "galleries")]
    pub out: PathBuf,
}

pub fn demo(args: DemoArgs) -> Result<i32> {
    let (paths, what) = record_demo_runs(&args.runs)?;
    println!("{what}");
    let opts = GalleryOptions::default();
    for p in &paths {
        let m =
            render_gallery(p, &args.out, &opts).map_err(|e| anyhow::anyhow!(one_line(p, &e)))?;
        println!(
            "recorded {} -> {} ({} layers, {} ms)",
            p.display(),
            args.out.join(&m.run_id).join("index.html").display(),
            m.layers,
            m.render_ms
        );
    }
    write_index(&args.out)?;
    println!("open in a browser:");
    println!("{}", absolute(&args.out.join("index.html")).display());
    Ok(0)
}

/// Records the bundled MNIST model on every bundled sample digit into `runs_dir`;
/// returns the run files and a sentence saying what was recorded.
fn record_demo_runs(runs_dir: &Path) -> Result<(Vec<PathBuf>, String)> {
    let device = Device::Cpu;
    let weights = default_weights_path();
    let model = MnistCnn::load(&weights, &device)?;
    let digits = sample_digits()?;
    let mut paths = Vec::new();
    let mut correct = 0;
    for (png, label) in &digits {
        let x = image_to_input(png, &device)?;
        let name = png
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (probs, run) = Recorder::new("mnist-cnn")
            .input(format!("assets/digits/{name}"))
            .tag("label", label.to_string())
            .record(|| model.predict(&x))?;
        let pred = probs.argmax(D::Minus1)?.squeeze(0)?.to_scalar::<u32>()?;
        let p = probs.max(D::Minus1)?.squeeze(0)?.to_scalar::<f32>()?;
        correct += (pred == *label as u32) as usize;
        let mut run = run;
        run.set_metadata("prediction", pred.to_string());
        let path = run
            .save(runs_dir)
            .with_context(|| format!("{}: cannot save the demo run", runs_dir.display()))?;
        println!("{name}: label {label}, predicted {pred} (p = {p:.3})");
        paths.push(path);
    }
    let what = format!(
        "demo model: the bundled MNIST CNN ({}) on the {} bundled sample digits: {correct}/{} classified correctly",
        weights.display(),
        digits.len(),
        digits.len()
    );
    Ok((paths, what))
}

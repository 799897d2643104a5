//! `candlelight demo`: record the bundled model on sample inputs into `runs/`,
//! render `galleries/`, print the page to open.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use candlelight::gallery::{remove_gallery, render_gallery, write_index, GalleryOptions};
use candlelight::models::mnist_cnn::{
    default_weights_path, record_sample_digits, MnistCnn, DEMO_TAG,
};
use candlelight::Run;

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
    let retired = retire_earlier_demo(&args.runs, &args.out, &paths);
    if retired > 0 {
        println!("replaced {retired} run(s) of an earlier demo (and their galleries)");
    }
    write_index(&args.out)?;
    println!("open in a browser:");
    println!("{}", absolute(&args.out.join("index.html")).display());
    Ok(0)
}

/// Records the bundled MNIST model on every bundled sample digit into `runs_dir`;
/// returns the run files and a sentence saying what was recorded.
fn record_demo_runs(runs_dir: &Path) -> Result<(Vec<PathBuf>, String)> {
    let weights = default_weights_path();
    let model = MnistCnn::load(&weights, &Device::Cpu)?;
    let runs = record_sample_digits(&model, runs_dir)
        .with_context(|| format!("{}: cannot record the demo runs", runs_dir.display()))?;
    let mut correct = 0;
    for r in &runs {
        let name = r.png.file_name().unwrap_or_default().to_string_lossy();
        println!(
            "{name}: label {}, predicted {} (p = {:.3})",
            r.label, r.predicted, r.probability
        );
        correct += (r.predicted == r.label as u32) as usize;
    }
    let what = format!(
        "demo model: the bundled MNIST CNN ({}) on the {} bundled sample digits: {correct}/{} classified correctly",
        weights.display(),
        runs.len(),
        runs.len()
    );
    Ok((runs.into_iter().map(|r| r.run).collect(), what))
}

/// Removes the run files an earlier demo wrote into `runs_dir` (tagged
/// [`DEMO_TAG`] by the demo itself, read from each file's header; any other file
/// is left alone) except `keep`, and their galleries in `out`; returns how many.
/// Each demo so replaces the last one instead of adding ten more runs.
fn retire_earlier_demo(runs_dir: &Path, out: &Path, keep: &[PathBuf]) -> usize {
    let Ok(rd) = std::fs::read_dir(runs_dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let path = e.path();
        let ours = e.file_type().is_ok_and(|t| t.is_file())
            && path.extension().is_some_and(|x| x == "safetensors")
            && !keep.contains(&path)
            && Run::open(&path).is_ok_and(|r| {
                r.info().tags.get(DEMO_TAG.0).map(String::as_str) == Some(DEMO_TAG.1)
            });
        if !ours {
            continue;
        }
        if let Err(e) = remove_gallery(out, &path) {
            eprintln!("{}", one_line(&path, &e));
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => n += 1,
            Err(e) => eprintln!("{}: cannot remove: {e}", path.display()),
        }
    }
    n
}

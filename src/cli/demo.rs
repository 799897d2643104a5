//! `candlelight demo`: record the bundled model on sample inputs into `runs/`,
//! render `galleries/`, print the page to open.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candlelight::gallery::{render_gallery, write_index, GalleryOptions};
use candlelight::models::{reseed, seed_cnn};
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

/// Records the demo model on its sample inputs into `runs_dir`; returns the run
/// files and a sentence saying what was recorded.
fn record_demo_runs(runs_dir: &Path) -> Result<(Vec<PathBuf>, String)> {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let model = seed_cnn(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    reseed(&varmap, 42)?;
    let mut paths = Vec::new();
    for (name, pixels) in [("ring", ring()), ("seven", seven())] {
        let x = Tensor::from_vec(pixels, (1, 1, SIDE, SIDE), &device)?;
        let (_, run) = Recorder::new("seed-cnn")
            .input(format!("a drawn 28x28 {name}"))
            .tag("weights", "random, seed 42")
            .record(|| model.forward(&x))?;
        let path = run
            .save(runs_dir)
            .with_context(|| format!("{}: cannot save the demo run", runs_dir.display()))?;
        paths.push(path);
    }
    let what = "demo model: the seed CNN with random weights (seed 42) on two drawn 28x28 \
                inputs, a ring and a seven (the trained MNIST model is not bundled yet)"
        .to_string();
    Ok((paths, what))
}

const SIDE: usize = 28;

/// Anti-aliased stroke: 1 within `half` pixels of the path, fading over one pixel.
fn ink(dist: f32, half: f32) -> f32 {
    (half + 0.5 - dist).clamp(0.0, 1.0)
}

fn ring() -> Vec<f32> {
    let c = (SIDE as f32 - 1.0) / 2.0;
    (0..SIDE * SIDE)
        .map(|i| {
            let (y, x) = ((i / SIDE) as f32, (i % SIDE) as f32);
            let r = ((y - c).powi(2) + ((x - c) * 1.3).powi(2)).sqrt();
            ink((r - 8.5).abs(), 1.4)
        })
        .collect()
}

fn seven() -> Vec<f32> {
    let seg = |p: (f32, f32), a: (f32, f32), b: (f32, f32)| {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / (dx * dx + dy * dy)).clamp(0.0, 1.0);
        ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
    };
    (0..SIDE * SIDE)
        .map(|i| {
            let p = ((i % SIDE) as f32, (i / SIDE) as f32);
            let d = seg(p, (7.0, 6.0), (20.0, 6.0)).min(seg(p, (20.0, 6.0), (11.0, 23.0)));
            ink(d, 1.3)
        })
        .collect()
}

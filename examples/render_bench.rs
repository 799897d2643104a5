//! The Rust side of `benches/render_vs_matplotlib.sh`: renders one layer of a run
//! file to a PNG file N times and prints the median, like the matplotlib baseline
//! (`benches/mpl_grid.py`). Each repetition opens the run, reads the
//! layer, renders, encodes and writes the PNG:
//! `cargo run --release --example render_bench -- RUN LAYER OUT.png [--repeat N]`.

use std::time::Instant;

use anyhow::{Context, Result};
use candlelight::render::{encode_png, render_layer, RenderOptions};
use candlelight::Run;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut pos = Vec::new();
    let mut repeat = 10usize;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--repeat" {
            repeat = args
                .get(i + 1)
                .context("--repeat needs a number")?
                .parse()
                .context("--repeat needs a number")?;
            i += 2;
        } else {
            pos.push(args[i].clone());
            i += 1;
        }
    }
    let [run_path, layer, out] = &pos[..] else {
        anyhow::bail!("usage: render_bench RUN LAYER OUT.png [--repeat N]");
    };
    let once = || -> Result<(u32, u32)> {
        let run = Run::open(run_path)?;
        let info = run
            .layer(layer)
            .with_context(|| format!("{run_path}: no layer named {layer:?}"))?;
        let data = run.data_at(info.index)?;
        let img = render_layer(&data, &info.shape, &RenderOptions::default())?;
        std::fs::write(out, encode_png(&img)?)?;
        Ok(img.dimensions())
    };
    let (w, h) = once()?; // warm-up
    let mut times = Vec::with_capacity(repeat);
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        once()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("picture={w}x{h} repeats={}", times.len());
    println!("median_s={:.6}", times[times.len() / 2]);
    Ok(())
}

//! Rendering speed: one conv layer to a PNG file, a whole gallery of the 10-layer
//! seed CNN, and gallery time against activation bytes (inputs of 28², ~89², 280²
//! pixels: about 1×, 10× and 100× the activations). Prints a summary with the
//! medians and the time per activation byte at each size.
//! `cargo bench --bench gallery`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Module};
use candle_nn::{VarBuilder, VarMap};
use candlelight::gallery::{render_gallery, GalleryOptions};
use candlelight::models::{reseed, seed_cnn_sized, seeded_uniform};
use candlelight::render::{encode_png, render_layer, RenderOptions};
use candlelight::{Recorder, Run};
use criterion::{criterion_group, criterion_main, Criterion};

/// Records the seed CNN on a `side`×`side` input into `dir`.
fn record(side: usize, dir: &Path) -> PathBuf {
    let varmap = VarMap::new();
    let model = seed_cnn_sized(
        side,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    reseed(&varmap, 42).unwrap();
    let x = seeded_uniform(&[1, 1, side, side], 7, &Device::Cpu).unwrap();
    let (_, run) = Recorder::new(format!("seed-cnn-{side}"))
        .record(|| model.forward(&x))
        .unwrap();
    run.save(dir).unwrap()
}

fn conv1_png(run_path: &Path, out: &Path) {
    let run = Run::open(run_path).unwrap();
    let l = run.layer("conv1").unwrap();
    let data = run.data_at(l.index).unwrap();
    let img = render_layer(&data, &l.shape, &RenderOptions::default()).unwrap();
    std::fs::write(out, encode_png(&img).unwrap()).unwrap();
}

fn median(mut f: impl FnMut(), n: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("galleries");
    let opts = GalleryOptions::default();
    let base = record(28, &runs);

    let png = tmp.path().join("conv1.png");
    c.bench_function("conv1_32x26x26_to_png_file", |b| {
        b.iter(|| conv1_png(&base, &png))
    });
    c.bench_function("gallery_seed_cnn_10_layers", |b| {
        b.iter(|| render_gallery(&base, &out, &opts).unwrap())
    });

    let mut g = c.benchmark_group("gallery_vs_activation_bytes");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let mut summary = Vec::new();
    for side in [28usize, 89, 280] {
        let path = record(side, &runs);
        let bytes = Run::open(&path).unwrap().data_bytes();
        g.bench_function(format!("side_{side}_{bytes}_bytes"), |b| {
            b.iter(|| render_gallery(&path, &out, &opts).unwrap())
        });
        let m = median(|| drop(render_gallery(&path, &out, &opts).unwrap()), 7);
        summary.push((side, bytes, m));
    }
    g.finish();

    let conv1 = median(|| conv1_png(&base, &png), 31);
    let gallery = median(|| drop(render_gallery(&base, &out, &opts).unwrap()), 15);
    println!("\nsummary (medians):");
    println!("  conv1 [1,32,26,26] -> PNG file: {:.3} ms", conv1 * 1e3);
    println!(
        "  gallery of the 10-layer seed CNN: {:.1} ms",
        gallery * 1e3
    );
    let (_, b0, t0) = summary[0];
    for (side, bytes, t) in &summary {
        println!(
            "  input {side}x{side}: {:>10} activation bytes ({:>6.1}x) -> gallery {:>8.1} ms ({:>6.1}x), {:.2} ns/byte",
            bytes,
            *bytes as f64 / b0 as f64,
            t * 1e3,
            t / t0,
            t * 1e9 / *bytes as f64
        );
    }
}

criterion_group!(gallery, benches);
criterion_main!(gallery);

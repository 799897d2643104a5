//! The galleries index at scale: a root of 1,000 rendered runs (5 models × 200
//! steps, two layers each, real galleries with thumbnails and stats.json), then
//! `write_index` timed cold (every trends page written), warm (nothing changed:
//! trends pages kept) and after one new run (one model's trends page rewritten),
//! and the load time of the first index page and of one trends page in headless
//! Chromium (`performance.now()` at the load event, written into the DOM by a tiny
//! script in a copy of the page). Prints the figures.
//!
//! `cargo bench --bench index` (~1 min; `-- --runs N` for another size; Chromium
//! from `$CHROMIUM` or /usr/bin/chromium, skipped when missing)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candlelight::gallery::{render_gallery, trends_page_name, write_index, TRENDS_DIR};
use candlelight::{tap, Recorder};
use rayon::prelude::*;

const MODELS: usize = 5;

fn record(dir: &Path, model: usize, step: usize) -> PathBuf {
    let s = step as f64 / 100.0;
    let x = Tensor::arange(-32f32, 32., &Device::Cpu)
        .unwrap()
        .affine(1.0 + s, s)
        .unwrap()
        .reshape((1, 4, 4, 4))
        .unwrap();
    let (_, run) = Recorder::new(format!("model-{model}"))
        .id(format!("m{model}-step{step:05}"))
        .tag("step", step.to_string())
        .record(|| {
            let y = tap("conv", &x)?.relu()?;
            candlelight::record_as("relu", "relu", &y);
            Ok(y)
        })
        .unwrap();
    run.save(dir).unwrap()
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Load time in ms of `page` in headless Chromium: a copy beside it with a script
/// that writes `performance.now()` at the load event into the DOM.
fn load_ms(chromium: &Path, page: &Path) -> Option<f64> {
    let html = std::fs::read_to_string(page).ok()?;
    let probe = "<script>addEventListener('load',()=>{document.body.setAttribute('data-load-ms',performance.now().toFixed(1))})</script></body>";
    let copy = page.with_file_name(format!(
        "bench-load-{}",
        page.file_name()?.to_string_lossy()
    ));
    std::fs::write(&copy, html.replace("</body>", probe)).ok()?;
    let o = Command::new(chromium)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", copy.display()))
        .output()
        .ok()?;
    let _ = std::fs::remove_file(&copy);
    let dom = String::from_utf8_lossy(&o.stdout);
    let at = dom.find("data-load-ms=\"")? + "data-load-ms=\"".len();
    dom[at..].split('"').next()?.parse().ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let runs: usize = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(if quick { 20 } else { 1000 });
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    let out = tmp.path().join("galleries");
    let t = Instant::now();
    let paths: Vec<PathBuf> = (0..runs)
        .map(|i| record(&dir, i % MODELS, i / MODELS))
        .collect();
    paths.par_iter().for_each(|p| {
        render_gallery(p, &out, &Default::default()).unwrap();
    });
    println!(
        "{runs} runs recorded and rendered in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    write_index(&out).unwrap();
    let cold = ms(t);
    let warm = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                write_index(&out).unwrap();
                ms(t)
            })
            .collect(),
    );
    let new_run = median(
        (0..3)
            .map(|k| {
                let p = record(&dir, 0, runs + k);
                render_gallery(&p, &out, &Default::default()).unwrap();
                let t = Instant::now();
                write_index(&out).unwrap();
                ms(t)
            })
            .collect(),
    );
    let list = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(candlelight::gallery::list_galleries(&out).unwrap());
                ms(t)
            })
            .collect(),
    );
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e3;
    let index = out.join("index.html");
    let trends = out
        .join(TRENDS_DIR)
        .join(trends_page_name("model-0").unwrap());
    let pages = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index"))
        .count();
    println!(
        "write_index, {runs} runs ({MODELS} models, trends of {} runs each):",
        runs / MODELS
    );
    println!("  cold (every trends page written)      {cold:8.1} ms");
    println!("  warm (nothing changed), median of 5   {warm:8.1} ms");
    println!("  after one new run (1 trends page), median of 3 {new_run:8.1} ms");
    println!("  of which reading the {runs}+ manifests (list_galleries) {list:8.1} ms");
    println!(
        "  {pages} index pages; index.html {:.1} KB, one trends page {:.1} KB",
        size(&index),
        size(&trends)
    );
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        println!("chromium not found: page load not measured");
        return;
    }
    for (what, page) in [("index.html", &index), ("trends page", &trends)] {
        let v: Vec<f64> = (0..3).filter_map(|_| load_ms(&chromium, page)).collect();
        if v.is_empty() {
            println!("  {what}: load not measured (chromium gave no figure)");
        } else {
            println!(
                "  {what}: load event at {:.0} ms (median of {}, headless Chromium; goal < 1000 ms)",
                median(v.clone()),
                v.len()
            );
        }
    }
}

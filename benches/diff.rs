//! Diff throughput and memory: `candlelight::diff` on two ~1 GB runs against a plain
//! single-threaded Rust pass over the same mapped bytes computing max |a - b|
//! (and, for reference, the same pass in parallel with rayon), in one process.
//!
//! `cargo bench --bench diff` (size per layer: `DIFF_BENCH_LAYER_MB`, default 64;
//! layers: `DIFF_BENCH_LAYERS`, default 16). Prints GB/s of each (bytes of both
//! runs / time, best of 3, page cache warm), the ratios, and the diff's peak RSS
//! (VmHWM after resetting it through /proc/self/clear_refs). Without `--bench`
//! (`cargo test --benches`) it runs once on 16 layers of 1 MB.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candlelight::{DiffOptions, Run};
use rayon::prelude::*;

/// Writes a version-1 run of `layers` F32 layers of `n` elements, streaming
/// (never holding a layer in memory); `value(layer, i)` gives each element.
/// Returns the data ranges (byte offsets in the file) of the layers.
fn write_run(
    path: &Path,
    layers: usize,
    n: usize,
    value: impl Fn(usize, usize) -> f32,
) -> Vec<(usize, usize)> {
    let names: Vec<String> = (0..layers).map(|l| format!("blocks.{l:02}.out")).collect();
    let mut header = serde_json::Map::new();
    let meta = serde_json::json!({
        "candlelight.version": "1",
        "candlelight.order": serde_json::to_string(&names).unwrap(),
        "candlelight.run": serde_json::json!({
            "id": path.file_stem().unwrap().to_string_lossy(),
            "created": "2025-01-01T00:00:00Z", "model": "bench", "input": "synthetic"
        }).to_string(),
    });
    header.insert("__metadata__".into(), meta);
    let bytes = n * 4;
    for (l, name) in names.iter().enumerate() {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": [1, n], "data_offsets": [l * bytes, (l + 1) * bytes]}),
        );
    }
    let mut head = serde_json::to_vec(&header).unwrap();
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let start = 8 + head.len();
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    w.write_all(&(head.len() as u64).to_le_bytes()).unwrap();
    w.write_all(&head).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    for l in 0..layers {
        for i in 0..n {
            buf.extend_from_slice(&value(l, i).to_le_bytes());
            if buf.len() >= 1 << 20 {
                w.write_all(&buf).unwrap();
                buf.clear();
            }
        }
    }
    w.write_all(&buf).unwrap();
    w.into_inner().unwrap().sync_all().unwrap();
    (0..layers)
        .map(|l| (start + l * bytes, start + (l + 1) * bytes))
        .collect()
}

fn noise(l: usize, i: usize) -> f32 {
    // splitmix-style hash -> [-1, 1)
    let mut z = (l as u64) << 40 ^ i as u64;
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

fn vm_hwm_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn vm_rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn map(path: &Path) -> memmap2::Mmap {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: the bench's own files, not modified while mapped.
    unsafe { memmap2::Mmap::map(&f).unwrap() }
}

fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
}

/// The plain pass: one thread, max |a - b| over every pair.
fn plain_max_abs(a: &Path, b: &Path, ranges: &[(usize, usize)]) -> f32 {
    let (ma, mb) = (map(a), map(b));
    let mut m = 0f32;
    for &(s, e) in ranges {
        for (x, y) in f32s(&ma[s..e]).zip(f32s(&mb[s..e])) {
            m = m.max((x - y).abs());
        }
    }
    m
}

/// The same pass over 1 MB pieces with rayon.
fn parallel_max_abs(a: &Path, b: &Path, ranges: &[(usize, usize)]) -> f32 {
    let (ma, mb) = (map(a), map(b));
    ranges
        .iter()
        .map(|&(s, e)| {
            ma[s..e]
                .par_chunks(1 << 20)
                .zip(mb[s..e].par_chunks(1 << 20))
                .map(|(x, y)| {
                    f32s(x)
                        .zip(f32s(y))
                        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
                })
                .reduce(|| 0f32, f32::max)
        })
        .fold(0f32, f32::max)
}

fn best_of<T>(k: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..k {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    (best, out.unwrap())
}

fn main() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let full = std::env::args().any(|a| a == "--bench");
    let layer_mb = env("DIFF_BENCH_LAYER_MB", if full { 64 } else { 1 });
    let layers = env("DIFF_BENCH_LAYERS", 16);
    let n = layer_mb * (1 << 20) / 4;
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb): (PathBuf, PathBuf) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    let t = Instant::now();
    let ranges = write_run(&pa, layers, n, noise);
    // B: A within tolerance everywhere (1e-6 relative), but layer 9 has a slice
    // off by 1e-3: the first divergent layer.
    write_run(&pb, layers, n, |l, i| {
        let v = noise(l, i);
        if l == 9 && i % 4096 == 17 {
            v + 1e-3
        } else {
            v * (1.0 + 1e-6)
        }
    });
    let total = 2 * layers * n * 4;
    println!(
        "diff bench: 2 runs x {layers} layers x {layer_mb} MB f32 = {:.2} GB in {:.1}s to write, {} threads",
        total as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    // Warm the page cache for both contenders.
    let _ = plain_max_abs(&pa, &pb, &ranges);

    let mut peak_kb = 0;
    let rss_before = vm_rss_kb();
    let can_reset = reset_hwm();
    let (t_diff, d) = best_of(3, || {
        let a = Run::open(&pa).unwrap();
        let b = Run::open(&pb).unwrap();
        let d = candlelight::diff(&a, &b, &DiffOptions::default()).unwrap();
        peak_kb = peak_kb.max(vm_hwm_kb());
        d
    });
    assert_eq!(d.first_divergent().unwrap().name(), "blocks.09.out");
    let (t_plain, m_plain) = best_of(3, || plain_max_abs(&pa, &pb, &ranges));
    let (t_par, m_par) = best_of(3, || parallel_max_abs(&pa, &pb, &ranges));
    let m_diff = d
        .layers
        .iter()
        .map(|l| l.numbers.as_ref().unwrap().max_abs)
        .fold(0f64, f64::max);
    assert!((m_diff - m_plain as f64).abs() <= 1e-6 && m_plain == m_par);

    let gbs = |t: f64| total as f64 / t / 1e9;
    println!(
        "candlelight diff (all numbers): {:>7.3}s  {:>6.2} GB/s",
        t_diff,
        gbs(t_diff)
    );
    println!(
        "plain max|a-b| (1 thread):      {:>7.3}s  {:>6.2} GB/s   diff/plain = {:.2} (goal >= 0.7)",
        t_plain,
        gbs(t_plain),
        t_plain / t_diff
    );
    println!(
        "rayon max|a-b| ({} threads):     {:>7.3}s  {:>6.2} GB/s   diff/rayon = {:.2}",
        rayon::current_num_threads(),
        t_par,
        gbs(t_par),
        t_par / t_diff
    );
    if can_reset {
        println!(
            "diff peak RSS (VmHWM): {:.1} MB (RSS before: {:.1} MB; goal < 200 MB)",
            peak_kb as f64 / 1024.0,
            rss_before as f64 / 1024.0
        );
    } else {
        println!(
            "diff peak RSS: unknown (cannot reset VmHWM); process VmHWM {:.1} MB",
            vm_hwm_kb() as f64 / 1024.0
        );
    }
}

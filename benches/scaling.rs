//! How time and memory scale with layer size (issue 14, goal 5): record, save,
//! render, stats and diff of runs of 4 f32 layers of 1, 4, 16, 64 and 256 MiB each
//! (`[16, 64, s, s]`, s = 16·√MiB: conv-like activations). Each should be linear in
//! the bytes or better.
//!
//! Every operation runs in a child process (this binary re-executed with
//! `--child OP --mib N --dir D`), which prints its median time over a few repeats
//! and its peak RSS (`VmHWM`, reset through `/proc/self/clear_refs` after the setup,
//! so it is the operation's own peak over what the setup holds; the whole child's
//! `ru_maxrss` too):
//!
//! - `record`: `Recorder::record` of a 4-layer model (`affine`, `relu`, `affine`,
//!   `relu` in a `Seq`) on an input of one layer's size, the run dropped inside the
//!   timing; for comparison the same pass with no recorder (`plain`);
//! - `save`: `Run::save` of that recorded run (the file stays for the next steps,
//!   `a` and a second run `b` on a slightly different input);
//! - `read`: the file of run `a` read as `stats` and `diff` read it (`pread` of
//!   256 KiB chunks in parallel), nothing computed: the memory's control;
//! - `render`: `render_gallery` of run `a` (default options: 4 samples per layer);
//! - `stats`: `Run::open` + `Stats::of` the data of every layer (`stats_at` would
//!   read the summaries saved in the header);
//! - `diff`: `candlelight::diff` of runs `a` and `b` (default tolerances).
//!
//! Files live in a temporary folder under `TMPDIR` (two runs of one size at a
//! time, 2.1 GB at 256 MiB), removed after each size. Prints a table with time,
//! MB/s and peak RSS per operation and size, and the linearity check: time per MB
//! at each size / time per MB at the smallest (≤ 1: linear or better), also over
//! the control that moves the same bytes (small runs sit in the CPU caches).
//!
//! `cargo bench --bench scaling` (~30 s; `-- --sizes 1,4,16`). Without `--bench`
//! (`cargo test --benches`) it runs 1 MiB layers once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use candle_core::{Device, Module, Tensor};
use candlelight::nn::{seq, Seq};
use candlelight::{DiffOptions, GalleryOptions, Recorder, Run};

const LAYERS: usize = 4;
const OPS: [&str; 7] = ["plain", "record", "save", "read", "render", "stats", "diff"];

fn model() -> Seq {
    seq()
        .add_fn("scale1", "affine", |x| x.affine(2.0, -1.0))
        .add_fn("relu1", "relu", |x| x.relu())
        .add_fn("scale2", "affine", |x| x.affine(0.5, 0.1))
        .add_fn("relu2", "relu", |x| x.relu())
}

/// One layer's shape for `mib` MiB of f32: `[16, 64, s, s]`, s² = 256·mib.
fn shape(mib: usize) -> Vec<usize> {
    let s = (256.0 * mib as f64).sqrt().round() as usize;
    vec![16, 64, s, s]
}

/// A deterministic input (a cheap hash per value; the values are in [0, 1)).
fn input(mib: usize, seed: u32) -> Result<Tensor> {
    let shape = shape(mib);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n as u32)
        .map(|i| {
            let h = (i ^ seed).wrapping_mul(0x9E37_79B9).rotate_left(13) ^ seed;
            (h >> 8) as f32 / (1u32 << 24) as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn recorder(id: &str) -> Recorder {
    Recorder::new("scaling").id(id)
}

fn status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn maxrss_kb() -> u64 {
    // SAFETY: getrusage only writes the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_maxrss as u64
    }
}

/// Times `op` `reps` times (after the setup it needs) and returns the median.
fn repeat(reps: usize, mut op: impl FnMut() -> Result<()>) -> Result<Duration> {
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        op()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[reps / 2])
}

/// The control for `stats` and `diff`: the whole file read from the page cache
/// as they read it (chunks of 256 KiB, `pread` in parallel into per-thread
/// buffers), nothing computed: what the memory allows.
fn read_all(path: &Path) -> Result<()> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 256 << 10;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    (0..len.div_ceil(CHUNK)).into_par_iter().try_for_each_init(
        || vec![0u8; CHUNK as usize],
        |buf, i| {
            let n = (len - i * CHUNK).min(CHUNK) as usize;
            f.read_exact_at(&mut buf[..n], i * CHUNK)?;
            std::hint::black_box(&buf);
            Ok::<_, std::io::Error>(())
        },
    )?;
    Ok(())
}

/// The child: runs `op` on `mib` MiB layers in `dir`, prints one `RESULT` line.
fn child(op: &str, mib: usize, dir: &Path, reps: usize) -> Result<()> {
    let m = model();
    let run_path = |id: &str| dir.join(format!("{id}.safetensors"));
    // Setup (not timed, before the peak is reset).
    let x = match op {
        "plain" | "record" | "save" => Some(input(mib, 1)?),
        _ => None,
    };
    let (a, b) = match op {
        "stats" | "render" | "read" => (Some(Run::open(run_path("a"))?), None),
        "diff" => (
            Some(Run::open(run_path("a"))?),
            Some(Run::open(run_path("b"))?),
        ),
        _ => (None, None),
    };
    let recorded = match op {
        "save" => Some(recorder("a").record(|| m.forward(x.as_ref().unwrap()))?.1),
        _ => None,
    };
    // Runs are saved with direct I/O (not cached): warm the page cache first, so
    // `read`, `stats`, `render` and `diff` measure memory, not the disk.
    for run in [&a, &b].into_iter().flatten() {
        read_all(run.path().expect("a local run"))?;
    }
    let before = status_kb("VmRSS:");
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let took = match op {
        "plain" => repeat(reps, || {
            drop(m.forward(x.as_ref().unwrap())?);
            Ok(())
        })?,
        "record" => repeat(reps, || {
            drop(recorder("r").record(|| m.forward(x.as_ref().unwrap()))?);
            Ok(())
        })?,
        "save" => {
            let run = recorded.as_ref().unwrap();
            repeat(reps, || {
                std::fs::remove_file(run.save(dir)?)?;
                Ok(())
            })?
        }
        "render" => {
            let out = dir.join("galleries");
            std::fs::create_dir_all(&out)?;
            let opts = GalleryOptions::default();
            repeat(reps, || {
                candlelight::render_gallery(&run_path("a"), &out, &opts)?;
                Ok(())
            })?
        }
        "read" => {
            let path = a.as_ref().unwrap().path().unwrap().to_path_buf();
            repeat(reps, || read_all(&path))?
        }
        "stats" => {
            let a = a.as_ref().unwrap();
            repeat(reps, || {
                // From the data (`stats_at` would answer from the header's
                // summaries, which every save now stores).
                for i in 0..a.len() {
                    std::hint::black_box(candlelight::Stats::of(&a.data_at(i)?));
                }
                Ok(())
            })?
        }
        "diff" => {
            let (a, b) = (a.as_ref().unwrap(), b.as_ref().unwrap());
            repeat(reps, || {
                let d = candlelight::diff(a, b, &DiffOptions::default())?;
                ensure!(
                    d.layers.len() == LAYERS,
                    "diff of {} layers",
                    d.layers.len()
                );
                Ok(())
            })?
        }
        _ => bail!("unknown operation {op}"),
    };
    let peak = if reset { status_kb("VmHWM:") } else { 0 };
    if let (Some(run), Some(x)) = (recorded, x) {
        // The files the next children read: run `a`, and run `b` on an input a
        // few ulps off (for the diff).
        run.save(dir)?;
        drop(run);
        let xb = (x * 1.000_001)?;
        recorder("b").record(|| m.forward(&xb))?.1.save(dir)?;
    }
    println!(
        "RESULT {op} {mib} {} {peak} {before} {}",
        took.as_secs_f64(),
        maxrss_kb()
    );
    Ok(())
}

/// One child's figures.
struct Row {
    secs: f64,
    /// Peak RSS of the operation itself (VmHWM after the setup), KiB; 0: unknown.
    peak_kb: u64,
    /// RSS when the operation started (what the setup holds), KiB.
    before_kb: u64,
    /// The child's whole peak (`ru_maxrss`), KiB.
    maxrss_kb: u64,
}

fn run_child(op: &str, mib: usize, dir: &Path, reps: usize) -> Result<Row> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--child", op, "--mib", &mib.to_string(), "--reps"])
        .arg(reps.to_string())
        .arg("--dir")
        .arg(dir)
        .output()
        .context("running a child")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "child {op} {mib} MiB failed: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .context("no RESULT line")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    ensure!(f.len() == 6, "bad RESULT line {line:?}");
    Ok(Row {
        secs: f[2].parse()?,
        peak_kb: f[3].parse()?,
        before_kb: f[4].parse()?,
        maxrss_kb: f[5].parse()?,
    })
}

/// Bytes an operation goes through: the layers of one run (two for diff).
fn op_bytes(op: &str, mib: usize) -> f64 {
    let run = (LAYERS * mib) as f64 * (1 << 20) as f64;
    if op == "diff" {
        2.0 * run
    } else {
        run
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    if let Some(op) = arg("--child") {
        let mib: usize = arg("--mib").context("--mib")?.parse()?;
        let reps: usize = arg("--reps").context("--reps")?.parse()?;
        let dir = PathBuf::from(arg("--dir").context("--dir")?);
        return child(&op, mib, &dir, reps);
    }
    let bench_mode = args.iter().any(|a| a == "--bench");
    let sizes: Vec<usize> = match arg("--sizes") {
        Some(s) => s.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None if bench_mode => vec![1, 4, 16, 64, 256],
        None => vec![1],
    };
    println!(
        "== scaling: runs of {LAYERS} f32 layers [16, 64, s, s], {} threads; load average before {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg()
    );
    let mut table: Vec<(usize, Vec<Row>)> = vec![];
    for &mib in &sizes {
        let dir = tempfile::tempdir()?;
        // Fewer repeats for big layers: 8 at 1 MiB, 3 from 64 MiB.
        let reps = if bench_mode {
            (128 / mib).clamp(2, 8)
        } else {
            1
        };
        let mut rows = vec![];
        for op in OPS {
            rows.push(run_child(op, mib, dir.path(), reps)?);
        }
        print_size(mib, &rows);
        table.push((mib, rows));
    }
    println!("load average after: {}", loadavg());
    linearity(&table);
    Ok(())
}

fn print_size(mib: usize, rows: &[Row]) {
    println!(
        "-- {mib} MiB per layer ({:?}), {:.0} MiB per run",
        shape(mib),
        (LAYERS * mib) as f64
    );
    for (op, r) in OPS.iter().zip(rows) {
        let mbs = op_bytes(op, mib) / r.secs / 1e6;
        let peak = if r.peak_kb > 0 {
            format!("{:.1} MB", r.peak_kb as f64 / 1024.0)
        } else {
            "?".into()
        };
        println!(
            "   {op:<7} {:>10.2} ms {:>9.0} MB/s  peak RSS {peak:>10} (setup held {:.1} MB; child max {:.1} MB)",
            r.secs * 1e3,
            mbs,
            r.before_kb as f64 / 1024.0,
            r.maxrss_kb as f64 / 1024.0
        );
    }
}

/// Time per MB at each size over time per MB at the smallest (≤ 1 at the
/// largest: linear or better).
fn linearity(table: &[(usize, Vec<Row>)]) {
    let Some((lo, small)) = table.first() else {
        return;
    };
    let sizes: Vec<String> = table.iter().map(|(m, _)| format!("{m}")).collect();
    println!(
        "time per MB relative to {lo} MiB layers, at {} MiB:",
        sizes.join(" / ")
    );
    for (i, op) in OPS.iter().enumerate() {
        let per = |mib: usize, r: &Row| r.secs / op_bytes(op, mib);
        let rel: Vec<f64> = table
            .iter()
            .map(|(m, rows)| per(*m, &rows[i]) / per(*lo, &small[i]))
            .collect();
        // Against the control that moves the same bytes at that size (the
        // caches hold the small runs, not the big ones): `plain` for `record`,
        // `read` for `stats` and `diff` (twice the bytes: one read per run).
        let control = match *op {
            "record" => Some(0),
            "stats" | "diff" => Some(3),
            _ => None,
        };
        let norm: Vec<f64> = match control {
            Some(c) => table
                .iter()
                .zip(&rel)
                .map(|((m, rows), r)| {
                    let per_mb = |mib: usize, row: &Row| row.secs / op_bytes(OPS[c], mib);
                    r / (per_mb(*m, &rows[c]) / per_mb(*lo, &small[c]))
                })
                .collect(),
            None => rel.clone(),
        };
        let last = norm.last().copied().unwrap_or(1.0);
        let shown = |v: &[f64]| v.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>();
        let against = match control {
            Some(c) => format!("; over {}: {}", OPS[c], shown(&norm).join(" / ")),
            None => String::new(),
        };
        println!(
            "   {op:<7} {}{against}  ({})",
            shown(&rel).join(" / "),
            if last <= 1.2 {
                "linear or better"
            } else {
                "worse than linear"
            }
        );
    }
}

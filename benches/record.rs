//! What capture costs, on the seed CNN, batch 64 ([64, 1, 28, 28]), CPU (issue 2 (a), (b)).
//!
//! Criterion groups first, then a summary that times every side in this same
//! process, interleaved round by round with a rotating start (other work on the
//! machine hits all sides alike), and prints medians, minimums and the ratios
//! against the goals:
//!
//! - (a) forward with every layer captured in memory vs plain forward: goal ≤ 1.05×;
//! - (b) capture + `save` vs plain forward, and `save`'s bytes/s vs writing the
//!   same number of bytes with `std::fs::write`: goal ≥ 70 %;
//! - for information: op-level capture (`Recorder::record_ops`) vs plain forward.
//!
//! Two plain baselines: a hand-written candle_nn CNN (no candlelight code at all)
//! and the candlelight `Seq` with no recorder active (the wrappers' own cost).
//!
//! `cargo bench --bench record` (summary only: `cargo bench --bench record -- summary`).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder};
use candlelight::models::{seed_cnn_seeded, seeded_uniform};
use candlelight::nn::Seq;
use candlelight::{record_as, tap, Recorder, Run};
use criterion::Criterion;

mod common;
use common::{ms, Figure};

const BATCH: usize = 64;
/// Rounds of the summary (each round runs every side once).
const ROUNDS: usize = 40;

/// The same CNN written with candle_nn alone: the "plain forward" baseline.
struct PlainCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
}

impl PlainCnn {
    /// Takes the weights `seed_cnn` created in the same `VarMap` (same names).
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(PlainCnn {
            conv1: candle_nn::conv2d(1, 32, 3, Default::default(), vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(32, 64, 3, Default::default(), vb.pp("conv2"))?,
            fc1: candle_nn::linear(1600, 128, vb.pp("fc1"))?,
            fc2: candle_nn::linear(128, 10, vb.pp("fc2"))?,
        })
    }
}

impl Module for PlainCnn {
    /// Each step replaces `x`, so an output is freed as soon as the next exists
    /// (as in `Seq`; chained calls would keep temporaries to the statement's end).
    fn forward(&self, input: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.conv1.forward(input)?;
        x = x.relu()?;
        x = x.max_pool2d(2)?;
        x = self.conv2.forward(&x)?;
        x = x.relu()?;
        x = x.max_pool2d(2)?;
        x = x.flatten_from(1)?;
        x = self.fc1.forward(&x)?;
        x = x.relu()?;
        self.fc2.forward(&x)
    }
}

struct Setup {
    x: Tensor,
    plain: PlainCnn,
    model: Seq,
    dir: tempfile::TempDir,
    /// A recorded run, to time `save` alone.
    run: Run,
    /// Size of the file `run.save` writes.
    file_bytes: usize,
}

fn setup() -> Result<Setup> {
    let device = Device::Cpu;
    let (varmap, model) = seed_cnn_seeded(42, &device)?;
    let plain = PlainCnn::new(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
    let x = seeded_uniform(&[BATCH, 1, 28, 28], 7, &device)?;
    let diff = (plain.forward(&x)? - model.forward(&x)?)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    ensure!(diff == 0.0, "the two baselines disagree by {diff}");
    let (_, run) = record(&model, &x)?;
    ensure!(run.len() == 10, "expected 10 layers, got {}", run.len());
    let dir = tempfile::tempdir()?;
    let path = run.save(dir.path())?;
    let file_bytes = std::fs::metadata(&path)?.len() as usize;
    std::fs::remove_file(&path)?;
    Ok(Setup {
        x,
        plain,
        model,
        dir,
        run,
        file_bytes,
    })
}

fn record(model: &Seq, x: &Tensor) -> candlelight::Result<(Tensor, Run)> {
    Recorder::new("seed-cnn").record(|| model.forward(x))
}

fn record_ops(plain: &PlainCnn, x: &Tensor) -> candlelight::Result<(Tensor, Run)> {
    Recorder::new("seed-cnn").record_ops(x, |x| plain.forward(x))
}

/// Saves `run` into `dir`; returns the time `save` took (removing the file is not timed).
fn timed_save(run: &Run, dir: &Path) -> Duration {
    let t = Instant::now();
    let path = run.save(dir).expect("save");
    let took = t.elapsed();
    std::fs::remove_file(path).expect("remove run file");
    took
}

/// How the plain baseline writes its bytes.
#[derive(Clone, Copy)]
enum Write {
    /// `std::fs::write`: into the page cache, nothing synced.
    Plain,
    /// `File::create` + `write_all` + `sync_all`.
    Synced,
    /// What `save` does: dot temp file, `sync_all`, rename, sync of the folder.
    Atomic,
}

/// Writes `bytes` into `dir` the `how` way; removing the file is not timed.
fn timed_write(dir: &Path, bytes: &[u8], how: Write) -> Duration {
    use std::io::Write as _;
    let path = dir.join("plain.bin");
    let t = Instant::now();
    match how {
        Write::Plain => std::fs::write(&path, bytes).expect("write"),
        Write::Synced => {
            let mut f = std::fs::File::create(&path).expect("create");
            f.write_all(bytes).expect("write");
            f.sync_all().expect("sync");
        }
        Write::Atomic => common::atomic_write(dir, bytes),
    }
    let took = t.elapsed();
    std::fs::remove_file(&path).expect("remove");
    took
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn criterion_groups(c: &mut Criterion, s: &Setup) {
    let mut g = c.benchmark_group("seed_cnn_b64");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("plain_candle_nn", |b| {
        b.iter(|| black_box(s.plain.forward(&s.x).unwrap()))
    });
    g.bench_function("plain_seq_no_recorder", |b| {
        b.iter(|| black_box(s.model.forward(&s.x).unwrap()))
    });
    g.bench_function("record_in_memory", |b| {
        b.iter(|| black_box(record(&s.model, &s.x).unwrap()))
    });
    g.bench_function("record_ops", |b| {
        b.iter(|| black_box(record_ops(&s.plain, &s.x).unwrap()))
    });
    g.bench_function("record_and_save", |b| {
        b.iter_custom(|n| {
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    let (_, run) = record(&s.model, &s.x).unwrap();
                    let path = run.save(s.dir.path()).unwrap();
                    let took = t.elapsed();
                    std::fs::remove_file(path).unwrap();
                    took
                })
                .sum()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("write_run_bytes");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(criterion::Throughput::Bytes(s.file_bytes as u64));
    let bytes = vec![1u8; s.file_bytes];
    let dir = s.dir.path();
    g.bench_function("run_save", |b| {
        b.iter_custom(|n| (0..n).map(|_| timed_save(&s.run, dir)).sum())
    });
    for (name, how) in [
        ("std_fs_write", Write::Plain),
        ("std_fs_write_sync", Write::Synced),
        ("write_sync_rename_syncdir", Write::Atomic),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|n| (0..n).map(|_| timed_write(dir, &bytes, how)).sum())
        });
    }
    g.finish();
}

fn summary(s: &Setup, rounds: usize) -> Result<()> {
    let bytes = vec![1u8; s.file_bytes];
    let dir = s.dir.path();
    type Side<'a> = (&'static str, Box<dyn FnMut() -> Duration + 'a>);
    let mut sides: Vec<Side> = vec![
        (
            "plain forward, candle_nn",
            Box::new(|| timed(|| drop(black_box(s.plain.forward(&s.x).unwrap())))),
        ),
        (
            "plain forward, candlelight Seq, no recorder",
            Box::new(|| timed(|| drop(black_box(s.model.forward(&s.x).unwrap())))),
        ),
        (
            "record (every layer, in memory)",
            Box::new(|| timed(|| drop(black_box(record(&s.model, &s.x).unwrap())))),
        ),
        (
            "record_ops (op level, in memory)",
            Box::new(|| timed(|| drop(black_box(record_ops(&s.plain, &s.x).unwrap())))),
        ),
        (
            "record + save",
            Box::new(|| {
                let t = Instant::now();
                let (_, run) = record(&s.model, &s.x).unwrap();
                let p = run.save(dir).unwrap();
                let took = t.elapsed();
                std::fs::remove_file(p).unwrap();
                took
            }),
        ),
        ("save alone", Box::new(|| timed_save(&s.run, dir))),
        (
            "std::fs::write, same bytes",
            Box::new(|| timed_write(dir, &bytes, Write::Plain)),
        ),
        (
            "  + sync_all",
            Box::new(|| timed_write(dir, &bytes, Write::Synced)),
        ),
        (
            "  + sync_all + rename + sync dir (= save's)",
            Box::new(|| timed_write(dir, &bytes, Write::Atomic)),
        ),
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); sides.len()];
    for side in &mut sides {
        (side.1)(); // warm up
    }
    // Each round starts one side later, so no side always follows the same one.
    let n = sides.len();
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            times[i].push((sides[i].1)());
        }
    }
    let figs: Vec<Figure> = times.into_iter().map(Figure).collect();
    let [plain, seq, rec, ops, rec_save, save, write, write_sync, write_atomic] = &figs[..] else {
        unreachable!("one figure per side")
    };

    println!();
    println!(
        "== summary: seed CNN, input [{BATCH}, 1, 28, 28] f32, CPU, {} threads, {rounds} interleaved rounds",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "   captured per pass: {} layers, {:.1} MB; run file {:.1} MB",
        s.run.len(),
        s.run.data_bytes() as f64 / 1e6,
        s.file_bytes as f64 / 1e6
    );
    println!("   {:<44} {:>9} {:>9}", "", "median", "min");
    for (side, f) in sides.iter().zip(&figs) {
        println!(
            "   {:<44} {:>6.2} ms {:>6.2} ms",
            side.0,
            ms(f.median()),
            ms(f.min())
        );
    }
    let show = |[med, min, paired]: [f64; 3]| {
        format!("{med:.3} (min/min {min:.3}, per round {paired:.3})")
    };
    let pct = |[med, min, paired]: [f64; 3]| {
        format!(
            "{:.0}% (min/min {:.0}%, per round {:.0}%)",
            100.0 / med,
            100.0 / min,
            100.0 / paired
        )
    };
    let mbps = |d: Duration| s.file_bytes as f64 / d.as_secs_f64() / 1e6;
    println!(
        "ratio Seq no recorder / candle_nn plain = {}",
        show(seq.ratio(plain))
    );
    println!(
        "(a) ratio capture/plain = {} vs candle_nn; {} vs Seq without recorder; goal <= 1.05",
        show(rec.ratio(plain)),
        show(rec.ratio(seq))
    );
    println!(
        "(b) ratio capture+save/plain = {} vs candle_nn",
        show(rec_save.ratio(plain))
    );
    println!(
        "(b) save {:.0} MB/s vs std::fs::write {:.0} MB/s: save at {} of fs::write; goal >= 70%",
        mbps(save.median()),
        mbps(write.median()),
        pct(save.ratio(write))
    );
    println!(
        "    same durability: write + sync_all {:.0} MB/s, + rename + sync dir {:.0} MB/s: save at {} of it",
        mbps(write_sync.median()),
        mbps(write_atomic.median()),
        pct(save.ratio(write_atomic))
    );
    println!(
        "(info) ratio record_ops/plain = {} vs candle_nn",
        show(ops.ratio(plain))
    );
    bookkeeping(s, plain.median(), rounds);
    Ok(())
}

/// The capture code alone, without the model: a tap with no recorder active, and
/// a recording of the ten layer outputs of one pass (already computed).
fn bookkeeping(s: &Setup, plain: Duration, rounds: usize) {
    let taps = 100_000 * rounds.min(10);
    let t = Instant::now();
    for _ in 0..taps {
        black_box(tap("conv1", black_box(&s.x)).unwrap());
    }
    let per_tap = t.elapsed().as_secs_f64() / taps as f64;
    let outputs: Vec<(String, Tensor)> = (0..s.run.len())
        .map(|i| (s.run.layers()[i].name.clone(), s.run.tensor_at(i).unwrap()))
        .collect();
    let mut passes: Vec<Duration> = (0..rounds * 10)
        .map(|_| {
            timed(|| {
                let r = Recorder::new("seed-cnn").record(|| {
                    for (name, t) in &outputs {
                        record_as(name, "conv2d", t);
                    }
                    Ok(())
                });
                drop(black_box(r.unwrap()));
            })
        })
        .collect();
    passes.sort();
    let pass = passes[passes.len() / 2];
    println!(
        "(info) capture code alone: tap with no recorder {:.1} ns; recording the {} outputs of a pass {:.1} us = {:.3}% of a plain forward",
        per_tap * 1e9,
        outputs.len(),
        pass.as_secs_f64() * 1e6,
        100.0 * pass.as_secs_f64() / plain.as_secs_f64()
    );
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without it (cargo test) run everything once, quickly.
    let bench_mode = args.iter().any(|a| a == "--bench");
    let only_summary = args.iter().any(|a| a == "summary");
    let s = setup().context("setting up the seed CNN")?;
    if bench_mode && !only_summary {
        let mut c = Criterion::default().configure_from_args();
        criterion_groups(&mut c, &s);
        c.final_summary();
    }
    summary(&s, if bench_mode { ROUNDS } else { 1 })
}

//! Saving runs off the forward thread (issue 14, goal 2): a loop of 100 recorded and
//! saved passes of the seed CNN (`candlelight::models::seed_cnn_seeded`), batch 64,
//! CPU, with `RunWriter` against the plain forward loop. Goal: ≤ 1.2× the plain loop.
//!
//! Sides, each a loop of `--passes` (100) passes, run in rounds in this one process,
//! each round starting one side later:
//!
//! - plain: `Seq::forward`, no recorder;
//! - background: `Recorder::record` + `RunWriter::save`; timed at the loop's end
//!   (what the forward thread waited) and again after `RunWriter::finish` (every
//!   file synced and renamed);
//! - sync: `Recorder::record` + `Run::save` on the forward thread (before);
//! - save alone: `Run::save` of one recorded run, `--passes` times (removing each
//!   file not timed): the writer thread's work with nothing else running, i.e. what
//!   the disk allows.
//!
//! Run files are cut to length 0 after each side (not timed; see `retire`).
//! Prints medians, minimums, the per-round ratios over the plain loop, the disk
//! rate of `save`, and the load average before and after.
//!
//! `cargo bench --bench writer` (~2 min; `-- --rounds N --passes N --capacity N
//! --threads N`, `--tune-malloc` to call `candlelight::tune_malloc_for_recording`
//! first); writes ~5 GB per round under `TMPDIR`, freed as it goes.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::{Device, Module, Tensor};
use candlelight::models::{seed_cnn_seeded, seeded_uniform};
use candlelight::nn::Seq;
use candlelight::{Recorder, Run, RunWriter};

mod common;
use common::{cpu_times, loadavg, ms, Figure};

const BATCH: usize = 64;

struct Opts {
    rounds: usize,
    passes: usize,
    capacity: usize,
    threads: usize,
    /// `--tune-malloc`: `candlelight::tune_malloc_for_recording` first (every side).
    tune_malloc: bool,
}

fn opts(bench_mode: bool) -> Result<Opts> {
    let args: Vec<String> = std::env::args().collect();
    let get = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name) {
            Some(i) => args
                .get(i + 1)
                .context(format!("{name} needs a value"))?
                .parse()
                .context(format!("bad {name}")),
            None => Ok(default),
        }
    };
    let (rounds, passes) = if bench_mode { (5, 100) } else { (1, 3) };
    Ok(Opts {
        rounds: get("--rounds", rounds)?,
        passes: get("--passes", passes)?,
        capacity: get("--capacity", 4)?,
        threads: get("--threads", 1)?,
        tune_malloc: args.iter().any(|a| a == "--tune-malloc"),
    })
}

fn record(model: &Seq, x: &Tensor) -> Run {
    Recorder::new("seed-cnn")
        .record(|| model.forward(x))
        .expect("record")
        .1
}

/// Retires every file of `dir` (the runs of one side): see [`retire`].
fn clear(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("read runs folder") {
        let path = e.expect("entry").path();
        if path.is_file() {
            retire(&path);
        }
    }
}

/// Frees a run file's blocks now but keeps its inode until the end: cut to
/// length 0 and moved into `<dir>/../spent/` (removed with the bench's temp
/// folder). Deleting the files instead made the next side slower in a way no
/// recording loop is: ext4 without a journal (this machine's root file system)
/// does not reuse an inode freed in the last 5-10 s, and skipping the 100 just
/// freed cost every new file's `open` ~0.5 ms of CPU in `recently_deleted`
/// (`perf`, 2026-12-04), on the writer thread that competes with the forward.
fn retire(path: &Path) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let spent = path
        .parent()
        .and_then(Path::parent)
        .expect("runs folder in a temp folder")
        .join("spent");
    std::fs::create_dir_all(&spent).expect("spent folder");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(0))
        .expect("truncate run file");
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::fs::rename(path, spent.join(n.to_string())).expect("move run file");
}

struct Times {
    plain: Vec<Duration>,
    bg_loop: Vec<Duration>,
    bg_total: Vec<Duration>,
    sync: Vec<Duration>,
    save_alone: Vec<Duration>,
    /// CPU time (user, system) of every thread per side, summed over rounds.
    cpu: [(Duration, Duration); 4],
}

/// One side of a round; pushes its time(s).
fn side(k: usize, o: &Opts, model: &Seq, x: &Tensor, run: &Run, dir: &Path, t: &mut Times) {
    let (user, sys) = cpu_times();
    timed_side(k, o, model, x, run, dir, t);
    let (user2, sys2) = cpu_times();
    t.cpu[k].0 += user2 - user;
    t.cpu[k].1 += sys2 - sys;
}

fn timed_side(k: usize, o: &Opts, model: &Seq, x: &Tensor, run: &Run, dir: &Path, t: &mut Times) {
    match k {
        0 => {
            let start = Instant::now();
            for _ in 0..o.passes {
                drop(black_box(model.forward(x).expect("forward")));
            }
            t.plain.push(start.elapsed());
        }
        1 => {
            let writer = RunWriter::with_threads(dir, o.capacity, o.threads).expect("writer");
            let start = Instant::now();
            for _ in 0..o.passes {
                writer
                    .save(record(model, x))
                    .expect("save in the background");
            }
            t.bg_loop.push(start.elapsed());
            writer.finish().expect("finish");
            t.bg_total.push(start.elapsed());
            clear(dir);
        }
        2 => {
            let start = Instant::now();
            for _ in 0..o.passes {
                record(model, x).save(dir).expect("save");
            }
            t.sync.push(start.elapsed());
            clear(dir);
        }
        _ => {
            let mut took = Duration::ZERO;
            for _ in 0..o.passes {
                let start = Instant::now();
                let p = run.save(dir).expect("save");
                took += start.elapsed();
                retire(&p);
            }
            t.save_alone.push(took);
        }
    }
}

fn main() -> Result<()> {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let o = opts(bench_mode)?;
    if o.tune_malloc {
        ensure!(
            candlelight::tune_malloc_for_recording(256 << 20),
            "tune_malloc_for_recording is not available here"
        );
    }
    let device = Device::Cpu;
    let (_varmap, model) = seed_cnn_seeded(42, &device)?;
    let x = seeded_uniform(&[BATCH, 1, 28, 28], 7, &device)?;
    let run = record(&model, &x);
    ensure!(run.len() == 10, "expected 10 layers, got {}", run.len());
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("runs");
    let file_bytes = {
        let p = run.save(&dir)?;
        let n = std::fs::metadata(&p)?.len();
        retire(&p);
        n as f64
    };
    let mut t = Times {
        plain: vec![],
        bg_loop: vec![],
        bg_total: vec![],
        sync: vec![],
        save_alone: vec![],
        cpu: Default::default(),
    };
    if std::env::args().any(|a| a == "--phases") {
        return phases(&run, &dir, o.passes);
    }
    let load_before = loadavg();
    for round in 0..o.rounds {
        for k in 0..4 {
            side((round + k) % 4, &o, &model, &x, &run, &dir, &mut t);
        }
    }
    let load_after = loadavg();
    report(&o, &t, file_bytes, [load_before, load_after]);
    Ok(())
}

fn report(o: &Opts, t: &Times, file_bytes: f64, load: [String; 2]) {
    let f = |v: &Vec<Duration>| Figure(v.clone());
    let (plain, bg_loop, bg_total) = (f(&t.plain), f(&t.bg_loop), f(&t.bg_total));
    let (sync, alone) = (f(&t.sync), f(&t.save_alone));
    println!();
    println!(
        "== writer: seed CNN, input [{BATCH}, 1, 28, 28] f32, CPU, {} threads; loops of {} passes, {} rounds; RunWriter capacity {}, {} writer thread(s); malloc {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        o.passes,
        o.rounds,
        o.capacity,
        o.threads,
        if o.tune_malloc {
            "tuned (tune_malloc_for_recording(256 MiB))"
        } else {
            "glibc defaults"
        }
    );
    println!(
        "   run file {:.1} MB; {} per loop {:.0} MB",
        file_bytes / 1e6,
        o.passes,
        file_bytes * o.passes as f64 / 1e6
    );
    println!("   load average before: {}; after: {}", load[0], load[1]);
    println!("   {:<46} {:>10} {:>10}", "loop", "median", "min");
    let sides = [
        ("plain forward (Seq, no recorder)", &plain),
        ("record + RunWriter::save (loop end)", &bg_loop),
        ("record + RunWriter::save + finish", &bg_total),
        ("record + Run::save (synchronous)", &sync),
        ("Run::save alone", &alone),
    ];
    for (name, fig) in sides {
        println!(
            "   {name:<46} {:>7.0} ms {:>7.0} ms",
            ms(fig.median()),
            ms(fig.min())
        );
    }
    let show = |[med, min, paired]: [f64; 3]| {
        format!("{med:.3} (min/min {min:.3}, per round {paired:.3})")
    };
    println!(
        "background, forward thread (loop end) / plain = {}; goal <= 1.2",
        show(bg_loop.ratio(&plain))
    );
    println!(
        "background incl. finish / plain = {}; goal <= 1.2",
        show(bg_total.ratio(&plain))
    );
    println!(
        "synchronous Run::save / plain = {}",
        show(sync.ratio(&plain))
    );
    println!("Run::save alone / plain = {}", show(alone.ratio(&plain)));
    let per_pass = |d: Duration| ms(d) / (o.passes * o.rounds) as f64;
    let names = ["plain", "background", "synchronous", "save alone"];
    let cpu: Vec<String> = names
        .iter()
        .zip(&t.cpu)
        .map(|(n, &(u, s))| {
            format!(
                "{n} {:.1} ms (user {:.1}, system {:.1})",
                per_pass(u + s),
                per_pass(u),
                per_pass(s)
            )
        })
        .collect();
    println!(
        "CPU per pass, every thread (incl. removing files): {}",
        cpu.join("; ")
    );
    let rate = file_bytes * o.passes as f64 / alone.median().as_secs_f64();
    println!(
        "disk: Run::save alone writes {:.0} MB/s (median; best {:.0} MB/s): {} files need {:.2} s at that rate, {:.2}x the plain loop's median {:.2} s",
        rate / 1e6,
        file_bytes * o.passes as f64 / alone.min().as_secs_f64() / 1e6,
        o.passes,
        alone.median().as_secs_f64(),
        alone.median().as_secs_f64() / plain.median().as_secs_f64(),
        plain.median().as_secs_f64()
    );
}

/// `--phases`: where one `Run::save` of the recorded run spends its time, each
/// phase `passes` times on its own: the per-layer summaries (statistics and hash,
/// as the save computes them), the hash alone, a buffered write of the same bytes
/// (no sync), and the whole save; wall and CPU time per save.
fn phases(run: &Run, dir: &Path, passes: usize) -> Result<()> {
    let layers: Vec<Vec<u8>> = (0..run.len())
        .map(|i| {
            let v: Vec<f32> = run.tensor_at(i)?.flatten_all()?.to_vec1()?;
            Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        })
        .collect::<Result<_>>()?;
    let bytes: usize = layers.iter().map(Vec::len).sum();
    let time = |name: &str, f: &mut dyn FnMut()| {
        let (u0, s0) = cpu_times();
        let start = Instant::now();
        for _ in 0..passes {
            f();
        }
        let wall = start.elapsed() / passes as u32;
        let (u1, s1) = cpu_times();
        let per = |d: Duration| ms(d) / passes as f64;
        println!(
            "   {name:<44} {:>7.2} ms wall, CPU user {:.2} + system {:.2} ms ({:.1} GB/s)",
            ms(wall),
            per(u1 - u0),
            per(s1 - s0),
            bytes as f64 / wall.as_secs_f64() / 1e9
        );
    };
    println!(
        "== phases of one Run::save ({:.1} MB of layers)",
        bytes as f64 / 1e6
    );
    time("summaries (LayerSummary::of every layer)", &mut || {
        for l in &layers {
            black_box(candlelight::LayerSummary::of(l, safetensors::Dtype::F32));
        }
    });
    time("xxh3-128 of every layer", &mut || {
        for l in &layers {
            black_box(twox_hash::XxHash3_128::oneshot(l));
        }
    });
    let path = dir.join("phase.bin");
    time("buffered write of the bytes (no sync)", &mut || {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&path).expect("create");
        for l in &layers {
            f.write_all(l).expect("write");
        }
        drop(f);
        retire(&path);
    });
    time("Run::save (+ retiring the file)", &mut || {
        let p = run.save(dir).expect("save");
        retire(&p);
    });
    Ok(())
}

//! What capturing every layer of all-MiniLM-L6-v2 costs on candle (issue 12).
//!
//! The model (`candlelight::models::minilm`, candle-transformers' BERT
//! instrumented: every module records its output under its VarBuilder path, the
//! attention probabilities under `<path>.attention_probs`), f32, CPU, on one
//! sentence of 16 tokens (batch 1) and a batch of 32 of them. Sides, timed in
//! this one process, every side once per round, each round starting one side
//! later:
//!
//! - plain forward, no recorder active (the instrumented model; each module then
//!   costs a thread-local flag check);
//! - plain forward of candle-transformers 0.9.2's own, unmodified `BertModel` on
//!   the same weights (with `--features transformers`; left out otherwise);
//! - `Recorder::new(..).record(|| model.forward(&enc))`: every layer captured in
//!   memory, goal ≤ 1.05× the plain forward;
//! - the same + `run.save(dir)` (a tempdir; atomic: temp file, fsync, rename,
//!   fsync of the folder), goal ≤ 1.5×;
//! - for information, `save` alone of a recorded run.
//!
//! Printed per side: median and minimum (ms); per ratio: median/median,
//! min/min and the median of the per-round ratios (the sides of a round ran
//! next to each other, so a shared machine's slow spells partly cancel out),
//! and the load average before and after.
//!
//! ```text
//! cargo bench --bench minilm --features transformers [-- --rounds N --batch-rounds N --case 1|32]
//! RAYON_NUM_THREADS=1 cargo bench --bench minilm --features transformers   # 1 thread
//! ```
//!
//! Needs the model (`scripts/fetch-minilm`; `CANDLELIGHT_MINILM` or the default
//! cache folder); without it the bench says so and exits. Without `--bench`
//! (`cargo test --benches`) each case runs one round.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::Tensor;
use candlelight::models::minilm::{default_dir, Encoded, MiniLm};
use candlelight::{Recorder, Run};

mod common;
use common::{loadavg, minor_faults, ms, Figure};

/// 16 tokens with [CLS] and [SEP] (as in `benches/minilm_torch.py`).
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the river bank.";
const TOKENS: usize = 16;
const BATCH: usize = 32;

/// candle-transformers' own BERT on the same weights.
#[cfg(feature = "transformers")]
mod upstream {
    use std::path::Path;

    use anyhow::{Context, Result};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::bert::{BertModel, Config};
    use candlelight::models::minilm::Encoded;

    pub struct Upstream(BertModel);

    impl Upstream {
        pub fn load(dir: &Path) -> Result<Upstream> {
            let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)
                .context("config.json")?;
            let weights =
                candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
            let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
            Ok(Upstream(BertModel::load(vb, &cfg)?))
        }

        pub fn forward(&self, enc: &Encoded) -> candle_core::Result<Tensor> {
            self.0.forward(
                &enc.input_ids,
                &enc.token_type_ids,
                Some(&enc.attention_mask),
            )
        }
    }
}

struct Setup {
    mini: MiniLm,
    #[cfg(feature = "transformers")]
    upstream: upstream::Upstream,
    dir: tempfile::TempDir,
}

fn record(mini: &MiniLm, enc: &Encoded) -> candlelight::Result<(Tensor, Run)> {
    Recorder::new("minilm").record(|| mini.forward(enc))
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Records one pass and saves it; the time of both (removing the file is not timed).
fn timed_record_save(mini: &MiniLm, enc: &Encoded, dir: &Path) -> Duration {
    let t = Instant::now();
    let (y, run) = record(mini, enc).expect("record");
    let path = run.save(dir).expect("save");
    let took = t.elapsed();
    drop(black_box(y));
    std::fs::remove_file(path).expect("remove run file");
    took
}

/// Saves `run`; the time of `save` alone.
fn timed_save(run: &Run, dir: &Path) -> Duration {
    let t = Instant::now();
    let path = run.save(dir).expect("save");
    let took = t.elapsed();
    std::fs::remove_file(path).expect("remove run file");
    took
}

/// Writes `bytes` as `save` does (dot temp file, `sync_all`, rename, sync of the
/// folder); removing the file is not timed.
fn timed_atomic_write(dir: &Path, bytes: &[u8]) -> Duration {
    let t = Instant::now();
    common::atomic_write(dir, bytes);
    let took = t.elapsed();
    std::fs::remove_file(dir.join("plain.bin")).expect("remove");
    took
}

type Side<'a> = (&'static str, Box<dyn FnMut() -> Duration + 'a>);

/// The sides of one case, in a fixed order: plain, [upstream], record, record +
/// save, then for information save alone and a write of as many bytes as durable.
fn sides<'a>(s: &'a Setup, enc: &'a Encoded, run: &'a Run, bytes: &'a [u8]) -> Vec<Side<'a>> {
    let dir = s.dir.path();
    let mut v: Vec<Side<'a>> = vec![(
        "plain forward, candlelight BERT, no recorder",
        Box::new(move || timed(|| drop(black_box(s.mini.forward(enc).unwrap())))),
    )];
    #[cfg(feature = "transformers")]
    v.push((
        "plain forward, candle-transformers BertModel",
        Box::new(move || timed(|| drop(black_box(s.upstream.forward(enc).unwrap())))),
    ));
    v.push((
        "record (every layer, in memory)",
        Box::new(move || timed(|| drop(black_box(record(&s.mini, enc).unwrap())))),
    ));
    v.push((
        "record + save",
        Box::new(move || timed_record_save(&s.mini, enc, dir)),
    ));
    v.push(("save alone (info)", Box::new(move || timed_save(run, dir))));
    v.push((
        "  same bytes: write + sync + rename + sync dir",
        Box::new(move || timed_atomic_write(dir, bytes)),
    ));
    v
}

fn case(s: &Setup, label: &str, sentences: &[&str], rounds: usize) -> Result<()> {
    let enc = s.mini.encode(sentences)?;
    ensure!(
        enc.input_ids.dims() == [sentences.len(), TOKENS],
        "expected {} x {TOKENS} tokens, got {:?}",
        sentences.len(),
        enc.input_ids.dims()
    );
    let (y, run) = record(&s.mini, &enc)?;
    let plain = s.mini.forward(&enc)?;
    ensure!(max_diff(&y, &plain)? == 0.0, "recording changed the output");
    #[cfg(feature = "transformers")]
    {
        let d = max_diff(&s.upstream.forward(&enc)?, &plain)?;
        ensure!(d < 1e-5, "candle-transformers' BertModel differs by {d}");
    }
    let path = run.save(s.dir.path())?;
    let file_bytes = std::fs::metadata(&path)?.len();
    std::fs::remove_file(&path)?;

    let bytes = vec![1u8; file_bytes as usize];
    let mut sides = sides(s, &enc, &run, &bytes);
    for side in &mut sides {
        (side.1)(); // warm up
    }
    let load_before = loadavg();
    let n = sides.len();
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); n];
    let mut faults: Vec<Vec<i64>> = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let f0 = minor_faults();
            times[i].push((sides[i].1)());
            faults[i].push(minor_faults() - f0);
        }
    }
    let load_after = loadavg();
    let figs: Vec<Figure> = times.into_iter().map(Figure).collect();
    let faults: Vec<i64> = faults
        .into_iter()
        .map(|mut f| {
            f.sort();
            f[f.len() / 2]
        })
        .collect();
    print_case(label, &sides, &figs, &faults, &run, file_bytes, rounds);
    println!("   load average: {load_before} before, {load_after} after");
    Ok(())
}

fn print_case(
    label: &str,
    sides: &[Side],
    figs: &[Figure],
    faults: &[i64],
    run: &Run,
    file_bytes: u64,
    rounds: usize,
) {
    println!();
    println!(
        "== {label}: all-MiniLM-L6-v2 f32, CPU, {} candle threads ({} cores), {rounds} interleaved rounds",
        candle_core::utils::get_num_threads(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "   recorded per pass: {} layers, {:.2} MB; run file {:.2} MB",
        run.len(),
        run.data_bytes() as f64 / 1e6,
        file_bytes as f64 / 1e6
    );
    let plain = &figs[0];
    println!(
        "   {:<46} {:>9} {:>9}   {:>26} {:>8}",
        "", "median", "min", "ratio: med/med min/min per-round", "faults"
    );
    for ((side, f), faults) in sides.iter().zip(figs).zip(faults) {
        let [med, min, paired] = f.ratio(plain);
        println!(
            "   {:<46} {:>6.2} ms {:>6.2} ms   {med:>11.3} {min:>7.3} {paired:>9.3} {faults:>8}",
            side.0,
            ms(f.median()),
            ms(f.min()),
        );
    }
    let by_name = |name: &str| {
        sides
            .iter()
            .position(|s| s.0 == name)
            .map(|i| &figs[i])
            .expect("side")
    };
    let rec = by_name("record (every layer, in memory)");
    let rec_save = by_name("record + save");
    let verdict = |r: f64, goal: f64| if r <= goal { "met" } else { "MISSED" };
    let a = rec.ratio(plain)[2];
    let b = rec_save.ratio(plain)[2];
    println!(
        "   capture / plain (per round) = {a:.3}: goal <= 1.05 {}",
        verdict(a, 1.05)
    );
    println!(
        "   capture + save / plain (per round) = {b:.3}: goal <= 1.5 {}",
        verdict(b, 1.5)
    );
    #[cfg(feature = "transformers")]
    {
        let up = by_name("plain forward, candle-transformers BertModel");
        println!(
            "   vs candle-transformers' plain forward (per round): no recorder {:.3}, capture {:.3}, capture + save {:.3}",
            plain.ratio(up)[2],
            rec.ratio(up)[2],
            rec_save.ratio(up)[2]
        );
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
}

/// `--name N` from the arguments.
fn arg(args: &[String], name: &str) -> Option<usize> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; without it (cargo test --benches) one round each.
    let bench_mode = args.iter().any(|a| a == "--bench");
    let Some(dir) = default_dir().filter(|d| d.join("model.safetensors").is_file()) else {
        println!("SKIP: no MiniLM model (run scripts/fetch-minilm, set CANDLELIGHT_MINILM)");
        return Ok(());
    };
    let s = Setup {
        mini: MiniLm::load(&dir).with_context(|| format!("loading {}", dir.display()))?,
        #[cfg(feature = "transformers")]
        upstream: upstream::Upstream::load(&dir)?,
        dir: tempfile::tempdir()?,
    };
    #[cfg(not(feature = "transformers"))]
    println!("(candle-transformers' BertModel left out: build with --features transformers)");
    let rounds = arg(&args, "--rounds").unwrap_or(if bench_mode { 100 } else { 1 });
    let batch_rounds = arg(&args, "--batch-rounds").unwrap_or(if bench_mode { 30 } else { 1 });
    let only = args
        .iter()
        .position(|a| a == "--case")
        .and_then(|i| args.get(i + 1));
    if only.is_none_or(|c| c == "1") {
        case(&s, "1 x 16 tokens", &[SENTENCE], rounds)?;
    }
    if only.is_none_or(|c| c == "32") {
        case(&s, "32 x 16 tokens", &[SENTENCE; BATCH], batch_rounds)?;
    }
    Ok(())
}

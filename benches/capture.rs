//! Capture in memory against the plain forward (issue 14, goal 3: ≤ 1.05×), on two
//! models with plain (non-`Var`) weights, so that the plain forward keeps no op
//! graph alive and frees each output as soon as the next exists:
//!
//! - the seed CNN (`candlelight::models::seed_cnn`), batch 64, 10 layers, 17.3 MB
//!   recorded per pass;
//! - a 20-layer MLP (`Linear` 1024 → 1024, batch 256): 1 MiB per layer, 21 MB per
//!   pass.
//!
//! Each round times, for each model, one plain pass (`Seq::forward`, no recorder),
//! one pass that keeps every layer's output in a `Vec` (no recorder: the cost of
//! keeping the outputs alive, apart from the recorder's own) and one recorded pass
//! (`Recorder::record`); what a pass returns or keeps is dropped inside its
//! timing. Each round starts one side later; minor page faults per pass from
//! `getrusage` (every thread). Prints medians, minimums and the median of the
//! per-round ratios.
//!
//! The same rounds then run again in a child process (this binary re-executed with
//! `--tuned`) that first calls [`candlelight::tune_malloc_for_recording`]: malloc's
//! thresholds are process-wide and cannot be reset, so the default and the tuned
//! allocator never share a process; in each, both sides run under the same
//! allocator.
//!
//! `cargo bench --bench capture` (~1.5 min; `-- --rounds N`, `--tuned` for the tuned
//! child alone, `--default` for the default allocator alone, `--only cnn|mlp` for
//! one model in a fresh process: the allocator's history changes the default side).

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candlelight::models::{reseed, seed_cnn, seeded_uniform};
use candlelight::nn::{seq, Seq};
use candlelight::Recorder;

mod common;
use common::{loadavg, minor_faults, ms, Figure};

/// Kept freed memory in the tuned child: more than a pass of either model records.
const KEEP: usize = 256 << 20;

/// The weights of `varmap` as plain tensors (no `Var`: ops on them build no graph).
fn plain_weights(varmap: &VarMap, device: &Device) -> VarBuilder<'static> {
    let data = varmap.data().lock().expect("varmap lock");
    let plain: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_detached_tensor()))
        .collect();
    VarBuilder::from_tensors(plain, DType::F32, device)
}

/// A model's layers, each shared by the `Seq` (plain and recorded sides) and the
/// hand-written loop that keeps every output (the "kept" side).
type Layers = Vec<(String, Arc<dyn Module + Send + Sync>)>;

/// The seed CNN's layers (as `candlelight::models::seed_cnn`) with seeded plain weights.
fn cnn(device: &Device) -> Result<Layers> {
    let varmap = VarMap::new();
    seed_cnn(VarBuilder::from_varmap(&varmap, DType::F32, device))?;
    reseed(&varmap, 42)?;
    let vb = plain_weights(&varmap, device);
    let conv = |i, o, n: &str| candle_nn::conv2d(i, o, 3, Default::default(), vb.pp(n));
    fn f(
        g: impl Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    ) -> Arc<dyn Module + Send + Sync> {
        Arc::new(candle_nn::func(g))
    }
    Ok(vec![
        ("conv1".into(), Arc::new(conv(1, 32, "conv1")?)),
        ("relu1".into(), f(|x| x.relu())),
        ("pool1".into(), f(|x| x.max_pool2d(2))),
        ("conv2".into(), Arc::new(conv(32, 64, "conv2")?)),
        ("relu2".into(), f(|x| x.relu())),
        ("pool2".into(), f(|x| x.max_pool2d(2))),
        ("flatten".into(), f(|x| x.flatten_from(1))),
        (
            "fc1".into(),
            Arc::new(candle_nn::linear(1600, 128, vb.pp("fc1"))?),
        ),
        ("relu3".into(), f(|x| x.relu())),
        (
            "fc2".into(),
            Arc::new(candle_nn::linear(128, 10, vb.pp("fc2"))?),
        ),
    ])
}

/// `layers` × `Linear(width, width)` with seeded plain weights, named `fc01`, ….
fn mlp(layers: usize, width: usize, device: &Device) -> Result<Layers> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let names: Vec<String> = (1..=layers).map(|i| format!("fc{i:02}")).collect();
    for n in &names {
        candle_nn::linear(width, width, vb.pp(n))?;
    }
    reseed(&varmap, 43)?;
    let vb = plain_weights(&varmap, device);
    names
        .into_iter()
        .map(|n| {
            let l = candle_nn::linear(width, width, vb.pp(&n))?;
            Ok((n, Arc::new(l) as Arc<dyn Module + Send + Sync>))
        })
        .collect()
}

/// The layers as a candlelight `Seq` (records each child when a recorder is active).
fn as_seq(layers: &Layers) -> Seq {
    layers.iter().fold(seq(), |s, (name, l)| {
        let l = l.clone();
        s.add_fn(name, "layer", move |x| l.forward(x))
    })
}

const SIDES: [&str; 3] = [
    "plain forward",
    "outputs kept, no recorder",
    "record, in memory",
];

/// One model's sides: times and minor faults per pass, per side (`SIDES`).
struct Case {
    name: String,
    layers: Layers,
    model: Seq,
    x: Tensor,
    recorded_bytes: usize,
    times: [Vec<Duration>; 3],
    faults: [Vec<i64>; 3],
}

impl Case {
    fn new(name: &str, layers: Layers, x: Tensor) -> Result<Case> {
        let model = as_seq(&layers);
        let (y, run) = Recorder::new("capture").record(|| model.forward(&x))?;
        let plain = model.forward(&x)?;
        let diff = (plain - y)?.abs()?.max_all()?.to_scalar::<f32>()?;
        ensure!(
            diff == 0.0,
            "{name}: recording changed the output by {diff}"
        );
        ensure!(
            run.len() == model.len(),
            "{name}: {} layers recorded",
            run.len()
        );
        Ok(Case {
            name: name.into(),
            recorded_bytes: run.data_bytes(),
            layers,
            model,
            x,
            times: Default::default(),
            faults: Default::default(),
        })
    }

    /// One pass of side `k`; what it returns or keeps is dropped inside the timing.
    fn pass(&mut self, k: usize) {
        let f0 = minor_faults();
        let t = Instant::now();
        match k {
            0 => drop(black_box(self.model.forward(&self.x).expect("forward"))),
            1 => {
                let mut kept = Vec::with_capacity(self.layers.len());
                let mut x = self.x.clone();
                for (_, l) in &self.layers {
                    x = l.forward(&x).expect("forward");
                    kept.push(x.clone());
                }
                drop(black_box(kept));
            }
            _ => {
                let out = Recorder::new("capture").record(|| self.model.forward(&self.x));
                drop(black_box(out.expect("record")));
            }
        }
        self.times[k].push(t.elapsed());
        self.faults[k].push(minor_faults() - f0);
    }

    fn report(&self) {
        let figs = self.times.clone().map(Figure);
        println!(
            "   {}: {} layers, {:.1} MB recorded per pass",
            self.name,
            self.model.len(),
            self.recorded_bytes as f64 / 1e6
        );
        for k in 0..3 {
            let mut f = self.faults[k].clone();
            f.sort();
            println!(
                "     {:<26} median {:>8.2} ms  min {:>8.2} ms  minor faults/pass {:>6}",
                SIDES[k],
                ms(figs[k].median()),
                ms(figs[k].min()),
                f[f.len() / 2]
            );
        }
        let show = |[med, min, paired]: [f64; 3]| {
            format!("{paired:.3} per round (median/median {med:.3}, min/min {min:.3})")
        };
        println!(
            "     record / plain = {}; goal <= 1.05",
            show(figs[2].ratio(&figs[0]))
        );
        println!(
            "     kept / plain = {} (keeping the outputs alive)",
            show(figs[1].ratio(&figs[0]))
        );
        println!(
            "     record / kept = {} (the recorder itself)",
            show(figs[2].ratio(&figs[1]))
        );
    }
}

fn measure(tuned: bool, rounds: usize, only: Option<&str>) -> Result<()> {
    let applied = tuned && candlelight::tune_malloc_for_recording(KEEP);
    ensure!(
        applied == tuned,
        "tune_malloc_for_recording is not available here"
    );
    let device = Device::Cpu;
    let mut cases = vec![
        Case::new(
            "seed CNN, batch 64",
            cnn(&device)?,
            seeded_uniform(&[64, 1, 28, 28], 7, &device)?,
        )?,
        Case::new(
            "MLP 20 x Linear(1024), batch 256",
            mlp(20, 1024, &device)?,
            seeded_uniform(&[256, 1024], 8, &device)?,
        )?,
    ];
    // `--only cnn|mlp`: one model alone (the allocator's history differs).
    cases.retain(|c| only.is_none_or(|o| c.name.to_lowercase().contains(o)));
    // Warm up: every side once.
    for c in &mut cases {
        (0..3).for_each(|k| c.pass(k));
        c.times = Default::default();
        c.faults = Default::default();
    }
    let load_before = loadavg();
    // Each round starts one side later, so no side always follows the same one.
    for round in 0..rounds {
        for c in &mut cases {
            (0..3).for_each(|k| c.pass((round + k) % 3));
        }
    }
    println!();
    println!(
        "== capture in memory, {} allocator, {} threads, {rounds} rounds; load average before {load_before}, after {}",
        if tuned {
            "tuned (tune_malloc_for_recording(256 MiB))"
        } else {
            "default (glibc defaults)"
        },
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg()
    );
    for c in &cases {
        c.report();
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let has = |a: &str| args.iter().any(|x| x == a);
    // `cargo bench` passes `--bench`; without it (cargo test) one round each.
    let bench_mode = has("--bench");
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args.get(i + 1).context("--rounds N")?.parse()?,
        None if bench_mode => 40,
        None => 1,
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    if has("--tuned") {
        return measure(true, rounds, only);
    }
    measure(false, rounds, only)?;
    if has("--default") || !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return Ok(());
    }
    let mut child = std::process::Command::new(std::env::current_exe()?);
    child.args(["--tuned", "--rounds", &rounds.to_string()]);
    if let Some(o) = only {
        child.args(["--only", o]);
    }
    let status = child
        .status()
        .context("re-running this bench with --tuned")?;
    ensure!(status.success(), "the tuned child failed: {status}");
    Ok(())
}

//! The `candlelight` command line: one function per subcommand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use candlelight::{LayerInfo, Run, Stats};

mod demo;
mod diff;
mod instrument;
mod render;
mod render_store;
mod serve;
mod watch;

/// See inside candle models: record, render, watch and compare runs.
#[derive(Debug, Parser)]
#[command(name = "candlelight", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the runs in a folder, newest first, with layer count and size.
    Ls {
        /// Folder holding run files (`*.safetensors`).
        dir: PathBuf,
    },
    /// Show a run's layers (order, name, kind, shape, dtype, stats), or one layer's values.
    Show {
        /// A run file.
        run: PathBuf,
        /// A layer name: summarize its values.
        layer: Option<String>,
    },
    /// Compare two runs layer by layer (A against the reference B): numbers per
    /// layer, the first divergent layer; exit 0 all agree, 1 some diverge, 2 error.
    Diff(diff::DiffArgs),
    /// Render run files into PNG galleries: OUT/<run>/index.html per run, OUT/index.html.
    Render(render::RenderArgs),
    /// Record the bundled model on sample inputs into runs/ and render galleries/.
    Demo(demo::DemoArgs),
    /// Watch a folder: every run file dropped into it becomes a gallery.
    Watch(watch::WatchArgs),
    /// Serve a galleries folder over HTTP: pictures of any sample on demand, compare
    /// any two runs from the index, a live index (with --watch RUNS_DIR).
    Serve(serve::ServeArgs),
    /// Rewrite a model file copied out of candle-transformers so that every layer and
    /// module records its output by VarBuilder path; report on standard error.
    Instrument(instrument::InstrumentArgs),
}

/// Runs the parsed command; `Ok(code)` is the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    if !matches!(cli.command, Command::Watch(_) | Command::Serve(_)) {
        die_quietly_on_closed_pipe();
    }
    match cli.command {
        Command::Ls { dir } => ls(&dir),
        Command::Show { run, layer } => show(&run, layer.as_deref()),
        Command::Diff(args) => diff::run(args),
        Command::Render(args) => render::render(args),
        Command::Demo(args) => demo::demo(args),
        Command::Watch(args) => watch::watch(args),
        Command::Serve(args) => serve::serve(args),
        Command::Instrument(args) => instrument::run(args),
    }
}

/// `candlelight ls | head`: once the reader is gone, end quietly like `ls` and `grep`
/// (killed by SIGPIPE) instead of panicking in `println!`. Rust ignores SIGPIPE, so
/// this restores the default. Not for `watch`: a daemon must not die because whoever
/// read its logs went away (it keeps ignoring SIGPIPE and drops what it cannot write).
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: `signal` with SIG_DFL installs no handler; called before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

pub use candlelight::pages::{fmt_bytes as human_bytes, fmt_num as num};

/// Run files (`*.safetensors`, no dot files) in `dir`, newest first.
pub fn run_files(dir: &Path) -> Result<Vec<(PathBuf, std::time::SystemTime)>> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    let mut files = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || p.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        let Ok(md) = e.metadata() else { continue };
        if md.is_file() {
            files.push((p, md.modified().unwrap_or(std::time::UNIX_EPOCH)));
        }
    }
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    Ok(files)
}

fn ls(dir: &Path) -> Result<i32> {
    let files = run_files(dir)?;
    if files.is_empty() {
        println!("no runs in {}", dir.display());
        return Ok(0);
    }
    println!(
        "{:<44} {:<21} {:>6} {:>10}",
        "RUN", "CREATED", "LAYERS", "SIZE"
    );
    for (path, _) in files {
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match Run::open(&path) {
            Ok(run) => println!(
                "{:<44} {:<21} {:>6} {:>10}",
                stem,
                if run.info().created.is_empty() {
                    "-"
                } else {
                    &run.info().created
                },
                run.len(),
                human_bytes(run.file_size())
            ),
            Err(e) => println!("{stem:<44} invalid: {e}"),
        }
    }
    Ok(0)
}

fn stats_row(l: &LayerInfo, s: &Stats) -> String {
    format!(
        "{:>4} {:<28} {:<12} {:<18} {:<5} {:>10} {:>10} {:>10} {:>10} {:>6.1}% {:>5} {:>5}",
        l.index,
        l.name,
        l.kind.as_deref().unwrap_or("-"),
        l.shape_str(),
        l.dtype.to_string(),
        num(s.min),
        num(s.max),
        num(s.mean),
        num(s.std),
        s.zero_fraction * 100.0,
        s.nan,
        s.inf
    )
}

fn show(path: &Path, layer: Option<&str>) -> Result<i32> {
    let run = Run::open(path)?;
    // A wrong layer name is an error before anything is printed.
    let layer = match layer {
        Some(name) => Some(
            run.layer(name)
                .with_context(|| {
                    format!(
                        "{}: no layer named {name:?}{}",
                        path.display(),
                        suggest(&run, name)
                    )
                })?
                .clone(),
        ),
        None => None,
    };
    let info = run.info();
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    println!(
        "run {}  model {}  created {}  input {}  ({} layers, {})",
        or_dash(&info.id),
        or_dash(&info.model),
        or_dash(&info.created),
        or_dash(&info.input),
        run.len(),
        human_bytes(run.file_size())
    );
    match layer {
        None => show_table(&run)?,
        Some(l) => show_layer(&run, &l)?,
    }
    if let Some(line) = transfer_line(&run) {
        println!("{line}");
    }
    Ok(0)
}

/// `read from the store: 1 request, 12.3 KB (of 1.07 GB)` for a run opened by URL.
pub fn transfer_line(run: &Run) -> Option<String> {
    let (requests, bytes) = run.transfer()?;
    Some(format!(
        "read from the store: {requests} request{}, {} (of {})",
        if requests == 1 { "" } else { "s" },
        human_bytes(bytes),
        human_bytes(run.file_size())
    ))
}

/// "; did you mean "conv1"? (layers: ...)" for a wrong layer name: the closest
/// name by edit distance, and the first layers of the run.
fn suggest(run: &Run, name: &str) -> String {
    let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
    if names.is_empty() {
        return "; the run has no layer".into();
    }
    let closest = names
        .iter()
        .min_by_key(|n| edit_distance(n, name))
        .expect("at least one layer");
    let shown: Vec<&str> = names.iter().take(12).copied().collect();
    let more = if names.len() > 12 { ", ..." } else { "" };
    format!(
        "; did you mean {closest:?}? (layers: {}{more})",
        shown.join(", ")
    )
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// One row of statistics per layer.
fn show_table(run: &Run) -> Result<()> {
    println!(
        "{:>4} {:<28} {:<12} {:<18} {:<5} {:>10} {:>10} {:>10} {:>10} {:>7} {:>5} {:>5}",
        "#", "NAME", "KIND", "SHAPE", "DTYPE", "MIN", "MAX", "MEAN", "STD", "ZERO", "NAN", "INF"
    );
    for l in run.layers() {
        let s = run.stats_at(l.index)?;
        println!("{}", stats_row(l, &s));
    }
    Ok(())
}

/// One layer: facts, statistics, first and last values, a text histogram.
fn show_layer(run: &Run, l: &candlelight::LayerInfo) -> Result<()> {
    let data = run.data_at(l.index)?;
    let s = Stats::of(&data);
    data.check()?;
    println!(
        "layer {} ({}), kind {}, shape {}, dtype {}",
        l.index,
        l.name,
        l.kind.as_deref().unwrap_or("-"),
        l.shape_str(),
        l.dtype
    );
    println!(
        "min {}  max {}  mean {}  std {}  zero {:.1}%  NaN {}  Inf {}",
        num(s.min),
        num(s.max),
        num(s.mean),
        num(s.std),
        s.zero_fraction * 100.0,
        s.nan,
        s.inf
    );
    let n = data.len();
    let head: Vec<String> = (0..n.min(8)).map(|i| num(data.get(i) as f64)).collect();
    println!(
        "first values: [{}{}]",
        head.join(", "),
        if n > 8 { ", ..." } else { "" }
    );
    if n > 8 {
        let tail: Vec<String> = (n - 4..n).map(|i| num(data.get(i) as f64)).collect();
        println!("last values:  [..., {}]", tail.join(", "));
    }
    if s.count > s.non_finite() && s.max > s.min {
        println!("histogram (finite values):");
        let bins = 10;
        let counts = candlelight::render::Histogram::of(&data, &s, bins).counts;
        data.check()?;
        let top = *counts.iter().max().unwrap_or(&1) as f64;
        for (b, c) in counts.iter().enumerate() {
            let lo = s.min + (s.max - s.min) * b as f64 / bins as f64;
            let bar = "#".repeat(((*c as f64 / top) * 40.0).ceil() as usize);
            println!("  {:>10} | {:<40} {}", num(lo), bar, c);
        }
    }
    Ok(())
}

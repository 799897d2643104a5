//! `candlelight diff A B`: compare two runs layer by layer.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use candlelight::diff::{DiffOptions, LayerDiff, NameMap, RunDiff, Status};
use candlelight::{gallery, Run};

use super::num;

/// Options of `candlelight diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Run A: the run to check (e.g. the candle port).
    pub a: PathBuf,
    /// Run B: the reference (tolerances are relative to its values).
    pub b: PathBuf,
    /// Absolute tolerance: an element agrees when |a - b| <= atol + rtol * |b|.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    /// Relative tolerance (relative to B's value).
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// Name map file: `A name = B name` lines and `strip_prefix_a: P` /
    /// `strip_prefix_b: P` lines, or the same as JSON (see the README). Names may
    /// hold wildcards: `blocks.*.attn = encoder.layer.*.attention.self` (`*` within
    /// one dot-separated segment, `**` across segments; the n-th `*` on the right is
    /// what the n-th matched on the left; exact names first, then the most specific
    /// pattern).
    #[arg(long, value_name = "FILE")]
    pub map: Option<PathBuf>,
    /// Strip this prefix from A's layer names before matching (overrides the map file's).
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix_a: Option<String>,
    /// Strip this prefix from B's layer names before matching (overrides the map file's).
    #[arg(long, value_name = "PREFIX")]
    pub strip_prefix_b: Option<String>,
    /// Layers in only one run are reported but do not count as divergent (exit code).
    #[arg(long)]
    pub ignore_missing: bool,
    /// Leave out layers whose name (in either run, as stored) matches this glob:
    /// not compared, not reported as missing. Here `*` matches any characters, dots
    /// included (`--exclude 'dropout*'`, `--exclude '*.attn.*'`). Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Write a diff gallery (A, B and A - B pictures per layer, HTML page) into DIR.
    #[arg(long, value_name = "DIR", conflicts_with = "gallery")]
    pub out: Option<PathBuf>,
    /// Write the diff gallery into the galleries root ROOT, as
    /// `ROOT/diffs/<A's gallery>~vs~<B's gallery>/`, and rewrite ROOT's index (which
    /// then links the diff from both runs' cards).
    #[arg(long, value_name = "ROOT")]
    pub gallery: Option<PathBuf>,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Exit code: 0 when every layer agrees, 1 when some diverge (errors are 2, from main).
pub fn run(args: DiffArgs) -> Result<i32> {
    let mut map = match &args.map {
        Some(p) => NameMap::from_file(p)?,
        None => NameMap::default(),
    };
    if let Some(p) = &args.strip_prefix_a {
        map.strip_prefix_a = Some(p.clone());
    }
    if let Some(p) = &args.strip_prefix_b {
        map.strip_prefix_b = Some(p.clone());
    }
    let opts = DiffOptions {
        atol: args.atol,
        rtol: args.rtol,
        map,
        ignore_missing: args.ignore_missing,
        exclude: args.exclude.clone(),
    };
    let a = Run::open(&args.a)?;
    let b = Run::open(&args.b)?;
    let d = candlelight::diff(&a, &b, &opts)?;
    for name in &d.unused_renames {
        if name.contains('*') {
            eprintln!("note: the name map pattern {name:?} renames no layer of A");
        } else {
            eprintln!("note: the name map renames {name:?}, which is not a layer of A");
        }
    }
    if let Some(out) = &args.out {
        let page = candlelight::write_diff_gallery(&d, &a, &b, out)
            .with_context(|| format!("{}: cannot write the diff gallery", out.display()))?;
        if !args.json {
            println!("diff gallery: {}", page.display());
        }
    }
    if let Some(root) = &args.gallery {
        let dir = root.join(gallery::DIFFS_DIR).join(gallery::diff_dir_name(
            &gallery::gallery_name(&args.a),
            &gallery::gallery_name(&args.b),
        ));
        let page = candlelight::write_diff_gallery(&d, &a, &b, &dir)
            .with_context(|| format!("{}: cannot write the diff gallery", dir.display()))?;
        gallery::write_index(root)
            .with_context(|| format!("{}: cannot write the index", root.display()))?;
        if !args.json {
            println!("diff gallery: {}", page.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", table(&d, &args.a, &args.b));
    }
    // What the diff cost where a run is in an object store (stderr under --json).
    for (side, run) in [("A", &a), ("B", &b)] {
        if let Some(line) = super::transfer_line(run) {
            if args.json {
                eprintln!("{side} {line}");
            } else {
                println!("{side} {line}");
            }
        }
    }
    Ok(if d.agrees() { 0 } else { 1 })
}

/// Like [`num`], but an exact zero is `0` (an exact match stands out).
fn num0(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        num(v)
    }
}

fn dtypes(l: &LayerDiff) -> String {
    match (&l.dtype_a, &l.dtype_b) {
        (Some(a), Some(b)) if a == b => a.clone(),
        (Some(a), Some(b)) => format!("{a}/{b}"),
        (Some(a), None) | (None, Some(a)) => a.clone(),
        (None, None) => "-".into(),
    }
}

fn shapes(l: &LayerDiff) -> String {
    let s = |x: &Option<Vec<usize>>| {
        x.as_deref()
            .map(candlelight::shape_str)
            .unwrap_or_else(|| "-".into())
    };
    match (&l.shape_a, &l.shape_b) {
        (Some(a), Some(b)) if a != b => format!("{} vs {}", s(&l.shape_a), s(&l.shape_b)),
        (Some(_), _) => s(&l.shape_a),
        _ => s(&l.shape_b),
    }
}

/// The table printed by `candlelight diff`: one row per layer in capture order, the
/// first divergent layer marked with `>>`, then a summary.
pub fn table(d: &RunDiff, a: &Path, b: &Path) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "A: {}\nB: {} (reference)\n",
        a.display(),
        b.display()
    ));
    out.push_str(&format!(
        "agree when |A - B| <= atol + rtol * |B|, atol {:e} rtol {:e}\n\n",
        d.atol, d.rtol
    ));
    let first = d.layers.iter().position(|l| l.diverges);
    let labels: Vec<String> = d.layers.iter().map(LayerDiff::label).collect();
    let w = labels
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let shape_w = d
        .layers
        .iter()
        .map(|l| shapes(l).len())
        .max()
        .unwrap_or(5)
        .max(5);
    out.push_str(&format!(
        "   {:>4}  {:<w$}  {:<shape_w$}  {:<9}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  STATUS\n",
        "#", "LAYER", "SHAPE", "DTYPE", "MAX|A-B|", "MEAN|A-B|", "REL L2", "COSINE", "MISMATCH"
    ));
    for (i, (l, label)) in d.layers.iter().zip(&labels).enumerate() {
        let mark = if first == Some(i) { ">>" } else { "  " };
        let pos = l
            .index_a
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        let (max, mean, rel, cos, mism) = match &l.numbers {
            Some(n) => (
                num0(n.max_abs),
                num0(n.mean_abs),
                if n.rel_l2.is_infinite() {
                    "inf".into()
                } else {
                    num0(n.rel_l2)
                },
                format!("{:.6}", n.cosine),
                n.mismatches.to_string(),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let mut status = l.status_label();
        if !l.diverges && l.status != Status::Agree {
            status.push_str(" (ignored)");
        }
        out.push_str(&format!(
            "{mark} {pos:>4}  {label:<w$}  {:<shape_w$}  {:<9}  {max:>10}  {mean:>10}  {rel:>10}  {cos:>10}  {mism:>10}  {status}\n",
            shapes(l),
            dtypes(l),
        ));
    }
    out.push('\n');
    out.push_str(&summary(d));
    out
}

/// The lines under the table: counts per status (reshaped and excluded layers
/// too) and the first divergence.
fn summary(d: &RunDiff) -> String {
    let mut out = format!("{}\n", d.summary_line());
    match d.first_divergent() {
        None => out.push_str("all layers agree\n"),
        Some(l) => out.push_str(&format!("first divergence: {}\n", describe(l))),
    }
    out
}

/// One line on why a layer diverges.
fn describe(l: &LayerDiff) -> String {
    let name = l.label();
    match l.status {
        Status::OnlyInA => format!("{name}: only in A"),
        Status::OnlyInB => format!("{name}: only in B"),
        Status::ShapeMismatch => format!("{name}: shape {}", shapes(l)),
        Status::Agree | Status::Differ => {
            let Some(n) = &l.numbers else {
                return name;
            };
            let mut s = format!(
                "{name}: {} of {} elements out of tolerance",
                n.mismatches, n.count
            );
            if l.reshaped {
                s.push_str(&format!(" (shape {}, positions in A's)", shapes(l)));
            }
            if let Some(e) = &n.first_mismatch {
                s.push_str(&format!(", first at {:?}: A={} B={}", e.position, e.a, e.b));
            }
            if let Some(e) = &n.worst {
                s.push_str(&format!(
                    "; max |A-B| {} at {:?}: A={} B={}",
                    num(n.max_abs),
                    e.position,
                    e.a,
                    e.b
                ));
            }
            if n.nan_mismatches + n.inf_mismatches > 0 {
                s.push_str(&format!(
                    "; NaN disagreements {}, Inf disagreements {}",
                    n.nan_mismatches, n.inf_mismatches
                ));
            }
            s
        }
    }
}

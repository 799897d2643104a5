//! `out/trends/<model>.html`: one page per model with at least two runs, its
//! layers' statistics across runs (trend lines) and histograms over runs, written
//! with the index. A page is rewritten only when its runs changed: its head
//! carries a key of the runs it shows (`<meta name="candlelight-trends">`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use minijinja::context;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::index::{model_anchor, newest_first, url_segment, Gallery, Group};
use super::trend_pics::{hist_png, rebin, trend_svg, Hist, Point, OVER_RUNS_BINS};
use super::{fnv1a, safe_name, TRENDS_DIR};
use crate::pages::{check_page_replaceable, fmt_num, page};
use crate::staging::write_atomic;
use crate::{Error, Result};

/// Most runs on a trends page: the last ones by step (or the newest).
pub const TRENDS_MAX_RUNS: usize = 200;
/// Largest stats.json read.
const STATS_CAP: u64 = 32 << 20;
/// Bumped when trends pages change, so every page is written again.
const TRENDS_VERSION: &str = "1";

/// The file name of a model's trends page inside `out/trends/`: the model name
/// made safe like [`super::gallery_name`] (hashed when it had to change) plus
/// `.html`; `None` for runs without a model.
pub fn trends_page_name(model: &str) -> Option<String> {
    (!model.is_empty()).then(|| format!("{}.html", safe_name(OsStr::new(model))))
}

/// Writes the trends page of every model with at least two good runs whose runs
/// changed, removes our trends pages no longer needed, and returns model → link
/// (from `out`) of every page there is. Failures are logged, never returned: the
/// index is written anyway.
pub(super) fn write_trends(out: &Path, groups: &[Group]) -> HashMap<String, String> {
    let dir = out.join(TRENDS_DIR);
    let wanted: Vec<(&Group, String)> = groups
        .iter()
        .filter(|g| g.runs.iter().filter(|r| r.1.status == "ok").count() >= 2)
        .filter_map(|g| Some((g, trends_page_name(&g.model)?)))
        .collect();
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if wanted.is_empty() {
                return HashMap::new();
            }
            if let Err(e) = std::fs::create_dir(&dir) {
                warn!("{}: cannot create it: {e}; no trends pages", dir.display());
                return HashMap::new();
            }
        }
        _ => {
            warn!("{}: not a folder; no trends pages", dir.display());
            return HashMap::new();
        }
    }
    let links = wanted
        .par_iter()
        .filter_map(|(g, file)| match write_page(out, &dir.join(file), g) {
            Ok(()) => Some((
                g.model.clone(),
                format!("{TRENDS_DIR}/{}", url_segment(file)),
            )),
            Err(e) => {
                warn!("cannot write the trends page of {:?}: {e}", g.model);
                None
            }
        })
        .collect();
    let keep: HashSet<&str> = wanted.iter().map(|(_, f)| f.as_str()).collect();
    remove_stale(&dir, &keep);
    links
}

/// Removes the pages in `dir` of ours (trends mark) that are not in `keep`.
fn remove_stale(dir: &Path, keep: &HashSet<&str>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".html") || keep.contains(name.as_str()) {
            continue;
        }
        let path = e.path();
        if check_page_replaceable(&path, "trends").is_ok() {
            if let Err(err) = std::fs::remove_file(&path) {
                warn!("cannot remove {}: {err}", path.display());
            }
        }
    }
}

/// The runs a page shows, oldest (or lowest step) first.
struct Selection<'a> {
    runs: Vec<&'a Gallery>,
    /// Each run's step when every good run of the model has a numeric `step` tag.
    steps: Option<Vec<f64>>,
}

/// A run's numeric `step` tag.
fn step(g: &Gallery) -> Option<f64> {
    let v: f64 = g.1.tags.get("step")?.trim().parse().ok()?;
    v.is_finite().then_some(v)
}

/// The good runs of `g` by step when all have one, else by creation (oldest
/// first); the last [`TRENDS_MAX_RUNS`] of them.
fn select(g: &Group) -> Selection<'_> {
    let mut runs: Vec<&Gallery> = g.runs.iter().filter(|r| r.1.status == "ok").collect();
    runs.sort_by(|a, b| newest_first(b, a));
    let all_steps: Option<Vec<f64>> = runs.iter().map(|r| step(r)).collect();
    let steps = all_steps.map(|_| {
        // Stable: runs of one step stay oldest first.
        runs.sort_by(|a, b| step(a).unwrap_or(0.0).total_cmp(&step(b).unwrap_or(0.0)));
        runs.iter()
            .map(|r| step(r).unwrap_or(0.0))
            .collect::<Vec<_>>()
    });
    let cut = runs.len().saturating_sub(TRENDS_MAX_RUNS);
    Selection {
        runs: runs.split_off(cut),
        steps: steps.map(|s| s[cut..].to_vec()),
    }
}

/// The key of what a page shows: its runs and their galleries' versions.
fn page_key(sel: &Selection<'_>) -> String {
    let mut text = format!("{TRENDS_VERSION}|{}|", sel.steps.is_some());
    for (name, m) in &sel.runs {
        text.push_str(&format!(
            "{name}|{}|{}|{}|{}|{:?}\n",
            m.rendered_at,
            m.source_mtime_ns,
            m.source_size,
            m.source_ino,
            m.tags.get("step")
        ));
    }
    format!("{:016x}", fnv1a(text.as_bytes()))
}

fn key_meta(key: &str) -> String {
    format!("<meta name=\"candlelight-trends\" content=\"{key}\">")
}

/// True when the page at `path` is ours and shows exactly what `key` says.
fn is_current(path: &Path, key: &str) -> bool {
    let mut head = Vec::with_capacity(4096);
    let read = crate::staging::open_regular(path)
        .ok()
        .and_then(|f| f.take(4096).read_to_end(&mut head).ok());
    let text = String::from_utf8_lossy(&head);
    read.is_some()
        && text.contains(&crate::pages::generator_mark("trends"))
        && text.contains(&key_meta(key))
}

/// What a trends page reads of a stats.json.
#[derive(Deserialize)]
struct StatsFile {
    layers: Vec<LayerStats>,
}

#[derive(Deserialize)]
struct LayerStats {
    index: usize,
    name: String,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    mean: Option<f64>,
    #[serde(default)]
    std: Option<f64>,
    #[serde(default)]
    zero_fraction: Option<f64>,
    #[serde(default)]
    hist: Option<Hist>,
}

/// The layers of gallery `name`'s stats.json, or why not (never trusted: size
/// capped, parsed into plain numbers and strings, histograms checked).
fn read_stats(out: &Path, name: &str) -> Result<Vec<LayerStats>> {
    let path = out.join(name).join("stats.json");
    let bytes = crate::staging::read_regular(&path, STATS_CAP)?;
    let mut f: StatsFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::bad(&path, format!("not stats.json: {e}")))?;
    for l in &mut f.layers {
        l.hist = l.hist.take().and_then(Hist::checked);
    }
    Ok(f.layers)
}

#[derive(Serialize)]
struct LayerView {
    name: String,
    index: usize,
    svg: String,
    hist: Option<(String, u32, u32, String, String)>,
    missing: usize,
}

/// Writes the trends page of `g` at `path` unless it is current.
fn write_page(out: &Path, path: &Path, g: &Group) -> Result<()> {
    let sel = select(g);
    let key = page_key(&sel);
    if is_current(path, &key) {
        return Ok(());
    }
    check_page_replaceable(path, "trends")?;
    let read: Vec<Option<Vec<LayerStats>>> = sel
        .runs
        .par_iter()
        .map(|(name, _)| {
            read_stats(out, name)
                .inspect_err(|e| warn!("{e}; left out of the trends of {:?}", g.model))
                .ok()
        })
        .collect();
    let skipped: Vec<&str> = sel
        .runs
        .iter()
        .zip(&read)
        .filter(|(_, s)| s.is_none())
        .map(|(r, _)| r.0.as_str())
        .collect();
    let labels: Vec<String> = match &sel.steps {
        Some(s) => s.iter().map(|v| fmt_step(*v)).collect(),
        None => (1..=sel.runs.len()).map(|i| i.to_string()).collect(),
    };
    let layers = layer_views(&sel, &read, &labels)?;
    let runs: Vec<(String, String, String, String)> = sel
        .runs
        .iter()
        .zip(&labels)
        .map(|((name, m), label)| {
            let href = format!("../{}/index.html", url_segment(name));
            (label.clone(), name.clone(), href, m.created.clone())
        })
        .collect();
    let html = page(
        "trends.html",
        context! {
            model => &g.model,
            key_meta => key_meta(&key),
            back => format!("../index.html#{}", model_anchor(&g.model)),
            total => g.runs.len(),
            runs => runs,
            by_step => sel.steps.is_some(),
            max_runs => TRENDS_MAX_RUNS,
            skipped => skipped,
            layers => layers,
        },
    )?;
    write_atomic(path, html.as_bytes())
}

/// A step as written: integers without a fraction.
fn fmt_step(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        fmt_num(v)
    }
}

/// One view per layer of the newest run that has stats, in its capture order.
fn layer_views(
    sel: &Selection<'_>,
    read: &[Option<Vec<LayerStats>>],
    labels: &[String],
) -> Result<Vec<LayerView>> {
    let Some((_, newest)) = sel
        .runs
        .iter()
        .zip(read)
        .filter_map(|(r, s)| Some((*r, s.as_ref()?)))
        .min_by(|a, b| newest_first(a.0, b.0))
    else {
        return Ok(Vec::new());
    };
    let lookup: Vec<HashMap<&str, &LayerStats>> = read
        .iter()
        .map(|s| {
            let mut m = HashMap::new();
            for l in s.iter().flatten() {
                m.entry(l.name.as_str()).or_insert(l);
            }
            m
        })
        .collect();
    let mut order: Vec<&LayerStats> = newest.iter().collect();
    order.sort_by_key(|l| l.index);
    let mut seen = HashSet::new();
    order.retain(|l| seen.insert(l.name.as_str()));
    let axis = if sel.steps.is_some() {
        "step"
    } else {
        "run, oldest → newest"
    };
    order
        .into_par_iter()
        .map(|l| {
            let per_run: Vec<Option<&LayerStats>> = lookup
                .iter()
                .map(|m| m.get(l.name.as_str()).copied())
                .collect();
            let points: Vec<Option<Point>> = per_run
                .iter()
                .zip(&sel.runs)
                .zip(labels)
                .map(|((s, (name, _)), label)| s.map(|s| point(s, name, label, axis)))
                .collect();
            let hists: Vec<Option<&Hist>> = per_run
                .iter()
                .map(|s| s.and_then(|s| s.hist.as_ref()))
                .collect();
            let hist = match rebin(&hists, OVER_RUNS_BINS) {
                Some((lo, hi, cols)) => {
                    let (png, w, h) = hist_png(&cols)?;
                    let uri = format!(
                        "data:image/png;base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    );
                    Some((uri, w, h, fmt_num(lo), fmt_num(hi)))
                }
                None => None,
            };
            Ok(LayerView {
                name: l.name.clone(),
                index: l.index,
                svg: trend_svg(&points, labels, axis),
                hist,
                missing: per_run.iter().filter(|s| s.is_none()).count(),
            })
        })
        .collect()
}

fn point(s: &LayerStats, run: &str, label: &str, axis: &str) -> Point {
    let v = |x: Option<f64>| x.filter(|v| v.is_finite()).unwrap_or(f64::NAN);
    let (mean, std, zero, min, max) = (v(s.mean), v(s.std), v(s.zero_fraction), v(s.min), v(s.max));
    let axis = if axis == "step" { "step" } else { "run" };
    Point {
        href: format!("../{}/index.html#l{}", url_segment(run), s.index),
        title: format!(
            "{axis} {label} · {run}\nmean {} · std {} · zeros {:.1}%\nmin {} · max {}",
            fmt_num(mean),
            fmt_num(std),
            zero * 100.0,
            fmt_num(min),
            fmt_num(max)
        ),
        mean,
        std,
        zero,
        min,
        max,
    }
}

#[cfg(test)]
#[path = "trends_tests.rs"]
mod tests;

//! `out/index.html`: every gallery in `out` grouped by model, newest first, paged
//! ([`INDEX_PAGE_RUNS`] runs a page: `index.html`, `index-2.html`, ...), with lazy
//! thumbnails, links to each model's trends page and to the diffs of each run.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::Path;

use minijinja::context;
use serde::Serialize;

use super::diffs::{list_diffs, DiffEntry};
use super::{list_galleries, safe_name, Manifest};
use crate::pages::{check_page_replaceable, page};
use crate::runfile::now_rfc3339;
use crate::staging::write_atomic;
use crate::{Error, Result};

/// Runs on one page of the index; older runs are on `index-2.html`, `index-3.html`, ...
pub const INDEX_PAGE_RUNS: usize = 100;
/// Tags shown on a run's card (the run page shows them all).
const CARD_TAGS: usize = 8;
/// The box a thumbnail is fitted into (CSS pixels).
const THUMB_BOX: (u32, u32) = (240, 170);

/// Percent-encodes everything but `[A-Za-z0-9._~-]` (one path segment of a link).
pub(super) fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One gallery: its folder name and manifest.
pub(super) type Gallery = (String, Manifest);

/// The runs of one model, newest first.
pub(super) struct Group {
    /// The model ("" for runs without one).
    pub model: String,
    /// Its galleries, newest first.
    pub runs: Vec<Gallery>,
}

/// The run file's name (what `ls` sorts by).
fn file_name(m: &Manifest) -> String {
    m.source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Newest first: by `created`, then (runs made in the same second) by the run
/// file's name as `ls` would list it, last first, then by its mtime, then by the
/// gallery name. Never by when the gallery was rendered.
pub(super) fn newest_first(a: &Gallery, b: &Gallery) -> Ordering {
    (b.1.created.cmp(&a.1.created))
        .then_with(|| file_name(&b.1).cmp(&file_name(&a.1)))
        .then_with(|| b.1.source_mtime_ns.cmp(&a.1.source_mtime_ns))
        .then_with(|| b.0.cmp(&a.0))
}

/// The galleries grouped by model: groups ordered by their newest run, newest
/// first; runs newest first within a group.
pub(super) fn group(mut found: Vec<Gallery>) -> Vec<Group> {
    found.sort_by(newest_first);
    let mut groups: Vec<Group> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for g in found {
        let i = *at.entry(g.1.model.clone()).or_insert_with(|| {
            groups.push(Group {
                model: g.1.model.clone(),
                runs: Vec::new(),
            });
            groups.len() - 1
        });
        groups[i].runs.push(g);
    }
    groups
}

/// The anchor of a model's section: `model-<safe name>` (`model-~none` for runs
/// without a model).
pub(super) fn model_anchor(model: &str) -> String {
    if model.is_empty() {
        "model-~none".into()
    } else {
        format!("model-{}", safe_name(std::ffi::OsStr::new(model)))
    }
}

/// The file name of index page `n` (1-based).
pub(super) fn page_file(n: usize) -> String {
    if n <= 1 {
        "index.html".into()
    } else {
        format!("index-{n}.html")
    }
}

#[derive(Serialize)]
struct Card {
    name: String,
    href: String,
    thumb: Option<(String, u32, u32)>,
    model: String,
    created: String,
    layers: usize,
    rendered_at: String,
    render_ms: u64,
    source: String,
    summary: Option<String>,
    tags: Vec<(String, String)>,
    diffs: Vec<DiffLink>,
    error: Option<String>,
}

#[derive(Serialize, Clone)]
struct DiffLink {
    other: String,
    href: String,
    agrees: Option<bool>,
    summary: String,
}

#[derive(Serialize)]
struct Section {
    label: String,
    anchor: String,
    count: usize,
    newest: String,
    trends: Option<String>,
    continued: bool,
    runs: Vec<Card>,
}

#[derive(Serialize)]
struct ModelRow {
    label: String,
    href: String,
    count: usize,
    newest: String,
    trends: Option<String>,
}

#[derive(Serialize)]
struct Elsewhere {
    page: usize,
    href: String,
    runs: Vec<(String, String)>,
}

/// Rewrites the index pages of `out` atomically from all manifests found in
/// `out/*/manifest.json` (dot folders ignored): runs grouped by model, newest
/// first (`newest_first`), [`INDEX_PAGE_RUNS`] a page; writes the trends pages
/// of models whose runs changed (`out/trends/`) and lists the diff galleries of
/// `out/diffs/`. Index and trends pages of ours no longer needed are removed.
pub fn write_index(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let groups = group(list_galleries(out)?);
    let trends = super::trends::write_trends(out, &groups);
    let diffs = list_diffs(out);
    let mut by_run: HashMap<&str, Vec<DiffLink>> = HashMap::new();
    for d in &diffs {
        for (me, other) in [(&d.a, &d.b), (&d.b, &d.a)] {
            by_run.entry(me).or_default().push(DiffLink {
                other: other.clone(),
                href: d.href.clone(),
                agrees: d.agrees,
                summary: d.summary.clone(),
            });
        }
    }
    // Every run's page, in page order.
    let flat: Vec<(usize, &Gallery)> = groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| g.runs.iter().map(move |r| (gi, r)))
        .collect();
    let pages = flat.len().div_ceil(INDEX_PAGE_RUNS).max(1);
    let page_of = |i: usize| i / INDEX_PAGE_RUNS + 1;
    let models: Vec<ModelRow> = {
        let mut first = 0;
        groups
            .iter()
            .map(|g| {
                let row = ModelRow {
                    label: model_label(&g.model),
                    href: format!("{}#{}", page_file(page_of(first)), model_anchor(&g.model)),
                    count: g.runs.len(),
                    newest: g.runs[0].1.created.clone(),
                    trends: trends.get(&g.model).cloned(),
                };
                first += g.runs.len();
                row
            })
            .collect()
    };
    let updated = now_rfc3339();
    for n in (1..=pages).rev() {
        let lo = (n - 1) * INDEX_PAGE_RUNS;
        let slice = &flat[lo.min(flat.len())..(lo + INDEX_PAGE_RUNS).min(flat.len())];
        let sections = sections(out, &groups, slice, lo, &trends, &by_run, &flat);
        let elsewhere = if n == 1 {
            elsewhere(&flat, pages)
        } else {
            Vec::new()
        };
        let html = page(
            "index.html",
            context! {
                page => n,
                pages => (1..=pages).map(|k| (k, page_file(k))).collect::<Vec<_>>(),
                total => flat.len(),
                sections => sections,
                models => &models,
                diffs => if n == 1 { diffs.as_slice() } else { &[] as &[DiffEntry] },
                diff_count => diffs.len(),
                elsewhere => elsewhere,
                updated => &updated,
            },
        )?;
        let path = out.join(page_file(n));
        check_page_replaceable(&path, "index")?;
        write_atomic(&path, html.as_bytes())?;
    }
    remove_stale_pages(out, pages);
    Ok(())
}

fn model_label(model: &str) -> String {
    if model.is_empty() {
        "(no model)".into()
    } else {
        model.to_string()
    }
}

/// The sections of one page: `slice` (runs `lo..` of `flat`) cut by model.
fn sections(
    out: &Path,
    groups: &[Group],
    slice: &[(usize, &Gallery)],
    lo: usize,
    trends: &HashMap<String, String>,
    diffs: &HashMap<&str, Vec<DiffLink>>,
    flat: &[(usize, &Gallery)],
) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, (gi, (name, m))) in slice.iter().enumerate() {
        if sections.last().is_none() || slice[i - 1].0 != *gi {
            let g = &groups[*gi];
            sections.push(Section {
                label: model_label(&g.model),
                anchor: model_anchor(&g.model),
                count: g.runs.len(),
                newest: g.runs[0].1.created.clone(),
                trends: trends.get(&g.model).cloned(),
                continued: lo + i > 0 && flat[lo + i - 1].0 == *gi,
                runs: Vec::new(),
            });
        }
        let card = card(out, name, m, diffs.get(name.as_str()));
        sections.last_mut().expect("pushed above").runs.push(card);
    }
    sections
}

/// Page 1's directory of the runs on the other pages: `#run-<name>` anchors (the
/// run pages link there) that lead to the run's card on its page.
fn elsewhere(flat: &[(usize, &Gallery)], pages: usize) -> Vec<Elsewhere> {
    (2..=pages)
        .map(|n| {
            let lo = (n - 1) * INDEX_PAGE_RUNS;
            let href = page_file(n);
            let runs = flat[lo..(lo + INDEX_PAGE_RUNS).min(flat.len())]
                .iter()
                .map(|(_, (name, _))| (name.clone(), format!("{href}#run-{}", url_segment(name))))
                .collect();
            Elsewhere {
                page: n,
                href,
                runs,
            }
        })
        .collect()
}

fn card(out: &Path, name: &str, m: &Manifest, diffs: Option<&Vec<DiffLink>>) -> Card {
    let base = url_segment(name);
    // A thumbnail path from a manifest is used only if it is a plain relative path
    // inside the gallery that exists.
    let thumb = m.thumbnail.as_deref().and_then(|t| {
        let p = Path::new(t);
        let plain = !t.is_empty()
            && p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        let file = out.join(name).join(p);
        (plain && file.is_file()).then(|| {
            let segs: Vec<String> = p
                .components()
                .map(|c| url_segment(&c.as_os_str().to_string_lossy()))
                .collect();
            let (w, h) = fit(png_size(&file).unwrap_or(THUMB_BOX));
            (format!("{base}/{}", segs.join("/")), w, h)
        })
    });
    let cut = |s: &str, n: usize| -> String {
        let mut c: String = s.chars().take(n).collect();
        if c.len() < s.len() {
            c.push('…');
        }
        c
    };
    Card {
        name: name.to_string(),
        href: format!("{base}/index.html"),
        thumb,
        model: m.model.clone(),
        created: m.created.clone(),
        layers: m.layers,
        rendered_at: m.rendered_at.clone(),
        render_ms: m.render_ms,
        source: file_name(m),
        summary: m.summary.clone(),
        tags: m
            .tags
            .iter()
            .take(CARD_TAGS)
            .map(|(k, v)| (cut(k, 40), cut(v, 80)))
            .collect(),
        diffs: diffs.cloned().unwrap_or_default(),
        error: (m.status != "ok")
            .then(|| m.error.clone().unwrap_or_else(|| "unknown error".into())),
    }
}

/// Width and height of a PNG file, from its header (24 bytes read).
fn png_size(path: &Path) -> Option<(u32, u32)> {
    use std::io::Read;
    let mut head = [0u8; 24];
    crate::staging::open_regular(path)
        .ok()?
        .read_exact(&mut head)
        .ok()?;
    if &head[..8] != b"\x89PNG\r\n\x1a\n" || &head[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(head[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(head[20..24].try_into().ok()?);
    (w > 0 && h > 0).then_some((w, h))
}

/// `(w, h)` scaled down to fit [`THUMB_BOX`], aspect kept.
fn fit((w, h): (u32, u32)) -> (u32, u32) {
    let s = (THUMB_BOX.0 as f64 / w as f64)
        .min(THUMB_BOX.1 as f64 / h as f64)
        .min(1.0);
    (
        ((w as f64 * s).round() as u32).max(1),
        ((h as f64 * s).round() as u32).max(1),
    )
}

/// Removes `index-N.html` for `N > pages` when it carries our index mark.
fn remove_stale_pages(out: &Path, pages: usize) {
    let Ok(rd) = std::fs::read_dir(out) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_prefix("index-")?.strip_suffix(".html"))
            .filter(|d| !d.is_empty() && d.len() < 10 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok())
        else {
            continue;
        };
        let path = e.path();
        if n >= 2 && n > pages && check_page_replaceable(&path, "index").is_ok() {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove {}: {err}", path.display());
            }
        }
    }
}

#[cfg(test)]
#[path = "index_tests.rs"]
pub(super) mod tests;

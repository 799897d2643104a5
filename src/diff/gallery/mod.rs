//! The diff gallery: a static HTML page comparing two runs, per layer A, B and
//! A − B pictures side by side, the first divergent layer highlighted, layers
//! sortable by divergence (a few lines of inline JS; without JS the page shows
//! capture order and a ranking table).
//!
//! Layout of `out/`:
//!
//! ```text
//! index.html                 the page
//! diff.json                  the RunDiff as JSON (also marks the folder as a diff gallery)
//! layers/NNN-<name>.a.png    A's picture (NNN = row in capture order)
//! layers/NNN-<name>.b.png    B's picture, same colour scale as A's
//! layers/NNN-<name>.d.png    A − B on a diverging scale symmetric around 0
//! ```
//!
//! A and B share one colour scale per channel (the range over both), so a visible
//! difference is a real one. The `layers/` folder is built aside and swapped in;
//! an existing `layers/` folder is replaced only when `diff.json` says the folder
//! is a previous diff gallery. Nothing is written outside `out/`.

mod bars;

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::{LayerDiff, RunDiff, Status};
use crate::pages::{self, fmt_num as fmt, layer_file_stem};
use crate::render::{self, Colormap, Layout, Mapping, RenderOptions, BLANK};
use crate::runfile::{shape_str, Run};
use crate::staging::{self, write_atomic, Kind, Temp};
use crate::values::LayerData;
use crate::{Error, Result};

/// Pixel budget of one diff picture (three per layer).
const MAX_PIXELS: usize = 360_000;
/// Writes the diff gallery of `d` (computed from `a` and `b`) into `out`; returns
/// the path of its `index.html`.
///
/// `out` may be a new folder, an empty one, or an earlier diff gallery (its
/// `index.html` carries candlelight's diff mark); anything else already there
/// (a run gallery, a user's page) is refused with [`Error::NotOurs`].
pub fn write_diff_gallery(d: &RunDiff, a: &Run, b: &Run, out: &Path) -> Result<PathBuf> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if !m.is_dir() => {
            return Err(Error::NotOurs {
                path: out.to_path_buf(),
                msg: "exists and is not a folder".into(),
            })
        }
        _ => {}
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let page = out.join("index.html");
    let layers_dir = out.join("layers");
    let json = out.join("diff.json");
    if page.exists() || json.exists() || layers_dir.exists() {
        // An earlier diff gallery is ours to replace; anything else is not.
        if !page.exists() {
            let there = if layers_dir.exists() {
                &layers_dir
            } else {
                &json
            };
            return Err(Error::NotOurs {
                path: there.clone(),
                msg: "exists without a candlelight diff page beside it; not replacing it".into(),
            });
        }
        pages::check_page_replaceable(&page, "diff")?;
        if let Ok(m) = std::fs::symlink_metadata(&layers_dir) {
            if !m.is_dir() {
                return Err(Error::NotOurs {
                    path: layers_dir,
                    msg: "exists and is not a folder of a diff gallery; not replacing it".into(),
                });
            }
        }
    }
    let mut tmp = Temp::dir(out, Kind::Stage)?;
    let rows = render_rows(d, a, b, tmp.path())?;
    staging::replace_dir(&mut tmp, &layers_dir)?;
    drop(tmp);
    let json_bytes = serde_json::to_vec_pretty(d).expect("a RunDiff serializes");
    write_atomic(&json, &json_bytes)?;
    write_atomic(&page, page_html(d, &rows)?.as_bytes())?;
    Ok(page)
}

/// One layer's card on the page (strings preformatted; the template escapes them).
#[derive(Serialize)]
struct Row {
    row: usize,
    anchor: String,
    label: String,
    kind: String,
    status: String,
    status_class: &'static str,
    diverges: bool,
    first: bool,
    shape: String,
    dtype: String,
    max_abs: String,
    mean_abs: String,
    rel_l2: String,
    cosine: String,
    mismatches: String,
    worst: String,
    first_mismatch: String,
    nan_inf: String,
    /// Sort keys for the inline JS (numbers as text JS reads with parseFloat).
    key_rel: String,
    key_max: String,
    pic_a: Option<Picture>,
    pic_b: Option<Picture>,
    pic_d: Option<Picture>,
    /// `[N, classes]`: sample 0 of both runs as bars (instead of pictures).
    bars: Option<bars::PairBars>,
}

#[derive(Serialize)]
struct Picture {
    file: String,
    width: u32,
    height: u32,
    scale: String,
}

fn sort_key(v: f64) -> String {
    if v.is_nan() {
        "-1".into()
    } else if v.is_infinite() {
        "Infinity".into()
    } else {
        format!("{v:e}")
    }
}

fn render_rows(d: &RunDiff, a: &Run, b: &Run, dir: &Path) -> Result<Vec<Row>> {
    let first = d.layers.iter().position(|l| l.diverges);
    let mut rows = Vec::with_capacity(d.layers.len());
    // Token axes are labelled with A's tokens (B's when A has none).
    let tokens = a.info().tokens().or_else(|| b.info().tokens());
    for (i, l) in d.layers.iter().enumerate() {
        let stem = layer_file_stem(i, l.name());
        let da = l.index_a.map(|k| a.data_at(k)).transpose()?;
        let db = l.index_b.map(|k| b.data_at(k)).transpose()?;
        let (pic_a, pic_b, pic_d) = pictures(l, da.as_ref(), db.as_ref(), dir, &stem, &tokens)?;
        let pair = row_bars(d, l, da.as_ref(), db.as_ref());
        for data in da.iter().chain(db.iter()) {
            data.check()?;
        }
        let n = l.numbers.as_ref();
        let element = |e: Option<&crate::diff::Element>| {
            e.map(|e| format!("{:?}: A={} B={}", e.position, e.a, e.b))
                .unwrap_or_default()
        };
        let (rel, max) = match n {
            Some(n) => (n.rel_l2, n.max_abs),
            None if l.diverges => (f64::INFINITY, f64::INFINITY),
            None => (f64::NAN, f64::NAN),
        };
        rows.push(Row {
            row: i,
            anchor: format!("layer-{i}"),
            label: l.label(),
            kind: l.kind.clone().unwrap_or_default(),
            status: l.status_label(),
            status_class: match l.status {
                Status::Agree => "agree",
                _ if !l.diverges => "ignored",
                _ => "diverge",
            },
            diverges: l.diverges,
            first: first == Some(i),
            shape: shape_note(l),
            dtype: match (&l.dtype_a, &l.dtype_b) {
                (Some(x), Some(y)) if x != y => format!("{x} / {y}"),
                (Some(x), _) | (None, Some(x)) => x.clone(),
                (None, None) => "-".into(),
            },
            max_abs: n.map(|n| fmt(n.max_abs)).unwrap_or_else(|| "-".into()),
            mean_abs: n.map(|n| fmt(n.mean_abs)).unwrap_or_else(|| "-".into()),
            rel_l2: n.map(|n| fmt(n.rel_l2)).unwrap_or_else(|| "-".into()),
            cosine: n
                .map(|n| format!("{:.6}", n.cosine))
                .unwrap_or_else(|| "-".into()),
            mismatches: n
                .map(|n| format!("{} of {}", n.mismatches, n.count))
                .unwrap_or_else(|| "-".into()),
            worst: element(n.and_then(|n| n.worst.as_ref())),
            first_mismatch: element(n.and_then(|n| n.first_mismatch.as_ref())),
            nan_inf: n
                .filter(|n| n.nan_a + n.nan_b + n.inf_a + n.inf_b > 0)
                .map(|n| {
                    format!(
                        "NaN A {} B {} (disagree {}), Inf A {} B {} (disagree {})",
                        n.nan_a, n.nan_b, n.nan_mismatches, n.inf_a, n.inf_b, n.inf_mismatches
                    )
                })
                .unwrap_or_default(),
            key_rel: sort_key(rel),
            key_max: sort_key(max),
            pic_a,
            pic_b,
            pic_d,
            bars: pair,
        });
    }
    Ok(rows)
}

/// The shape(s) of a layer on the page.
fn shape_note(l: &LayerDiff) -> String {
    match (&l.shape_a, &l.shape_b) {
        (Some(x), Some(y)) if l.reshaped => format!(
            "{} vs {} (only leading 1s differ: compared element by element, positions in A's shape)",
            shape_str(x),
            shape_str(y)
        ),
        (Some(x), Some(y)) if x != y => format!("{} vs {}", shape_str(x), shape_str(y)),
        (Some(x), _) | (None, Some(x)) => shape_str(x),
        (None, None) => "-".into(),
    }
}

/// Bars of both runs for a `[N, classes]` layer of the same shape on both sides.
fn row_bars(
    d: &RunDiff,
    l: &LayerDiff,
    da: Option<&LayerData<'_>>,
    db: Option<&LayerData<'_>>,
) -> Option<bars::PairBars> {
    match (da, db, &l.shape_a, &l.shape_b) {
        (Some(x), Some(y), Some(sa), Some(sb)) if sa == sb => {
            bars::pair_bars(x, y, sa, |p, q| agrees(p, q, d.atol, d.rtol))
        }
        _ => None,
    }
}

/// The diff's element test: |a − b| ≤ atol + rtol · |b|; NaN agrees with NaN,
/// an infinity with the same infinity.
fn agrees(a: f32, b: f32, atol: f64, rtol: f64) -> bool {
    if a.is_finite() && b.is_finite() {
        ((a as f64) - (b as f64)).abs() <= atol + rtol * (b as f64).abs()
    } else {
        (a.is_nan() && b.is_nan()) || a == b
    }
}

type Pictures = (Option<Picture>, Option<Picture>, Option<Picture>);

fn save_png(img: &RgbImage, dir: &Path, file: String, scale: String) -> Result<Picture> {
    let path = dir.join(&file);
    std::fs::write(&path, render::encode_png(img)?).map_err(|e| Error::io(&path, e))?;
    Ok(Picture {
        file: format!("layers/{file}"),
        width: img.width(),
        height: img.height(),
        scale,
    })
}

/// A, B and A − B pictures of one layer. Geometry and colours are the galleries'
/// ([`render::layout`], [`Colormap`]); A and B share one colour scale per channel
/// (the range over both), A − B uses RdBu on one range symmetric around 0. A layer
/// on one side only (or with a different element count) is drawn by the shared
/// renderer alone.
fn pictures(
    l: &LayerDiff,
    da: Option<&LayerData<'_>>,
    db: Option<&LayerData<'_>>,
    dir: &Path,
    stem: &str,
    tokens: &Option<Vec<Vec<String>>>,
) -> Result<Pictures> {
    // Smaller than the galleries' pictures: three of them sit side by side.
    let opts = RenderOptions {
        max_pixels: MAX_PIXELS,
        min_cell: 40,
        min_side: 200,
        tokens: tokens.clone(),
        ..RenderOptions::default()
    };
    let file = |suffix: &str| format!("{stem}.{suffix}.png");
    let (da, db) = match (da, db) {
        (Some(da), Some(db)) if da.len() == db.len() => (da, db),
        _ => {
            let a = single(da, &l.shape_a, &opts, dir, &file("a"))?;
            let b = single(db, &l.shape_b, &opts, dir, &file("b"))?;
            return Ok((a, b, None));
        }
    };
    let shape = l.shape_a.clone().unwrap_or_else(|| vec![da.len()]);
    let layout = render::layout(&shape, &opts)?;
    let tiles = pair_tiles(da, db, &layout);
    let ranges: Vec<Option<(f32, f32)>> = tiles
        .iter()
        .map(|t| union(render::finite_range(&t.a), render::finite_range(&t.b)))
        .collect();
    let all = ranges
        .iter()
        .flatten()
        .copied()
        .reduce(|x, y| union(Some(x), Some(y)).expect("some"));
    let cm = Colormap::Auto.resolve(all.is_some_and(|r| r.0 < 0.0));
    let maps: Vec<Mapping> = ranges.iter().map(|r| Mapping::new(cm, *r, None)).collect();
    let scale = match all {
        Some((lo, hi)) => format!(
            "{cm}, each channel on its own range, the same for A and B; {} .. {}",
            fmt(lo as f64),
            fmt(hi as f64)
        ),
        None => "no finite value".into(),
    };
    let side = |f: fn(&PairTile) -> &[f32]| tiles.iter().map(f).collect::<Vec<_>>();
    let (rows, cols) = render::token_axes(&shape, render::sample_tokens(&opts));
    // Token labels in the margins and channel numbers, as in the run gallery.
    let framed = |img: RgbImage| {
        let mut l = layout.clone();
        let mut img = match (rows, cols) {
            (None, None) => img,
            _ => render::token_margins(&img, &mut l, rows, cols, render::widest_label(&opts)),
        };
        render::number_cells(&mut img, &l);
        img
    };
    let ia = framed(render::paint(&layout, &side(|t| &t.a), &maps, cm));
    let ib = framed(render::paint(&layout, &side(|t| &t.b), &maps, cm));
    let m = max_abs_diff(&tiles);
    let dmap = Mapping::new(Colormap::RdBu, Some((-m, m)), None);
    let id = framed(render::paint(
        &layout,
        &side(|t| &t.d),
        &vec![dmap; tiles.len()],
        Colormap::RdBu,
    ));
    let dscale = diff_scale_note(m);
    Ok((
        Some(save_png(&ia, dir, file("a"), scale.clone())?),
        Some(save_png(&ib, dir, file("b"), scale)?),
        Some(save_png(&id, dir, file("d"), dscale)?),
    ))
}

/// Largest finite |A − B| shown.
fn max_abs_diff(tiles: &[PairTile]) -> f32 {
    tiles
        .iter()
        .flat_map(|t| t.d.iter())
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// Each tile of both layers reduced as `layout` shows it, with A − B.
fn pair_tiles(da: &LayerData<'_>, db: &LayerData<'_>, layout: &render::Layout) -> Vec<PairTile> {
    use rayon::prelude::*;
    (0..layout.tiles)
        .into_par_iter()
        .map(|t| reduce_pair(da, db, layout, layout.offset + t * layout.tile_len))
        .collect()
}

fn diff_scale_note(m: f32) -> String {
    if m > 0.0 {
        format!(
            "rdbu: red A > B, blue A < B, white equal; +/-{} (largest shown)",
            fmt(m as f64)
        )
    } else {
        "no difference in the values shown".into()
    }
}

/// One side's picture alone, by the shared renderer (a layer on one side only, or
/// with a different element count).
fn single(
    data: Option<&LayerData<'_>>,
    shape: &Option<Vec<usize>>,
    opts: &RenderOptions,
    dir: &Path,
    file: &str,
) -> Result<Option<Picture>> {
    let (Some(data), Some(shape)) = (data, shape) else {
        return Ok(None);
    };
    let pic = render::render(data, shape, opts)?;
    let scale = match pic.range {
        Some((lo, hi)) => format!(
            "{}, each channel on its own range; {} .. {}",
            pic.colormap,
            fmt(lo as f64),
            fmt(hi as f64)
        ),
        None => "no finite value".into(),
    };
    save_png(&pic.image, dir, file.to_string(), scale).map(Some)
}

/// One grid cell's values as shown: A and B (box means when the layout reduces,
/// NaN where a non-finite value fell, [`BLANK`] past the end) and A − B (the
/// signed difference of the pair with the largest |A − B| in each block, so a
/// single divergent element stays visible; NaN where the pair disagrees on NaN/Inf).
struct PairTile {
    a: Vec<f32>,
    b: Vec<f32>,
    d: Vec<f32>,
}

fn reduce_pair(da: &LayerData<'_>, db: &LayerData<'_>, l: &Layout, start: usize) -> PairTile {
    let (h, w, len) = (l.tile_h, l.tile_w, l.tile_len);
    let (dy, dx) = (l.y.down, l.x.down);
    let (rh, rw) = (h.div_ceil(dy), w.div_ceil(dx));
    let mut t = PairTile {
        a: vec![BLANK; rh * rw],
        b: vec![BLANK; rh * rw],
        d: vec![BLANK; rh * rw],
    };
    // One read per band of `dy` rows (one output row) of each side.
    let (mut ra, mut rb) = (vec![0f32; dy * w], vec![0f32; dy * w]);
    // Per output column: sums and counts of finite A and B, flags, the extreme difference.
    let mut acc = vec![Cell::default(); rw];
    for ry in 0..rh {
        acc.fill(Cell::default());
        let s = ry * dy * w;
        if s >= len {
            break;
        }
        let n = ((((ry + 1) * dy).min(h) - ry * dy) * w).min(len - s);
        da.read_into(start + s, &mut ra[..n]);
        db.read_into(start + s, &mut rb[..n]);
        for (k, (&x, &y)) in ra[..n].iter().zip(&rb[..n]).enumerate() {
            acc[(k % w) / dx].add(x, y);
        }
        for (oc, c) in acc.iter().enumerate() {
            if c.n == 0 {
                continue;
            }
            let i = ry * rw + oc;
            t.a[i] = c.mean_a();
            t.b[i] = c.mean_b();
            t.d[i] = if c.bad_d { f32::NAN } else { c.d };
        }
    }
    t
}

#[derive(Clone, Copy, Default)]
struct Cell {
    n: u32,
    sa: f64,
    na: u32,
    bad_a: bool,
    sb: f64,
    nb: u32,
    bad_b: bool,
    d: f32,
    bad_d: bool,
}

impl Cell {
    fn add(&mut self, x: f32, y: f32) {
        self.n += 1;
        if x.is_finite() {
            self.sa += x as f64;
            self.na += 1;
        } else {
            self.bad_a = true;
        }
        if y.is_finite() {
            self.sb += y as f64;
            self.nb += 1;
        } else {
            self.bad_b = true;
        }
        if x.is_finite() && y.is_finite() {
            let d = x - y;
            if d.abs() > self.d.abs() {
                self.d = d;
            }
        } else if !(x.is_nan() && y.is_nan()) && x != y {
            self.bad_d = true;
        }
    }

    fn mean_a(&self) -> f32 {
        if self.bad_a || self.na == 0 {
            f32::NAN
        } else {
            (self.sa / self.na as f64) as f32
        }
    }

    fn mean_b(&self) -> f32 {
        if self.bad_b || self.nb == 0 {
            f32::NAN
        } else {
            (self.sb / self.nb as f64) as f32
        }
    }
}

fn union(a: Option<(f32, f32)>, b: Option<(f32, f32)>) -> Option<(f32, f32)> {
    match (a, b) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
        (a, None) => a,
        (None, b) => b,
    }
}

fn page_html(d: &RunDiff, rows: &[Row]) -> Result<String> {
    // Ranking: divergent first, then by rel L2, max |A - B|, capture order.
    let key = |r: &Row| {
        let f = |s: &str| match s {
            "Infinity" => f64::INFINITY,
            s => s.parse::<f64>().unwrap_or(-1.0),
        };
        (r.diverges, f(&r.key_rel), f(&r.key_max))
    };
    let mut ranked: Vec<&Row> = rows.iter().collect();
    ranked.sort_by(|x, y| {
        let (kx, ky) = (key(x), key(y));
        ky.0.cmp(&kx.0)
            .then(ky.1.total_cmp(&kx.1))
            .then(ky.2.total_cmp(&kx.2))
            .then(x.row.cmp(&y.row))
    });
    let side_name = |s: &crate::diff::RunSide| {
        s.path
            .as_ref()
            .and_then(|p| p.file_stem())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| s.id.clone())
    };
    let side_path = |s: &crate::diff::RunSide| {
        s.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("(in memory) {}", s.id))
    };
    let summary = format!(
        "{}{}",
        d.summary_line(),
        if d.agrees() { " — all agree" } else { "" }
    );
    pages::page(
        "diff.html",
        minijinja::context! {
        a_name => side_name(&d.a),
        b_name => side_name(&d.b),
        a_path => side_path(&d.a),
        b_path => side_path(&d.b),
        atol => format!("{:e}", d.atol),
        rtol => format!("{:e}", d.rtol),
        ignore_missing => d.ignore_missing,
        exclude => d.exclude.join(", "),
        summary => summary,
        first => rows.iter().find(|r| r.first),
        rows => rows,
        ranked => ranked,
        },
    )
}

#[cfg(test)]
mod tests;

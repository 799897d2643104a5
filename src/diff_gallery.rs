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

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::diff::{LayerDiff, RunDiff, Status};
use crate::runfile::{sanitize_id, shape_str, write_atomic, Run};
use crate::values::LayerData;
use crate::{Error, Result};

/// Longest side of a picture when the layer is small (enlarged by an integer factor
/// to at least this, nearest neighbour).
const TARGET: usize = 300;
/// Longest side of a picture at most (larger layers are sampled).
const MAX_SIDE: usize = 480;
/// NaN and ±Inf.
const FLAG: Rgb<u8> = Rgb([255, 0, 255]);
const SEPARATOR: Rgb<u8> = Rgb([40, 40, 40]);
const BACKGROUND: Rgb<u8> = Rgb([128, 128, 128]);

/// Writes the diff gallery of `d` (computed from `a` and `b`) into `out`; returns
/// the path of its `index.html`.
pub fn write_diff_gallery(d: &RunDiff, a: &Run, b: &Run, out: &Path) -> Result<PathBuf> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: exists and is not a folder",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let layers_dir = out.join("layers");
    if layers_dir.exists() && !out.join("diff.json").is_file() {
        return Err(Error::Invalid(format!(
            "{}: exists and is not from a candlelight diff gallery (no diff.json beside it); choose another --out",
            layers_dir.display()
        )));
    }
    let pid = std::process::id();
    let tmp = out.join(format!(".layers.tmp-{pid}"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let rows = match render_rows(d, a, b, &tmp) {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if layers_dir.exists() {
        let old = out.join(format!(".layers.old-{pid}"));
        std::fs::rename(&layers_dir, &old).map_err(|e| Error::io(&layers_dir, e))?;
        std::fs::rename(&tmp, &layers_dir).map_err(|e| Error::io(&layers_dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, &layers_dir).map_err(|e| Error::io(&layers_dir, e))?;
    }
    let json = serde_json::to_vec_pretty(d).expect("a RunDiff serializes");
    write_atomic(&out.join("diff.json"), &json)?;
    let page = out.join("index.html");
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
    status: &'static str,
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
}

#[derive(Serialize)]
struct Picture {
    file: String,
    width: u32,
    height: u32,
    scale: String,
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
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
    for (i, l) in d.layers.iter().enumerate() {
        let stem = format!("{i:03}-{}", sanitize_id(l.name()));
        let da = l.index_a.map(|k| a.data_at(k)).transpose()?;
        let db = l.index_b.map(|k| b.data_at(k)).transpose()?;
        let (pic_a, pic_b, pic_d) = pictures(l, da.as_ref(), db.as_ref(), dir, &stem)?;
        if let Some(k) = l.index_a {
            a.release(k, 0..usize::MAX);
        }
        if let Some(k) = l.index_b {
            b.release(k, 0..usize::MAX);
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
            status: l.status.label(),
            status_class: match l.status {
                Status::Agree => "agree",
                _ if !l.diverges => "ignored",
                _ => "diverge",
            },
            diverges: l.diverges,
            first: first == Some(i),
            shape: match (&l.shape_a, &l.shape_b) {
                (Some(x), Some(y)) if x != y => format!("{} vs {}", shape_str(x), shape_str(y)),
                (Some(x), _) | (None, Some(x)) => shape_str(x),
                (None, None) => "-".into(),
            },
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
        });
    }
    Ok(rows)
}

type Pictures = (Option<Picture>, Option<Picture>, Option<Picture>);

fn pictures(
    l: &LayerDiff,
    da: Option<&LayerData<'_>>,
    db: Option<&LayerData<'_>>,
    dir: &Path,
    stem: &str,
) -> Result<Pictures> {
    let save = |img: &RgbImage, suffix: &str, scale: String| -> Result<Picture> {
        let file = format!("{stem}.{suffix}.png");
        let path = dir.join(&file);
        img.save_with_format(&path, image::ImageFormat::Png)
            .map_err(|e| Error::Image {
                path: path.clone(),
                msg: e.to_string(),
            })?;
        Ok(Picture {
            file: format!("layers/{file}"),
            width: img.width(),
            height: img.height(),
            scale,
        })
    };
    let same_count = matches!((da, db), (Some(x), Some(y)) if x.len() == y.len());
    match (da, db) {
        (Some(da), Some(db)) if same_count => {
            let shape = l.shape_a.as_deref().unwrap_or(&[]);
            let grid = Grid::new(shape, da.len());
            let va = grid.gather(|i| da.get(i));
            let vb = grid.gather(|i| db.get(i));
            let ranges = grid.channel_ranges(&[&va, &vb]);
            let (ia, scale) = grid.paint_shared(&va, &ranges);
            let (ib, _) = grid.paint_shared(&vb, &ranges);
            let vd: Vec<f32> = va.iter().zip(&vb).map(|(x, y)| x - y).collect();
            let (id, dscale) = grid.paint_diverging(&vd);
            Ok((
                Some(save(&ia, "a", scale.clone())?),
                Some(save(&ib, "b", scale)?),
                Some(save(&id, "d", dscale)?),
            ))
        }
        _ => {
            let one = |data: Option<&LayerData<'_>>,
                       shape: Option<&Vec<usize>>,
                       suffix: &str|
             -> Result<Option<Picture>> {
                let Some(data) = data else { return Ok(None) };
                let grid = Grid::new(shape.map(Vec::as_slice).unwrap_or(&[]), data.len());
                let v = grid.gather(|i| data.get(i));
                let ranges = grid.channel_ranges(&[&v]);
                let (img, scale) = grid.paint_shared(&v, &ranges);
                Ok(Some(save(&img, suffix, scale)?))
            };
            Ok((
                one(da, l.shape_a.as_ref(), "a")?,
                one(db, l.shape_b.as_ref(), "b")?,
                None,
            ))
        }
    }
}

/// Where each output pixel of a picture comes from: tiles of channels for
/// `[N, C, H, W]` (first sample), a `T × D` heatmap for `[N, T, D]`, anything else
/// folded into a near-square. Only the pixels drawn are ever read.
struct Grid {
    width: usize,
    height: usize,
    /// Per output pixel: (element index, tile) or None for separators/background.
    pixels: Vec<Option<(usize, usize)>>,
    tiles: usize,
}

impl Grid {
    fn new(shape: &[usize], len: usize) -> Grid {
        // (tiles, tile height, tile width, elements per tile, used elements)
        let (tiles, th, tw) = match shape {
            [_, c, h, w] if *c * *h * *w > 0 => (*c, *h, *w),
            [_, t, d] if *t * *d > 0 => (1, *t, *d),
            _ => {
                let n = match shape {
                    [_, d] => (*d).min(len),
                    _ => len,
                };
                let w = (n as f64).sqrt().ceil().max(1.0) as usize;
                (1, n.div_ceil(w).max(1), w)
            }
        };
        let per_tile = th * tw;
        let flat_fold = !matches!(shape, [_, _, _, _] | [_, _, _]);
        let used = if flat_fold {
            match shape {
                [_, d] => (*d).min(len),
                _ => len,
            }
        } else {
            (tiles * per_tile).min(len)
        };
        let cols = (tiles as f64).sqrt().ceil().max(1.0) as usize;
        let rows = tiles.div_ceil(cols).max(1);
        let sep = usize::from(tiles > 1);
        let lw = cols * tw + (cols - 1) * sep;
        let lh = rows * th + (rows - 1) * sep;
        let longest = lw.max(lh).max(1);
        let (width, height) = if longest < TARGET {
            let f = TARGET.div_ceil(longest).min(2 * TARGET / longest).max(1);
            (lw * f, lh * f)
        } else if longest <= MAX_SIDE {
            (lw, lh)
        } else {
            (
                (lw * MAX_SIDE / longest).max(1),
                (lh * MAX_SIDE / longest).max(1),
            )
        };
        let mut pixels = Vec::with_capacity(width * height);
        for oy in 0..height {
            let ly = oy * lh / height;
            let (tr, y, in_y) = (ly / (th + sep), ly % (th + sep), ly % (th + sep) < th);
            for ox in 0..width {
                let lx = ox * lw / width;
                let (tc, x, in_x) = (lx / (tw + sep), lx % (tw + sep), lx % (tw + sep) < tw);
                let tile = tr * cols + tc;
                let idx = tile * per_tile + y * tw + x;
                pixels.push((in_x && in_y && tile < tiles && idx < used).then_some((idx, tile)));
            }
        }
        Grid {
            width,
            height,
            pixels,
            tiles,
        }
    }

    /// The value under each pixel (NaN where there is none).
    fn gather(&self, get: impl Fn(usize) -> f32) -> Vec<f32> {
        self.pixels
            .iter()
            .map(|p| p.map(|(i, _)| get(i)).unwrap_or(f32::NAN))
            .collect()
    }

    /// Per tile, the finite (min, max) over all given pictures' pixels.
    fn channel_ranges(&self, sides: &[&Vec<f32>]) -> Vec<(f32, f32)> {
        let mut r = vec![(f32::INFINITY, f32::NEG_INFINITY); self.tiles];
        for v in sides {
            for (p, &x) in self.pixels.iter().zip(v.iter()) {
                if let (Some((_, t)), true) = (p, x.is_finite()) {
                    r[*t].0 = r[*t].0.min(x);
                    r[*t].1 = r[*t].1.max(x);
                }
            }
        }
        r
    }

    fn image(&self, colour: impl Fn(usize, usize) -> Rgb<u8>) -> RgbImage {
        let mut img = RgbImage::new(self.width as u32, self.height as u32);
        for (k, px) in img.pixels_mut().enumerate() {
            *px = match self.pixels[k] {
                None => {
                    if self.tiles > 1 {
                        SEPARATOR
                    } else {
                        BACKGROUND
                    }
                }
                Some((_, t)) => colour(t, k),
            };
        }
        img
    }

    /// Viridis when every range is non-negative, else a diverging map symmetric
    /// around 0; each tile on its own range. Returns the picture and its scale text.
    fn paint_shared(&self, v: &[f32], ranges: &[(f32, f32)]) -> (RgbImage, String) {
        let signed = ranges.iter().any(|&(lo, hi)| lo <= hi && lo < 0.0);
        let img = self.image(|t, k| {
            let x = v[k];
            let (lo, hi) = ranges[t];
            if !x.is_finite() {
                return FLAG;
            }
            if signed {
                let m = lo.abs().max(hi.abs());
                diverging(if m > 0.0 { x / m } else { 0.0 })
            } else {
                let s = if hi > lo { (x - lo) / (hi - lo) } else { 0.5 };
                let c = colorous::VIRIDIS.eval_continuous(s.clamp(0.0, 1.0) as f64);
                Rgb([c.r, c.g, c.b])
            }
        });
        let (lo, hi) = ranges
            .iter()
            .filter(|(lo, hi)| lo <= hi)
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &(lo, hi)| {
                (a.min(lo), b.max(hi))
            });
        let per = if self.tiles > 1 { " (per channel)" } else { "" };
        let scale = if lo > hi {
            "no finite value".to_string()
        } else if signed {
            format!(
                "diverging, 0 centred, {} .. {}{per}",
                fmt(lo as f64),
                fmt(hi as f64)
            )
        } else {
            format!("viridis {} .. {}{per}", fmt(lo as f64), fmt(hi as f64))
        };
        (img, scale)
    }

    /// A − B on one diverging scale, symmetric around 0 (red: A > B, blue: A < B).
    fn paint_diverging(&self, v: &[f32]) -> (RgbImage, String) {
        let m = v
            .iter()
            .filter(|x| x.is_finite())
            .fold(0f32, |m, x| m.max(x.abs()));
        let img = self.image(|_, k| {
            let x = v[k];
            if !x.is_finite() {
                FLAG
            } else {
                diverging(if m > 0.0 { x / m } else { 0.0 })
            }
        });
        let scale = if m > 0.0 {
            format!(
                "red A > B, blue A < B, scale +/-{} (largest on the shown pixels)",
                fmt(m as f64)
            )
        } else {
            "no difference on the shown pixels".to_string()
        };
        (img, scale)
    }
}

/// `t` in [-1, 1] -> blue (negative), white (0), red (positive).
fn diverging(t: f32) -> Rgb<u8> {
    let c = colorous::RED_BLUE.eval_continuous(((1.0 - t.clamp(-1.0, 1.0)) / 2.0) as f64);
    Rgb([c.r, c.g, c.b])
}

const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>diff: {{ a_name }} vs {{ b_name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: right; }
th:nth-child(2), td:nth-child(2) { text-align: left; }
.card { border: 1px solid #ccc; border-radius: 6px; margin: 1em 0; padding: 0.6em 1em; }
.card.first { border: 3px solid #d33; background: #fff4f4; }
.card h2 { font-size: 1.05em; margin: 0.2em 0; }
.pics { display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 0.8em; color: #555; max-width: 260px; }
img { image-rendering: pixelated; border: 1px solid #999; }
.agree { color: #176117; } .diverge { color: #b00; font-weight: bold; } .ignored { color: #a60; }
.badge { background: #d33; color: white; border-radius: 4px; padding: 0 0.4em; font-size: 0.8em; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1em; font-size: 0.85em; margin: 0.4em 0; }
dt { color: #555; } dd { margin: 0; font-family: ui-monospace, monospace; }
</style>
</head>
<body>
<h1>{{ a_name }} vs {{ b_name }}</h1>
<p>A: <code>{{ a_path }}</code><br>B (reference): <code>{{ b_path }}</code></p>
<p>An element agrees when |A &minus; B| &le; atol + rtol &middot; |B| (atol {{ atol }}, rtol {{ rtol }});
NaN agrees only with NaN, &plusmn;Inf only with the same infinity.
{% if ignore_missing %}Layers in only one run do not count as divergent.{% endif %}</p>
<p><strong>{{ summary }}</strong>
{% if first %} &mdash; first divergence: <a href="#{{ first.anchor }}">{{ first.label }}</a>{% endif %}</p>

<h2>Ranked by divergence</h2>
<table>
<thead><tr><th>#</th><th>layer</th><th>status</th><th>rel L2</th><th>max |A&minus;B|</th><th>mismatches</th></tr></thead>
<tbody>
{% for r in ranked %}<tr><td>{{ r.row }}</td><td><a href="#{{ r.anchor }}">{{ r.label }}</a></td><td class="{{ r.status_class }}">{{ r.status }}</td><td>{{ r.rel_l2 }}</td><td>{{ r.max_abs }}</td><td>{{ r.mismatches }}</td></tr>
{% endfor %}</tbody>
</table>

<h2>Layers</h2>
<p id="sorting" hidden>Sort: <button type="button" data-sort="order">capture order</button>
<button type="button" data-sort="divergence">by divergence</button>
<button type="button" data-sort="max">by max |A&minus;B|</button></p>
<div id="cards">
{% for r in rows %}<section class="card{% if r.first %} first{% endif %}" id="{{ r.anchor }}" data-order="{{ r.row }}" data-div="{{ 1 if r.diverges else 0 }}" data-rel="{{ r.key_rel }}" data-max="{{ r.key_max }}">
<h2>{{ r.row }}. {{ r.label }} {% if r.first %}<span class="badge">first divergence</span>{% endif %}
<span class="{{ r.status_class }}">{{ r.status }}</span></h2>
<dl>
<dt>kind</dt><dd>{{ r.kind or "-" }}</dd>
<dt>shape</dt><dd>{{ r.shape }}</dd>
<dt>dtype</dt><dd>{{ r.dtype }}</dd>
<dt>max |A&minus;B|</dt><dd>{{ r.max_abs }}</dd>
<dt>mean |A&minus;B|</dt><dd>{{ r.mean_abs }}</dd>
<dt>rel L2</dt><dd>{{ r.rel_l2 }}</dd>
<dt>cosine</dt><dd>{{ r.cosine }}</dd>
<dt>out of tolerance</dt><dd>{{ r.mismatches }}</dd>
{% if r.worst %}<dt>worst element</dt><dd>{{ r.worst }}</dd>{% endif %}
{% if r.first_mismatch %}<dt>first mismatch</dt><dd>{{ r.first_mismatch }}</dd>{% endif %}
{% if r.nan_inf %}<dt>NaN / Inf</dt><dd>{{ r.nan_inf }}</dd>{% endif %}
</dl>
<div class="pics">
{% for cap, p in [("A", r.pic_a), ("B", r.pic_b), ("A − B", r.pic_d)] %}{% if p %}<figure><img src="{{ p.file }}" width="{{ p.width }}" height="{{ p.height }}" alt="{{ cap }}: {{ r.label }}"><figcaption><b>{{ cap }}</b> &mdash; {{ p.scale }}</figcaption></figure>
{% endif %}{% endfor %}</div>
</section>
{% endfor %}</div>
<script>
(function () {
  var box = document.getElementById("cards");
  var bar = document.getElementById("sorting");
  bar.hidden = false;
  var keys = {
    order: function (a, b) { return +a.dataset.order - +b.dataset.order; },
    divergence: function (a, b) {
      return (+b.dataset.div - +a.dataset.div) || (parseFloat(b.dataset.rel) - parseFloat(a.dataset.rel))
        || (parseFloat(b.dataset.max) - parseFloat(a.dataset.max)) || (+a.dataset.order - +b.dataset.order);
    },
    max: function (a, b) {
      return (parseFloat(b.dataset.max) - parseFloat(a.dataset.max)) || (+a.dataset.order - +b.dataset.order);
    }
  };
  bar.addEventListener("click", function (e) {
    var k = e.target.getAttribute("data-sort");
    if (!k) return;
    Array.prototype.slice.call(box.children).sort(keys[k]).forEach(function (c) { box.appendChild(c); });
  });
})();
</script>
</body>
</html>
"##;

fn page_html(d: &RunDiff, rows: &[Row]) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_template("diff.html", PAGE)
        .map_err(|e| Error::Invalid(format!("diff page template: {e}")))?;
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
    let mut counts = vec![format!("{} agree", d.count(Status::Agree))];
    for (s, what) in [
        (Status::Differ, "differ"),
        (Status::ShapeMismatch, "differ in shape"),
        (Status::OnlyInA, "only in A"),
        (Status::OnlyInB, "only in B"),
    ] {
        if d.count(s) > 0 {
            counts.push(format!("{} {what}", d.count(s)));
        }
    }
    let summary = format!(
        "{} layers: {}{}",
        d.layers.len(),
        counts.join(", "),
        if d.agrees() { " — all agree" } else { "" }
    );
    let tmpl = env.get_template("diff.html").expect("template added");
    tmpl.render(minijinja::context! {
        a_name => side_name(&d.a),
        b_name => side_name(&d.b),
        a_path => side_path(&d.a),
        b_path => side_path(&d.b),
        atol => d.atol,
        rtol => d.rtol,
        ignore_missing => d.ignore_missing,
        summary => summary,
        first => rows.iter().find(|r| r.first),
        rows => rows,
        ranked => ranked,
    })
    .map_err(|e| Error::Invalid(format!("diff page template: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_channels_and_fold_vectors() {
        // 4 channels of 3x5: 2x2 tiles, every element drawn, separators between.
        let g = Grid::new(&[1, 4, 3, 5], 60);
        let mut seen: Vec<usize> = g.pixels.iter().flatten().map(|(i, _)| *i).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen, (0..60).collect::<Vec<_>>());
        assert!(g.pixels.iter().any(Option::is_none));
        assert!((TARGET..=2 * TARGET).contains(&g.width.max(g.height)));
        // A long vector is folded into a near-square and never exceeds MAX_SIDE.
        let g = Grid::new(&[1, 1_000_000], 1_000_000);
        assert!(g.width <= MAX_SIDE && g.height <= MAX_SIDE);
        assert!(g.pixels.iter().flatten().all(|(i, _)| *i < 1_000_000));
        // Only the first sample of a batch is drawn.
        let g = Grid::new(&[3, 10], 30);
        assert!(g.pixels.iter().flatten().all(|(i, _)| *i < 10));
    }

    #[test]
    fn diverging_colours_have_the_documented_sides() {
        let (r, b) = (diverging(1.0), diverging(-1.0));
        assert!(r.0[0] > r.0[2], "positive is red: {r:?}");
        assert!(b.0[2] > b.0[0], "negative is blue: {b:?}");
        let w = diverging(0.0);
        assert!(w.0.iter().all(|&c| c > 230), "zero is near white: {w:?}");
    }
}

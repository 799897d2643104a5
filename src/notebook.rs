//! Inline display in evcxr (Rust Jupyter) notebooks.
//!
//! The evcxr kernel calls a method `evcxr_display(&self)` on a cell's last
//! expression. candlelight's types have it as an *inherent* method, so a notebook
//! needs no `use` of a trait:
//!
//! - a [`Run`]: a table of its layers in order (shape, kind, stats, a thumbnail each);
//! - [`Run::view`]`("conv1")`: one layer, large, with its histogram and stats;
//! - [`show`]`(&tensor)`: any candle tensor, with options (sample, colormap, scale);
//! - [`Comparison`] (from [`Run::compare`]): the diff table with the first divergence
//!   highlighted and |A−B| thumbnails;
//! - [`GalleryView`] (from [`gallery`]): the runs of a gallery folder with thumbnails.
//!
//! Each display emits exactly one `text/html` block with its pictures inside as
//! data-URI PNGs (evcxr keeps only the last block of each MIME type per cell).
//! Errors while displaying are shown as an (escaped) error line, never a panic.
//! Nothing here prints except `evcxr_display`.

use std::path::{Path, PathBuf};

use base64::Engine;
use candle_core::Tensor;
use image::RgbImage;
use minijinja::{context, Value};

use crate::gallery::Manifest;
use crate::pages::{fmt_num, page};
use crate::render::render_histogram;
use crate::render::{encode_png, render, Colormap, RenderOptions, Scale};
use crate::runfile::{shape_str, Run};
use crate::stats::Stats;
use crate::values::LayerData;
use crate::Result;

/// Pixel budget of a thumbnail in a table.
const THUMB_PIXELS: usize = 180 * 180;

/// A PNG as a `data:` URI, marked safe for templates (it holds only base64 characters).
fn data_uri(img: &RgbImage) -> Result<Value> {
    let png = encode_png(img)?;
    Ok(data_uri_of_png(&png))
}

fn data_uri_of_png(png: &[u8]) -> Value {
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    Value::from_safe_string(format!("data:image/png;base64,{b64}"))
}

/// Emits `html` as the cell's `text/html` output.
fn emit(html: &str) {
    evcxr_runtime::mime_type("text/html").text(html);
}

/// An error as one escaped HTML line.
fn error_html(what: &str, e: &dyn std::fmt::Display) -> String {
    let msg = format!("{what}: {e}");
    let esc = minijinja::HtmlEscape(&msg).to_string();
    format!("<div style=\"color:#b00020;font-family:monospace\">candlelight: {esc}</div>")
}

fn thumb_opts() -> RenderOptions {
    RenderOptions {
        max_pixels: THUMB_PIXELS,
        min_cell: 4,
        min_side: 64,
        ..RenderOptions::default()
    }
}

fn stats_ctx(s: &Stats) -> Value {
    context! {
        min => fmt_num(s.min),
        max => fmt_num(s.max),
        mean => fmt_num(s.mean),
        std => fmt_num(s.std),
        zero => format!("{:.1}%", s.zero_fraction * 100.0),
        nan => s.nan,
        inf => s.inf,
        bad => s.non_finite() > 0,
    }
}

/// Display-ready HTML. Its `evcxr_display` shows it in a notebook.
#[derive(Debug, Clone, PartialEq)]
pub struct Html(pub String);

impl Html {
    /// The HTML text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Shows it in an evcxr notebook.
    pub fn evcxr_display(&self) {
        emit(&self.0)
    }
}

impl Run {
    /// The run as an HTML table: one row per layer in capture order with kind,
    /// shape, dtype, stats and a thumbnail.
    pub fn to_html(&self) -> Result<Html> {
        let mut rows = Vec::with_capacity(self.len());
        for l in self.layers() {
            let data = self.data_at(l.index)?;
            let stats = Stats::of(&data);
            let thumb = match render(&data, &l.shape, &thumb_opts()) {
                Ok(p) => Some(data_uri(&p.image)?),
                Err(_) => None,
            };
            rows.push(context! {
                index => l.index,
                name => &l.name,
                kind => l.kind.clone().unwrap_or_default(),
                shape => l.shape_str(),
                dtype => l.dtype.to_string(),
                stats => stats_ctx(&stats),
                dead => stats.min.is_finite().then(|| crate::Activity::of(&data, &l.shape, stats.min)).flatten().and_then(|a| a.describe()),
                thumb => thumb,
            });
        }
        let info = self.info();
        Ok(Html(page(
            "nb_run.html",
            context! {
                id => &info.id,
                model => &info.model,
                created => &info.created,
                input => &info.input,
                path => self.path().map(|p| p.display().to_string()),
                n => self.len(),
                rows => rows,
            },
        )?))
    }

    /// Shows the run in an evcxr notebook (see [`Run::to_html`]).
    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(h) => emit(&h.0),
            Err(e) => emit(&error_html("cannot display the run", &e)),
        }
    }

    /// One layer, large, with its histogram and stats; default picture options.
    pub fn view(&self, name: &str) -> Result<Html> {
        self.view_with(name, &RenderOptions::default())
    }

    /// Like [`Run::view`] with picture options (sample, colormap, scale, ...).
    pub fn view_with(&self, name: &str, opts: &RenderOptions) -> Result<Html> {
        let l = self
            .layer(name)
            .ok_or_else(|| crate::Error::NoSuchLayer {
                path: self
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from(format!("<run {}>", self.id()))),
                name: name.to_string(),
            })?
            .clone();
        let data = self.data_at(l.index)?;
        let title = format!("{} · {}", self.id(), l.name);
        let mut opts = opts.clone();
        if opts.tokens.is_none() {
            opts.tokens = self.info().tokens();
        }
        layer_html(
            &title,
            l.kind.as_deref().unwrap_or(""),
            &l.shape,
            &l.dtype.to_string(),
            &data,
            &opts,
            self.summary_at(l.index).and_then(|s| s.stats).as_ref(),
        )
    }

    /// Compares this run (A) with `other` (B, the reference) layer by layer, with
    /// |A−B| thumbnails, for display in a notebook.
    pub fn compare(&self, other: &Run) -> Result<Comparison> {
        self.compare_with(other, &crate::diff::DiffOptions::default())
    }

    /// Like [`Run::compare`] with tolerances and a name map.
    pub fn compare_with(&self, other: &Run, opts: &crate::diff::DiffOptions) -> Result<Comparison> {
        let diff = crate::diff::diff(self, other, opts)?;
        let html = diff_html(self, other, &diff)?;
        Ok(Comparison { diff, html })
    }
}

fn layer_html(
    title: &str,
    kind: &str,
    shape: &[usize],
    dtype: &str,
    data: &LayerData<'_>,
    opts: &RenderOptions,
    hint: Option<&Stats>,
) -> Result<Html> {
    let opts = &RenderOptions {
        labels: true,
        ..opts.clone()
    };
    // Statistics, histogram and picture in one read (see `render::scan_cells`).
    let scan = crate::render::scan_cells(data, shape, opts, 64, hint, false)?.paint();
    let (stats, hist, pic) = (scan.stats, scan.histogram, scan.picture?);
    let bars = crate::gallery::bars::bars(data, shape, opts.sample);
    data.check()?;
    let hist_img = render_histogram(&hist, pic.colormap, 480, 110);
    Ok(Html(page(
        "nb_layer.html",
        context! {
            title => title,
            kind => kind,
            shape => shape_str(shape),
            dtype => dtype,
            layout => crate::render::caption_with_axes(
                &pic.layout.describe(),
                shape,
                (!kind.is_empty()).then_some(kind),
                opts,
            ),
            bars => bars,
            colormap => pic.colormap.name(),
            scale => opts.scale.to_string(),
            range => pic.range.map(|(a, b)| format!("{} … {}", fmt_num(a as f64), fmt_num(b as f64))),
            stats => stats_ctx(&stats),
            hist_lo => fmt_num(hist.lo),
            hist_hi => fmt_num(hist.hi),
            hist_peak => hist.peak(),
            picture => data_uri(&pic.image)?,
            width => pic.image.width(),
            histogram => data_uri(&hist_img)?,
        },
    )?))
}

/// Any candle tensor, ready to display: `candlelight::show(&t).sample(1)`.
#[derive(Debug, Clone)]
pub struct Show {
    tensor: Tensor,
    title: String,
    opts: RenderOptions,
}

/// Shows any candle tensor in a notebook (the last expression of a cell).
/// Defaults as [`RenderOptions::default`].
pub fn show(t: &Tensor) -> Show {
    Show {
        tensor: t.clone(),
        title: "tensor".into(),
        opts: RenderOptions::default(),
    }
}

impl Show {
    /// Which sample (index into dim 0) to show for rank ≥ 2.
    pub fn sample(mut self, i: usize) -> Self {
        self.opts.sample = i;
        self
    }
    /// The colormap.
    pub fn colormap(mut self, c: Colormap) -> Self {
        self.opts.colormap = c;
        self
    }
    /// How values map to colours.
    pub fn scale(mut self, s: Scale) -> Self {
        self.opts.scale = s;
        self
    }
    /// Labels token axes with these tokens (one list per sample, or one for all):
    /// rows of `[N, T, D]`, query rows and key columns of `[N, heads, T, T]`.
    pub fn tokens<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = Vec<S>>) -> Self {
        self.opts.tokens = Some(
            tokens
                .into_iter()
                .map(|t| t.into_iter().map(Into::into).collect())
                .collect(),
        );
        self
    }

    /// A title above the picture.
    pub fn title(mut self, t: impl Into<String>) -> Self {
        self.title = t.into();
        self
    }
    /// All picture options at once.
    pub fn options(mut self, opts: RenderOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The HTML shown.
    pub fn to_html(&self) -> Result<Html> {
        let data = LayerData::from_tensor(&self.tensor)?;
        let dtype = format!("{:?}", self.tensor.dtype()).to_uppercase();
        layer_html(
            &self.title,
            "",
            self.tensor.dims(),
            &dtype,
            &data,
            &self.opts,
            None,
        )
    }

    /// Shows the tensor in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(h) => emit(&h.0),
            Err(e) => emit(&error_html("cannot display the tensor", &e)),
        }
    }
}

/// A comparison of two runs with its HTML (see [`Run::compare`]); `.diff` holds
/// the numbers as plain data.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The per-layer numbers.
    pub diff: crate::diff::RunDiff,
    html: String,
}

impl Comparison {
    /// The HTML shown.
    pub fn to_html(&self) -> Html {
        Html(self.html.clone())
    }

    /// Shows the comparison in an evcxr notebook.
    pub fn evcxr_display(&self) {
        emit(&self.html)
    }
}

fn abs_diff_thumb(
    a: &Run,
    b: &Run,
    ia: usize,
    ib: usize,
    shape: &[usize],
) -> Result<Option<Value>> {
    let (da, db) = (a.data_at(ia)?, b.data_at(ib)?);
    if da.len() != db.len() {
        return Ok(None);
    }
    let mut va = da.to_vec();
    let mut buf = vec![0f32; 1 << 15];
    let mut start = 0;
    while start < va.len() {
        let n = buf.len().min(va.len() - start);
        db.read_into(start, &mut buf[..n]);
        for (x, y) in va[start..start + n].iter_mut().zip(&buf[..n]) {
            *x = (*x - *y).abs();
        }
        start += n;
    }
    da.check()?;
    db.check()?;
    let opts = RenderOptions {
        scale: Scale::Shared,
        colormap: Colormap::Auto,
        ..thumb_opts()
    };
    let pic = render(&LayerData::from_f32(va), shape, &opts)?;
    Ok(Some(data_uri(&pic.image)?))
}

fn diff_html(a: &Run, b: &Run, d: &crate::diff::RunDiff) -> Result<String> {
    let first = d.first_divergent().map(|l| l.name().to_string());
    let mut rows = Vec::with_capacity(d.layers.len());
    for l in &d.layers {
        let thumb = match (l.index_a, l.index_b, &l.shape_a) {
            (Some(ia), Some(ib), Some(shape)) if l.numbers.is_some() => {
                abs_diff_thumb(a, b, ia, ib, shape).unwrap_or(None)
            }
            _ => None,
        };
        let n = l.numbers.as_ref();
        rows.push(context! {
            name => l.label(),
            status => l.status_label(),
            diverges => l.diverges,
            first => first.as_deref() == Some(l.name()),
            shape_a => l.shape_a.as_deref().map(shape_str).unwrap_or_default(),
            shape_b => l.shape_b.as_deref().map(shape_str).unwrap_or_default(),
            max_abs => n.map(|n| fmt_num(n.max_abs)).unwrap_or_default(),
            mean_abs => n.map(|n| fmt_num(n.mean_abs)).unwrap_or_default(),
            rel_l2 => n.map(|n| fmt_num(n.rel_l2)).unwrap_or_default(),
            cosine => n.map(|n| fmt_num(n.cosine)).unwrap_or_default(),
            mismatches => n.map(|n| n.mismatches).unwrap_or(0),
            worst => n.and_then(|n| n.worst.as_ref()).map(|w| format!("{} A={} B={}", shape_str(&w.position), fmt_num(w.a as f64), fmt_num(w.b as f64))).unwrap_or_default(),
            thumb => thumb,
        });
    }
    page(
        "nb_diff.html",
        context! {
            a => &d.a.id,
            b => &d.b.id,
            atol => fmt_num(d.atol),
            rtol => fmt_num(d.rtol),
            agrees => d.agrees(),
            first => first,
            rows => rows,
        },
    )
}

/// A PNG file from disk (e.g. a gallery picture), for display in a notebook.
pub fn image_file(path: impl AsRef<Path>) -> Result<Html> {
    let path = path.as_ref();
    let png = crate::staging::read_regular(path, 256 << 20)?;
    if !png.starts_with(b"\x89PNG") {
        return Err(crate::Error::BadInput {
            path: path.to_path_buf(),
            msg: "not a PNG file".into(),
        });
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let uri = data_uri_of_png(&png);
    let alt = minijinja::HtmlEscape(&name).to_string();
    Ok(Html(format!(
        "<div><img src=\"{uri}\" alt=\"{alt}\" style=\"max-width:100%;image-rendering:pixelated\"><div style=\"color:#555;font-family:monospace\">{alt}</div></div>"
    )))
}

/// The runs of a gallery folder, for display in a notebook.
#[derive(Debug, Clone)]
pub struct GalleryView {
    /// The gallery folder.
    pub out: PathBuf,
    /// One manifest per rendered run, newest first.
    pub runs: Vec<Manifest>,
}

/// Reads the manifests of the gallery folder `out` (what `render`, `demo` and
/// `watch` write), newest first.
pub fn gallery(out: impl AsRef<Path>) -> Result<GalleryView> {
    let out = out.as_ref().to_path_buf();
    let mut runs: Vec<Manifest> = crate::gallery::list_galleries(&out)?
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    runs.sort_by(|x, y| {
        (y.created.as_str(), y.rendered_at.as_str())
            .cmp(&(x.created.as_str(), x.rendered_at.as_str()))
    });
    Ok(GalleryView { out, runs })
}

impl GalleryView {
    /// The HTML shown: a card per run with its thumbnail and the page to open.
    pub fn to_html(&self) -> Result<Html> {
        let mut cards = Vec::with_capacity(self.runs.len());
        for m in &self.runs {
            let dir = self.out.join(&m.run_id);
            let thumb = m
                .thumbnail
                .as_deref()
                .filter(|t| !t.contains("..") && !t.starts_with('/'))
                .and_then(|t| std::fs::read(dir.join(t)).ok())
                .map(|png| data_uri_of_png(&png));
            cards.push(context! {
                id => &m.run_id,
                model => &m.model,
                created => &m.created,
                layers => m.layers,
                status => &m.status,
                error => &m.error,
                page => dir.join("index.html").display().to_string(),
                thumb => thumb,
            });
        }
        Ok(Html(page(
            "nb_gallery.html",
            context! {
                out => self.out.display().to_string(),
                index => self.out.join("index.html").display().to_string(),
                cards => cards,
            },
        )?))
    }

    /// Shows the gallery in an evcxr notebook.
    pub fn evcxr_display(&self) {
        match self.to_html() {
            Ok(h) => emit(&h.0),
            Err(e) => emit(&error_html("cannot display the gallery", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tap, Recorder};
    use candle_core::Device;

    fn small_run(scale: f64) -> Run {
        let x = Tensor::arange(0f32, 32., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 4, 4))
            .unwrap();
        let (_, run) = Recorder::new("nb<test>")
            .record(|| {
                let c = tap("conv<1>", &(&x * scale)?)?;
                crate::tap_as("relu1", "relu", &(c - 10.0)?.relu()?)
            })
            .unwrap();
        run
    }

    #[test]
    fn run_html_has_every_layer_with_a_thumbnail_and_escapes_names() {
        let h = small_run(1.0).to_html().unwrap();
        assert_eq!(h.0.matches("data:image/png;base64,").count(), 2);
        assert!(h.0.contains("conv&lt;1&gt;") && !h.0.contains("conv<1>"));
        assert!(h.0.contains("nb&lt;test&gt;"));
        assert!(!h.0.contains("never active"), "every channel fires here");
        let z = Tensor::zeros((2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let (_, run) = Recorder::new("z").record(|| tap("zeros", &z)).unwrap();
        let h = run.to_html().unwrap();
        assert!(h
            .0
            .contains("3 of 3 units never active across 2 recorded samples"));
    }

    #[test]
    fn layer_view_and_show_embed_pictures() {
        let run = small_run(1.0);
        let h = run.view("relu1").unwrap();
        assert_eq!(h.0.matches("data:image/png;base64,").count(), 2);
        assert!(run.view("nope").is_err());
        let t = Tensor::new(&[[f32::NAN, 1.0], [2.0, 3.0]], &Device::Cpu).unwrap();
        let h = show(&t).title("<b>").to_html().unwrap();
        assert!(h.0.contains("&lt;b&gt;") && h.0.contains("data:image/png;base64,"));
    }

    #[test]
    fn comparison_highlights_the_first_divergence() {
        let (a, b) = (small_run(1.0), small_run(1.5));
        let c = a.compare(&b).unwrap();
        assert!(!c.diff.agrees());
        let h = c.to_html().0;
        assert!(h.contains("first divergent"), "{h}");
        assert!(h.contains("data:image/png;base64,"));
        let same = a.compare(&small_run(1.0)).unwrap();
        assert!(same.diff.agrees());
    }
}

//! Pictures of layers: a layer's values and shape -> an RGB image.
//!
//! What a picture shows depends on the shape (see [`layout`]):
//! - `[N, C, H, W]` (and `[N, A, B, .., H, W]`, whose middle dims count as channels):
//!   the C maps of one sample tiled in a near-square grid with thin separators, each
//!   normalized on its own by default ([`Scale`]), small maps enlarged with
//!   nearest-neighbour so a cell is at least [`RenderOptions::min_cell`] pixels.
//!   Maps of 1×1 are a vector (folded, below); maps of 1×L or L×1 make a C × L heatmap.
//! - `[N, T, D]`: a T × D heatmap of one sample; with the run's tokens
//!   ([`RenderOptions::tokens`]) each row is labelled with its token in a margin.
//! - `[N, heads, T, T]` attention patterns are a grid of heads (numbered), query
//!   rows × key columns, labelled with the tokens on both axes.
//! - `[N, D]`, `[D]`, scalars: the values folded row by row into a near-square heatmap.
//! - Zero-size layers: a small blank picture.
//!
//! Colours: [`Colormap::Auto`] uses viridis when the shown values are non-negative and
//! a diverging map centred on zero (blue < 0 < red) when some are negative. NaN and
//! ±Inf get the flag colour [`FLAG`]. A picture never has more than
//! [`RenderOptions::max_pixels`] pixels: a huge layer is box-averaged while it is read
//! (a block holding a NaN or Inf shows the flag), never loaded whole.
//!
//! ```
//! use candlelight::render::{render_layer, RenderOptions};
//! use candlelight::LayerData;
//!
//! let data = LayerData::from_f32((0..2 * 8 * 8).map(|v| v as f32).collect());
//! let img = render_layer(&data, &[1, 2, 8, 8], &RenderOptions::default())?;
//! let png = candlelight::render::encode_png(&img)?;
//! assert!(png.starts_with(b"\x89PNG"));
//! # Ok::<(), candlelight::Error>(())
//! ```

mod colormap;
mod histogram;
mod labels;
mod layout;
mod scan;

use candle_core::Tensor;
use image::RgbImage;
use rayon::prelude::*;

pub use colormap::{Colormap, FLAG, SEPARATOR};
pub use histogram::{render_histogram, Histogram};
pub use labels::{caption_with_axes, TOKEN_CHARS};
pub(crate) use labels::{number_cells, sample_tokens, token_axes, token_margins, widest_label};
pub use layout::{layout, Axis, Cell, Layout, LayoutKind, Spot, EMPTY_SIDE};
pub use scan::{scan_cells, CardScan, CellScan};

use layout::checked_len;
pub(crate) use layout::BLANK;

use crate::values::LayerData;
use crate::{Error, Result};

/// How values are mapped to colours.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Scale {
    /// The default: percentiles 1–99 for token layers (`[N, T, D]`, where a few
    /// outliers would wash out the rest), [`Scale::PerChannel`] otherwise.
    #[default]
    Auto,
    /// Each channel (grid cell) from its own min to its own max.
    PerChannel,
    /// One range, the min and max of all shown values.
    Shared,
    /// One range between two percentiles (in percent, e.g. `(1.0, 99.0)`) of the
    /// shown values; values outside are clipped.
    Percentile(f32, f32),
}

impl std::fmt::Display for Scale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scale::Auto => f.write_str("auto"),
            Scale::PerChannel => f.write_str("per-channel"),
            Scale::Shared => f.write_str("shared"),
            Scale::Percentile(lo, hi) => write!(f, "p{lo}-{hi}"),
        }
    }
}

impl Scale {
    /// The scale used for a layer of `shape`: [`Scale::Auto`] resolved, others as they are.
    pub fn resolve(self, shape: &[usize]) -> Scale {
        match self {
            Scale::Auto if shape.len() == 3 => Scale::Percentile(1.0, 99.0),
            Scale::Auto => Scale::PerChannel,
            s => s,
        }
    }
}

impl std::str::FromStr for Scale {
    type Err = Error;

    /// `auto`, `per-channel`, `shared` or `pLO-HI` (e.g. `p1-99`).
    fn from_str(s: &str) -> Result<Scale> {
        match s {
            "auto" => Ok(Scale::Auto),
            "per-channel" | "channel" => Ok(Scale::PerChannel),
            "shared" => Ok(Scale::Shared),
            _ => {
                let bad = || {
                    Error::option(format!(
                        "unknown scale {s:?} (use auto, per-channel, shared or pLO-HI such as p1-99)"
                    ))
                };
                let (lo, hi) = s
                    .strip_prefix('p')
                    .and_then(|r| r.split_once('-'))
                    .ok_or_else(bad)?;
                let (lo, hi) = (
                    lo.parse::<f32>().map_err(|_| bad())?,
                    hi.parse::<f32>().map_err(|_| bad())?,
                );
                check_percentiles(lo, hi)?;
                Ok(Scale::Percentile(lo, hi))
            }
        }
    }
}

fn check_percentiles(lo: f32, hi: f32) -> Result<()> {
    if (0.0..100.0).contains(&lo) && lo < hi && hi <= 100.0 {
        Ok(())
    } else {
        Err(Error::option(format!(
            "percentiles must satisfy 0 <= lo < hi <= 100, got {lo} and {hi}"
        )))
    }
}

/// Options of a picture. Defaults: sample 0, per-channel scale, automatic colormap,
/// at most 4 000 000 pixels, 1-pixel separators, grid cells of at least 64 pixels and
/// single-map pictures of at least 256 pixels (on the longer side).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Which sample (index into dim 0) of a layer of rank ≥ 2 to show.
    pub sample: usize,
    /// How values map to colours.
    pub scale: Scale,
    /// The colormap ([`Colormap::Auto`]: viridis, or RdBu for signed values).
    pub colormap: Colormap,
    /// Pixel budget of one picture; bigger layers are downsampled.
    pub max_pixels: usize,
    /// Width of the separators between grid cells, in pixels.
    pub separator: usize,
    /// Small maps in a grid are enlarged (nearest-neighbour, by a whole factor)
    /// until a cell's longer side has at least this many pixels.
    pub min_cell: usize,
    /// Same for pictures of one map or heatmap.
    pub min_side: usize,
    /// Numbers each grid cell (channel, head) in its corner. Off by default;
    /// galleries and notebooks turn it on.
    pub labels: bool,
    /// The input's token strings, one list per sample (the run facts' `tokens`,
    /// [`crate::RunInfo::tokens`]), or one list for every sample. Token axes of the
    /// shown sample get labelled margins: rows of `[N, T, D]`, query rows and key
    /// columns of `[N, heads, T, T]` (when T is the number of tokens), and each
    /// token row gets at least 10 pixels when the budget allows (margins come on
    /// top of [`RenderOptions::max_pixels`]).
    pub tokens: Option<Vec<Vec<String>>>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            sample: 0,
            scale: Scale::Auto,
            colormap: Colormap::Auto,
            max_pixels: 4_000_000,
            separator: 1,
            min_cell: 64,
            min_side: 256,
            labels: false,
            tokens: None,
        }
    }
}

/// A rendered picture and how it was made.
#[derive(Debug, Clone)]
pub struct Picture {
    /// The image.
    pub image: RgbImage,
    /// Its geometry.
    pub layout: Layout,
    /// The colormap used (never `Auto`).
    pub colormap: Colormap,
    /// Smallest and largest finite value shown (after any downsampling), if any.
    pub range: Option<(f32, f32)>,
    /// The one colour range of a [`Scale::Shared`] or [`Scale::Percentile`] picture
    /// (values beyond it are clipped); `None` when each channel has its own.
    pub colour_range: Option<(f32, f32)>,
    /// The values shown, one vector per shown tile (in [`Layout::cells`] order),
    /// each `tile_h.div_ceil(y.down)` rows of `tile_w.div_ceil(x.down)` box means,
    /// row-major: NaN where a non-finite value fell, `-inf` where there is no value
    /// (past the end of a folded vector).
    pub values: Vec<Vec<f32>>,
}

/// Renders a layer (its values and shape) as an RGB image.
///
/// ```
/// use candlelight::{render_layer, LayerData, RenderOptions};
///
/// // 8 channels of 4×4: a near-square grid of enlarged maps.
/// let data = LayerData::from_f32((0..128).map(|v| v as f32).collect());
/// let img = render_layer(&data, &[1, 8, 4, 4], &RenderOptions::default())?;
/// assert!(img.width() * img.height() <= RenderOptions::default().max_pixels as u32);
/// // The shape must match the data.
/// assert!(render_layer(&data, &[1, 8, 4, 5], &RenderOptions::default()).is_err());
/// # Ok::<(), candlelight::Error>(())
/// ```
pub fn render_layer(
    data: &LayerData<'_>,
    shape: &[usize],
    opts: &RenderOptions,
) -> Result<RgbImage> {
    Ok(render(data, shape, opts)?.image)
}

/// Renders a candle tensor (copied to the CPU as f32) as an RGB image.
pub fn render_tensor(t: &Tensor, opts: &RenderOptions) -> Result<RgbImage> {
    render_layer(&LayerData::from_tensor(t)?, t.dims(), opts)
}

/// Like [`render_layer`], also returning the layout, colormap and value range used.
/// A read of the run file that fails while drawing is an error (see
/// [`LayerData::check`]).
pub fn render(data: &LayerData<'_>, shape: &[usize], opts: &RenderOptions) -> Result<Picture> {
    let mut o = opts.clone();
    o.scale = o.scale.resolve(shape);
    let picture = draw(data, shape, &o);
    data.check()?;
    picture
}

fn draw(data: &LayerData<'_>, shape: &[usize], opts: &RenderOptions) -> Result<Picture> {
    let layout = picture_layout(data.len(), shape, opts)?;
    // 1. Read each tile, reduced to what the picture shows.
    let reduced: Vec<Vec<f32>> = if layout.kind == LayoutKind::Empty {
        Vec::new()
    } else {
        (0..layout.tiles)
            .into_par_iter()
            .map(|t| reduce_tile(data, &layout, layout.offset + t * layout.tile_len))
            .collect()
    };
    Ok(finish(shape, opts, layout, reduced))
}

/// The layout of a picture of `len` values of `shape` (`opts.scale` resolved).
pub(crate) fn picture_layout(len: usize, shape: &[usize], opts: &RenderOptions) -> Result<Layout> {
    let n = checked_len(shape)?;
    if n != len {
        return Err(Error::render(format!(
            "shape {} has {n} elements but the data has {len}",
            crate::runfile::shape_str(shape),
        )));
    }
    layout(shape, opts)
}

/// The picture of the reduced tiles (one `Vec` per tile of `layout`, see
/// [`reduce_tile`]): ranges, colours, labels.
pub(crate) fn finish(
    shape: &[usize],
    opts: &RenderOptions,
    layout: Layout,
    reduced: Vec<Vec<f32>>,
) -> Picture {
    let (w, h) = (layout.width as u32, layout.height as u32);
    if layout.kind == LayoutKind::Empty {
        let cm = opts.colormap.resolve(false);
        return Picture {
            image: RgbImage::from_pixel(w, h, image::Rgb(SEPARATOR)),
            layout,
            colormap: cm,
            range: None,
            colour_range: None,
            values: Vec::new(),
        };
    }
    // 2. Ranges.
    let ranges: Vec<Option<(f32, f32)>> = reduced.par_iter().map(|v| finite_range(v)).collect();
    let range = ranges
        .iter()
        .flatten()
        .copied()
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let signed = range.is_some_and(|r| r.0 < 0.0);
    let cm = opts.colormap.resolve(signed);
    let shared = match opts.scale {
        Scale::Percentile(lo, hi) => percentiles(&reduced, lo, hi),
        _ => range,
    };
    let maps: Vec<Mapping> = ranges
        .iter()
        .map(|r| {
            let own = match opts.scale {
                Scale::PerChannel => *r,
                _ => shared,
            };
            Mapping::new(cm, own, range)
        })
        .collect();
    // 3. Paint.
    let tiles: Vec<&[f32]> = reduced.iter().map(Vec::as_slice).collect();
    let mut layout = layout;
    let mut image = paint(&layout, &tiles, &maps, cm);
    let (rows, cols) = labels::token_axes(shape, labels::sample_tokens(opts));
    if rows.is_some() || cols.is_some() {
        image = labels::token_margins(&image, &mut layout, rows, cols, labels::widest_label(opts));
    }
    if opts.labels {
        labels::number_cells(&mut image, &layout);
    }
    Picture {
        image,
        layout,
        colormap: cm,
        range,
        colour_range: (opts.scale != Scale::PerChannel)
            .then_some(shared)
            .flatten(),
        values: reduced,
    }
}

/// Values of one tile, reduced by the layout's axes: finite means, NaN where a
/// non-finite value fell, [`BLANK`] past the end of a folded vector.
fn reduce_tile(data: &LayerData<'_>, l: &Layout, start: usize) -> Vec<f32> {
    let (h, w) = (l.tile_h, l.tile_w);
    let (dy, dx) = (l.y.down, l.x.down);
    let (rh, rw) = (h.div_ceil(dy), w.div_ceil(dx));
    let mut out = vec![BLANK; rh * rw];
    reduce_tile_into(data, l, start, &mut out);
    out
}

fn reduce_tile_into(data: &LayerData<'_>, l: &Layout, start: usize, out: &mut [f32]) {
    let (h, w, len) = (l.tile_h, l.tile_w, l.tile_len);
    let (dy, dx) = (l.y.down, l.x.down);
    let (rh, rw) = (h.div_ceil(dy), w.div_ceil(dx));
    if dy == 1 && dx == 1 {
        // The whole tile in one read (it fits the pixel budget).
        let n = (h * w).min(len);
        data.read_into(start, &mut out[..n]);
        for v in out[..n].iter_mut().filter(|v| !v.is_finite()) {
            *v = f32::NAN;
        }
        return;
    }
    // One read per band of `dy` rows (one output row), bands in parallel (a layer
    // shown as one folded map is read by every thread); each cell sums its values
    // in order, as it always did.
    out[..rh * rw].par_chunks_mut(rw).enumerate().for_each_init(
        || {
            (
                vec![0f32; dy * w],
                vec![0f64; rw],
                vec![0u32; rw],
                vec![false; rw],
            )
        },
        |(band, sum, cnt, bad), (ry, out)| {
            let s = ry * dy * w;
            if s >= len {
                return;
            }
            sum.fill(0.0);
            cnt.fill(0);
            bad.fill(false);
            let n = ((((ry + 1) * dy).min(h) - ry * dy) * w).min(len - s);
            data.read_into(start + s, &mut band[..n]);
            for row in band[..n].chunks(w) {
                for (oc, block) in row.chunks(dx).enumerate() {
                    for &v in block {
                        if v.is_finite() {
                            sum[oc] += v as f64;
                            cnt[oc] += 1;
                        } else {
                            bad[oc] = true;
                        }
                    }
                }
            }
            for oc in 0..rw {
                out[oc] = if bad[oc] {
                    f32::NAN
                } else if cnt[oc] > 0 {
                    (sum[oc] / cnt[oc] as f64) as f32
                } else {
                    BLANK
                };
            }
        },
    );
}

/// Smallest and largest finite value, if any.
pub(crate) fn finite_range(v: &[f32]) -> Option<(f32, f32)> {
    // Branch-free in lanes: a non-finite value counts as +inf for the min and
    // -inf for the max (so it never wins).
    const L: usize = 16;
    let (mut lo, mut hi) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let lanes = v.chunks_exact(L);
    let tail = lanes.remainder();
    for c in lanes {
        for j in 0..L {
            let ok = c[j].abs() <= f32::MAX;
            let a = if ok { c[j] } else { f32::INFINITY };
            let b = if ok { c[j] } else { f32::NEG_INFINITY };
            lo[j] = if a < lo[j] { a } else { lo[j] };
            hi[j] = if b > hi[j] { b } else { hi[j] };
        }
    }
    let mut r = (f32::INFINITY, f32::NEG_INFINITY);
    for &x in tail.iter().filter(|x| x.is_finite()) {
        r = (r.0.min(x), r.1.max(x));
    }
    for j in 0..L {
        r = (r.0.min(lo[j]), r.1.max(hi[j]));
    }
    (r.0 <= r.1).then_some(r)
}

/// The `lo`-th and `hi`-th percentiles (nearest rank) of the finite values.
fn percentiles(tiles: &[Vec<f32>], lo: f32, hi: f32) -> Option<(f32, f32)> {
    let mut all: Vec<f32> = tiles
        .iter()
        .flat_map(|t| t.iter().copied().filter(|v| v.is_finite()))
        .collect();
    if all.is_empty() {
        return None;
    }
    let rank =
        |p: f32| ((p as f64 / 100.0 * (all.len() - 1) as f64).round() as usize).min(all.len() - 1);
    let (ilo, ihi) = (rank(lo), rank(hi));
    let a = *all.select_nth_unstable_by(ilo, f32::total_cmp).1;
    let b = *all.select_nth_unstable_by(ihi, f32::total_cmp).1;
    Some((a, b))
}

/// Value -> position in the colormap, for one tile (also used by the diff gallery).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mapping {
    /// `(v - lo) * k`, clamped to [0, 1].
    Linear { lo: f32, k: f32 },
    /// A constant.
    Fixed(f32),
}

impl Mapping {
    /// `own`: the tile's range; `all`: the range of every shown value (used for a
    /// constant tile, so it gets the colour it has on the shared scale).
    pub(crate) fn new(cm: Colormap, own: Option<(f32, f32)>, all: Option<(f32, f32)>) -> Mapping {
        let Some((lo, hi)) = own else {
            return Mapping::Fixed(0.5);
        };
        if cm.is_diverging() {
            let m = lo.abs().max(hi.abs());
            return if m > 0.0 && m.is_finite() {
                // t = 0.5 + 0.5 v / m
                Mapping::Linear { lo: -m, k: 0.5 / m }
            } else {
                Mapping::Fixed(0.5)
            };
        }
        if hi > lo && (hi - lo).is_finite() {
            return Mapping::Linear {
                lo,
                k: 1.0 / (hi - lo),
            };
        }
        // A constant tile: its place on the shared scale; a constant picture: the
        // low end for zero (nothing there), the middle for anything else.
        match all {
            Some((a, b)) if b > a && (b - a).is_finite() => {
                Mapping::Fixed(((lo - a) / (b - a)).clamp(0.0, 1.0))
            }
            _ => Mapping::Fixed(if lo == 0.0 { 0.0 } else { 0.5 }),
        }
    }

    #[inline]
    pub(crate) fn color(self, v: f32, lut: &[[u8; 3]; colormap::LUT_SIZE]) -> [u8; 3] {
        if v == BLANK {
            return SEPARATOR;
        }
        if v.is_nan() {
            return FLAG;
        }
        let t = match self {
            Mapping::Linear { lo, k } => (v - lo) * k,
            Mapping::Fixed(t) => t,
        };
        lut[colormap::lut_index(t)]
    }
}

/// Paints the reduced `tiles` of `layout` (one slice per tile shown, in order),
/// each through its own `maps` entry in colormap `cm`, separators in between; one
/// band of grid rows per task.
pub(crate) fn paint(layout: &Layout, tiles: &[&[f32]], maps: &[Mapping], cm: Colormap) -> RgbImage {
    let (w, h) = (layout.width as u32, layout.height as u32);
    if layout.kind == LayoutKind::Empty {
        return RgbImage::from_pixel(w, h, image::Rgb(SEPARATOR));
    }
    let lut = cm.lut();
    let mut buf = vec![0u8; layout.width * layout.height * 3];
    // Rows of pixels in parallel (a picture of one big map is one grid row).
    buf.par_chunks_mut((layout.width * 3).max(1))
        .enumerate()
        .for_each(|(y, row)| paint_row(row, y, layout, tiles, maps, lut));
    RgbImage::from_raw(w, h, buf).expect("buffer sized for the picture")
}

/// Paints pixel row `y`: the cells' colours where it crosses a row of reduced
/// values, the separator colour elsewhere.
fn paint_row(
    row: &mut [u8],
    y: usize,
    l: &Layout,
    reduced: &[&[f32]],
    maps: &[Mapping],
    lut: &[[u8; 3]; colormap::LUT_SIZE],
) {
    for px in row.chunks_exact_mut(3) {
        px.copy_from_slice(&SEPARATOR);
    }
    let span = l.cell_h + l.separator;
    let (gr, yy) = (y / span.max(1), y % span.max(1));
    let rw = l.tile_w.div_ceil(l.x.down);
    let rh = l.tile_h.div_ceil(l.y.down);
    let ry = yy / l.y.zoom.max(1);
    if yy >= l.cell_h || ry >= rh {
        return;
    }
    for gc in 0..l.cols {
        let t = gr * l.cols + gc;
        if t >= l.tiles {
            break;
        }
        let x0 = gc * (l.cell_w + l.separator) * 3;
        let (vals, map) = (reduced[t], maps[t]);
        let zx = l.x.zoom * 3;
        let out = &mut row[x0..x0 + rw * zx];
        for (seg, &v) in out.chunks_exact_mut(zx).zip(&vals[ry * rw..(ry + 1) * rw]) {
            let c = map.color(v, lut);
            for px in seg.chunks_exact_mut(3) {
                px.copy_from_slice(&c);
            }
        }
    }
}

/// Encodes an image as PNG (fast compression, adaptive filters).
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let mut out = Vec::with_capacity(img.as_raw().len() / 4 + 1024);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| {
            Error::render(format!(
                "cannot encode a {}×{} PNG: {e}",
                img.width(),
                img.height()
            ))
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests;

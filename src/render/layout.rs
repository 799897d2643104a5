//! Where each value of a layer goes in its picture: tiles, grid, zoom and
//! box reduction within the pixel budget.

use super::{check_percentiles, RenderOptions, Scale};
use crate::{Error, Result};

/// Heatmaps are made no more elongated than this (by thickening the short side).
pub(super) const MAX_ASPECT: f64 = 4.0;
/// Side of the blank picture of a zero-size layer.
pub const EMPTY_SIDE: usize = 16;
/// Internal marker of a cell with no value (the tail of a folded vector).
pub(crate) const BLANK: f32 = f32::NEG_INFINITY;

/// How a layer is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// Channels of one sample in a grid of cells.
    Grid,
    /// One 2-D map, rows × columns.
    Heatmap,
    /// A vector folded row by row into a near-square map (the last row may be partial).
    Folded,
    /// No element: a blank picture.
    Empty,
}

/// Enlargement or reduction along one axis: `n` source values show as
/// `n.div_ceil(down) * zoom` pixels. At most one of the two is above 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    /// Each (reduced) value is repeated this many times.
    pub zoom: usize,
    /// This many source values are averaged into one.
    pub down: usize,
}

impl Axis {
    fn of(n: usize, s: f64) -> Axis {
        if s >= 1.0 {
            Axis {
                zoom: s.floor() as usize,
                down: 1,
            }
        } else {
            Axis {
                zoom: 1,
                down: ((1.0 / s - 1e-9).ceil() as usize).clamp(1, n.max(1)),
            }
        }
    }

    /// Pixels shown for `n` source values.
    pub fn pixels(&self, n: usize) -> usize {
        n.div_ceil(self.down) * self.zoom
    }
}

/// The geometry of a picture: which values go where. Pixel (x, y) of the picture
/// belongs to grid cell ((y - origin_y) / (cell_h + separator), (x - origin_x) /
/// (cell_w + separator)); the margins left of `origin_x` and above `origin_y` hold
/// token labels (zero without them).
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Grid, heatmap, folded vector or empty.
    pub kind: LayoutKind,
    /// The sample shown (0 for ranks below 2).
    pub sample: usize,
    /// Samples in the layer (1 for ranks below 2).
    pub samples: usize,
    /// Element offset of the sample's first value.
    pub offset: usize,
    /// Tiles (grid cells) shown.
    pub tiles: usize,
    /// Tiles the sample has (more than `tiles` only when they do not fit the budget).
    pub total_tiles: usize,
    /// Elements per tile (consecutive in memory).
    pub tile_len: usize,
    /// Source rows of a tile.
    pub tile_h: usize,
    /// Source columns of a tile.
    pub tile_w: usize,
    /// Grid rows.
    pub rows: usize,
    /// Grid columns.
    pub cols: usize,
    /// Vertical enlargement / reduction.
    pub y: Axis,
    /// Horizontal enlargement / reduction.
    pub x: Axis,
    /// Pixel height of a cell.
    pub cell_h: usize,
    /// Pixel width of a cell.
    pub cell_w: usize,
    /// Separator width in pixels.
    pub separator: usize,
    /// Picture width in pixels (margins included).
    pub width: usize,
    /// Picture height in pixels (margins included).
    pub height: usize,
    /// Left margin (row labels) in pixels: where the grid starts.
    pub origin_x: usize,
    /// Top margin (column labels) in pixels: where the grid starts.
    pub origin_y: usize,
}

impl Layout {
    /// A one-line description: `32 channels of 26×26 in a 6×6 grid, ×3`.
    pub fn describe(&self) -> String {
        let mut s = match self.kind {
            LayoutKind::Empty => return "empty (no element)".into(),
            LayoutKind::Grid if self.tiles == 1 => {
                format!("one {}×{} map", self.tile_h, self.tile_w)
            }
            LayoutKind::Grid => {
                let shown = if self.tiles < self.total_tiles {
                    format!("first {} of {} channels", self.tiles, self.total_tiles)
                } else {
                    format!("{} channels", self.tiles)
                };
                format!(
                    "{shown} of {}×{} in a {}×{} grid",
                    self.tile_h, self.tile_w, self.rows, self.cols
                )
            }
            LayoutKind::Heatmap => format!("{}×{} heatmap", self.tile_h, self.tile_w),
            LayoutKind::Folded => format!(
                "{} values folded into {}×{}",
                self.tile_len, self.tile_h, self.tile_w
            ),
        };
        let axis = |a: &Axis| {
            if a.down > 1 {
                format!("÷{}", a.down)
            } else {
                format!("×{}", a.zoom)
            }
        };
        if self.x == self.y {
            if self.x.zoom > 1 || self.x.down > 1 {
                s += &format!(", {}", axis(&self.x));
            }
        } else {
            s += &format!(", rows {} columns {}", axis(&self.y), axis(&self.x));
        }
        s
    }
}

/// One cell of a picture: the rectangle (in image pixels) of one shown tile and
/// what it shows. See [`Layout::cells`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Tile number: the channel (or head) of a grid; 0 for a heatmap or a folded vector.
    pub index: usize,
    /// Left edge, pixels from the picture's left.
    pub x: usize,
    /// Top edge, pixels from the picture's top.
    pub y: usize,
    /// Width in pixels.
    pub w: usize,
    /// Height in pixels.
    pub h: usize,
    /// Source rows of the tile shown ([`Layout::tile_h`]).
    pub rows: usize,
    /// Source columns of the tile shown ([`Layout::tile_w`]).
    pub cols: usize,
}

/// What one pixel of a picture shows: see [`Layout::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spot {
    /// Position of the cell in [`Layout::cells`] (= its tile number).
    pub cell: usize,
    /// Row of the tile's reduced values (source rows `row * y.down ..`).
    pub row: usize,
    /// Column of the tile's reduced values (source columns `col * x.down ..`).
    pub col: usize,
}

impl Layout {
    /// Every shown tile's rectangle in image pixels, in tile order. The one place
    /// that knows where cells sit in the picture (pages find cells through it):
    /// whatever is drawn around the cells (margins, labels) is accounted for here.
    pub fn cells(&self) -> Vec<Cell> {
        if self.kind == LayoutKind::Empty {
            return Vec::new();
        }
        (0..self.tiles)
            .map(|t| Cell {
                index: t,
                x: self.origin_x + (t % self.cols) * (self.cell_w + self.separator),
                y: self.origin_y + (t / self.cols) * (self.cell_h + self.separator),
                w: self.cell_w,
                h: self.cell_h,
                rows: self.tile_h,
                cols: self.tile_w,
            })
            .collect()
    }

    /// The cell and reduced value shown at pixel (`x`, `y`), if any (not on a
    /// separator, not past the picture or past the end of a folded vector).
    pub fn locate(&self, x: usize, y: usize) -> Option<Spot> {
        let c = self
            .cells()
            .into_iter()
            .find(|c| (c.x..c.x + c.w).contains(&x) && (c.y..c.y + c.h).contains(&y))?;
        let (row, col) = ((y - c.y) / self.y.zoom, (x - c.x) / self.x.zoom);
        let first = row * self.y.down * self.tile_w + col * self.x.down;
        (first < self.tile_len).then_some(Spot {
            cell: c.index,
            row,
            col,
        })
    }
}

pub(super) fn checked_len(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            Error::render(format!(
                "shape {} has more elements than fit in memory",
                crate::runfile::shape_str(shape)
            ))
        })
}

/// Where each value of a layer of `shape` goes in its picture under `opts`.
pub fn layout(shape: &[usize], opts: &RenderOptions) -> Result<Layout> {
    let n = checked_len(shape)?;
    let (samples, sample) = if shape.len() >= 2 {
        (shape[0], opts.sample)
    } else {
        (1, 0)
    };
    if n == 0 {
        return Ok(Layout::empty(sample, samples, opts.separator));
    }
    if sample >= samples {
        return Err(Error::option(format!(
            "sample {sample} is out of range: the layer {} has {samples} sample{}",
            crate::runfile::shape_str(shape),
            if samples == 1 { "" } else { "s" }
        )));
    }
    if let Scale::Percentile(lo, hi) = opts.scale {
        check_percentiles(lo, hi)?;
    }
    let per = n / samples;
    let offset = sample * per;
    let (kind, tiles, tile_len, h, w) = tile_shape(shape, per);
    let budget = opts.max_pixels.max(1);
    let sep = opts.separator;
    let mut shown = tiles;
    if kind == LayoutKind::Grid {
        // With 1-pixel cells each tile needs (1 + sep)² pixels.
        shown = shown.min((budget / (1 + sep).pow(2)).max(1));
    }
    loop {
        let cols = if kind == LayoutKind::Grid {
            ((shown as f64 * h as f64 / w as f64).sqrt().ceil() as usize).clamp(1, shown)
        } else {
            1
        };
        let rows = shown.div_ceil(cols);
        let target = if shown == 1 {
            opts.min_side
        } else {
            opts.min_cell
        };
        let min_px = super::labels::token_min_px(shape, opts);
        if let Some((y, x)) = fit(kind, rows, cols, h, w, sep, target, min_px, budget) {
            let (cell_h, cell_w) = (y.pixels(h), x.pixels(w));
            return Ok(Layout {
                kind,
                sample,
                samples,
                offset,
                tiles: shown,
                total_tiles: tiles,
                tile_len,
                tile_h: h,
                tile_w: w,
                rows,
                cols,
                y,
                x,
                cell_h,
                cell_w,
                separator: sep,
                width: cols * cell_w + (cols - 1) * sep,
                height: rows * cell_h + (rows - 1) * sep,
                origin_x: 0,
                origin_y: 0,
            });
        }
        // Too many tiles even at one pixel each: show fewer.
        if shown == 1 {
            return Err(Error::render(format!(
                "shape {} does not fit in {budget} pixels",
                crate::runfile::shape_str(shape)
            )));
        }
        shown = (shown * 3 / 4).max(1);
    }
}

/// How one sample of a layer of `shape` (`per` values) is cut into tiles:
/// `(kind, tiles, tile_len, tile_h, tile_w)`.
fn tile_shape(shape: &[usize], per: usize) -> (LayoutKind, usize, usize, usize, usize) {
    let folded = |len: usize| {
        let w = (len as f64).sqrt().ceil() as usize;
        let w = w.max(1);
        (LayoutKind::Folded, 1, len, len.div_ceil(w), w)
    };
    match shape.len() {
        0..=2 => folded(per),
        3 => {
            let (t, d) = (shape[1], shape[2]);
            if t == 1 || d == 1 {
                folded(per)
            } else {
                (LayoutKind::Heatmap, 1, per, t, d)
            }
        }
        r => {
            let (h, w) = (shape[r - 2], shape[r - 1]);
            let c = per / (h * w);
            if h * w == 1 {
                folded(c)
            } else if h == 1 || w == 1 {
                if c == 1 {
                    folded(h * w)
                } else {
                    (LayoutKind::Heatmap, 1, per, c, h * w)
                }
            } else {
                (LayoutKind::Grid, c, h * w, h, w)
            }
        }
    }
}

/// Zoom / reduction per axis so cells reach `target` pixels (enlarging only), each
/// row and column at least `min_px` (y, x) pixels (token labels), and the picture
/// stays within `budget` pixels; `None` when even 1-pixel cells do not fit.
#[allow(clippy::too_many_arguments)]
fn fit(
    kind: LayoutKind,
    rows: usize,
    cols: usize,
    h: usize,
    w: usize,
    sep: usize,
    target: usize,
    min_px: (usize, usize),
    budget: usize,
) -> Option<(Axis, Axis)> {
    let zoom = (target as f64 / h.max(w) as f64).ceil().max(1.0);
    let (mut sy, mut sx) = (zoom.max(min_px.0 as f64), zoom.max(min_px.1 as f64));
    if kind != LayoutKind::Grid {
        let (ph, pw) = (h as f64 * sy, w as f64 * sx);
        if pw > MAX_ASPECT * ph {
            sy = (pw / (MAX_ASPECT * h as f64)).ceil();
        } else if ph > MAX_ASPECT * pw {
            sx = (ph / (MAX_ASPECT * w as f64)).ceil();
        }
    }
    loop {
        let (ay, ax) = (Axis::of(h, sy), Axis::of(w, sx));
        let width = cols * ax.pixels(w) + (cols - 1) * sep;
        let height = rows * ay.pixels(h) + (rows - 1) * sep;
        let total = width as f64 * height as f64;
        if total <= budget as f64 {
            return Some((ay, ax));
        }
        let f = (budget as f64 / total).sqrt().min(0.95);
        let (ny, nx) = ((sy * f).max(1.0 / h as f64), (sx * f).max(1.0 / w as f64));
        // Both axes at their smallest (one pixel per cell): it cannot shrink further.
        // (Not `down >= h`: a 1-value axis has `down == 1` while still enlarged.)
        if ny == sy && nx == sx {
            return None;
        }
        (sy, sx) = (ny, nx);
    }
}

impl Layout {
    /// The picture of a layer without values: a small blank square.
    fn empty(sample: usize, samples: usize, separator: usize) -> Layout {
        Layout {
            kind: LayoutKind::Empty,
            sample,
            samples,
            offset: 0,
            tiles: 0,
            total_tiles: 0,
            tile_len: 0,
            tile_h: 0,
            tile_w: 0,
            rows: 0,
            cols: 0,
            y: Axis { zoom: 1, down: 1 },
            x: Axis { zoom: 1, down: 1 },
            cell_h: 0,
            cell_w: 0,
            separator,
            width: EMPTY_SIDE,
            height: EMPTY_SIDE,
            origin_x: 0,
            origin_y: 0,
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Any shape under any budget: a layout within the pixel budget (or a clear
        /// error), never a loop, and every shown value placed inside the picture.
        #[test]
        fn layouts_stay_within_the_pixel_budget(
            shape in proptest::collection::vec(0usize..400, 0..6),
            budget in 1usize..2_000_000,
            sep in 0usize..3,
        ) {
            let opts = RenderOptions { max_pixels: budget, separator: sep, ..RenderOptions::default() };
            match layout(&shape, &opts) {
                Ok(l) if l.kind == LayoutKind::Empty => {
                    prop_assert_eq!((l.width, l.height), (EMPTY_SIDE, EMPTY_SIDE));
                }
                Ok(l) => {
                    prop_assert!(l.width * l.height <= budget, "{shape:?} {budget}: {l:?}");
                    prop_assert!(l.tiles >= 1 && l.tiles <= l.total_tiles);
                    prop_assert!(l.rows * l.cols >= l.tiles);
                    prop_assert!(l.cell_h >= 1 && l.cell_w >= 1);
                }
                Err(e) => prop_assert!(e.to_string().contains("does not fit"), "{e}"),
            }
        }
    }
}

//! The picture's reduction inside [`super::scan_cells`]'s read: each chunk adds
//! its values to the cells it touches; the cells only it touches are lent to it
//! out of the result, the cells it shares with a neighbouring chunk come back as
//! partial sums that are added in chunk order (deterministic results).

use std::collections::BTreeMap;
use std::ops::Range;

use super::super::{Layout, BLANK};
use crate::values::SCAN_CHUNK;

/// The picture's cells: reduced rows and columns of each shown tile.
pub(super) struct Grid {
    /// Element offset of the first tile, tiles, elements per tile.
    offset: usize,
    tiles: usize,
    tile_len: usize,
    /// Source columns of a tile; values of a tile shown (`min(h·w, tile_len)`).
    w: usize,
    shown: usize,
    /// Source rows and columns per cell; cells per tile row and per tile.
    dy: usize,
    dx: usize,
    rw: usize,
    per_tile: usize,
}

impl Grid {
    pub(super) fn new(l: &Layout) -> Grid {
        let (h, w) = (l.tile_h, l.tile_w);
        let (dy, dx) = (l.y.down.max(1), l.x.down.max(1));
        let (rh, rw) = (h.div_ceil(dy), w.div_ceil(dx));
        Grid {
            offset: l.offset,
            tiles: l.tiles,
            tile_len: l.tile_len,
            w,
            shown: (h * w).min(l.tile_len),
            dy,
            dx,
            rw,
            per_tile: rh * rw,
        }
    }

    pub(super) fn cells(&self) -> usize {
        self.tiles * self.per_tile
    }

    /// Values of a tile shown in the band starting at cell `b`.
    fn band_values(&self, b: usize) -> usize {
        let first = (b % self.per_tile) / self.rw * self.dy * self.w;
        (first + self.dy * self.w).min(self.shown) - first
    }

    /// The first cell of the band (row of cells) holding element `j` of tile `t`.
    fn band(&self, t: usize, j: usize) -> usize {
        t * self.per_tile + j / self.w / self.dy * self.rw
    }

    /// The cells (band-aligned, `first..last`) that the elements `start..end` touch.
    pub(super) fn span(&self, start: usize, end: usize) -> Option<(usize, usize)> {
        if self.tile_len == 0 || self.shown == 0 {
            return None;
        }
        let region_end = self.offset + self.tiles * self.tile_len;
        let (a, b) = (start.max(self.offset), end.min(region_end));
        if a >= b {
            return None;
        }
        let (t0, t1) = (
            (a - self.offset) / self.tile_len,
            (b - 1 - self.offset) / self.tile_len,
        );
        let j0 = ((a - self.offset) % self.tile_len).min(self.shown - 1);
        let j1 = ((b - 1 - self.offset) % self.tile_len).min(self.shown - 1);
        Some((self.band(t0, j0), self.band(t1, j1) + self.rw))
    }

    /// Where chunks `ks` of a layer of `n` values write their cells: the cells
    /// only one chunk touches are lent to it out of `cells`, the others get
    /// partial sums (`None` for a chunk outside the picture).
    pub(super) fn dests<'a>(
        &self,
        ks: Range<usize>,
        n: usize,
        cells: &'a mut Means,
    ) -> Vec<Option<Dest<'a>>> {
        let span = |k: usize| {
            let start = k.checked_mul(SCAN_CHUNK).filter(|&s| s < n)?;
            self.span(start, (start + SCAN_CHUNK).min(n))
        };
        let (mut rest, mut at) = (&mut cells.out[..], 0);
        let mut out = Vec::with_capacity(ks.len());
        for k in ks {
            let Some((first, last)) = span(k) else {
                out.push(None);
                continue;
            };
            let lo = k
                .checked_sub(1)
                .and_then(span)
                .map_or(first, |p| first.max(p.1));
            let hi = span(k + 1).map_or(last, |q| last.min(q.0));
            let (lo, hi, parts) = if lo < hi {
                let mut parts = Vec::new();
                if first < lo {
                    parts.push(Cells::zeros(first, lo - first));
                }
                if hi < last {
                    parts.push(Cells::zeros(hi, last - hi));
                }
                (lo, hi, parts)
            } else {
                (at, at, vec![Cells::zeros(first, last - first)])
            };
            let mine;
            (_, rest) = std::mem::take(&mut rest).split_at_mut(lo - at);
            (mine, rest) = std::mem::take(&mut rest).split_at_mut(hi - lo);
            at = hi;
            out.push(Some(Dest {
                lo,
                out: mine,
                parts,
                band: None,
                sum: Vec::new(),
                cnt: Vec::new(),
                columns: None,
                col: Vec::new(),
            }));
        }
        out
    }

    /// Adds the values of the chunk at `start` to its cells in `dest` (`finite`:
    /// every value is).
    pub(super) fn reduce(&self, start: usize, values: &[f32], finite: bool, dest: &mut Dest<'_>) {
        let Some(_) = self.span(start, start + values.len()) else {
            return;
        };
        let region_end = self.offset + self.tiles * self.tile_len;
        let (a, b) = (
            start.max(self.offset),
            (start + values.len()).min(region_end),
        );
        let (t0, t1) = (
            (a - self.offset) / self.tile_len,
            (b - 1 - self.offset) / self.tile_len,
        );
        for t in t0..=t1 {
            let ts = self.offset + t * self.tile_len;
            let ja = a.max(ts) - ts;
            let jb = (b.min(ts + self.tile_len) - ts).min(self.shown);
            let mut j = ja;
            while j < jb {
                let end = (j / self.w * self.w + self.w).min(jb);
                let row = &values[ts + j - start..ts + end - start];
                let band = self.band(t, j);
                if finite && end - j == self.w {
                    dest.add_columns(band, row, self);
                } else {
                    dest.flush_columns(self);
                    let (sum, cnt) = dest.band(band, self.rw);
                    add_row(row, j % self.w, self.dx, sum, cnt, finite);
                }
                j = end;
            }
        }
        dest.flush_columns(self);
        dest.flush();
    }
}

/// Adds a row of values, from source column `col`, to the sums and counts of its
/// cells (`dx` columns each; `sum[0]` is the cell of column 0).
///
/// A row with a NaN or ±Inf adds each value in order, as `render` does. A row of
/// finite values (the usual case: `finite` comes from the chunk's statistics)
/// adds each cell's block of values as one f64 sum, in lanes for wide blocks: the
/// same numbers up to the association of f64 additions.
fn add_row(row: &[f32], col: usize, dx: usize, sum: &mut [f64], cnt: &mut [u32], finite: bool) {
    let mut oc = col / dx;
    if !finite {
        let (mut i, mut block) = (0, (oc + 1) * dx - col);
        while i < row.len() {
            let e = (i + block).min(row.len());
            let (mut s, mut k) = (sum[oc], cnt[oc]);
            for &v in &row[i..e] {
                if v.is_finite() {
                    s += v as f64;
                    k += 1;
                } else {
                    s = f64::NAN;
                }
            }
            (sum[oc], cnt[oc]) = (s, k);
            (i, oc, block) = (e, oc + 1, dx);
        }
        return;
    }
    // The first block may start mid-cell, the last may end mid-cell.
    let lead = (((oc + 1) * dx - col) % dx).min(row.len());
    if lead > 0 {
        sum[oc] += block_sum(&row[..lead]);
        cnt[oc] += lead as u32;
        oc += 1;
    }
    collapse(&row[lead..], dx, |i, s, k| {
        sum[oc + i] += s;
        cnt[oc + i] += k;
    });
}

/// The f64 sum of finite values, in four lanes.
fn block_sum<T: Copy + Into<f64>>(b: &[T]) -> f64 {
    let mut a = [0f64; 4];
    let quads = b.chunks_exact(4);
    let t: f64 = quads.remainder().iter().map(|&v| v.into()).sum();
    for q in quads {
        for j in 0..4 {
            a[j] += q[j].into();
        }
    }
    (a[0] + a[1]) + (a[2] + a[3]) + t
}

/// `acc[i] += row[i]` in f64 (with AVX-512 or AVX2 where the CPU has them).
fn add_to_f64(acc: &mut [f64], row: &[f32]) {
    #[inline(always)]
    fn lanes(acc: &mut [f64], row: &[f32]) {
        acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
    }
    crate::values::dispatch!((acc: &mut [f64], row: &[f32]) -> (), lanes(acc, row))
}

/// The means of the cells of `rows` whole finite rows from their column sums `col`
/// (`dx` columns per cell; at least one value per cell, so `mean` without its
/// cases): [`collapse`]'s sums, divided in lanes (with AVX-512 or AVX2 where the
/// CPU has them: `collapse` is inlined into each build, so the division vectorises).
fn column_means(col: &[f64], dx: usize, rows: u32, out: &mut [f32]) {
    #[inline(always)]
    fn lanes(col: &[f64], dx: usize, rows: u32, out: &mut [f32]) {
        let out = &mut out[..col.len().div_ceil(dx)];
        let rows = rows as usize;
        collapse(col, dx, |i, s, k| {
            out[i] = (s / (rows * k as usize) as f64) as f32;
        });
    }
    crate::values::dispatch!(
        (col: &[f64], dx: usize, rows: u32, out: &mut [f32]) -> (),
        lanes(col, dx, rows, out)
    )
}

/// Calls `put(cell, sum, values)` for each cell of `dx` consecutive values of
/// `row` (the last cell may be narrower), each cell's sum in f64.
#[inline(always)]
fn collapse<T: Copy + Into<f64>>(row: &[T], dx: usize, mut put: impl FnMut(usize, f64, u32)) {
    let full = row.len() / dx;
    let body = &row[..full * dx];
    let f = |v: T| -> f64 { v.into() };
    match dx {
        1 => body.iter().enumerate().for_each(|(i, &v)| put(i, f(v), 1)),
        2 => body
            .chunks_exact(2)
            .enumerate()
            .for_each(|(i, b)| put(i, f(b[0]) + f(b[1]), 2)),
        3 => body
            .chunks_exact(3)
            .enumerate()
            .for_each(|(i, b)| put(i, f(b[0]) + f(b[1]) + f(b[2]), 3)),
        4 => body
            .chunks_exact(4)
            .enumerate()
            .for_each(|(i, b)| put(i, (f(b[0]) + f(b[1])) + (f(b[2]) + f(b[3])), 4)),
        _ => body
            .chunks_exact(dx)
            .enumerate()
            .for_each(|(i, b)| put(i, block_sum(b), dx as u32)),
    }
    let tail = &row[full * dx..];
    if !tail.is_empty() {
        put(full, block_sum(tail), tail.len() as u32);
    }
}

/// Where one chunk adds its values: the means of the cells `lo..` only it
/// touches (lent out of the totals; a band's sums are kept until its last row),
/// and partial sums of the cells it shares.
pub(super) struct Dest<'a> {
    lo: usize,
    out: &'a mut [f32],
    pub(super) parts: Vec<Cells>,
    /// The own band being summed, and its sums and counts.
    band: Option<usize>,
    sum: Vec<f64>,
    cnt: Vec<u32>,
    /// Whole finite rows of one band added column by column (`w` sums), before
    /// they are added to the band's cells: the band's first cell and the rows.
    columns: Option<(usize, u32)>,
    col: Vec<f64>,
}

impl Dest<'_> {
    /// Adds a whole row of finite values of the band starting at cell `b` to the
    /// column sums (one f64 addition per value, in lanes; the cells' block sums
    /// wait until the band's last row in the chunk).
    fn add_columns(&mut self, b: usize, row: &[f32], g: &Grid) {
        if self.columns.is_some_and(|(cb, _)| cb != b) {
            self.flush_columns(g);
        }
        match &mut self.columns {
            Some((_, rows)) => {
                *rows += 1;
                add_to_f64(&mut self.col, row);
            }
            None => {
                self.columns = Some((b, 1));
                self.col.clear();
                self.col.extend(row.iter().map(|&v| v as f64));
            }
        }
    }

    /// Adds the column sums to their cells (`dx` columns each); a band of this
    /// chunk's own that came whole in these rows gets its means written at once.
    fn flush_columns(&mut self, g: &Grid) {
        let Some((b, rows)) = self.columns.take() else {
            return;
        };
        let col = std::mem::take(&mut self.col);
        let own = b >= self.lo && b + g.rw <= self.lo + self.out.len();
        if own && self.band != Some(b) && rows as usize * g.w == g.band_values(b) {
            let at = b - self.lo;
            column_means(&col, g.dx, rows, &mut self.out[at..at + g.rw]);
        } else {
            let (sum, cnt) = self.band(b, g.rw);
            collapse(&col, g.dx, |i, s, k| {
                sum[i] += s;
                cnt[i] += rows * k;
            });
        }
        self.col = col;
    }

    /// The sums and counts of the `rw` cells of the band starting at cell `b`.
    fn band(&mut self, b: usize, rw: usize) -> (&mut [f64], &mut [u32]) {
        if b >= self.lo && b + rw <= self.lo + self.out.len() {
            if self.band != Some(b) {
                self.flush();
                self.band = Some(b);
                self.sum.clear();
                self.sum.resize(rw, 0.0);
                self.cnt.clear();
                self.cnt.resize(rw, 0);
            }
            return (&mut self.sum, &mut self.cnt);
        }
        let p = self
            .parts
            .iter_mut()
            .find(|p| b >= p.first && b + rw <= p.first + p.sum.len())
            .expect("every band a chunk touches is its own or shared");
        let i = b - p.first;
        (&mut p.sum[i..i + rw], &mut p.cnt[i..i + rw])
    }

    /// Writes the means of the own band summed so far.
    fn flush(&mut self) {
        if let Some(b) = self.band.take() {
            let at = b - self.lo;
            let out = &mut self.out[at..at + self.sum.len()];
            for ((o, &s), &c) in out.iter_mut().zip(&self.sum).zip(&self.cnt) {
                *o = mean(s, c);
            }
        }
    }
}

/// A cell's value from the sum and count of its finite values: NaN where a
/// non-finite value fell (NaN sum), [`BLANK`] where no value did.
fn mean(s: f64, c: u32) -> f32 {
    if s.is_nan() {
        f32::NAN
    } else if c > 0 {
        (s / c as f64) as f32
    } else {
        BLANK
    }
}

/// The picture's cells: each cell's value, and the sums of the cells shared by
/// chunks still open (by first cell of their band).
pub(super) struct Means {
    out: Vec<f32>,
    open: BTreeMap<usize, Cells>,
}

impl Means {
    pub(super) fn new(g: Option<&Grid>) -> Means {
        Means {
            out: vec![BLANK; g.map_or(0, Grid::cells)],
            open: Default::default(),
        }
    }

    /// Adds a chunk's partial sums (whole bands, in chunk order).
    pub(super) fn add(&mut self, part: Cells) {
        match self.open.get_mut(&part.first) {
            Some(c) if c.sum.len() == part.sum.len() => {
                c.sum.iter_mut().zip(&part.sum).for_each(|(a, b)| *a += b);
                c.cnt.iter_mut().zip(&part.cnt).for_each(|(a, b)| *a += b);
            }
            _ => {
                let mut c = Cells::zeros(part.first, part.sum.len());
                c.add(&part);
                self.merge(c);
            }
        }
    }

    /// Puts `c` into the open cells, overlapping entries merged.
    fn merge(&mut self, mut c: Cells) {
        let end = c.first + c.sum.len();
        let overlapping: Vec<usize> = self
            .open
            .range(..end)
            .filter(|(_, o)| o.first + o.sum.len() > c.first)
            .map(|(&k, _)| k)
            .collect();
        for k in overlapping {
            let o = self.open.remove(&k).expect("listed");
            let first = o.first.min(c.first);
            let last = (o.first + o.sum.len()).max(c.first + c.sum.len());
            let mut m = Cells::zeros(first, last - first);
            m.add(&o);
            m.add(&c);
            c = m;
        }
        self.open.insert(c.first, c);
    }

    /// Writes the means of the open cells before cell `end` (no chunk still to
    /// come touches them).
    pub(super) fn close(&mut self, end: usize) {
        while let Some(e) = self.open.first_entry() {
            if e.get().first + e.get().sum.len() > end {
                break;
            }
            let c = e.remove();
            for (i, (&s, &n)) in c.sum.iter().zip(&c.cnt).enumerate() {
                self.out[c.first + i] = mean(s, n);
            }
        }
    }

    /// The reduced tiles.
    pub(super) fn tiles(&mut self, g: &Grid) -> Vec<Vec<f32>> {
        self.close(usize::MAX);
        let out = std::mem::take(&mut self.out);
        if g.tiles == 1 {
            return vec![out];
        }
        out.chunks(g.per_tile).map(<[f32]>::to_vec).collect()
    }
}

/// Sums and counts of the finite values of consecutive cells from `first`; a
/// cell that met a NaN or ±Inf has a NaN sum.
pub(super) struct Cells {
    first: usize,
    sum: Vec<f64>,
    cnt: Vec<u32>,
}

impl Cells {
    fn zeros(first: usize, n: usize) -> Cells {
        Cells {
            first,
            sum: vec![0.0; n],
            cnt: vec![0; n],
        }
    }

    fn add(&mut self, c: &Cells) {
        let at = c.first - self.first;
        let n = c.sum.len().min(self.sum.len() - at);
        for i in 0..n {
            self.sum[at + i] += c.sum[i];
            self.cnt[at + i] += c.cnt[i];
        }
    }
}

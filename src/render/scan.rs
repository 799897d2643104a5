//! One read of a layer for its gallery card (issue 14): the statistics, the
//! histogram, the never-active units and the picture's reduction are all fed from
//! each chunk while it sits in the core's cache, instead of four reads.
//!
//! The histogram needs the layer's range before its first value is binned. Runs
//! saved by candlelight store every layer's statistics in their header
//! (`candlelight.layers`), and their min and max are the range to bin with. They
//! are a hint, never trusted: when the statistics computed in the same read say
//! otherwise (a run without summaries, a header edited by hand), the histogram is
//! counted again in a second read with the computed range, so it is always exactly
//! [`Histogram::of`]'s. Never-active units likewise: flagged in the read when the
//! hint says the layer has no negative value, else in a second read if it has none.
//!
//! Chunks are scanned in parallel in batches of [`BATCH`] and their results merged
//! in order, which keeps memory bounded (the picture's partial sums of a batch) and
//! the results deterministic: statistics bit-identical to [`Stats::of`] (the same
//! chunks merged in the same order), histogram counts and never-active units
//! identical. A picture cell's mean is the f64 sum of its finite values, as by
//! [`super::render`], but added in another association (whole finite rows of a
//! band of cells summed column by column first, in lanes, then each cell's
//! columns; other rows a cell's block at a time; a cell straddling two chunks as
//! two partial sums), so it may differ from `render`'s in the last bits of the f64
//! before rounding to f32 (tested: within 1 ulp of f32).

use safetensors::Dtype;

use super::histogram::bin_chunk;
use super::{finish, picture_layout, Histogram, Layout, LayoutKind, Picture, RenderOptions};
use crate::stats::{mark_active, Activity, Stats};
use crate::values::stats::Acc;
use crate::values::{LayerData, SCAN_CHUNK};
use crate::Result;
use cells::{Cells, Dest, Grid, Means};

/// Chunks scanned in parallel before their results are merged.
const BATCH: usize = 32;

/// What one read of a layer gives its card.
#[derive(Debug)]
pub struct CardScan {
    /// As [`Stats::of`].
    pub stats: Stats,
    /// As [`Histogram::of`] with `stats`.
    pub histogram: Histogram,
    /// As [`Activity::of`] with `stats.min` (`None` when `stats.min` is not finite,
    /// or when not asked for).
    pub activity: Option<Activity>,
    /// As [`super::render`] (an error when the layer cannot be drawn).
    pub picture: Result<Picture>,
    /// Reads of the layer it took: 1 when the hint held, up to 3 without one.
    pub reads: u32,
}

/// What one read of a layer gives before its picture is painted: the card's
/// numbers and the picture's cells ([`CellScan::paint`] draws them).
#[derive(Debug)]
pub struct CellScan {
    /// As [`Stats::of`].
    pub stats: Stats,
    /// As [`Histogram::of`] with `stats`.
    pub histogram: Histogram,
    /// As in [`CardScan`].
    pub activity: Option<Activity>,
    /// Reads of the layer it took.
    pub reads: u32,
    /// The picture's layout and reduced tiles (one `Vec` per tile), or why the
    /// layer cannot be drawn.
    pub cells: Result<(Layout, Vec<Vec<f32>>)>,
    shape: Vec<usize>,
    opts: RenderOptions,
}

impl CellScan {
    /// Paints the picture of the cells (colours, labels): the card.
    pub fn paint(self) -> CardScan {
        let (shape, opts) = (self.shape, self.opts);
        CardScan {
            stats: self.stats,
            histogram: self.histogram,
            activity: self.activity,
            picture: self.cells.map(|(l, r)| finish(&shape, &opts, l, r)),
            reads: self.reads,
        }
    }
}

/// Scans `data` (of `shape`) once for its card, the picture's cells unpainted
/// ([`CellScan::paint`] draws them): statistics, a histogram of `bins`
/// bins, never-active units (when `units`) and the picture `opts` asks for.
/// `hint` is what the run's header says the statistics are
/// ([`crate::Run::summary_at`]); without it, or when it is wrong, the histogram
/// (and the units) take a second read. A read of the run file that fails is an
/// error (see [`LayerData::check`]).
pub fn scan_cells(
    data: &LayerData<'_>,
    shape: &[usize],
    opts: &RenderOptions,
    bins: usize,
    hint: Option<&Stats>,
    units: bool,
) -> Result<CellScan> {
    let bins = bins.max(1);
    let mut o = opts.clone();
    o.scale = o.scale.resolve(shape);
    let layout = picture_layout(data.len(), shape, &o);
    let mut plan = Plan::new(data, shape, bins, hint, layout.as_ref().ok());
    if !units {
        plan.units = None;
    }
    let mut totals = plan.totals();
    let chunks = data.len().div_ceil(SCAN_CHUNK);
    for k in (0..chunks).step_by(BATCH) {
        let ks = k..(k + BATCH).min(chunks);
        // Each chunk writes the picture cells only it touches in place; cells
        // shared with a neighbour come back as partial sums, added in order.
        let dests = match &plan.picture {
            Some(g) => g.dests(ks.clone(), data.len(), &mut totals.cells),
            None => ks.clone().map(|_| None).collect(),
        };
        let outs = data.par_chunks_with(k, dests, |start, c, d| plan.chunk(start, c, d));
        for out in outs {
            totals.add(out);
        }
        if let Some(g) = &plan.picture {
            // Shared cells before the next chunk's are complete.
            let next = ks.end * SCAN_CHUNK;
            let done = g.span(next, (next + SCAN_CHUNK).min(data.len()));
            totals.cells.close(done.map_or(usize::MAX, |s| s.0));
        }
    }
    let stats = totals.acc.finish();
    let mut reads = u32::from(chunks > 0);
    let histogram = match plan.range {
        Some((lo, hi, _)) if (lo, hi) == (stats.min, stats.max) => Histogram {
            lo,
            hi,
            counts: totals.hist,
        },
        _ => {
            reads += u32::from(stats.max > stats.min);
            Histogram::of(data, &stats, bins)
        }
    };
    let activity = match (plan.units, stats.min.is_finite() && units) {
        (_, false) => None,
        (Some((axis, ..)), true) if stats.min >= 0.0 => {
            Some(Activity::from_flags(shape, axis, &totals.active))
        }
        (_, true) => {
            let a = Activity::of(data, shape, stats.min);
            reads += u32::from(a.is_some());
            a
        }
    };
    let cells = layout.map(|l| {
        let reduced = match &plan.picture {
            Some(p) => totals.cells.tiles(p),
            None => Vec::new(),
        };
        (l, reduced)
    });
    data.check()?;
    Ok(CellScan {
        stats,
        histogram,
        activity,
        reads,
        cells,
        shape: shape.to_vec(),
        opts: o,
    })
}

/// What the read computes besides the statistics.
struct Plan {
    /// Histogram range from the hint: `(lo, hi, bins / (hi - lo))`.
    range: Option<(f64, f64, f64)>,
    bins: usize,
    /// Unit axis, units and values per unit run, when the hint says "no negative value".
    units: Option<(usize, usize, usize)>,
    /// The picture's cells.
    picture: Option<Grid>,
}

impl Plan {
    fn new(
        data: &LayerData<'_>,
        shape: &[usize],
        bins: usize,
        hint: Option<&Stats>,
        layout: Option<&Layout>,
    ) -> Plan {
        // Stored statistics went through JSON; the min and max of f32, f16 and bf16
        // data are f32 values, so rounding to f32 undoes a last-bit parse error.
        let exact = |v: f64| match data.dtype() {
            Dtype::F64 => v,
            _ => v as f32 as f64,
        };
        let range = hint
            .map(|h| (exact(h.min), exact(h.max)))
            .filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && hi > lo)
            .map(|(lo, hi)| (lo, hi, bins as f64 / (hi - lo)));
        let units = hint
            .filter(|h| h.min >= 0.0)
            .and_then(|_| Activity::units(shape));
        Plan {
            range,
            bins,
            units,
            picture: layout
                .filter(|l| l.kind != LayoutKind::Empty)
                .map(Grid::new),
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            acc: Acc::EMPTY,
            hist: vec![0; self.bins],
            active: vec![false; self.units.map_or(0, |u| u.1)],
            cells: Means::new(self.picture.as_ref()),
        }
    }

    /// Everything computed from the chunk of `values` starting at element `start`.
    fn chunk(&self, start: usize, values: &[f32], dest: Option<Dest<'_>>) -> ChunkOut {
        let acc = Acc::of(values);
        ChunkOut {
            acc,
            hist: self
                .range
                .map(|(lo, _, scale)| bin_chunk(values, lo, scale, self.bins)),
            active: self.units.map(|(_, units, inner)| {
                // The units this chunk touches: from the one holding `start`,
                // consecutive (modulo `units`).
                let first = start / inner;
                let last = (start + values.len()).saturating_sub(1) / inner;
                let mut flags = vec![false; units.min(last - first + 1)];
                mark_active(&mut flags, inner, start % inner, values);
                (first % units, flags)
            }),
            parts: match (&self.picture, dest) {
                (Some(g), Some(mut d)) => {
                    g.reduce(start, values, acc.all_finite(), &mut d);
                    d.parts
                }
                _ => Vec::new(),
            },
        }
    }
}

/// One chunk's share of the results.
struct ChunkOut {
    acc: Acc,
    hist: Option<Vec<u64>>,
    /// Flags of units `first..` (modulo the unit count).
    active: Option<(usize, Vec<bool>)>,
    /// Partial sums of the picture cells shared with neighbouring chunks.
    parts: Vec<Cells>,
}

/// The results so far, chunks merged in order.
struct Totals {
    acc: Acc,
    hist: Vec<u64>,
    active: Vec<bool>,
    cells: Means,
}

impl Totals {
    fn add(&mut self, out: ChunkOut) {
        self.acc = self.acc.merge(out.acc);
        if let Some(h) = out.hist {
            self.hist.iter_mut().zip(h).for_each(|(a, b)| *a += b);
        }
        if let Some((first, flags)) = out.active {
            // At most one wrap: a chunk flags at most every unit once.
            let (a, b) = flags.split_at(flags.len().min(self.active.len() - first));
            let or = |dst: &mut [bool], src: &[bool]| {
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d |= s);
            };
            or(&mut self.active[first..], a);
            or(&mut self.active[..], b);
        }
        for p in out.parts {
            self.cells.add(p);
        }
    }
}

#[path = "scan_cells.rs"]
mod cells;

#[cfg(test)]
#[path = "scan_tests.rs"]
mod tests;

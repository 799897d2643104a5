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
//! identical. A picture cell's values are summed in order as by
//! [`super::render`], but a cell whose values straddle two chunks is the sum of two
//! partial f64 sums rather than one running sum, so its mean may differ from
//! `render`'s in the last bit of the f64 before rounding to f32 (tested: within 1
//! ulp of f32).

use safetensors::Dtype;

use super::histogram::bin_chunk;
use super::{finish, picture_layout, Histogram, Layout, LayoutKind, Picture, RenderOptions, BLANK};
use crate::stats::{mark_active, Activity, Stats};
use crate::values::stats::Acc;
use crate::values::{LayerData, SCAN_CHUNK};
use crate::Result;

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

/// Scans `data` (of `shape`) once for its card: statistics, a histogram of `bins`
/// bins, never-active units (when `units`) and the picture `opts` asks for.
/// `hint` is what the run's header says the statistics are
/// ([`crate::Run::summary_at`]); without it, or when it is wrong, the histogram
/// (and the units) take a second read. A read of the run file that fails is an
/// error (see [`LayerData::check`]).
pub fn scan_layer(
    data: &LayerData<'_>,
    shape: &[usize],
    opts: &RenderOptions,
    bins: usize,
    hint: Option<&Stats>,
    units: bool,
) -> Result<CardScan> {
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
        let outs = data.par_chunks_in(k..k + BATCH, |start, c| plan.chunk(start, c));
        for out in outs {
            totals.add(&plan, out);
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
    let picture = layout.map(|l| {
        let reduced = match &plan.picture {
            Some(p) => totals.cells.tiles(p),
            None => Vec::new(),
        };
        finish(shape, &o, l, reduced)
    });
    data.check()?;
    Ok(CardScan {
        stats,
        histogram,
        activity,
        picture,
        reads,
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
            cells: Cells::zeros(0, self.picture.as_ref().map_or(0, Grid::cells)),
        }
    }

    /// Everything computed from the chunk of `values` starting at element `start`.
    fn chunk(&self, start: usize, values: &[f32]) -> ChunkOut {
        ChunkOut {
            acc: Acc::of(values),
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
            cells: self.picture.as_ref().and_then(|g| g.reduce(start, values)),
        }
    }
}

/// One chunk's share of the results.
struct ChunkOut {
    acc: Acc,
    hist: Option<Vec<u64>>,
    /// Flags of units `first..` (modulo the unit count).
    active: Option<(usize, Vec<bool>)>,
    cells: Option<Cells>,
}

/// The results so far, chunks merged in order.
struct Totals {
    acc: Acc,
    hist: Vec<u64>,
    active: Vec<bool>,
    cells: Cells,
}

impl Totals {
    fn add(&mut self, plan: &Plan, out: ChunkOut) {
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
        if let (Some(_), Some(c)) = (&plan.picture, out.cells) {
            self.cells.add(&c);
        }
    }
}

/// The picture's cells: reduced rows and columns of each shown tile.
struct Grid {
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
    fn new(l: &Layout) -> Grid {
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

    fn cells(&self) -> usize {
        self.tiles * self.per_tile
    }

    /// The first cell of the band (row of cells) holding element `j` of tile `t`.
    fn band(&self, t: usize, j: usize) -> usize {
        t * self.per_tile + j / self.w / self.dy * self.rw
    }

    /// The partial sums of the cells that the chunk of `values` at `start` touches.
    fn reduce(&self, start: usize, values: &[f32]) -> Option<Cells> {
        if self.tile_len == 0 || self.shown == 0 {
            return None;
        }
        let region_end = self.offset + self.tiles * self.tile_len;
        let (a, b) = (
            start.max(self.offset),
            (start + values.len()).min(region_end),
        );
        if a >= b {
            return None;
        }
        let (t0, t1) = (
            (a - self.offset) / self.tile_len,
            (b - 1 - self.offset) / self.tile_len,
        );
        let j0 = ((a - self.offset) % self.tile_len).min(self.shown - 1);
        let j1 = ((b - 1 - self.offset) % self.tile_len).min(self.shown - 1);
        let first = self.band(t0, j0);
        let mut cells = Cells::zeros(first, self.band(t1, j1) + self.rw - first);
        for t in t0..=t1 {
            let ts = self.offset + t * self.tile_len;
            let ja = a.max(ts) - ts;
            let jb = (b.min(ts + self.tile_len) - ts).min(self.shown);
            let mut j = ja;
            while j < jb {
                let end = (j / self.w * self.w + self.w).min(jb);
                let row = &values[ts + j - start..ts + end - start];
                let band = self.band(t, j) - first;
                let (sum, cnt) = (
                    &mut cells.sum[band..band + self.rw],
                    &mut cells.cnt[band..band + self.rw],
                );
                // Each cell sums its values in order, as `render` does.
                let col = j % self.w;
                let (mut oc, mut i) = (col / self.dx, 0);
                let mut block = (oc + 1) * self.dx - col;
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
                    (i, oc, block) = (e, oc + 1, self.dx);
                }
                j = end;
            }
        }
        Some(cells)
    }
}

/// Sums and counts of the finite values of consecutive cells from `first`; a
/// cell that met a NaN or ±Inf has a NaN sum.
struct Cells {
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

    /// The reduced tiles: finite means, NaN where a non-finite value fell,
    /// [`BLANK`] where no value did.
    fn tiles(&self, g: &Grid) -> Vec<Vec<f32>> {
        (0..g.tiles)
            .map(|t| {
                let r = t * g.per_tile..(t + 1) * g.per_tile;
                self.sum[r.clone()]
                    .iter()
                    .zip(&self.cnt[r])
                    .map(|(&s, &c)| {
                        if s.is_nan() {
                            f32::NAN
                        } else if c > 0 {
                            (s / c as f64) as f32
                        } else {
                            BLANK
                        }
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{render, Scale};
    use super::*;
    use crate::values::LayerData;

    /// Pseudo-random values in [-1, 1) shifted by `shift`, with zeros, and NaN /
    /// ±Inf sprinkled when `bad`.
    fn values(n: usize, seed: u64, shift: f32, bad: bool) -> Vec<f32> {
        let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|i| {
                z ^= z << 13;
                z ^= z >> 7;
                z ^= z << 17;
                match z % 997 {
                    0 if bad => f32::NAN,
                    1 if bad => f32::INFINITY,
                    2 if bad => f32::NEG_INFINITY,
                    3..=40 => 0.0,
                    _ => (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0 + shift + (i % 7) as f32,
                }
            })
            .collect()
    }

    /// The separate computations the card made before the scan.
    fn separate(
        data: &LayerData<'_>,
        shape: &[usize],
        o: &RenderOptions,
        bins: usize,
    ) -> (Stats, Histogram, Option<Activity>, Result<Picture>) {
        let stats = Stats::of(data);
        let act = if stats.min.is_finite() {
            Activity::of(data, shape, stats.min)
        } else {
            None
        };
        (
            stats,
            Histogram::of(data, &stats, bins),
            act,
            render(data, shape, o),
        )
    }

    /// Tolerance of a picture cell: 1 ulp of f32 (a cell straddling two chunks
    /// adds two partial f64 sums); NaN and blank cells exactly.
    fn same_cell(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits()
            || (a.is_nan() && b.is_nan())
            || (a.is_finite()
                && b.is_finite()
                && (a - b).abs() <= a.abs().max(b.abs()) * f32::EPSILON)
    }

    fn check(v: Vec<f32>, shape: &[usize], o: &RenderOptions, hint: Hint) -> u32 {
        let data = LayerData::from_f32(v);
        let bins = 64;
        let (stats, hist, act, pic) = separate(&data, shape, o, bins);
        let h = match hint {
            Hint::None => None,
            Hint::Right => Some(stats),
            Hint::Wrong => Some(Stats {
                min: stats.min - 0.5,
                max: stats.max * 0.5,
                ..stats
            }),
            Hint::Negative => Some(Stats { min: -1.0, ..stats }),
        };
        let scan = scan_layer(&data, shape, o, bins, h.as_ref(), true).unwrap();
        let what = format!("{shape:?} {hint:?}");
        assert_eq!(format!("{:?}", scan.stats), format!("{stats:?}"), "{what}");
        assert_eq!(
            format!("{:?}", scan.histogram),
            format!("{hist:?}"),
            "{what}"
        );
        assert_eq!(scan.activity, act, "{what}");
        match (scan.picture, pic) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.layout, b.layout, "{what}");
                assert_eq!(a.values.len(), b.values.len(), "{what}");
                for (ta, tb) in a.values.iter().zip(&b.values) {
                    assert_eq!(ta.len(), tb.len(), "{what}");
                    for (i, (&x, &y)) in ta.iter().zip(tb).enumerate() {
                        assert!(same_cell(x, y), "{what}: cell {i}: {x} vs {y}");
                    }
                }
                if a.values == b.values {
                    assert_eq!(a.image, b.image, "{what}");
                }
                assert_eq!(a.colormap, b.colormap, "{what}");
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{what}"),
            (a, b) => panic!("{what}: {:?} vs {:?}", a.map(|_| ()), b.map(|_| ())),
        }
        scan.reads
    }

    #[derive(Debug, Clone, Copy)]
    enum Hint {
        None,
        Right,
        Wrong,
        Negative,
    }

    #[test]
    fn one_read_gives_what_the_separate_reads_gave() {
        let small = RenderOptions {
            max_pixels: 5_000,
            ..RenderOptions::default()
        };
        let big = BATCH * SCAN_CHUNK + 1234;
        let cases: Vec<(Vec<usize>, RenderOptions)> = vec![
            (vec![big], RenderOptions::default()),
            (vec![1, big], small.clone()),
            (vec![3, 7, 301, 290], small.clone()),
            (vec![2, 64, 40, 40], RenderOptions::default()),
            (vec![4, 333, 1001], small.clone()),
            (
                vec![2, 50, 3001],
                RenderOptions {
                    scale: Scale::Percentile(1.0, 99.0),
                    sample: 1,
                    ..small.clone()
                },
            ),
            (vec![5, 10], RenderOptions::default()),
            (vec![0, 4], RenderOptions::default()),
            (vec![1], RenderOptions::default()),
        ];
        for (shape, o) in &cases {
            let n: usize = shape.iter().product();
            // Big layers (several batches) with the hint only: the fallbacks do
            // not depend on the size, and debug builds are slow.
            let (seeds, hints) = if n > 1 << 20 {
                (&[(2, 1.5, false), (3, 0.0, true)][..], &[Hint::Right][..])
            } else {
                (
                    &[(1, 0.0, false), (2, 1.5, false), (3, 0.0, true)][..],
                    &[Hint::None, Hint::Right, Hint::Wrong, Hint::Negative][..],
                )
            };
            for &(seed, shift, bad) in seeds {
                let v = values(n, seed, shift, bad);
                for &hint in hints {
                    let reads = check(v.clone(), shape, o, hint);
                    if matches!(hint, Hint::Right) && n > 0 {
                        assert_eq!(reads, 1, "{shape:?} {seed}: one read with the hint");
                    }
                }
            }
        }
    }

    #[test]
    fn constant_empty_and_non_finite_layers() {
        let o = RenderOptions::default();
        for v in [
            vec![0.0; 1000],
            vec![2.5; 70_000],
            vec![f32::NAN; 10],
            vec![f32::INFINITY, 1.0, f32::NAN, 0.0],
            vec![],
        ] {
            let n = v.len();
            let shape = [1, n];
            for hint in [Hint::None, Hint::Right, Hint::Wrong] {
                let reads = check(v.clone(), &shape, &o, hint);
                // Constant or no finite value: the histogram needs no read; a
                // non-negative layer's units take a second read without the hint.
                assert!(reads <= 1 || !matches!(hint, Hint::Right), "{n} {hint:?}");
            }
        }
    }

    #[test]
    fn units_only_when_asked() {
        let data = LayerData::from_f32(vec![0.0, 1.0, 0.0, 2.0]);
        let o = RenderOptions::default();
        let s = scan_layer(&data, &[2, 2], &o, 8, None, false).unwrap();
        // Without a hint: the histogram's second read, no units.
        assert_eq!((s.activity, s.reads), (None, 2));
        let s = scan_layer(&data, &[2, 2], &o, 8, None, true).unwrap();
        assert_eq!((s.activity.unwrap().never_active, s.reads), (vec![0], 3));
        let hint = s.stats;
        let s = scan_layer(&data, &[2, 2], &o, 8, Some(&hint), true).unwrap();
        assert_eq!((s.activity.unwrap().never_active, s.reads), (vec![0], 1));
    }

    #[test]
    fn the_hint_survives_a_json_round_trip_of_f16_data() {
        // Stored statistics are parsed from JSON; f16 values widened to f64.
        let v: Vec<half::f16> = values(100_000, 4, 0.3, false)
            .into_iter()
            .map(half::f16::from_f32)
            .collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let data = LayerData::from_bytes(bytes.into(), Dtype::F16).unwrap();
        let stats = Stats::of(&data);
        let hint = Stats {
            min: f64::from_bits(stats.min.to_bits() + 1),
            ..stats
        };
        let shape = [1, 100_000];
        let scan = scan_layer(
            &data,
            &shape,
            &RenderOptions::default(),
            64,
            Some(&hint),
            true,
        )
        .unwrap();
        assert_eq!(scan.reads, 1);
        assert_eq!(scan.histogram, Histogram::of(&data, &stats, 64));
    }
}

//! Histograms of a layer's finite values, drawn with log-scale counts. The picture
//! carries no text (no font needed); the gallery writes the axis labels beside it.

use image::RgbImage;

use super::colormap::{lut_index, Colormap};
use crate::stats::Stats;
use crate::values::LayerData;

/// Counts of a layer's finite values in equal bins over `[lo, hi]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin (the smallest finite value); NaN when none.
    pub lo: f64,
    /// Right edge of the last bin (the largest finite value); NaN when none.
    pub hi: f64,
    /// Count per bin. When `lo == hi` every value is in the middle bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bins the finite values of `data` into `bins` bins over `[stats.min, stats.max]`
    /// (`stats` must be the data's own statistics): one read, chunks in parallel.
    /// Value `v` goes to bin `⌊(v - lo) · bins / (hi - lo)⌋` (in f64, the last bin
    /// closed), as it always did; a constant layer needs no read at all.
    pub fn of(data: &LayerData<'_>, stats: &Stats, bins: usize) -> Histogram {
        let bins = bins.max(1);
        let (lo, hi) = (stats.min, stats.max);
        let mut h = Histogram {
            lo,
            hi,
            counts: vec![0; bins],
        };
        if lo.is_nan() || hi.is_nan() {
            return h;
        }
        if hi <= lo {
            h.counts[bins / 2] = stats.count - stats.non_finite();
            return h;
        }
        let scale = bins as f64 / (hi - lo);
        for part in data.par_chunks(|_, c| bin_chunk(c, lo, scale, bins)) {
            h.counts.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        h
    }

    /// The largest bin count.
    pub fn peak(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    /// The value at the centre of bin `b`.
    pub fn center(&self, b: usize) -> f64 {
        if self.hi > self.lo {
            self.lo + (self.hi - self.lo) * (b as f64 + 0.5) / self.counts.len() as f64
        } else {
            self.lo
        }
    }
}

/// Values per block of the binning loop: bin numbers computed in lanes, then counted.
const BIN_BLOCK: usize = 64;

/// Counts of one chunk (with AVX-512 or AVX2 where the CPU has them).
pub(super) fn bin_chunk(values: &[f32], lo: f64, scale: f64, bins: usize) -> Vec<u64> {
    crate::values::dispatch!(
        (values: &[f32], lo: f64, scale: f64, bins: usize) -> Vec<u64>,
        bin_lanes(values, lo, scale, bins)
    )
}

/// Most bins counted in pairs: a table of `(bins + 1)²` u16 counts (18 KB at most)
/// stays in the core's L1 cache.
const PAIR_BINS: usize = 95;

/// Values binned between two folds of the pair table: each pair count stays
/// below `u16::MAX`.
const PAIR_SEGMENT: usize = BIN_BLOCK << 10;

/// The bin of each value of a block is computed branch-free in f64 lanes (non-finite
/// values get the spare slot `bins`), then counted. Up to [`PAIR_BINS`] bins, value
/// `j` and value `j + 32` of a block are binned side by side and counted as one
/// pair of bins (one table increment per two values, the table folded into bins every
/// [`PAIR_SEGMENT`] values); more bins are counted into four tables in turn (so
/// consecutive equal bins do not wait on each other). (Computing the bins in f32
/// lanes, with values near an edge recomputed in f64, was tried: slower, the
/// counting is what costs.)
#[inline(always)]
fn bin_lanes(values: &[f32], lo: f64, scale: f64, bins: usize) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    let slow = |v: f32, counts: &mut [u64]| {
        if v.is_finite() {
            counts[(((v as f64 - lo) * scale) as usize).min(bins - 1)] += 1;
        }
    };
    if bins > 1 << 24 {
        values.iter().for_each(|&v| slow(v, &mut counts));
        return counts;
    }
    let (top, spare) = ((bins - 1) as f64, bins as f64);
    let whole = values.len() / BIN_BLOCK * BIN_BLOCK;
    let bin = |x: f32| -> u32 {
        let p = (x as f64 - lo) * scale;
        let p = if p > 0.0 { p } else { 0.0 };
        let p = if p < top { p } else { top };
        let p = if x.abs() <= f32::MAX { p } else { spare };
        // SAFETY: `p` is finite and within [0, bins], and bins <= 2^24.
        unsafe { p.to_int_unchecked::<i32>() as u32 }
    };
    let stride = bins + 1;
    if bins <= PAIR_BINS {
        const HALF: usize = BIN_BLOCK / 2;
        let mut pairs = vec![0u16; stride * stride];
        let mut with_spare = vec![0u64; stride];
        let mut pair = [0u32; HALF];
        for segment in values[..whole].chunks(PAIR_SEGMENT) {
            for b in segment.chunks_exact(BIN_BLOCK) {
                let b: &[f32; BIN_BLOCK] = b.try_into().expect("bin block");
                for j in 0..HALF {
                    pair[j] = bin(b[j]) * stride as u32 + bin(b[j + HALF]);
                }
                for &p in &pair {
                    pairs[p as usize] += 1;
                }
            }
            // Pair (a, b) is one value in bin a and one in bin b.
            for (a, row) in pairs.chunks_exact_mut(stride).enumerate() {
                let mut first = 0u64;
                for (c, n) in with_spare.iter_mut().zip(row.iter_mut()) {
                    first += *n as u64;
                    *c += *n as u64;
                    *n = 0;
                }
                with_spare[a] += first;
            }
        }
        counts.copy_from_slice(&with_spare[..bins]);
    } else {
        let mut tables = vec![0u32; 4 * stride];
        let (t0, rest) = tables.split_at_mut(stride);
        let (t1, rest) = rest.split_at_mut(stride);
        let (t2, t3) = rest.split_at_mut(stride);
        let mut idx = [0u32; BIN_BLOCK];
        for b in values[..whole].chunks_exact(BIN_BLOCK) {
            let b: &[f32; BIN_BLOCK] = b.try_into().expect("bin block");
            for j in 0..BIN_BLOCK {
                idx[j] = bin(b[j]);
            }
            for q in idx.chunks_exact(4) {
                t0[q[0] as usize] += 1;
                t1[q[1] as usize] += 1;
                t2[q[2] as usize] += 1;
                t3[q[3] as usize] += 1;
            }
        }
        for (i, c) in counts.iter_mut().enumerate() {
            *c = t0[i] as u64 + t1[i] as u64 + t2[i] as u64 + t3[i] as u64;
        }
    }
    values[whole..].iter().for_each(|&v| slow(v, &mut counts));
    counts
}

/// Background, bar, axis and grid-line colours of histogram pictures.
const BACKGROUND: [u8; 3] = [255, 255, 255];
const BAR: [u8; 3] = [92, 104, 128];
const AXIS: [u8; 3] = [120, 120, 120];
const GRID: [u8; 3] = [228, 228, 232];
const ZERO: [u8; 3] = [200, 30, 60];
/// Height of the colour bar under the axis, and the gap above it.
const COLORBAR: usize = 8;
const GAP: usize = 2;

/// Draws `h` as a `width`×`height` bar chart over a colour bar. Bar heights are
/// log(1 + count) scaled to the peak; faint lines mark counts 10, 100, 1000, ...; a
/// red line marks zero when it lies inside the range; the strip at the bottom shows
/// the colour of each value in `cm` (diverging maps centred on zero).
pub fn render_histogram(h: &Histogram, cm: Colormap, width: u32, height: u32) -> RgbImage {
    let (w, ht) = (
        width.max(1) as usize,
        (height as usize).max(COLORBAR + GAP + 4),
    );
    let mut img = RgbImage::from_pixel(w as u32, ht as u32, image::Rgb(BACKGROUND));
    let base = COLORBAR + GAP; // y (from the bottom) of the axis
    let plot_h = ht - base - 1;
    let peak = h.peak();
    let log_peak = ((1 + peak) as f64).log10();
    let y_of = |count: f64| -> usize {
        if log_peak <= 0.0 {
            0
        } else {
            ((1.0 + count).log10() / log_peak * plot_h as f64).round() as usize
        }
    };
    let mut put = |x: usize, y_from_bottom: usize, c: [u8; 3]| {
        if x < w && y_from_bottom < ht {
            img.put_pixel(x as u32, (ht - 1 - y_from_bottom) as u32, image::Rgb(c));
        }
    };
    // Decade lines.
    let mut decade = 10f64;
    while peak > 0 && decade < peak as f64 {
        let y = base + y_of(decade);
        for x in 0..w {
            put(x, y, GRID);
        }
        decade *= 10.0;
    }
    let bins = h.counts.len();
    let bin_w = (w / bins).max(1);
    let gap = usize::from(bin_w >= 4);
    for (b, &c) in h.counts.iter().enumerate() {
        if c == 0 {
            continue;
        }
        let top = y_of(c as f64).max(1);
        let x0 = b * w / bins;
        for x in x0..x0 + bin_w - gap {
            for y in 1..=top.min(plot_h) {
                put(x, base + y, BAR);
            }
        }
    }
    // The colour bar (none when there is no finite value).
    if !h.lo.is_nan() {
        let lut = cm.lut();
        for x in 0..w {
            let c = colorbar_colour(h, cm, lut, x, w);
            for y in 0..COLORBAR {
                put(x, y, c);
            }
        }
    }
    // Zero line, then the axis.
    if h.lo < 0.0 && h.hi > 0.0 {
        let x = ((0.0 - h.lo) / (h.hi - h.lo) * w as f64) as usize;
        for y in base..ht {
            put(x.min(w - 1), y, ZERO);
        }
    }
    for x in 0..w {
        put(x, base, AXIS);
    }
    img
}

/// The colour of column `x` of `w` in the colour bar: the value there, coloured as
/// pictures colour it (diverging maps centred on zero).
fn colorbar_colour(h: &Histogram, cm: Colormap, lut: &[[u8; 3]], x: usize, w: usize) -> [u8; 3] {
    let m = h.lo.abs().max(h.hi.abs());
    let v = if h.hi > h.lo {
        h.lo + (h.hi - h.lo) * (x as f64 + 0.5) / w as f64
    } else {
        h.lo
    };
    let t = if v.is_nan() {
        0.5
    } else if cm.is_diverging() {
        if m > 0.0 {
            0.5 + 0.5 * v / m
        } else {
            0.5
        }
    } else if h.hi > h.lo {
        (v - h.lo) / (h.hi - h.lo)
    } else {
        0.5
    };
    lut[lut_index(t as f32)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_every_finite_value_once() {
        let v: Vec<f32> = (0..100_000)
            .map(|i| {
                if i % 1000 == 0 {
                    f32::NAN
                } else {
                    (i % 97) as f32
                }
            })
            .collect();
        let d = LayerData::from_f32(v.clone());
        let s = Stats::of(&d);
        let h = Histogram::of(&d, &s, 10);
        assert_eq!(h.counts.iter().sum::<u64>(), s.count - s.nan - s.inf);
        let in_first = v.iter().filter(|x| x.is_finite() && **x < 9.6).count() as u64;
        assert_eq!(h.counts[0], in_first);
    }

    #[test]
    fn constant_and_empty_layers_do_not_panic() {
        let d = LayerData::from_f32(vec![3.0; 5]);
        let h = Histogram::of(&d, &Stats::of(&d), 8);
        assert_eq!(h.counts[4], 5);
        let img = render_histogram(&h, Colormap::Viridis, 64, 20);
        assert_eq!(img.dimensions(), (64, 20));
        let d = LayerData::from_f32(vec![f32::NAN; 3]);
        let h = Histogram::of(&d, &Stats::of(&d), 8);
        assert_eq!(h.peak(), 0);
        render_histogram(&h, Colormap::RdBu, 64, 20);
    }

    #[test]
    fn taller_bars_for_bigger_counts() {
        let h = Histogram {
            lo: 0.0,
            hi: 2.0,
            counts: vec![10, 1000],
        };
        let img = render_histogram(&h, Colormap::Viridis, 20, 50);
        let height = |x: u32| (0..50).filter(|&y| img.get_pixel(x, y).0 == BAR).count();
        assert!(height(2) > 0 && height(12) > height(2));
        assert_eq!(height(12), 50 - COLORBAR - GAP - 1);
    }
}

#[cfg(test)]
mod against_reference {
    use rand::SeedableRng;
    use safetensors::Dtype;

    use super::{bin_chunk, Histogram};
    use crate::stats::against_reference::{reference_histogram, reference_stats, stored, values};
    use crate::stats::Stats;
    use crate::values::SCAN_CHUNK;
    use rand::Rng;

    #[test]
    fn lane_bins_are_the_formula_bins_at_every_edge() {
        // Values at and next to every bin edge of narrow, wide, offset and
        // tiny ranges, plus random ones: the lanes against the scalar formula.
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for (lo, hi) in [
            (0f32, 1f32),
            (1.0, 1.01),
            (1000.0, 1000.01),
            (-3.5, 7.25),
            (-1e-30, 1e-30),
            (-3e38, 3e38),
            (0.1, 0.3),
        ] {
            for bins in [1, 7, 10, 64, 100, 4096] {
                let (lo64, hi64) = (lo as f64, hi as f64);
                let scale = bins as f64 / (hi64 - lo64);
                let mut v = vec![lo, hi, f32::NAN, f32::INFINITY];
                for k in 0..=bins.min(200) {
                    let e = (lo64 + (hi64 - lo64) * k as f64 / bins as f64) as f32;
                    let (down, up) = (e.next_down(), e.next_up());
                    v.extend([e, down, up].into_iter().filter(|x| (lo..=hi).contains(x)));
                }
                v.extend((0..5000).map(|_| lo + (hi - lo) * rng.random::<f32>()));
                let want: Vec<u64> = {
                    let mut c = vec![0u64; bins];
                    for &x in v.iter().filter(|x| x.is_finite()) {
                        c[(((x as f64 - lo64) * scale) as usize).min(bins - 1)] += 1;
                    }
                    c
                };
                assert_eq!(
                    bin_chunk(&v, lo64, scale, bins),
                    want,
                    "[{lo}, {hi}] {bins} bins"
                );
            }
        }
    }

    #[test]
    fn pair_counts_do_not_overflow_when_one_bin_holds_nearly_everything() {
        // Several pair-table segments of one bin (plus the two ends of the range,
        // and a tail shorter than a block): every pair count would pass u16::MAX
        // without the folds.
        let n = 5 * super::PAIR_SEGMENT + 77;
        let mut v = vec![0.25f32; n];
        (v[0], v[n / 2]) = (-1.0, 1.0);
        for bins in [2, 64, super::PAIR_BINS] {
            let scale = bins as f64 / 2.0;
            let mut want = vec![0u64; bins];
            for &x in &v {
                want[(((x as f64 + 1.0) * scale) as usize).min(bins - 1)] += 1;
            }
            assert_eq!(bin_chunk(&v, -1.0, scale, bins), want, "{bins} bins");
        }
    }

    #[test]
    fn fast_histograms_match_the_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        for n in [0, 1, 7, 255, 257, 3 * SCAN_CHUNK + 123] {
            for kind in 0..5 {
                let v = values(&mut rng, n, kind);
                for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
                    let (data, as_read) = stored(&v, dtype);
                    let (got, want) = (Stats::of(&data), reference_stats(&as_read));
                    for bins in [1, 10, 64] {
                        let h = Histogram::of(&data, &got, bins);
                        let what = format!("n {n}, kind {kind}, {dtype}, {bins} bins");
                        assert_eq!(
                            h.counts,
                            reference_histogram(&as_read, &want, bins),
                            "{what}"
                        );
                    }
                }
            }
        }
    }
}

//! The statistics kernel: one loop over a chunk (min, max, counts, shifted sums)
//! in f32 lanes that the compiler vectorises (16 lanes with AVX-512, 8 with AVX2
//! or SSE; the association of the f32 block sums, hence the last bits of mean
//! and std, depends on which the CPU has), blocks of
//! [`BLOCK`] values summed in f32 and then added in f64.
//!
//! Accuracy: the sums are of `d = v - c`, `c` the mean of the chunk's first
//! finite values (f32), so `Σd²` is close to the chunk's second moment about its
//! mean; the chunk's `m2` is `Σd² - (Σd)²/n`. A block summed in f32 carries a
//! relative error of at most ~2e-6 (at most 32 terms per lane); a chunk where the shift
//! was poor (`Σd²` more than [`MAX_CANCEL`] times `m2`) or an f32 sum overflowed
//! is redone exactly in f64 ([`Acc::of_exact`]). Min, max and the counts are exact.

use super::Acc;

/// f32 lanes of the loop without AVX-512 (one AVX register, two SSE ones).
const LANES: usize = 8;
/// Values per block summed in f32 before the f64 totals.
const BLOCK: usize = 256;
/// Largest `Σd² / m2` kept from the f32 sums.
const MAX_CANCEL: f64 = 16.0;

impl Acc {
    /// Statistics of one chunk (with AVX-512 or AVX2 where the CPU has them).
    pub(crate) fn of(values: &[f32]) -> Acc {
        crate::values::dispatch!(
            (values: &[f32]) -> Acc,
            Acc::of_lanes::<LANES>(values),
            avx512: Acc::of_lanes::<16>(values)
        )
    }

    // long: one loop that must stay one function to vectorise, plus its tail.
    #[inline(always)]
    fn of_lanes<const LANES: usize>(values: &[f32]) -> Acc {
        let c = shift(values);
        let cd = c as f64;
        let mut sum = [0f64; LANES];
        let mut sq = [0f64; LANES];
        let mut mn = [f32::INFINITY; LANES];
        let mut mx = [f32::NEG_INFINITY; LANES];
        let mut fin = [0u32; LANES];
        let mut nan = [0u32; LANES];
        let mut zeros = [0u32; LANES];
        let blocks = values.chunks_exact(BLOCK);
        let rest = blocks.remainder();
        for b in blocks {
            let mut s = [0f32; LANES];
            let mut q = [0f32; LANES];
            for k in b.chunks_exact(LANES) {
                let k: &[f32; LANES] = k.try_into().expect("lane block");
                for j in 0..LANES {
                    let x = k[j];
                    let f = x.abs() <= f32::MAX;
                    // Branch-free: a mask, not a select (LLVM turns a select feeding
                    // an accumulator into masked stores).
                    let m = (f as u32).wrapping_neg();
                    let d = f32::from_bits((x - c).to_bits() & m);
                    s[j] += d;
                    q[j] += d * d;
                    let lo = if f { x } else { f32::INFINITY };
                    let hi = if f { x } else { f32::NEG_INFINITY };
                    mn[j] = if lo < mn[j] { lo } else { mn[j] };
                    mx[j] = if hi > mx[j] { hi } else { mx[j] };
                    fin[j] += f as u32;
                    nan[j] += x.is_nan() as u32;
                    zeros[j] += (x == 0.0) as u32;
                }
            }
            for j in 0..LANES {
                sum[j] += s[j] as f64;
                sq[j] += q[j] as f64;
            }
        }
        let mut a = Acc::EMPTY;
        a.n = values.len() as u64;
        let (mut s, mut q) = (0f64, 0f64);
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for j in 0..LANES {
            s += sum[j];
            q += sq[j];
            lo = lo.min(mn[j]);
            hi = hi.max(mx[j]);
            a.finite += fin[j] as u64;
            a.nan += nan[j] as u64;
            a.zeros += zeros[j] as u64;
        }
        for &x in rest {
            if x.is_finite() {
                let d = x as f64 - cd;
                s += d;
                q += d * d;
                lo = lo.min(x);
                hi = hi.max(x);
                a.finite += 1;
                a.zeros += (x == 0.0) as u64;
            } else {
                a.nan += x.is_nan() as u64;
            }
        }
        a.inf = a.n - a.finite - a.nan;
        if a.finite == 0 {
            return a;
        }
        a.min = lo as f64;
        a.max = hi as f64;
        let n = a.finite as f64;
        a.mean = cd + s / n;
        a.m2 = q - s * s / n;
        let exact =
            !(s.is_finite() && q.is_finite()) || (q > 0.0 && q > MAX_CANCEL * a.m2.max(0.0));
        if exact {
            let e = Acc::of_exact(values);
            (a.mean, a.m2) = (e.mean, e.m2);
        }
        a
    }

    /// Statistics of one chunk in f64, two passes (the reference the kernel is
    /// tested against, and its fallback).
    pub(crate) fn of_exact(values: &[f32]) -> Acc {
        let mut a = Acc::EMPTY;
        let mut sum = 0f64;
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in values {
            if v.is_finite() {
                a.finite += 1;
                sum += v as f64;
                min = min.min(v);
                max = max.max(v);
                a.zeros += (v == 0.0) as u64;
            } else if v.is_nan() {
                a.nan += 1;
            } else {
                a.inf += 1;
            }
        }
        a.n = values.len() as u64;
        if a.finite > 0 {
            a.mean = sum / a.finite as f64;
            a.m2 = values
                .iter()
                .filter(|v| v.is_finite())
                .map(|&v| (v as f64 - a.mean).powi(2))
                .sum();
            a.min = min as f64;
            a.max = max as f64;
        }
        a
    }
}

/// The shift of a chunk's sums: the mean of its first (up to 64) finite values,
/// rounded to f32; 0 when there is none.
fn shift(values: &[f32]) -> f32 {
    let (mut s, mut k) = (0f64, 0u32);
    for &v in values.iter().filter(|v| v.is_finite()).take(64) {
        s += v as f64;
        k += 1;
    }
    if k == 0 {
        0.0
    } else {
        (s / k as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::Acc;
    use crate::values::stats::{assert_stats_close, test_values as values};
    use crate::values::SCAN_CHUNK;

    /// Both lane widths (whichever one this CPU runs in `Acc::of`) against the
    /// exact two-pass chunk statistics, with the tolerances of
    /// `stats::against_reference`.
    #[test]
    fn eight_and_sixteen_lanes_match_the_exact_statistics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        for n in [0, 1, 15, 17, 255, 257, 1000, SCAN_CHUNK] {
            for kind in 0..5 {
                let v = values(&mut rng, n, kind);
                let want = Acc::of_exact(&v).finish();
                for (lanes, got) in [(8, Acc::of_lanes::<8>(&v)), (16, Acc::of_lanes::<16>(&v))] {
                    let what = format!("n {n}, kind {kind}, {lanes} lanes");
                    assert_stats_close(&got.finish(), &want, &what);
                }
            }
        }
    }
}

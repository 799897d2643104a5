//! The comparison kernel: two layers streamed in chunks, compared element by
//! element in f32 lanes (AVX2 when present) with an exact fallback.

use rayon::prelude::*;

use super::{DiffOptions, Element, Numbers};
use crate::runfile::{LayerInfo, Run};
use crate::values::LayerData;
use crate::Result;

/// Elements per parallel work item (two f32 buffers of this size per thread).
pub(super) const CHUNK: usize = 1 << 16;
/// Elements per segment (chunks of one segment are compared in parallel).
pub(super) const SEGMENT: usize = 1 << 22;
/// f32 lanes of the kernel (two SSE or one AVX register).
pub(super) const LANES: usize = 8;
/// Pairs per group of the kernel: summed in f32, then added in f64.
pub(super) const GROUP: usize = 128;

pub(super) fn compare_values(
    a: &Run,
    la: &LayerInfo,
    b: &Run,
    lb: &LayerInfo,
    opts: &DiffOptions,
) -> Result<Numbers> {
    let da = a.data_at(la.index)?;
    let db = b.data_at(lb.index)?;
    let n = da.len();
    let tol = Tol {
        atol: opts.atol,
        rtol: opts.rtol,
    };
    let mut acc = Acc::EMPTY;
    let mut seg = 0;
    while seg < n {
        let seg_end = (seg + SEGMENT).min(n);
        let chunks = (seg_end - seg).div_ceil(CHUNK);
        // Borrowed in place when stored as aligned f32, else converted into buffers.
        let compare = |start: usize, len: usize, ba: &mut Vec<f32>, bb: &mut Vec<f32>| {
            let sa = match da.f32_slice(start, len) {
                Some(s) => s,
                None => {
                    ba.resize(len, 0.0);
                    da.read_into(start, &mut ba[..len]);
                    &ba[..len]
                }
            };
            let sb = match db.f32_slice(start, len) {
                Some(s) => s,
                None => {
                    bb.resize(len, 0.0);
                    db.read_into(start, &mut bb[..len]);
                    &bb[..len]
                }
            };
            Acc::of(sa, sb, start, tol)
        };
        if chunks == 1 {
            acc = acc.merge(compare(
                seg,
                seg_end - seg,
                &mut Vec::new(),
                &mut Vec::new(),
            ));
        } else {
            // Collected in order, then merged in order: the same result on every run.
            let parts: Vec<Acc> = (0..chunks)
                .into_par_iter()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(ba, bb), k| {
                        let start = seg + k * CHUNK;
                        compare(start, CHUNK.min(seg_end - start), ba, bb)
                    },
                )
                .collect();
            acc = parts.into_iter().fold(acc, Acc::merge);
        }
        seg = seg_end;
    }
    let numbers = acc.finish(&da, &db, &la.shape);
    da.check()?;
    db.check()?;
    Ok(numbers)
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Tol {
    pub(super) atol: f64,
    pub(super) rtol: f64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Acc {
    pub(super) count: u64,
    pub(super) finite: u64,
    pub(super) sum_abs: f64,
    pub(super) sum_d2: f64,
    pub(super) sum_a2: f64,
    pub(super) sum_b2: f64,
    pub(super) sum_ab: f64,
    pub(super) max_abs: f64,
    pub(super) worst: Option<usize>,
    pub(super) mismatches: u64,
    pub(super) first_mismatch: Option<usize>,
    pub(super) nan_a: u64,
    pub(super) nan_b: u64,
    pub(super) inf_a: u64,
    pub(super) inf_b: u64,
    pub(super) nan_mismatches: u64,
    pub(super) inf_mismatches: u64,
}

impl Acc {
    pub(super) const EMPTY: Acc = Acc {
        count: 0,
        finite: 0,
        sum_abs: 0.0,
        sum_d2: 0.0,
        sum_a2: 0.0,
        sum_b2: 0.0,
        sum_ab: 0.0,
        max_abs: 0.0,
        worst: None,
        mismatches: 0,
        first_mismatch: None,
        nan_a: 0,
        nan_b: 0,
        inf_a: 0,
        inf_b: 0,
        nan_mismatches: 0,
        inf_mismatches: 0,
    };

    /// Compares `a` with `b`, elements `offset..offset + a.len()` of the layer
    /// (with AVX2 where the CPU has it).
    pub(super) fn of(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { of_avx2(a, b, offset, tol) };
        }
        Acc::of_lanes(a, b, offset, tol)
    }

    /// The kernel. Groups of [`GROUP`] pairs are summed in f32 lanes (vectorizable),
    /// then added to the f64 totals. A group that may hold a pair out of tolerance,
    /// a NaN or an Inf, or whose f32 sums overflow, is redone pair by pair in f64
    /// ([`Acc::one`]), so verdicts and counts are exact; the sums of a fast group
    /// carry f32 rounding (relative error about 1e-6 at most).
    #[inline(always)]
    pub(super) fn of_lanes(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = Acc::EMPTY;
        acc.count = a.len() as u64;
        // The f32 limit never exceeds the f64 one: tolerances rounded down, a
        // relative margin far above f32 rounding, and an absolute one for subnormals.
        let atol32 = round_down(tol.atol);
        let rtol32 = round_down(tol.rtol);
        const MARGIN: f32 = 1.0 - 1.0 / (1u32 << 20) as f32;
        const TINY: f32 = 4.0 * f32::from_bits(1); // 4 units of the smallest subnormal
        let groups = a.len() / GROUP;
        for g in 0..groups {
            let base = g * GROUP;
            let (ga, gb) = (&a[base..base + GROUP], &b[base..base + GROUP]);
            let mut s_abs = [0f32; LANES];
            let mut s_d2 = [0f32; LANES];
            let mut s_a2 = [0f32; LANES];
            let mut s_b2 = [0f32; LANES];
            let mut s_ab = [0f32; LANES];
            let mut mx = [0f32; LANES];
            let mut excess = [0f32; LANES];
            for (ka, kb) in ga.chunks_exact(LANES).zip(gb.chunks_exact(LANES)) {
                let ka: &[f32; LANES] = ka.try_into().expect("lane block");
                let kb: &[f32; LANES] = kb.try_into().expect("lane block");
                for j in 0..LANES {
                    let (x, y) = (ka[j], kb[j]);
                    let d = x - y;
                    let ad = d.abs();
                    s_abs[j] += ad;
                    s_d2[j] += d * d;
                    s_a2[j] += x * x;
                    s_b2[j] += y * y;
                    s_ab[j] += x * y;
                    mx[j] = if ad > mx[j] { ad } else { mx[j] };
                    let lim = ((atol32 + rtol32 * y.abs()) * MARGIN - TINY).max(0.0);
                    let e = ad - lim;
                    excess[j] = if e > excess[j] { e } else { excess[j] };
                }
            }
            let total = |s: &[f32; LANES]| s.iter().map(|&v| v as f64).sum::<f64>();
            let (t_abs, t_d2, t_a2, t_b2, t_ab) = (
                total(&s_abs),
                total(&s_d2),
                total(&s_a2),
                total(&s_b2),
                total(&s_ab),
            );
            // NaN or Inf in the data (or an f32 overflow) shows in the sums.
            let finite = (t_abs + t_d2 + t_a2 + t_b2).is_finite() && t_ab.is_finite();
            if !finite || excess.iter().any(|&e| e > 0.0) {
                for j in 0..GROUP {
                    acc.one(offset + base + j, ga[j], gb[j], tol);
                }
                continue;
            }
            acc.finite += GROUP as u64;
            acc.sum_abs += t_abs;
            acc.sum_d2 += t_d2;
            acc.sum_a2 += t_a2;
            acc.sum_b2 += t_b2;
            acc.sum_ab += t_ab;
            let gmax = mx.iter().fold(0f32, |m, &v| m.max(v));
            if acc.worst.is_none() || gmax as f64 > acc.max_abs {
                let j = (0..GROUP)
                    .find(|&j| (ga[j] - gb[j]).abs() == gmax)
                    .expect("the group's maximum is one of its pairs");
                acc.max_abs = gmax as f64;
                acc.worst = Some(offset + base + j);
            }
        }
        for j in groups * GROUP..a.len() {
            acc.one(offset + j, a[j], b[j], tol);
        }
        acc
    }

    /// One pair, any values (the slow path; `count` is not touched).
    pub(super) fn one(&mut self, i: usize, x: f32, y: f32, tol: Tol) {
        self.nan_a += x.is_nan() as u64;
        self.nan_b += y.is_nan() as u64;
        self.inf_a += x.is_infinite() as u64;
        self.inf_b += y.is_infinite() as u64;
        let agree = if x.is_finite() && y.is_finite() {
            let (xf, yf) = (x as f64, y as f64);
            let d = xf - yf;
            let ad = d.abs();
            self.finite += 1;
            self.sum_abs += ad;
            self.sum_d2 += d * d;
            self.sum_a2 += xf * xf;
            self.sum_b2 += yf * yf;
            self.sum_ab += xf * yf;
            // The maximum as the fast path sees it: |a - b| rounded to f32.
            let ad32 = if (x - y).is_finite() {
                (x - y).abs() as f64
            } else {
                ad // f32 overflow: keep the exact value
            };
            if ad32 > self.max_abs || self.worst.is_none() {
                self.max_abs = ad32;
                self.worst = Some(i);
            }
            ad <= tol.atol + tol.rtol * yf.abs()
        } else if x.is_nan() != y.is_nan() {
            self.nan_mismatches += 1;
            false
        } else if x.is_nan() || x == y {
            true
        } else {
            self.inf_mismatches += 1;
            false
        };
        if !agree {
            self.mismatches += 1;
            self.first_mismatch.get_or_insert(i);
        }
    }

    /// Combines `self` (earlier elements) with `o` (later elements).
    pub(super) fn merge(self, o: Acc) -> Acc {
        let (max_abs, worst) = match (self.worst, o.worst) {
            (None, _) => (o.max_abs, o.worst),
            (Some(_), None) => (self.max_abs, self.worst),
            (Some(_), Some(_)) if o.max_abs > self.max_abs => (o.max_abs, o.worst),
            _ => (self.max_abs, self.worst),
        };
        Acc {
            count: self.count + o.count,
            finite: self.finite + o.finite,
            sum_abs: self.sum_abs + o.sum_abs,
            sum_d2: self.sum_d2 + o.sum_d2,
            sum_a2: self.sum_a2 + o.sum_a2,
            sum_b2: self.sum_b2 + o.sum_b2,
            sum_ab: self.sum_ab + o.sum_ab,
            max_abs,
            worst,
            mismatches: self.mismatches + o.mismatches,
            first_mismatch: self.first_mismatch.or(o.first_mismatch),
            nan_a: self.nan_a + o.nan_a,
            nan_b: self.nan_b + o.nan_b,
            inf_a: self.inf_a + o.inf_a,
            inf_b: self.inf_b + o.inf_b,
            nan_mismatches: self.nan_mismatches + o.nan_mismatches,
            inf_mismatches: self.inf_mismatches + o.inf_mismatches,
        }
    }

    pub(super) fn finish(self, da: &LayerData<'_>, db: &LayerData<'_>, shape: &[usize]) -> Numbers {
        let element = |i: usize| Element {
            index: i,
            position: unravel(i, shape),
            a: da.get(i),
            b: db.get(i),
        };
        let (na, nb, nd) = (self.sum_a2.sqrt(), self.sum_b2.sqrt(), self.sum_d2.sqrt());
        let rel_l2 = if nb > 0.0 {
            nd / nb
        } else if nd == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let cosine = if na > 0.0 && nb > 0.0 {
            // One square root of the product: exactly 1 for identical values.
            (self.sum_ab / (self.sum_a2 * self.sum_b2).sqrt()).clamp(-1.0, 1.0)
        } else if na == 0.0 && nb == 0.0 {
            1.0
        } else {
            0.0
        };
        Numbers {
            count: self.count,
            max_abs: self.max_abs,
            mean_abs: if self.finite > 0 {
                self.sum_abs / self.finite as f64
            } else {
                0.0
            },
            rel_l2,
            cosine,
            mismatches: self.mismatches,
            worst: self.worst.map(element),
            first_mismatch: self.first_mismatch.map(element),
            nan_a: self.nan_a,
            nan_b: self.nan_b,
            inf_a: self.inf_a,
            inf_b: self.inf_b,
            nan_mismatches: self.nan_mismatches,
            inf_mismatches: self.inf_mismatches,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn of_avx2(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
    Acc::of_lanes(a, b, offset, tol)
}

/// `v` as f32, rounded toward zero (for v >= 0), at most `f32::MAX`.
pub(super) fn round_down(v: f64) -> f32 {
    let f = (v as f32).min(f32::MAX);
    if f as f64 > v && f > 0.0 {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    }
}

/// Row-major flat index -> position in `shape` (the flat index alone for a scalar).
pub(super) fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    if shape.is_empty() {
        return vec![i];
    }
    let mut pos = vec![0; shape.len()];
    for (p, &d) in pos.iter_mut().zip(shape).rev() {
        let d = d.max(1);
        *p = i % d;
        i /= d;
    }
    pos
}

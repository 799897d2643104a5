//! Tolerances of the fast path, checked on random data (NaN, ±Inf, zeros,
//! subnormals, huge values, offset means) stored as F32, F16, BF16 and F64:
//! - count, min, max, zero fraction, NaN and Inf counts: exactly the reference's;
//! - mean: within 1e-5 std + 1e-12 |mean|; std: within 1e-5 relative (f32 block sums);
//! - histogram counts: exactly the reference's (checked in `render::histogram`,
//!   which builds on these statistics).

use std::borrow::Cow;

use half::{bf16, f16};
use rand::{Rng, SeedableRng};
use safetensors::Dtype;

use crate::values::stats::{assert_stats_close, Acc, Stats};
use crate::values::{LayerData, SCAN_CHUNK};

/// What `Stats::of` was before the fused kernel: chunks of 2^14 values, two f64
/// passes each, merged with Chan's formula.
pub(crate) fn reference_stats(values: &[f32]) -> Stats {
    values
        .chunks(1 << 14)
        .map(Acc::of_exact)
        .fold(Acc::EMPTY, Acc::merge)
        .finish()
}

/// What `Histogram::of` was: every finite value binned one by one in f64.
#[cfg(feature = "render")]
#[cfg_attr(not(feature = "render"), allow(dead_code))]
pub(crate) fn reference_histogram(values: &[f32], s: &Stats, bins: usize) -> Vec<u64> {
    let mut counts = vec![0u64; bins];
    if s.min.is_nan() {
        return counts;
    }
    let scale = if s.max > s.min {
        bins as f64 / (s.max - s.min)
    } else {
        0.0
    };
    for &v in values.iter().filter(|v| v.is_finite()) {
        let b = if scale > 0.0 {
            (((v as f64 - s.min) * scale) as usize).min(bins - 1)
        } else {
            bins / 2
        };
        counts[b] += 1;
    }
    counts
}

pub(crate) use crate::values::stats::test_values as values;

pub(crate) fn stored(v: &[f32], dtype: Dtype) -> (LayerData<'static>, Vec<f32>) {
    let bytes: Vec<u8> = match dtype {
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::F64 => v.iter().flat_map(|&x| (x as f64).to_le_bytes()).collect(),
        _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    };
    let d = LayerData::from_bytes(Cow::Owned(bytes), dtype).expect("whole elements");
    let as_read = d.to_vec();
    (d, as_read)
}

#[test]
fn fast_statistics_match_the_reference() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for n in [0, 1, 7, 255, 257, 3 * SCAN_CHUNK + 123] {
        for kind in 0..5 {
            let v = values(&mut rng, n, kind);
            for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
                let (data, as_read) = stored(&v, dtype);
                let (got, want) = (Stats::of(&data), reference_stats(&as_read));
                assert_stats_close(&got, &want, &format!("n {n}, kind {kind}, {dtype}"));
            }
        }
    }
}

#[test]
fn never_active_units_match_the_reference_across_chunks() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for shape in [vec![4, 3, 5000, 7], vec![2, 70_001], vec![3, 9, 4111]] {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                if rng.random_range(0..50_000) == 0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        let a = super::Activity::of(&LayerData::from_f32(v.clone()), &shape, 0.0).unwrap();
        let inner: usize = shape[a.axis + 1..].iter().product();
        let mut active = vec![false; a.units];
        for (i, &x) in v.iter().enumerate() {
            active[(i / inner) % a.units] |= x > 0.0;
        }
        let want: Vec<usize> = (0..a.units).filter(|&u| !active[u]).collect();
        assert_eq!(a.never_active, want, "{shape:?}");
    }
}

//! Per-layer statistics: min, max, mean, std, zero fraction, NaN and Inf counts
//! (here, in the base layer, so that saving a run can store them in its header).

use serde::{Deserialize, Serialize};

use super::LayerData;

mod kernel;

/// Statistics of one layer. Min, max, mean and std are over the finite values
/// (NaN and ±Inf are counted apart); they are NaN when no value is finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of elements.
    pub count: u64,
    /// Smallest finite value.
    pub min: f64,
    /// Largest finite value.
    pub max: f64,
    /// Mean of the finite values.
    pub mean: f64,
    /// Population standard deviation of the finite values.
    pub std: f64,
    /// Fraction of elements exactly zero (0 for an empty layer).
    pub zero_fraction: f64,
    /// Number of NaN elements.
    pub nan: u64,
    /// Number of +Inf and -Inf elements.
    pub inf: u64,
}

#[derive(Clone, Copy)]
pub(crate) struct Acc {
    n: u64,
    finite: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    zeros: u64,
    nan: u64,
    inf: u64,
}

impl Acc {
    pub(crate) const EMPTY: Acc = Acc {
        n: 0,
        finite: 0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        zeros: 0,
        nan: 0,
        inf: 0,
    };

    pub(crate) fn merge(self, b: Acc) -> Acc {
        let finite = self.finite + b.finite;
        let (mean, m2) = if finite == 0 {
            (0.0, 0.0)
        } else {
            let d = b.mean - self.mean;
            let mean = self.mean + d * b.finite as f64 / finite as f64;
            let m2 =
                self.m2 + b.m2 + d * d * (self.finite as f64) * (b.finite as f64) / finite as f64;
            (mean, m2)
        };
        Acc {
            n: self.n + b.n,
            finite,
            mean,
            m2,
            min: self.min.min(b.min),
            max: self.max.max(b.max),
            zeros: self.zeros + b.zeros,
            nan: self.nan + b.nan,
            inf: self.inf + b.inf,
        }
    }

    /// Whether every value counted is finite.
    #[cfg_attr(not(feature = "render"), allow(dead_code))]
    pub(crate) fn all_finite(&self) -> bool {
        self.finite == self.n
    }

    pub(crate) fn finish(self) -> Stats {
        let none = self.finite == 0;
        Stats {
            count: self.n,
            min: if none { f64::NAN } else { self.min },
            max: if none { f64::NAN } else { self.max },
            mean: if none { f64::NAN } else { self.mean },
            std: if none {
                f64::NAN
            } else {
                (self.m2 / self.finite as f64).sqrt()
            },
            zero_fraction: if self.n == 0 {
                0.0
            } else {
                self.zeros as f64 / self.n as f64
            },
            nan: self.nan,
            inf: self.inf,
        }
    }
}

/// Statistics fed one chunk at a time, in order, on the calling thread: the same
/// numbers as [`Stats::of`] when the chunks are its chunks ([`super::SCAN_CHUNK`]
/// values each from the layer's start, the last one shorter).
pub(crate) struct StatsFold(Acc);

impl StatsFold {
    pub(crate) fn new() -> StatsFold {
        StatsFold(Acc::EMPTY)
    }

    pub(crate) fn push(&mut self, chunk: &[f32]) {
        self.0 = self.0.merge(Acc::of(chunk));
    }

    pub(crate) fn finish(self) -> Stats {
        self.0.finish()
    }
}

impl Stats {
    /// Statistics of a layer's values: one read, chunks in parallel (see `kernel`).
    pub fn of(data: &LayerData<'_>) -> Stats {
        data.par_chunks(|_, c| Acc::of(c))
            .into_iter()
            .fold(Acc::EMPTY, Acc::merge)
            .finish()
    }

    /// Statistics of f32 values.
    pub fn of_values(values: &[f32]) -> Stats {
        Stats::of(&LayerData::from_f32(values.to_vec()))
    }

    /// Number of elements that are NaN or ±Inf.
    pub fn non_finite(&self) -> u64 {
        self.nan + self.inf
    }
}

/// Asserts that fast statistics `got` are the reference's `want` within the
/// tolerances of `stats::against_reference`: counts, min, max and zero fraction
/// exact; mean within 1e-5 std + 1e-12 |mean|; std within 1e-5 relative.
#[cfg(test)]
pub(crate) fn assert_stats_close(got: &Stats, want: &Stats, what: &str) {
    let close = |a: f64, b: f64, tol: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol;
    let what = format!("{what}: {got:?} vs {want:?}");
    assert_eq!(
        (got.count, got.nan, got.inf, got.zero_fraction),
        (want.count, want.nan, want.inf, want.zero_fraction),
        "{what}"
    );
    assert!(close(got.min, want.min, 0.0), "{what}");
    assert!(close(got.max, want.max, 0.0), "{what}");
    let tol = 1e-5 * want.std + 1e-12 * want.mean.abs();
    assert!(close(got.mean, want.mean, tol), "{what}");
    assert!(close(got.std, want.std, 1e-5 * want.std), "{what}");
}

/// Random values of one of several kinds.
#[cfg(test)]
pub(crate) fn test_values(rng: &mut rand::rngs::StdRng, n: usize, kind: usize) -> Vec<f32> {
    use rand::Rng;
    (0..n)
        .map(|_| {
            let r: f32 = rng.random_range(-1.0..1.0);
            let special = rng.random_range(0..1000);
            match special {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3..=50 => 0.0,
                51..=60 => f32::from_bits(rng.random_range(1..0x007f_ffff)), // subnormal
                _ => match kind {
                    0 => r,
                    1 => 1000.0 + r * 1e-3,       // offset mean: cancellation
                    2 => r * 1e30,                // f32 squares overflow
                    3 => r.max(0.0),              // ReLU-like
                    _ => (r * 40.0).exp() - 1e-3, // heavy tail
                },
            }
        })
        .collect()
}

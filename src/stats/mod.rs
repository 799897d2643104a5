//! Per-layer statistics: min, max, mean, std, zero fraction, NaN and Inf counts.

use crate::values::LayerData;
pub use crate::values::Stats;

/// Which units of a non-negative layer never fire: the honest form of "dead ReLU".
///
/// A unit is a channel of `[N, C, ...]` (rank ≥ 4), a feature of `[N, D]` or of
/// `[N, T, D]` (the last axis). It is **never active** when none of its values is
/// positive in any recorded sample (or position). Measured only for layers with no
/// negative value (ReLU outputs, pooling after them, probabilities, counts...), where
/// "not positive" means "zero"; the share of zeros alone is sparsity, not death.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    /// The unit axis (1 for channels, the last axis for features).
    pub axis: usize,
    /// What a unit is: `channels` (rank ≥ 4) or `units`.
    pub unit: &'static str,
    /// Number of units.
    pub units: usize,
    /// Number of samples the verdict covers (dimension 0).
    pub samples: usize,
    /// The units never active, in order.
    pub never_active: Vec<usize>,
}

impl Activity {
    /// The units of a layer of `shape` whose smallest value is `min`; `None` when
    /// the layer has negative values, no unit axis (rank < 2) or nothing in it.
    pub fn of(data: &LayerData<'_>, shape: &[usize], min: f64) -> Option<Activity> {
        if min.is_nan() || min < 0.0 {
            return None;
        }
        let (axis, units, inner) = Activity::units(shape)?;
        let active = data.par_fold(
            || vec![false; units],
            |mut active, start, c| {
                mark_active(&mut active, inner, start, c);
                active
            },
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(x, y)| *x |= y);
                a
            },
        );
        Some(Activity::from_flags(shape, axis, &active))
    }

    /// The unit axis of `shape`, its number of units and the values per unit run
    /// (`inner`); `None` for ranks below 2 and empty layers.
    pub(crate) fn units(shape: &[usize]) -> Option<(usize, usize, usize)> {
        let n: usize = shape.iter().product();
        if shape.len() < 2 || n == 0 {
            return None;
        }
        let axis = if shape.len() >= 4 { 1 } else { shape.len() - 1 };
        Some((axis, shape[axis], shape[axis + 1..].iter().product()))
    }

    /// The verdict from one flag per unit of `axis` (true: some value positive).
    pub(crate) fn from_flags(shape: &[usize], axis: usize, active: &[bool]) -> Activity {
        Activity {
            axis,
            unit: if shape.len() >= 4 {
                "channels"
            } else {
                "units"
            },
            units: active.len(),
            samples: shape[0],
            never_active: (0..active.len()).filter(|&u| !active[u]).collect(),
        }
    }

    /// `3 of 64 channels never active across 10 samples`, or `None` when all fired.
    pub fn describe(&self) -> Option<String> {
        if self.never_active.is_empty() {
            return None;
        }
        let samples = match self.samples {
            1 => "the 1 recorded sample".to_string(),
            n => format!("{n} recorded samples"),
        };
        Some(format!(
            "{} of {} {} never active across {samples}",
            self.never_active.len(),
            self.units,
            self.unit
        ))
    }
}

/// Marks the units (runs of `inner` values, `active.len()` units cycling) of the
/// values `c`, elements `start..` of the layer, that hold a positive value.
pub(crate) fn mark_active(active: &mut [bool], inner: usize, start: usize, c: &[f32]) {
    let units = active.len();
    let (mut u, mut off, mut i) = ((start / inner) % units, start % inner, 0);
    while i < c.len() {
        if inner == 1 {
            let n = (units - u).min(c.len() - i);
            for (a, &v) in active[u..u + n].iter_mut().zip(&c[i..i + n]) {
                *a |= v > 0.0;
            }
            i += n;
            u = (u + n) % units;
            continue;
        }
        let run = (inner - off).min(c.len() - i);
        active[u] |= c[i..i + run].iter().any(|&v| v > 0.0);
        i += run;
        off += run;
        if off == inner {
            (off, u) = (0, (u + 1) % units);
        }
    }
}

impl crate::Run {
    /// Statistics of layer `name`.
    pub fn stats(&self, name: &str) -> crate::Result<Stats> {
        self.stats_at(self.index(name)?)
    }

    /// Statistics of layer number `index`: those the header stores
    /// (`candlelight.layers`, written at save time by the same computation) when
    /// there are some, else computed in one read of the layer.
    pub fn stats_at(&self, index: usize) -> crate::Result<Stats> {
        if let Some(s) = self.summary_at(index).and_then(|s| s.stats) {
            return Ok(s);
        }
        let data = self.data_at(index)?;
        let s = Stats::of(&data);
        data.check()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_active_units_are_found_per_channel_and_per_feature() {
        // [N=2, C=3, H=1, W=2]: channel 1 is zero in both samples, channel 2 fires once.
        let v = [1., 0., 0., 0., 0., 0., 0., 2., 0., 0., 3., 0.];
        let a = Activity::of(&LayerData::from_f32(v.to_vec()), &[2, 3, 1, 2], 0.0).unwrap();
        assert_eq!((a.axis, a.units, a.samples), (1, 3, 2));
        assert_eq!(a.never_active, [1]);
        assert_eq!(
            a.describe().unwrap(),
            "1 of 3 channels never active across 2 recorded samples"
        );
        // [N=1, T=2, D=3]: feature 0 never positive.
        let v = [0., 1., 0., 0., 0., 5.];
        let a = Activity::of(&LayerData::from_f32(v.to_vec()), &[1, 2, 3], 0.0).unwrap();
        assert_eq!((a.axis, a.never_active.clone()), (2, vec![0]));
        // Negative values: not a non-negative layer, no verdict; all active: no note.
        assert!(Activity::of(&LayerData::from_f32(vec![-1., 1.]), &[1, 2], -1.0).is_none());
        let a = Activity::of(&LayerData::from_f32(vec![1., 1.]), &[1, 2], 1.0).unwrap();
        assert_eq!(a.describe(), None);
        // A layer of zeros is entirely inactive, whatever its kind.
        let a = Activity::of(&LayerData::from_f32(vec![0.; 8]), &[2, 4], 0.0).unwrap();
        assert_eq!(a.never_active.len(), 4);
    }

    #[test]
    fn matches_a_direct_computation() {
        let v: Vec<f32> = (0..100_003)
            .map(|i| ((i * 37) % 101) as f32 - 50.0)
            .collect();
        let s = Stats::of_values(&v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        // The tolerances of the f32-lane kernel (see `against_reference`).
        assert!((s.mean - mean).abs() < 1e-5 * var.sqrt());
        assert!((s.std - var.sqrt()).abs() < 1e-5 * var.sqrt());
        assert_eq!(s.min, -50.0);
        assert_eq!(s.max, 50.0);
        let zeros = v.iter().filter(|&&x| x == 0.0).count();
        assert!((s.zero_fraction - zeros as f64 / v.len() as f64).abs() < 1e-12);
    }

    #[test]
    fn counts_nan_and_inf_apart() {
        let s = Stats::of_values(&[1.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0, 0.0]);
        assert_eq!((s.nan, s.inf, s.count), (1, 2, 6));
        assert_eq!((s.min, s.max, s.mean), (0.0, 3.0, 4.0 / 3.0));
        let s = Stats::of_values(&[f32::NAN]);
        assert!(s.mean.is_nan() && s.min.is_nan());
        let s = Stats::of_values(&[]);
        assert_eq!(s.count, 0);
        assert_eq!(s.zero_fraction, 0.0);
    }
}

/// The new statistics and histograms against the implementation they replaced
/// (kept here as the reference) on random data of every float dtype.
#[cfg(test)]
pub(crate) mod against_reference;

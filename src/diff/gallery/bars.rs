//! `[N, classes]` layers in the diff gallery: A's and B's values of one sample as
//! labelled bars on one scale, class by class, each side's top class marked.

use serde::Serialize;

use crate::pages::fmt_num;
use crate::values::LayerData;

/// Widest class axis drawn as bars (the run galleries' limit).
const MAX_CLASSES: usize = 100;

/// One sample of a `[N, classes]` layer in both runs.
#[derive(Debug, Serialize)]
pub(super) struct PairBars {
    pub sample: usize,
    pub top_a: Option<usize>,
    pub top_b: Option<usize>,
    pub rows: Vec<PairBar>,
}

/// One class: A's and B's values and bar widths (percent of the largest |value|
/// of either run), and whether they differ beyond the diff's tolerance.
#[derive(Debug, Serialize)]
pub(super) struct PairBar {
    pub label: String,
    pub a: String,
    pub b: String,
    pub wa: String,
    pub wb: String,
    pub neg_a: bool,
    pub neg_b: bool,
    pub top: bool,
    pub differs: bool,
}

/// The bars of sample 0 when both sides are `[N, C]` with 2 ≤ C ≤ 100 (same
/// shape); `agrees(a, b)` is the diff's element test.
pub(super) fn pair_bars(
    da: &LayerData<'_>,
    db: &LayerData<'_>,
    shape: &[usize],
    agrees: impl Fn(f32, f32) -> bool,
) -> Option<PairBars> {
    let &[n, c] = shape else { return None };
    if !(2..=MAX_CLASSES).contains(&c) || n == 0 || da.len() != n * c || db.len() != n * c {
        return None;
    }
    let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
    da.read_into(0, &mut a);
    db.read_into(0, &mut b);
    let top = |v: &[f32]| {
        (0..c)
            .filter(|&i| v[i].is_finite())
            .max_by(|&x, &y| v[x].total_cmp(&v[y]).then(y.cmp(&x)))
    };
    let (top_a, top_b) = (top(&a), top(&b));
    let scale = a
        .iter()
        .chain(&b)
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()));
    let width = |x: f32| {
        if scale > 0.0 && x.is_finite() {
            format!("{:.1}", x.abs() / scale * 100.0)
        } else {
            "0".into()
        }
    };
    let rows = (0..c)
        .map(|i| PairBar {
            label: i.to_string(),
            a: fmt_num(a[i] as f64),
            b: fmt_num(b[i] as f64),
            wa: width(a[i]),
            wb: width(b[i]),
            neg_a: a[i] < 0.0,
            neg_b: b[i] < 0.0,
            top: Some(i) == top_a || Some(i) == top_b,
            differs: !agrees(a[i], b[i]),
        })
        .collect();
    Some(PairBars {
        sample: 0,
        top_a,
        top_b,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_runs_share_one_scale_and_mark_their_top_class() {
        let a = LayerData::from_f32(vec![0.1, 0.9, -0.2, 0.0, 0.0, 0.0]);
        let b = LayerData::from_f32(vec![0.1, 0.3, 0.6, 0.0, 0.0, 0.0]);
        let p = pair_bars(&a, &b, &[2, 3], |x, y| (x - y).abs() <= 1e-3).unwrap();
        assert_eq!((p.top_a, p.top_b), (Some(1), Some(2)));
        assert_eq!(p.rows[1].wa, "100.0");
        assert_eq!(p.rows[2].wb, format!("{:.1}", 0.6 / 0.9 * 100.0));
        assert!(!p.rows[0].differs && p.rows[1].differs && p.rows[2].neg_a);
        assert!(p.rows[1].top && p.rows[2].top && !p.rows[0].top);
        assert!(pair_bars(&a, &b, &[6], |_, _| true).is_none());
        assert!(pair_bars(&a, &b, &[1, 6], |_, _| true).is_some());
        assert!(pair_bars(&a, &b, &[6, 1], |_, _| true).is_none());
    }
}

//! `[N, classes]` layers (logits, probabilities) as a labelled bar chart of one
//! sample, and the prediction it implies for the index card.

use serde::Serialize;

use crate::pages::fmt_num;
use crate::values::LayerData;

/// Widest class axis drawn as bars (beyond it the layer is a picture like any other).
pub(super) const MAX_CLASSES: usize = 100;

/// One sample's values of a `[N, classes]` layer, ready for the page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bars {
    pub sample: usize,
    pub rows: Vec<BarRow>,
    /// The class with the largest value (the prediction).
    pub top: usize,
    pub top_value: String,
}

/// One class: its label, value, and bar (percent of the largest |value|).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BarRow {
    pub label: String,
    pub value: String,
    pub width: String,
    pub negative: bool,
    pub top: bool,
}

/// The bars of sample `sample` of a layer of `shape`, when it is `[N, C]` with
/// 2 ≤ C ≤ [`MAX_CLASSES`] and the sample has a finite value.
pub(crate) fn bars(data: &LayerData<'_>, shape: &[usize], sample: usize) -> Option<Bars> {
    let &[n, c] = shape else { return None };
    if !(2..=MAX_CLASSES).contains(&c) || n == 0 {
        return None;
    }
    let sample = sample.min(n - 1);
    let mut v = vec![0f32; c];
    data.read_into(sample * c, &mut v);
    let top = (0..c)
        .filter(|&i| v[i].is_finite())
        .max_by(|&a, &b| v[a].total_cmp(&v[b]).then(b.cmp(&a)))?;
    let scale = v
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |m, x| m.max(x.abs()));
    let rows = v
        .iter()
        .enumerate()
        .map(|(i, &x)| BarRow {
            label: i.to_string(),
            value: fmt_num(x as f64),
            width: if scale > 0.0 && x.is_finite() {
                format!("{:.1}", x.abs() / scale * 100.0)
            } else {
                "0".into()
            },
            negative: x < 0.0,
            top: i == top,
        })
        .collect();
    Some(Bars {
        sample,
        rows,
        top,
        top_value: fmt_num(v[top] as f64),
    })
}

/// `predicted 3 (0.981) · label 3` for the index card: the last `[N, classes]`
/// layer's top class, and the run's `label` tag when it has one.
pub(super) fn summary(
    last: Option<&Bars>,
    tags: &std::collections::BTreeMap<String, String>,
) -> Option<String> {
    let label = tags.get("label");
    let mut parts = Vec::new();
    if let Some(b) = last {
        let mark = match label {
            Some(l) if *l == b.top.to_string() => " ✓",
            Some(_) => " ✗",
            None => "",
        };
        parts.push(format!("predicted {} ({}){mark}", b.top, b.top_value));
    }
    if let Some(l) = label {
        parts.push(format!("label {l}"));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_become_labelled_bars_with_the_prediction() {
        let d = LayerData::from_f32(vec![0.1, 0.7, 0.2, -1.0, 4.0, 0.5]);
        let b = bars(&d, &[2, 3], 1).unwrap();
        assert_eq!((b.sample, b.top), (1, 1));
        assert_eq!(b.rows[0].width, "25.0");
        assert!(b.rows[0].negative && b.rows[1].top);
        assert!(bars(&d, &[6], 0).is_none() && bars(&d, &[1, 1, 6], 0).is_none());
        let nan = LayerData::from_f32(vec![f32::NAN, f32::NAN]);
        assert!(bars(&nan, &[1, 2], 0).is_none());
        let mut tags = std::collections::BTreeMap::new();
        assert_eq!(summary(Some(&b), &tags).unwrap(), "predicted 1 (4.0000)");
        tags.insert("label".to_string(), "2".to_string());
        assert_eq!(
            summary(Some(&b), &tags).unwrap(),
            "predicted 1 (4.0000) ✗ · label 2"
        );
        assert_eq!(summary(None, &tags).unwrap(), "label 2");
    }
}

//! The pictures of a trends page: trend lines of a layer's statistics across runs
//! as inline SVG (no script; one link per run to its card), and the histograms
//! over runs as a PNG (x = run, y = value bins on one common axis, colour = log
//! count; TensorBoard's histograms over time).

use std::fmt::Write as _;

use image::RgbImage;
use serde::Deserialize;

use crate::pages::fmt_num;
use crate::render::{encode_png, Colormap};
use crate::Result;

/// A layer's histogram as stats.json stores it (`hist`), checked by [`Hist::checked`].
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Hist {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
}

/// Most bins a histogram read from stats.json may have.
const MAX_BINS: usize = 4096;
/// Bins of the common axis of the histograms over runs.
pub(super) const OVER_RUNS_BINS: usize = 64;

impl Hist {
    /// The histogram if it is sane: finite `lo <= hi`, 1 to 4096 bins.
    pub fn checked(self) -> Option<Hist> {
        let ok = self.lo.is_finite()
            && self.hi.is_finite()
            && self.lo <= self.hi
            && (1..=MAX_BINS).contains(&self.counts.len());
        ok.then_some(self)
    }
}

/// One run's numbers of one layer on a trends chart.
pub(super) struct Point {
    /// Link to the run's card: `../<run>/index.html#l<index>`.
    pub href: String,
    /// Tooltip (plain text; escaped here).
    pub title: String,
    pub mean: f64,
    pub std: f64,
    /// Zero fraction, 0..1.
    pub zero: f64,
    pub min: f64,
    pub max: f64,
}

/// Escapes text for HTML/SVG (control characters shown as U+FFFD).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && !"\t\n\r".contains(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const W: f64 = 600.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 16.0;
const PANEL: f64 = 58.0;
const GAP: f64 = 20.0;
/// Above this many runs the points are drawn as lines only (no dots).
const DOTS_UP_TO: usize = 60;

/// The four panels (mean, std, zeros, min/max) of one layer over the runs as one
/// SVG; `labels[i]` names run `i` on the x axis (`axis` says what they are).
pub(super) fn trend_svg(points: &[Option<Point>], labels: &[String], axis: &str) -> String {
    let n = points.len().max(1);
    let h = TOP + 4.0 * (PANEL + GAP) - GAP + 22.0;
    let step = (W - LEFT - RIGHT) / n as f64;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * step;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" role="img">"#
    );
    let get = |f: fn(&Point) -> f64| -> Vec<f64> {
        points
            .iter()
            .map(|p| p.as_ref().map_or(f64::NAN, f))
            .collect()
    };
    let panels: [Panel; 4] = [
        ("mean", vec![get(|p| p.mean)], None),
        ("std", vec![get(|p| p.std)], None),
        (
            "sparsity (zeros, %)",
            vec![get(|p| p.zero * 100.0)],
            Some((0.0, 100.0)),
        ),
        ("min / max", vec![get(|p| p.min), get(|p| p.max)], None),
    ];
    for (k, (title, series, fixed)) in panels.iter().enumerate() {
        let top = TOP + k as f64 * (PANEL + GAP);
        let (lo, hi) = fixed.unwrap_or_else(|| range(series.iter().flatten()));
        let y = |v: f64| top + PANEL - (v - lo) / (hi - lo) * PANEL;
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="{:.1}" fill="#434a5c">{}</text><rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{PANEL}" fill="#fafafc" stroke="#dedee3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b6b72">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b6b72">{}</text>"##,
            top - 4.0,
            esc(title),
            W - LEFT - RIGHT,
            LEFT - 4.0,
            top + 9.0,
            esc(&fmt_num(hi)),
            LEFT - 4.0,
            top + PANEL,
            esc(&fmt_num(lo)),
        );
        for (j, vals) in series.iter().enumerate() {
            let color = ["#1f5fbf", "#c44e52"][j % 2];
            line(&mut s, vals, &x, &y, color, n <= DOTS_UP_TO);
        }
    }
    let base = TOP + 4.0 * (PANEL + GAP) - GAP;
    for i in label_positions(labels.len()) {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#6b6b72">{}</text>"##,
            x(i),
            base + 12.0,
            esc(&labels[i])
        );
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#6b6b72">{}</text>"##,
        W - RIGHT,
        base + 21.0,
        esc(axis)
    );
    for (i, p) in points.iter().enumerate() {
        let Some(p) = p else { continue };
        let _ = write!(
            s,
            r#"<a href="{}"><rect class="col" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{}</title></rect></a>"#,
            esc(&p.href),
            x(i) - step / 2.0,
            TOP - 12.0,
            step,
            base - TOP + 12.0,
            esc(&p.title)
        );
    }
    s.push_str("</svg>");
    s
}

/// A panel: its title, its series, and its fixed y range if any.
type Panel<'a> = (&'a str, Vec<Vec<f64>>, Option<(f64, f64)>);

/// Histograms on one axis: `lo`, `hi`, and per run its counts per bin (`None`: no
/// histogram).
pub(super) type Rebinned = (f64, f64, Vec<Option<Vec<f64>>>);

/// Up to 7 evenly spread label positions out of `n` (first and last included).
fn label_positions(n: usize) -> Vec<usize> {
    if n <= 7 {
        return (0..n).collect();
    }
    let mut v: Vec<usize> = (0..7).map(|k| k * (n - 1) / 6).collect();
    v.dedup();
    v
}

/// The range of the finite values, padded; never empty.
fn range<'a>(vals: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi > lo {
        let pad = (hi - lo) * 0.05;
        (lo - pad, hi + pad)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d, hi + d)
    }
}

/// A polyline through the finite values (broken where one is missing), dots if asked.
fn line(
    s: &mut String,
    vals: &[f64],
    x: &dyn Fn(usize) -> f64,
    y: &dyn Fn(f64) -> f64,
    color: &str,
    dots: bool,
) {
    let mut seg: Vec<String> = Vec::new();
    let flush = |s: &mut String, seg: &mut Vec<String>| {
        if seg.len() > 1 {
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                seg.join(" ")
            );
        }
        seg.clear();
    };
    for (i, &v) in vals.iter().enumerate() {
        if !v.is_finite() {
            flush(s, &mut seg);
            continue;
        }
        seg.push(format!("{:.1},{:.1}", x(i), y(v)));
        let lonely =
            (i == 0 || !vals[i - 1].is_finite()) && vals.get(i + 1).is_none_or(|n| !n.is_finite());
        if dots || lonely {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{color}"/>"#,
                x(i),
                y(v)
            );
        }
    }
    flush(s, &mut seg);
}

/// The histograms re-binned onto one common axis `[lo, hi]` of `bins` bins (the
/// union of their ranges): each source bin's count is spread over the common bins
/// it overlaps in proportion to the overlap (a point histogram, `lo == hi`, goes
/// whole into the bin of its value). `None` when no histogram is given.
pub(super) fn rebin(hists: &[Option<&Hist>], bins: usize) -> Option<Rebinned> {
    let bins = bins.max(1);
    let (lo, hi) = hists
        .iter()
        .flatten()
        .fold(None, |acc: Option<(f64, f64)>, h| {
            Some(acc.map_or((h.lo, h.hi), |(a, b)| (a.min(h.lo), b.max(h.hi))))
        })?;
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let w = (hi - lo) / bins as f64;
    let at = |v: f64| (((v - lo) / w).floor().max(0.0) as usize).min(bins - 1);
    let cols = hists
        .iter()
        .map(|h| {
            let h = (*h)?;
            let mut out = vec![0.0f64; bins];
            if h.hi <= h.lo {
                out[at(h.lo)] += h.counts.iter().map(|&c| c as f64).sum::<f64>();
                return Some(out);
            }
            let sw = (h.hi - h.lo) / h.counts.len() as f64;
            for (j, &c) in h.counts.iter().enumerate().filter(|(_, &c)| c > 0) {
                let a = h.lo + j as f64 * sw;
                let b = a + sw;
                let (first, last) = (at(a), at(b));
                let overlaps: Vec<f64> = (first..=last)
                    .map(|t| {
                        let (ta, tb) = (lo + t as f64 * w, lo + (t + 1) as f64 * w);
                        (b.min(tb) - a.max(ta)).max(0.0)
                    })
                    .collect();
                let total: f64 = overlaps.iter().sum();
                if total <= 0.0 {
                    out[first] += c as f64;
                    continue;
                }
                for (t, ov) in (first..=last).zip(&overlaps) {
                    out[t] += c as f64 * ov / total;
                }
            }
            Some(out)
        })
        .collect();
    Some((lo, hi, cols))
}

/// The histograms over runs as a PNG: column `i` = run `i`, high values at the
/// top, colour = log(1 + count) on viridis (white: no value, grey: no histogram).
/// Returns the PNG bytes and its size.
pub(super) fn hist_png(cols: &[Option<Vec<f64>>]) -> Result<(Vec<u8>, u32, u32)> {
    let n = cols.len().max(1);
    let bins = cols
        .iter()
        .flatten()
        .map(Vec::len)
        .max()
        .unwrap_or(1)
        .max(1);
    let cw = (480 / n).clamp(1, 24) as u32;
    let rh = (128 / bins).max(1) as u32;
    let peak = cols
        .iter()
        .flatten()
        .flatten()
        .fold(0.0f64, |a, &b| a.max(b));
    let norm = (1.0 + peak).ln().max(f64::MIN_POSITIVE);
    let (w, h) = (n as u32 * cw, bins as u32 * rh);
    let img = RgbImage::from_fn(w, h, |px, py| {
        let i = (px / cw) as usize;
        let b = bins - 1 - (py / rh) as usize;
        match cols.get(i).and_then(|c| c.as_ref()) {
            None => image::Rgb([225, 225, 230]),
            Some(c) => {
                let v = c.get(b).copied().unwrap_or(0.0);
                if v <= 0.0 {
                    image::Rgb([255, 255, 255])
                } else {
                    image::Rgb(Colormap::Viridis.color(((1.0 + v).ln() / norm) as f32))
                }
            }
        }
    });
    Ok((encode_png(&img)?, w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(lo: f64, hi: f64, counts: &[u64]) -> Hist {
        Hist {
            lo,
            hi,
            counts: counts.to_vec(),
        }
    }

    #[test]
    fn rebinning_keeps_every_count_on_one_common_axis() {
        let a = h(0.0, 1.0, &[1, 1, 1, 1]);
        let b = h(0.0, 2.0, &[4, 0, 0, 8]);
        let p = h(1.5, 1.5, &[0, 7, 0]);
        let (lo, hi, cols) = rebin(&[Some(&a), None, Some(&b), Some(&p)], 4).unwrap();
        assert_eq!((lo, hi), (0.0, 2.0));
        let close = |x: &[f64], y: &[f64]| x.iter().zip(y).all(|(a, b)| (a - b).abs() < 1e-9);
        assert!(
            close(cols[0].as_ref().unwrap(), &[2.0, 2.0, 0.0, 0.0]),
            "{cols:?}"
        );
        assert!(cols[1].is_none());
        assert!(close(cols[2].as_ref().unwrap(), &[4.0, 0.0, 0.0, 8.0]));
        assert!(close(cols[3].as_ref().unwrap(), &[0.0, 0.0, 0.0, 7.0]));
        // Uneven overlaps: totals kept within 1e-9.
        let c = h(-0.3, 1.7, &[3, 5, 7]);
        let (_, _, cols) = rebin(&[Some(&c), Some(&a)], 5).unwrap();
        let sum: f64 = cols[0].as_ref().unwrap().iter().sum();
        assert!((sum - 15.0).abs() < 1e-9, "{sum}");
        // All point histograms at one value: a unit-wide axis around it.
        let (lo, hi, cols) = rebin(&[Some(&h(2.0, 2.0, &[5]))], 8).unwrap();
        assert_eq!((lo, hi), (1.5, 2.5));
        assert_eq!(cols[0].as_ref().unwrap()[4], 5.0);
        assert!(rebin(&[None], 4).is_none());
    }

    #[test]
    fn hostile_histograms_are_refused() {
        assert!(h(f64::NAN, 1.0, &[1]).checked().is_none());
        assert!(h(2.0, 1.0, &[1]).checked().is_none());
        assert!(h(0.0, 1.0, &[]).checked().is_none());
        assert!(h(0.0, 1.0, &vec![1; MAX_BINS + 1]).checked().is_none());
        assert!(h(0.0, f64::INFINITY, &[1]).checked().is_none());
        assert!(h(0.0, 1.0, &[u64::MAX, 3]).checked().is_some());
    }

    #[test]
    fn svg_text_is_escaped_and_every_run_links_to_its_card() {
        let p = |i: usize| Point {
            href: format!("../r{i}/index.html#l3"),
            title: format!("<script>\"{i}\"</script>\u{0}"),
            mean: i as f64,
            std: 1.0,
            zero: 0.5,
            min: -1.0,
            max: f64::NAN,
        };
        let svg = trend_svg(
            &[Some(p(0)), None, Some(p(2))],
            &["<b>".into(), "2".into(), "3".into()],
            "step & \"x\"",
        );
        assert!(!svg.contains("<script") && !svg.contains("<b>") && !svg.contains('\0'));
        assert!(svg.contains("&lt;b&gt;") && svg.contains("step &amp; &quot;x&quot;"));
        assert_eq!(svg.matches("<a href=").count(), 2);
        assert!(svg.contains(r#"href="../r2/index.html#l3""#));
        let (png, w, h) = hist_png(&[Some(vec![0.0, 3.0]), None]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert_eq!((w, h), (48, 128));
    }
}

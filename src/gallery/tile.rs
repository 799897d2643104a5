//! The data behind a card's picture, embedded in the run page for its script: the
//! cells' rectangles ([`Layout::cells`]) and, per sample shown, the values the
//! picture shows, quantised (16 or 8 bits between the finite min and max) and
//! base64-encoded within a byte budget. A tile larger than the budget is reduced
//! further by means of `k × k` values (the readout says so).

use base64::Engine;
use serde::Serialize;

use crate::render::{Layout, LayoutKind, Picture};

/// Most bytes of one layer's values for one sample (before base64).
pub(super) const LAYER_TILE_BYTES: usize = 16 * 1024;
/// Bytes of values per page (before base64, ≈ 1.5 MB after): the per-layer budget
/// shrinks when layers × samples would pass it.
pub(super) const PAGE_TILE_BYTES: usize = 1_100_000;
/// The smallest per-layer budget, however many layers.
const MIN_TILE_BYTES: usize = 256;

/// The per-layer budget of a page of `layers` layers with `samples` samples each.
pub(super) fn layer_budget(layers: usize, samples: usize) -> usize {
    (PAGE_TILE_BYTES / (layers * samples).max(1)).clamp(MIN_TILE_BYTES, LAYER_TILE_BYTES)
}

/// What the page's script needs of one card (serialized as JSON into the page).
#[derive(Debug, Clone, Serialize)]
pub(super) struct CardData {
    /// `grid`, `heatmap` or `folded`.
    pub kind: &'static str,
    /// Names of the tile axis, the rows and the columns (`channel`, `row`, `col`;
    /// `token`, `dim`; ...); the tile axis is null when there is one tile.
    pub axes: (Option<&'static str>, &'static str, &'static str),
    /// Picture size in pixels.
    pub size: (usize, usize),
    /// `[tile, x, y, w, h]` per cell, in image pixels.
    pub cells: Vec<[usize; 5]>,
    /// Source rows and columns of a tile.
    pub tile: (usize, usize),
    /// Pixels per reduced value (y, x) and source values per reduced value (y, x).
    pub zoom: (usize, usize),
    pub down: (usize, usize),
    /// One entry per sample shown, the configured sample first.
    pub samples: Vec<SampleData>,
}

/// One sample's picture and values.
#[derive(Debug, Clone, Serialize)]
pub(super) struct SampleData {
    pub s: usize,
    pub pic: String,
    pub cap: String,
    /// The sample's token strings, when the rows (and columns) are tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<String>>,
    pub tile: Option<Tile>,
}

/// Quantised values: code `c` of `bits` means `lo + c * (hi - lo) / (2^bits - 3)`;
/// the top code is NaN/±Inf, the one below it "no value".
#[derive(Debug, Clone, Serialize)]
pub(super) struct Tile {
    pub bits: u8,
    pub lo: f32,
    pub hi: f32,
    /// Reduced values per stored value along each axis (1: as the picture shows).
    pub k: usize,
    /// Stored rows and columns per cell.
    pub h: usize,
    pub w: usize,
    /// Little-endian codes, cell after cell, row-major.
    pub b64: String,
}

/// The card data of a layer of `rank` dims whose picture has `layout` (every
/// sample's picture shares it).
pub(super) fn card_data(layout: &Layout, rank: usize, head: bool) -> CardData {
    let (kind, axes) = match layout.kind {
        LayoutKind::Grid => (
            "grid",
            (Some(if head { "head" } else { "channel" }), "row", "col"),
        ),
        LayoutKind::Heatmap if rank == 3 => ("heatmap", (None, "token", "dim")),
        LayoutKind::Heatmap => ("heatmap", (None, "channel", "position")),
        _ => ("folded", (None, "row", "element")),
    };
    CardData {
        kind,
        axes,
        size: (layout.width, layout.height),
        cells: layout
            .cells()
            .iter()
            .map(|c| [c.index, c.x, c.y, c.w, c.h])
            .collect(),
        tile: (layout.tile_h, layout.tile_w),
        zoom: (layout.y.zoom, layout.x.zoom),
        down: (layout.y.down, layout.x.down),
        samples: Vec::new(),
    }
}

/// The values of `pic` within `budget` bytes, if it has any.
pub(super) fn tile(pic: &Picture, budget: usize) -> Option<Tile> {
    let l = &pic.layout;
    if pic.values.is_empty() {
        return None;
    }
    let (rh, rw) = (l.tile_h.div_ceil(l.y.down), l.tile_w.div_ceil(l.x.down));
    let cells = pic.values.len();
    let count = |k: usize| cells * rh.div_ceil(k) * rw.div_ceil(k);
    let (bits, k) = if count(1) * 2 <= budget {
        (16, 1)
    } else {
        let k = (1..=rh.max(rw))
            .find(|&k| count(k) <= budget)
            .unwrap_or(rh.max(rw));
        (8, k)
    };
    let (h, w) = (rh.div_ceil(k), rw.div_ceil(k));
    let values: Vec<f32> = pic
        .values
        .iter()
        .flat_map(|v| reduce(v, rh, rw, k))
        .collect();
    let (lo, hi) = crate::render::finite_range(&values).unwrap_or((0.0, 0.0));
    let top: u32 = if bits == 16 { 65535 } else { 255 };
    let steps = (top - 2) as f32;
    let code = |v: f32| -> u32 {
        if v == f32::NEG_INFINITY {
            top - 1
        } else if !v.is_finite() {
            top
        } else if hi > lo {
            (((v - lo) / (hi - lo)) * steps).round().clamp(0.0, steps) as u32
        } else {
            0
        }
    };
    let mut bytes = Vec::with_capacity(values.len() * bits as usize / 8);
    for &v in &values {
        let c = code(v);
        if bits == 16 {
            bytes.extend_from_slice(&(c as u16).to_le_bytes());
        } else {
            bytes.push(c as u8);
        }
    }
    Some(Tile {
        bits,
        lo,
        hi,
        k,
        h,
        w,
        b64: base64::engine::general_purpose::STANDARD.encode(bytes),
    })
}

/// Means of `k × k` blocks of a `rh × rw` tile: NaN when a block holds a NaN, "no
/// value" (-inf) when it holds no value.
fn reduce(v: &[f32], rh: usize, rw: usize, k: usize) -> Vec<f32> {
    if k == 1 {
        return v.to_vec();
    }
    let (h, w) = (rh.div_ceil(k), rw.div_ceil(k));
    let mut out = Vec::with_capacity(h * w);
    for by in 0..h {
        for bx in 0..w {
            let (mut sum, mut n, mut bad) = (0f64, 0u32, false);
            for y in by * k..((by + 1) * k).min(rh) {
                for &x in &v[y * rw + bx * k..y * rw + ((bx + 1) * k).min(rw)] {
                    if x.is_nan() {
                        bad = true;
                    } else if x != f32::NEG_INFINITY {
                        sum += x as f64;
                        n += 1;
                    }
                }
            }
            out.push(if bad {
                f32::NAN
            } else if n == 0 {
                f32::NEG_INFINITY
            } else {
                (sum / n as f64) as f32
            });
        }
    }
    out
}

/// `value` as JSON safe to put between `<script type="application/json">` and
/// `</script>`: `<`, `>`, `&`, U+2028/9 and control characters escaped as `\uXXXX`
/// (so no `</script>` or `<!--` can appear), still the same JSON.
pub(super) fn script_json<T: Serialize>(value: &T) -> crate::Result<String> {
    let raw = serde_json::to_string(value)
        .map_err(|e| crate::Error::internal(format!("card data: {e}")))?;
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') || c.is_control() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, RenderOptions};
    use crate::LayerData;

    fn decode(t: &Tile) -> Vec<f32> {
        let b = base64::engine::general_purpose::STANDARD
            .decode(&t.b64)
            .unwrap();
        let codes: Vec<u32> = if t.bits == 16 {
            b.chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect()
        } else {
            b.iter().map(|&c| c as u32).collect()
        };
        let top = (1u32 << t.bits) - 1;
        codes
            .iter()
            .map(|&c| match c {
                c if c == top => f32::NAN,
                c if c == top - 1 => f32::NEG_INFINITY,
                c => t.lo + c as f32 * (t.hi - t.lo) / (top - 2) as f32,
            })
            .collect()
    }

    #[test]
    fn tiles_hold_the_shown_values_within_the_budget() {
        let vals: Vec<f32> = (0..4 * 30 * 30).map(|v| (v as f32 * 0.37).sin()).collect();
        let data = LayerData::from_f32(vals.clone());
        let pic = render(&data, &[1, 4, 30, 30], &RenderOptions::default()).unwrap();
        // 3600 values: 16 bits fit 16 KB, exact to half a step.
        let t = tile(&pic, LAYER_TILE_BYTES).unwrap();
        assert_eq!((t.bits, t.k, t.h, t.w), (16, 1, 30, 30));
        let step = (t.hi - t.lo) / 65533.0;
        for (a, b) in decode(&t).iter().zip(&vals) {
            assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} {b}");
        }
        // A small budget: 8 bits, means of k × k.
        let t = tile(&pic, 1000).unwrap();
        assert_eq!(t.bits, 8);
        assert!(t.k >= 2 && 4 * t.h * t.w <= 1000, "{t:?}");
        let d = decode(&t);
        let v = &vals;
        let mean: f32 = (0..t.k)
            .flat_map(|y| (0..t.k).map(move |x| v[y * 30 + x]))
            .sum::<f32>()
            / (t.k * t.k) as f32;
        assert!((d[0] - mean).abs() <= (t.hi - t.lo) / 253.0 / 2.0 + 1e-5);
        assert_eq!(layer_budget(10_000, 4), MIN_TILE_BYTES);
        assert_eq!(layer_budget(10, 4), LAYER_TILE_BYTES);
    }

    #[test]
    fn nan_and_missing_values_keep_their_codes() {
        let data = LayerData::from_f32(vec![1.0, f32::NAN, 3.0, 4.0, 5.0]);
        let pic = render(&data, &[5], &RenderOptions::default()).unwrap();
        let d = decode(&tile(&pic, 1024).unwrap());
        assert!(d[1].is_nan() && d[5] == f32::NEG_INFINITY, "{d:?}");
        assert!((d[4] - 5.0).abs() < 1e-3);
    }

    #[test]
    fn script_json_cannot_close_the_script() {
        let s = script_json(&"</script><!-- & \u{2028}\u{7f}").unwrap();
        assert!(!s.contains('<') && !s.contains('>') && !s.contains('&'));
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "</script><!-- & \u{2028}\u{7f}");
    }
}

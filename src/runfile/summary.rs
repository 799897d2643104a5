//! What a run stores about each layer at save time (`candlelight.layers`): a
//! content hash of the stored bytes and the layer's statistics, so that `show`
//! reads only the header and `diff` knows equal layers without reading them.
//! Runs without the key (older candlelight, other producers) still open; their
//! statistics are computed from the data as before.

use std::borrow::Cow;
use std::collections::BTreeMap;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::values::stats::StatsFold;
use crate::values::{elem_size, LayerData, Stats, SCAN_CHUNK};

/// Metadata key of the per-layer summaries.
pub const KEY_LAYERS: &str = "candlelight.layers";

/// The hash algorithm named in [`LayerSummary::hash`].
pub const HASH_ALGORITHM: &str = "xxh3-128";

/// A layer's summary stored in the header.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// `xxh3-128:<32 hex digits>` of the layer's stored bytes (equal hashes, dtype
    /// and shape mean equal data, short of a 2^-128 accident).
    pub hash: String,
    /// Statistics as [`crate::Run::stats`] computes them (`None` for a dtype that
    /// is not numbers).
    pub stats: Option<Stats>,
}

/// The JSON form: NaN statistics (a layer with no finite value) are `null`.
#[derive(Serialize, Deserialize)]
struct Stored {
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stats: Option<StoredStats>,
}

#[derive(Serialize, Deserialize)]
struct StoredStats {
    count: u64,
    min: Option<f64>,
    max: Option<f64>,
    mean: Option<f64>,
    std: Option<f64>,
    zero_fraction: f64,
    nan: u64,
    inf: u64,
}

fn some(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl From<&LayerSummary> for Stored {
    fn from(s: &LayerSummary) -> Stored {
        Stored {
            hash: s.hash.clone(),
            stats: s.stats.map(|t| StoredStats {
                count: t.count,
                min: some(t.min),
                max: some(t.max),
                mean: some(t.mean),
                std: some(t.std),
                zero_fraction: t.zero_fraction,
                nan: t.nan,
                inf: t.inf,
            }),
        }
    }
}

impl From<Stored> for LayerSummary {
    fn from(s: Stored) -> LayerSummary {
        let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
        LayerSummary {
            hash: s.hash,
            stats: s.stats.map(|t| Stats {
                count: t.count,
                min: nan(t.min),
                max: nan(t.max),
                mean: nan(t.mean),
                std: nan(t.std),
                zero_fraction: t.zero_fraction,
                nan: t.nan,
                inf: t.inf,
            }),
        }
    }
}

impl LayerSummary {
    /// The summary of a layer's stored bytes.
    pub fn of(bytes: &[u8], dtype: Dtype) -> LayerSummary {
        let stats = LayerData::from_bytes(Cow::Borrowed(bytes), dtype)
            .ok()
            .map(|d| Stats::of(&d));
        LayerSummary {
            hash: hash(bytes),
            stats,
        }
    }
}

/// A layer's summary computed while its bytes stream past, on the calling thread:
/// the same as [`LayerSummary::of`] of all the bytes, when they are fed in pieces
/// of [`SummaryFold::piece_len`] bytes (the last one shorter).
pub(crate) struct SummaryFold {
    dtype: Dtype,
    hasher: twox_hash::XxHash3_128,
    /// `None` for a dtype that is not numbers.
    stats: Option<StatsFold>,
    /// Values of a piece that is not f32 in place.
    buf: Vec<f32>,
}

impl SummaryFold {
    pub(crate) fn new(dtype: Dtype) -> SummaryFold {
        let numbers = LayerData::from_bytes(Cow::Borrowed(&[]), dtype).is_ok();
        SummaryFold {
            dtype,
            hasher: twox_hash::XxHash3_128::new(),
            stats: numbers.then(StatsFold::new),
            buf: Vec::new(),
        }
    }

    /// Bytes per piece: one chunk of the statistics' parallel scan.
    pub(crate) fn piece_len(dtype: Dtype) -> usize {
        SCAN_CHUNK * elem_size(dtype).unwrap_or(1)
    }

    pub(crate) fn push(&mut self, piece: &[u8]) {
        self.hasher.write(piece);
        let Some(stats) = &mut self.stats else {
            return;
        };
        let Ok(data) = LayerData::from_bytes(Cow::Borrowed(piece), self.dtype) else {
            // A piece that is not whole values: the layer's length is checked
            // before writing, so only a bug gets here; no statistics then.
            self.stats = None;
            return;
        };
        let n = data.len();
        if let Some(values) = data.f32_slice(0, n) {
            stats.push(values);
        } else {
            self.buf.resize(n, 0.0);
            data.read_into(0, &mut self.buf);
            stats.push(&self.buf);
        }
    }

    pub(crate) fn finish(self) -> LayerSummary {
        LayerSummary {
            hash: tagged(self.hasher.finish_128()),
            stats: self.stats.map(StatsFold::finish),
        }
    }
}

impl LayerSummary {
    /// A summary whose JSON is at least as long as any real one's (each number the
    /// longest a number can print): a bound for sizing a header before the data
    /// is seen.
    pub(crate) fn widest() -> LayerSummary {
        // 24 characters, the most an f64 prints as (ryu's buffer).
        let wide = -2.225_073_858_507_201_4e-308;
        LayerSummary {
            hash: tagged(u128::MAX),
            stats: Some(Stats {
                count: u64::MAX,
                min: wide,
                max: wide,
                mean: wide,
                std: wide,
                zero_fraction: wide,
                nan: u64::MAX,
                inf: u64::MAX,
            }),
        }
    }
}

/// `xxh3-128:<hex>` of `bytes`.
pub fn hash(bytes: &[u8]) -> String {
    tagged(twox_hash::XxHash3_128::oneshot(bytes))
}

/// `xxh3-128:<32 hex digits>` of a digest.
fn tagged(digest: u128) -> String {
    format!("{HASH_ALGORITHM}:{digest:032x}")
}

/// The value of [`KEY_LAYERS`] for these summaries (by layer name).
pub(crate) fn to_json(summaries: &BTreeMap<&str, &LayerSummary>) -> String {
    let stored: BTreeMap<&str, Stored> = summaries
        .iter()
        .map(|(name, s)| (*name, Stored::from(*s)))
        .collect();
    serde_json::to_string(&stored).expect("summaries serialize")
}

/// The summaries stored under [`KEY_LAYERS`], by layer name.
pub(crate) fn from_json(s: &str) -> Result<BTreeMap<String, LayerSummary>, String> {
    let stored: BTreeMap<String, Stored> = serde_json::from_str(s)
        .map_err(|e| format!("{KEY_LAYERS} is not a JSON object of layer summaries: {e}"))?;
    Ok(stored.into_iter().map(|(k, v)| (k, v.into())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_round_trip_through_json_with_nan_stats() {
        let v: Vec<f32> = vec![f32::NAN, f32::NAN];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let a = LayerSummary::of(&bytes, Dtype::F32);
        let b = LayerSummary::of(&[0u8; 8], Dtype::F32);
        let map = BTreeMap::from([("a", &a), ("b", &b)]);
        let back = from_json(&to_json(&map)).unwrap();
        let sa = back["a"].stats.unwrap();
        assert!(sa.mean.is_nan() && sa.min.is_nan());
        assert_eq!(sa.nan, 2);
        assert_eq!(back["b"], b);
        assert_ne!(a.hash, b.hash);
        assert!(a.hash.starts_with("xxh3-128:") && a.hash.len() == 9 + 32);
        assert!(from_json("[1]").unwrap_err().contains(KEY_LAYERS));
    }

    /// Bytes of `n` f32 values with NaN, Inf, zeros and a wide spread, so every
    /// counter and the shifted sums are exercised.
    fn mixed(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| match i % 97 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 | 3 => 0.0,
                k => (k as f32 - 40.0) * 1.7e3 + (i as f32).sin(),
            })
            .flat_map(|x| x.to_le_bytes())
            .collect()
    }

    /// The summary of `bytes` fed to a [`SummaryFold`] in pieces, as a save does.
    fn folded(bytes: &[u8], dtype: Dtype) -> LayerSummary {
        let mut fold = SummaryFold::new(dtype);
        for piece in bytes.chunks(SummaryFold::piece_len(dtype)) {
            fold.push(piece);
        }
        fold.finish()
    }

    #[test]
    fn folding_pieces_gives_the_summary_of_the_whole() {
        let f32_bytes = mixed(SCAN_CHUNK * 2 + 1234);
        let halves: Vec<u8> = f32_bytes
            .chunks_exact(4)
            .flat_map(|b| {
                half::f16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes()
            })
            .collect();
        let cases = [
            (f32_bytes.clone(), Dtype::F32),
            (halves, Dtype::F16),
            (vec![7u8; 300_001], Dtype::U8),
            (vec![1u8; 40], Dtype::BOOL),
            (Vec::new(), Dtype::F32),
        ];
        for (bytes, dtype) in cases {
            // Bit-for-bit: the chunks and the merge order are the parallel scan's.
            let (a, b) = (folded(&bytes, dtype), LayerSummary::of(&bytes, dtype));
            assert_eq!(a.hash, b.hash, "{dtype:?}");
            match (a.stats, b.stats) {
                (Some(x), Some(y)) => {
                    let bits =
                        |s: Stats| [s.min, s.max, s.mean, s.std, s.zero_fraction].map(f64::to_bits);
                    assert_eq!(bits(x), bits(y), "{dtype:?}");
                    assert_eq!((x.count, x.nan, x.inf), (y.count, y.nan, y.inf));
                }
                (x, y) => assert_eq!(x.is_none(), y.is_none(), "{dtype:?}"),
            }
        }
    }

    /// The hashes of older run files stay valid: xxh3-128 (and the xxh3-64 of
    /// gallery keys) as computed by the hasher used before (`xxhash-rust` 0.8,
    /// which follows the reference implementation), whole and in streamed pieces.
    #[test]
    fn hashes_match_the_reference_xxh3() {
        let known: [(usize, &str, u64); 6] = [
            (0, "99aa06d3014798d86001c324468d497f", 0x2d06800538d394c2),
            (3, "4af3603b5bd30dfe3698b80191e625f9", 0x3698b80191e625f9),
            (100, "2701f07d2c26abff94b1961520a11588", 0x1efbaa652af7dfb7),
            (240, "7cf77784002208a5423167d7599e74a5", 0x8acecb90be72b9c3),
            (1000, "17a0f7b2ab909d68404e1417800eb486", 0x404e1417800eb486),
            (
                300_000,
                "96caf2a551fa233272b19f629d50046a",
                0x72b19f629d50046a,
            ),
        ];
        for (n, h128, h64) in known {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            assert_eq!(hash(&bytes), format!("xxh3-128:{h128}"), "{n} bytes");
            assert_eq!(twox_hash::XxHash3_64::oneshot(&bytes), h64, "{n} bytes");
            let streamed = folded(&bytes, Dtype::U8).hash;
            assert_eq!(streamed, format!("xxh3-128:{h128}"), "{n} bytes in pieces");
        }
    }

    #[test]
    fn the_widest_summary_is_at_least_as_long_as_any() {
        let wide = LayerSummary::widest();
        let len = |s: &LayerSummary| to_json(&BTreeMap::from([("x", s)])).len();
        let extremes = [
            f64::MIN,
            -f64::MIN_POSITIVE,
            -1.234_567_890_123_456_7e-5,
            1e21,
            f64::NAN,
        ];
        for v in extremes {
            let s = LayerSummary {
                hash: hash(b"x"),
                stats: Some(Stats {
                    count: u64::MAX,
                    min: v,
                    max: v,
                    mean: v,
                    std: v,
                    zero_fraction: v,
                    nan: u64::MAX,
                    inf: u64::MAX,
                }),
            };
            assert!(len(&s) <= len(&wide), "{v}");
        }
    }
}

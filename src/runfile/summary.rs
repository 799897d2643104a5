//! What a run stores about each layer at save time (`candlelight.layers`): a
//! content hash of the stored bytes and the layer's statistics, so that `show`
//! reads only the header and `diff` knows equal layers without reading them.
//! Runs without the key (older candlelight, other producers) still open; their
//! statistics are computed from the data as before.

use std::borrow::Cow;
use std::collections::BTreeMap;

use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::values::{LayerData, Stats};

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

/// `xxh3-128:<hex>` of `bytes`.
pub fn hash(bytes: &[u8]) -> String {
    format!(
        "{HASH_ALGORITHM}:{:032x}",
        xxhash_rust::xxh3::xxh3_128(bytes)
    )
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
}

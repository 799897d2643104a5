//! Paths in JSON files candlelight writes. A UTF-8 path is a plain string; a path
//! that is not UTF-8 (Unix allows any bytes but `/` and NUL) is an object
//! `{"lossy": "<with U+FFFD>", "bytes": [..]}` so that it reads back exactly.

// Manifests (exact paths) come with `render`; without it only reports use this.
#![cfg_attr(not(feature = "render"), allow(dead_code))]

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes { lossy: String, bytes: Vec<u8> },
}

/// Serializes `p` as above.
pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    match p.to_str() {
        Some(t) => s.serialize_str(t),
        None => Repr::Bytes {
            lossy: p.to_string_lossy().into_owned(),
            bytes: p.as_os_str().as_encoded_bytes().to_vec(),
        }
        .serialize(s),
    }
}

/// Reads either form back.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Ok(match Repr::deserialize(d)? {
        Repr::Text(t) => PathBuf::from(t),
        Repr::Bytes { lossy, bytes } => from_bytes(bytes).unwrap_or_else(|| lossy.into()),
    })
}

#[cfg(unix)]
fn from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    Some(std::ffi::OsString::from_vec(bytes).into())
}

#[cfg(not(unix))]
fn from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
    String::from_utf8(bytes).ok().map(PathBuf::from)
}

/// Serializes an optional path as a string, lossily (for reports people read).
pub fn lossy_opt<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_str(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

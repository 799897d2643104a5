//! Name maps: which layer of A is compared with which layer of B.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Maps A's layer names to B's for runs whose names differ.
///
/// A layer of A named `n` is compared with B's layer `rename[n]` when `n` is in
/// `rename` (names exactly as stored in the files); otherwise `n` with
/// `strip_prefix_a` removed is compared with the B layer whose name, with
/// `strip_prefix_b` removed, is the same.
///
/// The file form ([`NameMap::from_file`]) is either JSON,
/// `{"rename": {"features.0": "conv1"}, "strip_prefix_a": "model.", "strip_prefix_b": ""}`,
/// or text: one `A name = B name` per line (split at the first `=`, spaces around
/// names trimmed), `strip_prefix_a: PREFIX` / `strip_prefix_b: PREFIX` lines, and
/// comment lines starting with `#` (a `#` elsewhere is part of a name: `relu#2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameMap {
    /// A's name -> B's name, as stored in the files.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Removed from the start of A's names (where present) before matching.
    #[serde(default)]
    pub strip_prefix_a: Option<String>,
    /// Removed from the start of B's names (where present) before matching.
    #[serde(default)]
    pub strip_prefix_b: Option<String>,
}

impl NameMap {
    /// Reads a name map file: JSON when its first non-blank character is `{`, text otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<NameMap> {
        let path = path.as_ref();
        let bytes = crate::staging::read_regular(path, 64 << 20)?;
        let text = String::from_utf8(bytes).map_err(|_| Error::BadInput {
            path: path.to_path_buf(),
            msg: "not UTF-8 text".into(),
        })?;
        NameMap::parse_text(&text).map_err(|msg| Error::BadInput {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses the JSON or text form (see the type's docs); a [`Error::BadOption`]
    /// naming the line otherwise.
    ///
    /// ```
    /// use candlelight::NameMap;
    ///
    /// let m = NameMap::parse("# port -> reference\nfeatures.0 = conv1\nstrip_prefix_b: net.\n")?;
    /// assert_eq!(m.rename["features.0"], "conv1");
    /// assert_eq!(m.strip_prefix_b.as_deref(), Some("net."));
    /// assert!(NameMap::parse("features.0 =\n").is_err());
    /// # Ok::<(), candlelight::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<NameMap> {
        NameMap::parse_text(text).map_err(Error::option)
    }

    fn parse_text(text: &str) -> std::result::Result<NameMap, String> {
        if text.trim_start().starts_with('{') {
            return serde_json::from_str(text).map_err(|e| format!("not a name map: {e}"));
        }
        let mut map = NameMap::default();
        for (no, line) in text.lines().enumerate() {
            let no = no + 1;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if let Some((a, b)) = t.split_once('=') {
                let (a, b) = (a.trim(), b.trim());
                if a.is_empty() || b.is_empty() {
                    return Err(format!("line {no}: expected `A name = B name`, got {t:?}"));
                }
                if map.rename.insert(a.to_string(), b.to_string()).is_some() {
                    return Err(format!("line {no}: {a:?} is renamed twice"));
                }
            } else if let Some((key, value)) = t.split_once(':') {
                let value = Some(value.trim().to_string());
                match key.trim() {
                    "strip_prefix_a" => map.strip_prefix_a = value,
                    "strip_prefix_b" => map.strip_prefix_b = value,
                    other => {
                        return Err(format!(
                        "line {no}: unknown setting {other:?} (strip_prefix_a or strip_prefix_b)"
                    ))
                    }
                }
            } else {
                return Err(format!(
                    "line {no}: expected `A name = B name` or `strip_prefix_a: PREFIX`, got {t:?}"
                ));
            }
        }
        Ok(map)
    }

    /// True when the map changes no name.
    pub fn is_identity(&self) -> bool {
        self.rename.is_empty()
            && self.strip_prefix_a.as_deref().unwrap_or("").is_empty()
            && self.strip_prefix_b.as_deref().unwrap_or("").is_empty()
    }

    pub(super) fn key_b<'n>(&self, name: &'n str) -> &'n str {
        strip(name, self.strip_prefix_b.as_deref())
    }

    pub(super) fn key_a<'n>(&'n self, name: &'n str) -> &'n str {
        match self.rename.get(name) {
            Some(b) => self.key_b(b),
            None => strip(name, self.strip_prefix_a.as_deref()),
        }
    }
}

fn strip<'n>(name: &'n str, prefix: Option<&str>) -> &'n str {
    match prefix {
        Some(p) if !p.is_empty() => name.strip_prefix(p).unwrap_or(name),
        _ => name,
    }
}

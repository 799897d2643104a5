//! Name maps: which layer of A is compared with which layer of B.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::pattern::Pattern;
use crate::{Error, Result};

/// Maps A's layer names to B's for runs whose names differ.
///
/// A layer of A named `n` is compared with B's layer `rename[n]` when `n` is in
/// `rename` (names exactly as stored in the files); otherwise with the B name made
/// by the first rename **pattern** that matches `n` (below); otherwise `n` with
/// `strip_prefix_a` removed is compared with the B layer whose name, with
/// `strip_prefix_b` removed, is the same. B names given by `rename` (exact or
/// pattern) also have `strip_prefix_b` removed before matching.
///
/// **Patterns**: a rename entry whose A side holds a `*` is a pattern,
/// `blocks.*.attn = encoder.layer.*.attention.self`. On the A side `*` matches one or
/// more characters other than `.` (within one dot-separated segment) and `**` one or
/// more characters of any kind (across segments); on the B side the n-th wildcard
/// (`*` or `**`) is replaced by what the n-th wildcard of the A side matched. When a
/// name can be split more than one way (`**.**`), earlier wildcards take as much as
/// they can. Both sides must hold the same number of wildcards (an entry without one
/// on the A side is exact, and then its B side must have none either), and two
/// wildcards may not touch (`***`). Exact entries win over patterns; patterns are
/// tried **most specific first**: more literal (non-wildcard) characters first, then
/// fewer wildcards, then by the A side's text (byte order) — the same order whatever
/// the file form or the order of the lines. An entry that decides no layer of A (an
/// exact name that is not a layer of A, a pattern that matches none or only layers
/// an exact entry or a more specific pattern takes) is listed in
/// [`RunDiff::unused_renames`](super::RunDiff::unused_renames).
///
/// The file form ([`NameMap::from_file`]) is either JSON,
/// `{"rename": {"features.0": "conv1", "blocks.*.attn": "layer.*.attention"}, "strip_prefix_a": "model.", "strip_prefix_b": ""}`,
/// or text: one `A name = B name` per line (split at the first `=`, spaces around
/// names trimmed), `strip_prefix_a: PREFIX` / `strip_prefix_b: PREFIX` lines, and
/// comment lines starting with `#` (a `#` elsewhere is part of a name: `relu#2`).
/// A bad entry is an error naming its line (text) or its entry (JSON).
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
    /// // A pattern: each `*` on the right takes what the `*` on the left matched.
    /// let p = NameMap::parse("blocks.*.attn = encoder.layer.*.attention.self\n")?;
    /// assert_eq!(p.rename["blocks.*.attn"], "encoder.layer.*.attention.self");
    /// let e = NameMap::parse("a = b\nblocks.*.attn = attention\n").unwrap_err();
    /// assert!(e.to_string().contains("line 2"));
    /// # Ok::<(), candlelight::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<NameMap> {
        NameMap::parse_text(text).map_err(Error::option)
    }

    fn parse_text(text: &str) -> std::result::Result<NameMap, String> {
        if text.trim_start().starts_with('{') {
            let map: NameMap =
                serde_json::from_str(text).map_err(|e| format!("not a name map: {e}"))?;
            for (a, b) in &map.rename {
                entry(a, b).map_err(|m| format!("rename {m}"))?;
            }
            return Ok(map);
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
                entry(a, b).map_err(|m| format!("line {no}: {m}"))?;
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

    /// The map ready to use: every entry checked, patterns parsed and ordered;
    /// a [`Error::BadOption`] naming the first bad entry.
    pub(super) fn compile(&self) -> Result<Compiled<'_>> {
        let mut patterns = Vec::new();
        for (a, b) in &self.rename {
            let (left, right) =
                entry(a, b).map_err(|m| Error::option(format!("name map: rename {m}")))?;
            if left.wildcards() > 0 {
                patterns.push((a.as_str(), left, right));
            }
        }
        // Most specific first; `rename` iterates in key order, so ties are by key.
        patterns.sort_by(|(ka, la, _), (kb, lb, _)| {
            lb.literal_chars()
                .cmp(&la.literal_chars())
                .then(la.wildcards().cmp(&lb.wildcards()))
                .then(ka.cmp(kb))
        });
        Ok(Compiled {
            map: self,
            patterns,
        })
    }
}

/// Both sides of the rename entry `a = b` parsed; an error naming the entry when a
/// side is not a usable pattern or the wildcard counts differ.
fn entry(a: &str, b: &str) -> std::result::Result<(Pattern, Pattern), String> {
    let side = |s: &str| Pattern::parse(s).map_err(|m| format!("{a:?} = {b:?}: {m}"));
    let (left, right) = (side(a)?, side(b)?);
    if left.wildcards() != right.wildcards() {
        return Err(format!(
            "{a:?} = {b:?}: {} wildcard(s) on the left but {} on the right (the n-th `*` on the right takes what the n-th on the left matched)",
            left.wildcards(),
            right.wildcards()
        ));
    }
    Ok((left, right))
}

/// A [`NameMap`] ready to use (see [`NameMap::compile`]).
pub(super) struct Compiled<'m> {
    map: &'m NameMap,
    /// (A side as written, A side, B side), in the order they are tried.
    patterns: Vec<(&'m str, Pattern, Pattern)>,
}

impl<'m> Compiled<'m> {
    /// The name B's layer `name` is matched by.
    pub(super) fn key_b<'n>(&self, name: &'n str) -> &'n str {
        strip(name, self.map.strip_prefix_b.as_deref())
    }

    /// The name A's layer `name` is matched by (a B name with B's prefix
    /// stripped), and the rename entry (its A side) that decided it, if any.
    pub(super) fn key_a<'n>(&self, name: &'n str) -> (Cow<'n, str>, Option<&'m str>)
    where
        'm: 'n,
    {
        if let Some((k, b)) = self.map.rename.get_key_value(name) {
            return (Cow::Borrowed(self.key_b(b)), Some(k.as_str()));
        }
        for (k, left, right) in &self.patterns {
            if let Some(caps) = left.captures(name) {
                let b = right.substitute(&caps);
                return (Cow::Owned(self.key_b(&b).to_string()), Some(k));
            }
        }
        let key = strip(name, self.map.strip_prefix_a.as_deref());
        (Cow::Borrowed(key), None)
    }
}

fn strip<'n>(name: &'n str, prefix: Option<&str>) -> &'n str {
    match prefix {
        Some(p) if !p.is_empty() => name.strip_prefix(p).unwrap_or(name),
        _ => name,
    }
}

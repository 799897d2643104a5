//! The diff galleries of a galleries root (`out/diffs/<A>~vs~<B>/`), as the index
//! lists them: only folders whose name is a [`super::diff_dir_name`] and that hold
//! a `diff.json` beside a page carrying candlelight's diff mark.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{split_diff_dir_name, DIFFS_DIR};
use crate::pages::check_page_replaceable;

/// Largest `diff.json` read for its verdict (bigger ones are listed without it).
const DIFF_JSON_CAP: u64 = 16 << 20;

/// One diff gallery on the index.
#[derive(Debug, Clone, Serialize)]
pub(super) struct DiffEntry {
    /// Gallery name of run A.
    pub a: String,
    /// Gallery name of run B (the reference).
    pub b: String,
    /// Link from the galleries root: `diffs/<dir>/index.html`.
    pub href: String,
    /// `Some(true)` when every layer agrees, `None` when diff.json is unreadable.
    pub agrees: Option<bool>,
    /// `12 layers: 10 agree, 2 differ; first divergence: conv2` (or empty).
    pub summary: String,
}

/// What the index reads of a `diff.json` (written by `RunDiff`'s serializer).
#[derive(Deserialize)]
struct DiffHead {
    agrees: bool,
    #[serde(default)]
    first_divergent: Option<String>,
    #[serde(default)]
    counts: Counts,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Counts {
    agree: u64,
    differ: u64,
    shape_mismatch: u64,
    only_in_a: u64,
    only_in_b: u64,
}

/// The diff galleries under `out/diffs/`, sorted by folder name; nothing when the
/// folder is missing or not a plain folder (a symlink is not followed).
pub(super) fn list_diffs(out: &Path) -> Vec<DiffEntry> {
    let root = out.join(DIFFS_DIR);
    if !std::fs::symlink_metadata(&root).is_ok_and(|m| m.is_dir()) {
        return Vec::new();
    }
    let Ok(rd) = std::fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut found: Vec<DiffEntry> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let dir = e.file_name().to_str()?.to_string();
            let (a, b) = split_diff_dir_name(&dir)?;
            let page = e.path().join("index.html");
            let json = e.path().join("diff.json");
            if !page.is_file() || !json.is_file() || check_page_replaceable(&page, "diff").is_err()
            {
                return None;
            }
            let head = crate::staging::read_regular(&json, DIFF_JSON_CAP)
                .ok()
                .and_then(|b| serde_json::from_slice::<DiffHead>(&b).ok());
            Some(DiffEntry {
                a: a.to_string(),
                b: b.to_string(),
                href: format!("{DIFFS_DIR}/{}/index.html", super::index::url_segment(&dir)),
                agrees: head.as_ref().map(|h| h.agrees),
                summary: head.as_ref().map(summary).unwrap_or_default(),
            })
        })
        .collect();
    found.sort_by(|x, y| (&x.a, &x.b).cmp(&(&y.a, &y.b)));
    found
}

/// `12 layers: 10 agree, 2 differ; first divergence: conv2`.
fn summary(h: &DiffHead) -> String {
    let c = &h.counts;
    let total = c.agree + c.differ + c.shape_mismatch + c.only_in_a + c.only_in_b;
    let mut parts = vec![format!("{} agree", c.agree)];
    for (n, what) in [
        (c.differ, "differ"),
        (c.shape_mismatch, "differ in shape"),
        (c.only_in_a, "only in A"),
        (c.only_in_b, "only in B"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    let mut s = format!("{total} layers: {}", parts.join(", "));
    if let Some(f) = h.first_divergent.as_deref().filter(|_| !h.agrees) {
        let f: String = f.chars().take(80).collect();
        s.push_str(&format!("; first divergence: {f}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_candlelight_diff_galleries_are_listed_and_bad_json_has_no_verdict() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path();
        let mark = crate::pages::generator_mark("diff");
        let put = |dir: &str, json: &[u8], page: &str| {
            let d = out.join(DIFFS_DIR).join(dir);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("diff.json"), json).unwrap();
            std::fs::write(d.join("index.html"), page).unwrap();
        };
        let ours = format!("<head>{mark}</head>");
        put(
            "a~vs~b",
            br#"{"agrees":false,"first_divergent":"<x>","counts":{"agree":3,"differ":1},"layers":[]}"#,
            &ours,
        );
        put("c~vs~d", b"{not json", &ours);
        put("e~vs~f", br#"{"agrees":true}"#, "<h1>a user's page</h1>");
        put("no-pair", br#"{"agrees":true}"#, &ours);
        let found = list_diffs(out);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].a.as_str(), found[0].b.as_str()), ("a", "b"));
        assert_eq!(found[0].agrees, Some(false));
        assert_eq!(
            found[0].summary,
            "4 layers: 3 agree, 1 differ; first divergence: <x>"
        );
        assert_eq!(found[0].href, "diffs/a~vs~b/index.html");
        assert_eq!((found[1].agrees, found[1].summary.as_str()), (None, ""));
    }
}

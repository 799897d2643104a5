//! Which layer of A is compared with which layer of B: the name map applied,
//! excluded layers left out, and the display order of the rows.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::DiffOptions;
use crate::runfile::Run;
use crate::{Error, Result};

/// The layers to compare.
pub(super) struct Selection {
    /// (A index, B index) pairs in display order.
    pub(super) rows: Vec<(Option<usize>, Option<usize>)>,
    /// Rename entries (A sides) that decide no layer of A.
    pub(super) unused_renames: Vec<String>,
    /// Layers of A left out by [`DiffOptions::exclude`].
    pub(super) excluded_a: usize,
    /// Layers of B left out by [`DiffOptions::exclude`].
    pub(super) excluded_b: usize,
}

/// The globs of [`DiffOptions::exclude`] (None when there are none); a
/// [`Error::BadOption`] naming a bad one.
fn exclude_set(globs: &[String]) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| Error::option(format!("bad exclude glob {g:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::option(format!("bad exclude globs: {e}")))
}

fn where_(run: &Run, side: &str) -> String {
    match run.path() {
        Some(p) => p.display().to_string(),
        None => format!("run {side} ({})", run.id()),
    }
}

/// Pairs the layers of `a` and `b` under `opts` (its name map and exclusions).
/// Errors on a bad map entry or glob, and when the map makes two layers of one
/// run collide.
pub(super) fn select(a: &Run, b: &Run, opts: &DiffOptions) -> Result<Selection> {
    let map = opts.map.compile()?;
    let exclude = exclude_set(&opts.exclude)?;
    let excluded = |run: &Run| -> Vec<bool> {
        run.layers()
            .iter()
            .map(|l| exclude.as_ref().is_some_and(|g| g.is_match(&l.name)))
            .collect()
    };
    let (out_a, out_b) = (excluded(a), excluded(b));

    let mut b_by_key: HashMap<&str, usize> = HashMap::with_capacity(b.len());
    for l in b.layers().iter().filter(|l| !out_b[l.index]) {
        let key = map.key_b(&l.name);
        if let Some(&other) = b_by_key.get(key) {
            return Err(Error::option(format!(
                "{}: layers {:?} and {:?} both become {key:?} after stripping prefix {:?}",
                where_(b, "B"),
                b.layers()[other].name,
                l.name,
                opts.map.strip_prefix_b.as_deref().unwrap_or("")
            )));
        }
        b_by_key.insert(key, l.index);
    }
    let mut used: HashSet<&str> = HashSet::new();
    let mut a_by_key: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(a.len());
    let mut a_to_b: Vec<(usize, Option<usize>)> = Vec::with_capacity(a.len());
    for l in a.layers() {
        // Renames are used by excluded layers too: they are not typos.
        let (key, entry) = map.key_a(&l.name);
        used.extend(entry);
        if out_a[l.index] {
            continue;
        }
        if let Some(&other) = a_by_key.get(&key) {
            return Err(Error::option(format!(
                "{}: layers {:?} and {:?} both map to B name {key:?} through the name map",
                where_(a, "A"),
                a.layers()[other].name,
                l.name
            )));
        }
        a_to_b.push((l.index, b_by_key.get(key.as_ref()).copied()));
        a_by_key.insert(key, l.index);
    }
    let unused_renames = opts
        .map
        .rename
        .keys()
        .filter(|k| !used.contains(k.as_str()))
        .cloned()
        .collect();
    Ok(Selection {
        rows: order(&a_to_b, b.len(), &out_b),
        unused_renames,
        excluded_a: out_a.iter().filter(|&&x| x).count(),
        excluded_b: out_b.iter().filter(|&&x| x).count(),
    })
}

/// Rows in display order: A's layers in capture order, each B-only layer after
/// the matched layer that precedes it in B's order (excluded B layers left out).
fn order(
    a_to_b: &[(usize, Option<usize>)],
    b_len: usize,
    out_b: &[bool],
) -> Vec<(Option<usize>, Option<usize>)> {
    let mut b_matched = vec![None; b_len];
    for &(ia, ib) in a_to_b {
        if let Some(ib) = ib {
            b_matched[ib] = Some(ia);
        }
    }
    let mut before_all = Vec::new();
    let mut after: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut anchor: Option<usize> = None;
    for (ib, m) in b_matched.iter().enumerate() {
        match m {
            Some(ia) => anchor = Some(*ia),
            None if out_b[ib] => {}
            None => match anchor {
                Some(ia) => after.entry(ia).or_default().push(ib),
                None => before_all.push(ib),
            },
        }
    }
    let mut rows: Vec<(Option<usize>, Option<usize>)> =
        before_all.into_iter().map(|ib| (None, Some(ib))).collect();
    for &(ia, ib) in a_to_b {
        rows.push((Some(ia), ib));
        if let Some(extra) = after.remove(&ia) {
            rows.extend(extra.into_iter().map(|ib| (None, Some(ib))));
        }
    }
    rows
}

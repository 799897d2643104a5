//! Comparing two runs layer by layer: a candle port against its reference, f32
//! against bf16, before and after a change.
//!
//! Layers are matched by name (through an optional [`NameMap`]) and compared
//! element by element as f32, streamed in chunks so runs of any size fit in a
//! small, bounded amount of memory. For every layer: shapes and dtypes, max and
//! mean absolute difference, relative L2 error, cosine similarity, the worst
//! element and the first element out of tolerance, NaN/Inf counts and
//! disagreements. The run-level answer is the **first divergent layer** in
//! capture order.
//!
//! ## Tolerance (allclose semantics, B is the reference)
//!
//! An element pair `(a, b)` **agrees** when
//! `|a − b| ≤ atol + rtol · |b|` (NumPy's `allclose` with B as the reference;
//! computed in f64). NaN agrees only with NaN at the same position; ±Inf agrees
//! only with the same infinity. A layer **diverges** when any element disagrees,
//! when the shapes differ, or when it is in only one run (unless
//! [`DiffOptions::ignore_missing`] is set). Dtypes may differ (f32 against bf16 is
//! a main use): values are compared as f32, and the dtypes are reported.
//!
//! ## The numbers (over element pairs where both values are finite)
//!
//! - `max_abs`: the largest `|a − b|`, computed in f32 like the values themselves;
//! - `mean_abs`: the mean of `|a − b|` (0 when no pair is finite);
//! - `rel_l2`: `‖a − b‖₂ / ‖b‖₂` (0 when both norms are 0, +∞ when only `‖b‖₂` is);
//! - `cosine`: `a·b / (‖a‖₂ ‖b‖₂)` (1 when both norms are 0, 0 when one is);
//! - `worst`: the element with the largest `|a − b|` (lowest index on a tie);
//! - `first_mismatch`: the first element that disagrees, NaN/Inf included.
//!
//! Verdicts, counts and element positions are exact. The sums behind the mean,
//! the L2 error and the cosine are accumulated in f32 over runs of 128 elements
//! and in f64 beyond, so they carry a relative error of about 1e-6 at most
//! (this keeps the comparison as fast as a plain pass over the bytes).
//! Non-finite numbers are written as `null` in JSON.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::{DiffOptions, Run};
//!
//! let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
//! let a = Run::from_named_tensors("a", [("fc".to_string(), x.clone())]);
//! let b = Run::from_named_tensors("b", [("fc".to_string(), (&x * 1.001)?)]);
//! let d = a.diff(&b)?;                              // atol 1e-5, rtol 1e-4
//! assert_eq!(d.first_divergent().map(|l| l.name()), Some("fc"));
//! let loose = DiffOptions { rtol: 1e-2, ..DiffOptions::default() };
//! assert!(a.diff_with(&b, &loose)?.agrees());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::runfile::{LayerInfo, Run};
use crate::values::LayerData;
use crate::{Error, Result};

/// How two runs are compared. Defaults: `atol` 1e-5, `rtol` 1e-4, no name map,
/// missing layers count as divergent.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffOptions {
    /// Absolute tolerance (≥ 0).
    pub atol: f64,
    /// Relative tolerance (≥ 0), relative to B's value.
    pub rtol: f64,
    /// How A's layer names map to B's.
    pub map: NameMap,
    /// When set, a layer in only one run is reported but does not make the runs diverge.
    pub ignore_missing: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            atol: 1e-5,
            rtol: 1e-4,
            map: NameMap::default(),
            ignore_missing: false,
        }
    }
}

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
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        NameMap::parse_text(&text).map_err(|msg| Error::BadInput {
            path: path.to_path_buf(),
            msg,
        })
    }

    /// Parses the JSON or text form (see the type's docs); a [`Error::BadOption`]
    /// naming the line otherwise.
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

    fn key_b<'n>(&self, name: &'n str) -> &'n str {
        strip(name, self.strip_prefix_b.as_deref())
    }

    fn key_a<'n>(&'n self, name: &'n str) -> &'n str {
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

/// How one layer compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Same shape, every element within tolerance.
    Agree,
    /// Same shape, some element out of tolerance (or a NaN/Inf disagreement).
    Differ,
    /// Different shapes (numbers are still given when the element counts match).
    ShapeMismatch,
    /// Only in run A.
    OnlyInA,
    /// Only in run B.
    OnlyInB,
}

impl Status {
    /// A short word for tables: `ok`, `DIFFER`, `SHAPE`, `only A`, `only B`.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Agree => "ok",
            Status::Differ => "DIFFER",
            Status::ShapeMismatch => "SHAPE",
            Status::OnlyInA => "only A",
            Status::OnlyInB => "only B",
        }
    }
}

/// One element of a layer: flat index, position in A's shape, both values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Element {
    /// Row-major index.
    pub index: usize,
    /// Multi-dimensional position (in A's shape).
    pub position: Vec<usize>,
    /// A's value.
    pub a: f32,
    /// B's value.
    pub b: f32,
}

/// The numbers of one compared layer (see the module docs for definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Numbers {
    /// Elements compared.
    pub count: u64,
    /// Max `|a − b|` (in f32) over pairs where both are finite.
    pub max_abs: f64,
    /// Mean `|a − b|` over pairs where both are finite.
    pub mean_abs: f64,
    /// `‖a − b‖₂ / ‖b‖₂`.
    pub rel_l2: f64,
    /// Cosine similarity of A and B.
    pub cosine: f64,
    /// Elements out of tolerance (NaN/Inf disagreements included).
    pub mismatches: u64,
    /// The element with the largest `|a − b|`.
    pub worst: Option<Element>,
    /// The first element out of tolerance.
    pub first_mismatch: Option<Element>,
    /// NaN count in A.
    pub nan_a: u64,
    /// NaN count in B.
    pub nan_b: u64,
    /// ±Inf count in A.
    pub inf_a: u64,
    /// ±Inf count in B.
    pub inf_b: u64,
    /// Positions where exactly one side is NaN.
    pub nan_mismatches: u64,
    /// Positions, neither NaN, where an infinity meets anything but the same infinity.
    pub inf_mismatches: u64,
}

/// How one layer compares.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerDiff {
    /// A's name (None when the layer is only in B).
    pub name_a: Option<String>,
    /// B's name (None when the layer is only in A).
    pub name_b: Option<String>,
    /// Capture position in A.
    pub index_a: Option<usize>,
    /// Capture position in B.
    pub index_b: Option<usize>,
    /// Layer kind (A's, else B's).
    pub kind: Option<String>,
    /// A's shape.
    pub shape_a: Option<Vec<usize>>,
    /// B's shape.
    pub shape_b: Option<Vec<usize>>,
    /// A's stored dtype (`F32`, `BF16`, ...).
    pub dtype_a: Option<String>,
    /// B's stored dtype.
    pub dtype_b: Option<String>,
    /// The verdict.
    pub status: Status,
    /// Whether this layer makes the runs diverge (status under the options).
    pub diverges: bool,
    /// The numbers, when both sides exist with the same element count.
    pub numbers: Option<Numbers>,
}

impl LayerDiff {
    /// The layer's name: A's, or B's when it is only in B.
    pub fn name(&self) -> &str {
        self.name_a
            .as_deref()
            .or(self.name_b.as_deref())
            .unwrap_or("")
    }

    /// `name` or `a_name -> b_name` when the map renamed it.
    pub fn label(&self) -> String {
        match (&self.name_a, &self.name_b) {
            (Some(a), Some(b)) if a != b => format!("{a} -> {b}"),
            _ => self.name().to_string(),
        }
    }

    /// True when both sides exist and their stored dtypes differ.
    pub fn dtype_differs(&self) -> bool {
        matches!((&self.dtype_a, &self.dtype_b), (Some(a), Some(b)) if a != b)
    }
}

/// Which run a side of the comparison is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSide {
    /// The file the run was opened from (in JSON as text, made lossy if not UTF-8).
    #[serde(serialize_with = "crate::runfile::path_json::lossy_opt")]
    pub path: Option<PathBuf>,
    /// Run id.
    pub id: String,
    /// Model name.
    pub model: String,
    /// Number of layers.
    pub layers: usize,
}

impl RunSide {
    fn of(run: &Run) -> RunSide {
        RunSide {
            path: run.path().map(Path::to_path_buf),
            id: run.id().to_string(),
            model: run.info().model.clone(),
            layers: run.len(),
        }
    }
}

/// The comparison of two runs: plain data, easy to print, serialize or display.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDiff {
    /// Run A (compared).
    pub a: RunSide,
    /// Run B (the reference).
    pub b: RunSide,
    /// Absolute tolerance used.
    pub atol: f64,
    /// Relative tolerance used.
    pub rtol: f64,
    /// Whether missing layers were ignored for the verdict.
    pub ignore_missing: bool,
    /// One entry per layer: A's capture order, each layer only in B placed after
    /// the matched layer that precedes it in B.
    pub layers: Vec<LayerDiff>,
    /// Rename entries whose A name is not in run A (likely typos).
    pub unused_renames: Vec<String>,
}

impl RunDiff {
    /// The first layer (in [`RunDiff::layers`] order) that diverges.
    pub fn first_divergent(&self) -> Option<&LayerDiff> {
        self.layers.iter().find(|l| l.diverges)
    }

    /// True when no layer diverges.
    pub fn agrees(&self) -> bool {
        self.first_divergent().is_none()
    }

    /// The layers that diverge, in order.
    pub fn divergent(&self) -> impl Iterator<Item = &LayerDiff> {
        self.layers.iter().filter(|l| l.diverges)
    }

    /// Number of layers with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.layers.iter().filter(|l| l.status == status).count()
    }
}

impl Serialize for RunDiff {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Counts {
            agree: usize,
            differ: usize,
            shape_mismatch: usize,
            only_in_a: usize,
            only_in_b: usize,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            agrees: bool,
            first_divergent: Option<&'a str>,
            a: &'a RunSide,
            b: &'a RunSide,
            atol: f64,
            rtol: f64,
            ignore_missing: bool,
            counts: Counts,
            unused_renames: &'a [String],
            layers: &'a [LayerDiff],
        }
        Out {
            agrees: self.agrees(),
            first_divergent: self.first_divergent().map(LayerDiff::name),
            a: &self.a,
            b: &self.b,
            atol: self.atol,
            rtol: self.rtol,
            ignore_missing: self.ignore_missing,
            counts: Counts {
                agree: self.count(Status::Agree),
                differ: self.count(Status::Differ),
                shape_mismatch: self.count(Status::ShapeMismatch),
                only_in_a: self.count(Status::OnlyInA),
                only_in_b: self.count(Status::OnlyInB),
            },
            unused_renames: &self.unused_renames,
            layers: &self.layers,
        }
        .serialize(s)
    }
}

impl Run {
    /// Compares this run (A) with `reference` (B) under [`DiffOptions::default`].
    pub fn diff(&self, reference: &Run) -> Result<RunDiff> {
        diff(self, reference, &DiffOptions::default())
    }

    /// Compares this run (A) with `reference` (B) under `opts`.
    pub fn diff_with(&self, reference: &Run, opts: &DiffOptions) -> Result<RunDiff> {
        diff(self, reference, opts)
    }
}

/// Compares run `a` with run `b` (the reference), layer by layer; see the module docs.
/// Errors only on bad options, a name map that makes two layers collide, or a
/// layer whose data cannot be read.
pub fn diff(a: &Run, b: &Run, opts: &DiffOptions) -> Result<RunDiff> {
    for (what, v) in [("atol", opts.atol), ("rtol", opts.rtol)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::option(format!(
                "{what} must be a finite number ≥ 0, got {v}"
            )));
        }
    }
    let (rows, unused_renames) = match_layers(a, b, &opts.map)?;
    let mut layers = Vec::with_capacity(rows.len());
    for (ia, ib) in rows {
        layers.push(compare_layer(a, ia, b, ib, opts)?);
    }
    Ok(RunDiff {
        a: RunSide::of(a),
        b: RunSide::of(b),
        atol: opts.atol,
        rtol: opts.rtol,
        ignore_missing: opts.ignore_missing,
        layers,
        unused_renames,
    })
}

fn where_(run: &Run, side: &str) -> String {
    match run.path() {
        Some(p) => p.display().to_string(),
        None => format!("run {side} ({})", run.id()),
    }
}

/// Pairs of (A index, B index) in display order, and rename keys not found in A.
#[allow(clippy::type_complexity)]
fn match_layers(
    a: &Run,
    b: &Run,
    map: &NameMap,
) -> Result<(Vec<(Option<usize>, Option<usize>)>, Vec<String>)> {
    let mut b_by_key: HashMap<&str, usize> = HashMap::with_capacity(b.len());
    for l in b.layers() {
        let key = map.key_b(&l.name);
        if let Some(&other) = b_by_key.get(key) {
            return Err(Error::option(format!(
                "{}: layers {:?} and {:?} both become {key:?} after stripping prefix {:?}",
                where_(b, "B"),
                b.layers()[other].name,
                l.name,
                map.strip_prefix_b.as_deref().unwrap_or("")
            )));
        }
        b_by_key.insert(key, l.index);
    }
    let mut a_by_key: HashMap<&str, usize> = HashMap::with_capacity(a.len());
    let mut a_to_b: Vec<Option<usize>> = Vec::with_capacity(a.len());
    for l in a.layers() {
        let key = map.key_a(&l.name);
        if let Some(&other) = a_by_key.get(key) {
            return Err(Error::option(format!(
                "{}: layers {:?} and {:?} both map to B name {key:?} through the name map",
                where_(a, "A"),
                a.layers()[other].name,
                l.name
            )));
        }
        a_by_key.insert(key, l.index);
        a_to_b.push(b_by_key.get(key).copied());
    }
    let unused_renames = map
        .rename
        .keys()
        .filter(|k| a.layer(k).is_none())
        .cloned()
        .collect();

    // B-only layers go after the matched layer that precedes them in B's order.
    let mut b_matched = vec![None; b.len()];
    for (ia, ib) in a_to_b.iter().enumerate() {
        if let Some(ib) = ib {
            b_matched[*ib] = Some(ia);
        }
    }
    let mut before_all = Vec::new();
    let mut after: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut anchor: Option<usize> = None;
    for (ib, m) in b_matched.iter().enumerate() {
        match m {
            Some(ia) => anchor = Some(*ia),
            None => match anchor {
                Some(ia) => after.entry(ia).or_default().push(ib),
                None => before_all.push(ib),
            },
        }
    }
    let mut rows: Vec<(Option<usize>, Option<usize>)> =
        before_all.into_iter().map(|ib| (None, Some(ib))).collect();
    for (ia, ib) in a_to_b.into_iter().enumerate() {
        rows.push((Some(ia), ib));
        if let Some(extra) = after.remove(&ia) {
            rows.extend(extra.into_iter().map(|ib| (None, Some(ib))));
        }
    }
    Ok((rows, unused_renames))
}

fn compare_layer(
    a: &Run,
    ia: Option<usize>,
    b: &Run,
    ib: Option<usize>,
    opts: &DiffOptions,
) -> Result<LayerDiff> {
    let la: Option<&LayerInfo> = ia.map(|i| &a.layers()[i]);
    let lb: Option<&LayerInfo> = ib.map(|i| &b.layers()[i]);
    let mut d = LayerDiff {
        name_a: la.map(|l| l.name.clone()),
        name_b: lb.map(|l| l.name.clone()),
        index_a: ia,
        index_b: ib,
        kind: la
            .and_then(|l| l.kind.clone())
            .or_else(|| lb.and_then(|l| l.kind.clone())),
        shape_a: la.map(|l| l.shape.clone()),
        shape_b: lb.map(|l| l.shape.clone()),
        dtype_a: la.map(|l| l.dtype.to_string()),
        dtype_b: lb.map(|l| l.dtype.to_string()),
        status: Status::Agree,
        diverges: false,
        numbers: None,
    };
    let (Some(la), Some(lb)) = (la, lb) else {
        d.status = if la.is_some() {
            Status::OnlyInA
        } else {
            Status::OnlyInB
        };
        d.diverges = !opts.ignore_missing;
        return Ok(d);
    };
    if la.elem_count() == lb.elem_count() {
        d.numbers = Some(compare_values(a, la, b, lb, opts)?);
    }
    d.status = if la.shape != lb.shape {
        Status::ShapeMismatch
    } else if d.numbers.as_ref().is_some_and(|n| n.mismatches > 0) {
        Status::Differ
    } else {
        Status::Agree
    };
    d.diverges = d.status != Status::Agree;
    Ok(d)
}

/// Elements per parallel work item (two f32 buffers of this size per thread).
const CHUNK: usize = 1 << 16;
/// Elements per segment (chunks of one segment are compared in parallel).
const SEGMENT: usize = 1 << 22;
/// f32 lanes of the kernel (two SSE or one AVX register).
const LANES: usize = 8;
/// Pairs per group of the kernel: summed in f32, then added in f64.
const GROUP: usize = 128;

fn compare_values(
    a: &Run,
    la: &LayerInfo,
    b: &Run,
    lb: &LayerInfo,
    opts: &DiffOptions,
) -> Result<Numbers> {
    let da = a.data_at(la.index)?;
    let db = b.data_at(lb.index)?;
    let n = da.len();
    let tol = Tol {
        atol: opts.atol,
        rtol: opts.rtol,
    };
    let mut acc = Acc::EMPTY;
    let mut seg = 0;
    while seg < n {
        let seg_end = (seg + SEGMENT).min(n);
        let chunks = (seg_end - seg).div_ceil(CHUNK);
        // Borrowed in place when stored as aligned f32, else converted into buffers.
        let compare = |start: usize, len: usize, ba: &mut Vec<f32>, bb: &mut Vec<f32>| {
            let sa = match da.f32_slice(start, len) {
                Some(s) => s,
                None => {
                    ba.resize(len, 0.0);
                    da.read_into(start, &mut ba[..len]);
                    &ba[..len]
                }
            };
            let sb = match db.f32_slice(start, len) {
                Some(s) => s,
                None => {
                    bb.resize(len, 0.0);
                    db.read_into(start, &mut bb[..len]);
                    &bb[..len]
                }
            };
            Acc::of(sa, sb, start, tol)
        };
        if chunks == 1 {
            acc = acc.merge(compare(
                seg,
                seg_end - seg,
                &mut Vec::new(),
                &mut Vec::new(),
            ));
        } else {
            // Collected in order, then merged in order: the same result on every run.
            let parts: Vec<Acc> = (0..chunks)
                .into_par_iter()
                .map_init(
                    || (Vec::new(), Vec::new()),
                    |(ba, bb), k| {
                        let start = seg + k * CHUNK;
                        compare(start, CHUNK.min(seg_end - start), ba, bb)
                    },
                )
                .collect();
            acc = parts.into_iter().fold(acc, Acc::merge);
        }
        seg = seg_end;
    }
    let numbers = acc.finish(&da, &db, &la.shape);
    da.check()?;
    db.check()?;
    Ok(numbers)
}

#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

#[derive(Clone, Copy, Debug)]
struct Acc {
    count: u64,
    finite: u64,
    sum_abs: f64,
    sum_d2: f64,
    sum_a2: f64,
    sum_b2: f64,
    sum_ab: f64,
    max_abs: f64,
    worst: Option<usize>,
    mismatches: u64,
    first_mismatch: Option<usize>,
    nan_a: u64,
    nan_b: u64,
    inf_a: u64,
    inf_b: u64,
    nan_mismatches: u64,
    inf_mismatches: u64,
}

impl Acc {
    const EMPTY: Acc = Acc {
        count: 0,
        finite: 0,
        sum_abs: 0.0,
        sum_d2: 0.0,
        sum_a2: 0.0,
        sum_b2: 0.0,
        sum_ab: 0.0,
        max_abs: 0.0,
        worst: None,
        mismatches: 0,
        first_mismatch: None,
        nan_a: 0,
        nan_b: 0,
        inf_a: 0,
        inf_b: 0,
        nan_mismatches: 0,
        inf_mismatches: 0,
    };

    /// Compares `a` with `b`, elements `offset..offset + a.len()` of the layer
    /// (with AVX2 where the CPU has it).
    fn of(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { of_avx2(a, b, offset, tol) };
        }
        Acc::of_lanes(a, b, offset, tol)
    }

    /// The kernel. Groups of [`GROUP`] pairs are summed in f32 lanes (vectorizable),
    /// then added to the f64 totals. A group that may hold a pair out of tolerance,
    /// a NaN or an Inf, or whose f32 sums overflow, is redone pair by pair in f64
    /// ([`Acc::one`]), so verdicts and counts are exact; the sums of a fast group
    /// carry f32 rounding (relative error about 1e-6 at most).
    #[inline(always)]
    fn of_lanes(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
        debug_assert_eq!(a.len(), b.len());
        let mut acc = Acc::EMPTY;
        acc.count = a.len() as u64;
        // The f32 limit never exceeds the f64 one: tolerances rounded down, a
        // relative margin far above f32 rounding, and an absolute one for subnormals.
        let atol32 = round_down(tol.atol);
        let rtol32 = round_down(tol.rtol);
        const MARGIN: f32 = 1.0 - 1.0 / (1u32 << 20) as f32;
        const TINY: f32 = 4.0 * f32::from_bits(1); // 4 units of the smallest subnormal
        let groups = a.len() / GROUP;
        for g in 0..groups {
            let base = g * GROUP;
            let (ga, gb) = (&a[base..base + GROUP], &b[base..base + GROUP]);
            let mut s_abs = [0f32; LANES];
            let mut s_d2 = [0f32; LANES];
            let mut s_a2 = [0f32; LANES];
            let mut s_b2 = [0f32; LANES];
            let mut s_ab = [0f32; LANES];
            let mut mx = [0f32; LANES];
            let mut excess = [0f32; LANES];
            for (ka, kb) in ga.chunks_exact(LANES).zip(gb.chunks_exact(LANES)) {
                let ka: &[f32; LANES] = ka.try_into().expect("lane block");
                let kb: &[f32; LANES] = kb.try_into().expect("lane block");
                for j in 0..LANES {
                    let (x, y) = (ka[j], kb[j]);
                    let d = x - y;
                    let ad = d.abs();
                    s_abs[j] += ad;
                    s_d2[j] += d * d;
                    s_a2[j] += x * x;
                    s_b2[j] += y * y;
                    s_ab[j] += x * y;
                    mx[j] = if ad > mx[j] { ad } else { mx[j] };
                    let lim = ((atol32 + rtol32 * y.abs()) * MARGIN - TINY).max(0.0);
                    let e = ad - lim;
                    excess[j] = if e > excess[j] { e } else { excess[j] };
                }
            }
            let total = |s: &[f32; LANES]| s.iter().map(|&v| v as f64).sum::<f64>();
            let (t_abs, t_d2, t_a2, t_b2, t_ab) = (
                total(&s_abs),
                total(&s_d2),
                total(&s_a2),
                total(&s_b2),
                total(&s_ab),
            );
            // NaN or Inf in the data (or an f32 overflow) shows in the sums.
            let finite = (t_abs + t_d2 + t_a2 + t_b2).is_finite() && t_ab.is_finite();
            if !finite || excess.iter().any(|&e| e > 0.0) {
                for j in 0..GROUP {
                    acc.one(offset + base + j, ga[j], gb[j], tol);
                }
                continue;
            }
            acc.finite += GROUP as u64;
            acc.sum_abs += t_abs;
            acc.sum_d2 += t_d2;
            acc.sum_a2 += t_a2;
            acc.sum_b2 += t_b2;
            acc.sum_ab += t_ab;
            let gmax = mx.iter().fold(0f32, |m, &v| m.max(v));
            if acc.worst.is_none() || gmax as f64 > acc.max_abs {
                let j = (0..GROUP)
                    .find(|&j| (ga[j] - gb[j]).abs() == gmax)
                    .expect("the group's maximum is one of its pairs");
                acc.max_abs = gmax as f64;
                acc.worst = Some(offset + base + j);
            }
        }
        for j in groups * GROUP..a.len() {
            acc.one(offset + j, a[j], b[j], tol);
        }
        acc
    }

    /// One pair, any values (the slow path; `count` is not touched).
    fn one(&mut self, i: usize, x: f32, y: f32, tol: Tol) {
        self.nan_a += x.is_nan() as u64;
        self.nan_b += y.is_nan() as u64;
        self.inf_a += x.is_infinite() as u64;
        self.inf_b += y.is_infinite() as u64;
        let agree = if x.is_finite() && y.is_finite() {
            let (xf, yf) = (x as f64, y as f64);
            let d = xf - yf;
            let ad = d.abs();
            self.finite += 1;
            self.sum_abs += ad;
            self.sum_d2 += d * d;
            self.sum_a2 += xf * xf;
            self.sum_b2 += yf * yf;
            self.sum_ab += xf * yf;
            // The maximum as the fast path sees it: |a - b| rounded to f32.
            let ad32 = if (x - y).is_finite() {
                (x - y).abs() as f64
            } else {
                ad // f32 overflow: keep the exact value
            };
            if ad32 > self.max_abs || self.worst.is_none() {
                self.max_abs = ad32;
                self.worst = Some(i);
            }
            ad <= tol.atol + tol.rtol * yf.abs()
        } else if x.is_nan() != y.is_nan() {
            self.nan_mismatches += 1;
            false
        } else if x.is_nan() || x == y {
            true
        } else {
            self.inf_mismatches += 1;
            false
        };
        if !agree {
            self.mismatches += 1;
            self.first_mismatch.get_or_insert(i);
        }
    }

    /// Combines `self` (earlier elements) with `o` (later elements).
    fn merge(self, o: Acc) -> Acc {
        let (max_abs, worst) = match (self.worst, o.worst) {
            (None, _) => (o.max_abs, o.worst),
            (Some(_), None) => (self.max_abs, self.worst),
            (Some(_), Some(_)) if o.max_abs > self.max_abs => (o.max_abs, o.worst),
            _ => (self.max_abs, self.worst),
        };
        Acc {
            count: self.count + o.count,
            finite: self.finite + o.finite,
            sum_abs: self.sum_abs + o.sum_abs,
            sum_d2: self.sum_d2 + o.sum_d2,
            sum_a2: self.sum_a2 + o.sum_a2,
            sum_b2: self.sum_b2 + o.sum_b2,
            sum_ab: self.sum_ab + o.sum_ab,
            max_abs,
            worst,
            mismatches: self.mismatches + o.mismatches,
            first_mismatch: self.first_mismatch.or(o.first_mismatch),
            nan_a: self.nan_a + o.nan_a,
            nan_b: self.nan_b + o.nan_b,
            inf_a: self.inf_a + o.inf_a,
            inf_b: self.inf_b + o.inf_b,
            nan_mismatches: self.nan_mismatches + o.nan_mismatches,
            inf_mismatches: self.inf_mismatches + o.inf_mismatches,
        }
    }

    fn finish(self, da: &LayerData<'_>, db: &LayerData<'_>, shape: &[usize]) -> Numbers {
        let element = |i: usize| Element {
            index: i,
            position: unravel(i, shape),
            a: da.get(i),
            b: db.get(i),
        };
        let (na, nb, nd) = (self.sum_a2.sqrt(), self.sum_b2.sqrt(), self.sum_d2.sqrt());
        let rel_l2 = if nb > 0.0 {
            nd / nb
        } else if nd == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let cosine = if na > 0.0 && nb > 0.0 {
            // One square root of the product: exactly 1 for identical values.
            (self.sum_ab / (self.sum_a2 * self.sum_b2).sqrt()).clamp(-1.0, 1.0)
        } else if na == 0.0 && nb == 0.0 {
            1.0
        } else {
            0.0
        };
        Numbers {
            count: self.count,
            max_abs: self.max_abs,
            mean_abs: if self.finite > 0 {
                self.sum_abs / self.finite as f64
            } else {
                0.0
            },
            rel_l2,
            cosine,
            mismatches: self.mismatches,
            worst: self.worst.map(element),
            first_mismatch: self.first_mismatch.map(element),
            nan_a: self.nan_a,
            nan_b: self.nan_b,
            inf_a: self.inf_a,
            inf_b: self.inf_b,
            nan_mismatches: self.nan_mismatches,
            inf_mismatches: self.inf_mismatches,
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn of_avx2(a: &[f32], b: &[f32], offset: usize, tol: Tol) -> Acc {
    Acc::of_lanes(a, b, offset, tol)
}

/// `v` as f32, rounded toward zero (for v >= 0), at most `f32::MAX`.
fn round_down(v: f64) -> f32 {
    let f = (v as f32).min(f32::MAX);
    if f as f64 > v && f > 0.0 {
        f32::from_bits(f.to_bits() - 1)
    } else {
        f
    }
}

/// Row-major flat index -> position in `shape` (the flat index alone for a scalar).
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    if shape.is_empty() {
        return vec![i];
    }
    let mut pos = vec![0; shape.len()];
    for (p, &d) in pos.iter_mut().zip(shape).rev() {
        let d = d.max(1);
        *p = i % d;
        i /= d;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(a: &[f32], b: &[f32], tol: Tol) -> (f64, f64, u64, Option<usize>) {
        let mut max = 0f64;
        let mut sum = 0f64;
        let mut mism = 0;
        let mut first = None;
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let d = (x as f64 - y as f64).abs();
            max = max.max((x - y).abs() as f64);
            sum += d;
            if d > tol.atol + tol.rtol * (y as f64).abs() {
                mism += 1;
                first.get_or_insert(i);
            }
        }
        (max, sum / a.len() as f64, mism, first)
    }

    #[test]
    fn chunked_kernel_matches_a_direct_loop() {
        let n = 10_007;
        let a: Vec<f32> = (0..n)
            .map(|i| ((i * 31) % 97) as f32 * 0.01 - 0.4)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i % 13 == 0 {
                    v + 1e-3 * (i % 7) as f32
                } else {
                    v
                }
            })
            .collect();
        let tol = Tol {
            atol: 1e-5,
            rtol: 1e-4,
        };
        // Split in uneven pieces and merged in order = one pass.
        let mut acc = Acc::EMPTY;
        for (s, e) in [(0, 5), (5, 4001), (4001, 4003), (4003, n)] {
            acc = acc.merge(Acc::of(&a[s..e], &b[s..e], s, tol));
        }
        let (max, mean, mism, first) = direct(&a, &b, tol);
        assert_eq!(acc.count, n as u64);
        assert_eq!(acc.max_abs, max);
        assert!((acc.sum_abs / n as f64 - mean).abs() <= 1e-6 * mean);
        assert_eq!((acc.mismatches, acc.first_mismatch), (mism, first));
        let w = acc.worst.unwrap();
        assert_eq!((a[w] - b[w]).abs() as f64, max);
        // The lowest index among equal maxima.
        assert!((0..w).all(|i| ((a[i] - b[i]).abs() as f64) < max));
    }

    /// Pair values that stress the f32 fast path: exact copies, differences at and
    /// around the tolerance, subnormals; unless `clean`, also huge values whose
    /// squares overflow f32, NaN and ±Inf on either side (rare, so that most groups
    /// still take the fast path).
    fn pair(clean: bool, tol: Tol) -> impl proptest::strategy::Strategy<Value = (f32, f32)> {
        use proptest::prelude::*;
        let base = prop_oneof![
            40 => -4.0f32..4.0,
            4 => Just(0.0f32),
            4 => (1u32..1000).prop_map(f32::from_bits),
            if clean { 0 } else { 1 } => -1e25f32..1e25,
        ];
        (base, 0u16..400, -3.0f32..3.0).prop_map(move |(y, how, r)| {
            let how = if clean && (390..395).contains(&how) {
                0
            } else {
                how
            };
            match how {
                0..=199 => (y, y),
                200..=259 => (y + r * 1e-5, y),
                260..=319 => (y * (1.0 + r * 1e-4), y),
                320..=369 => (y + r * 1e-3, y),
                370..=379 => (f32::from_bits(y.to_bits().wrapping_add(how as u32 % 3)), y),
                380..=389 => {
                    // Within a few 1e-6 of the tolerance, either side of it.
                    let t = (tol.atol + tol.rtol * (y as f64).abs()) * (1.0 + r as f64 * 1e-6);
                    ((y as f64 + if how % 2 == 0 { t } else { -t }) as f32, y)
                }
                390 => (f32::NAN, y),
                391 => (y, f32::NAN),
                392 => (f32::NAN, f32::NAN),
                393 => (f32::INFINITY, y),
                394 => (f32::NEG_INFINITY, f32::NEG_INFINITY),
                _ => (-y, y),
            }
        })
    }

    fn case() -> impl proptest::strategy::Strategy<Value = (Vec<(f32, f32)>, Tol)> {
        use proptest::prelude::*;
        (
            any::<bool>(),
            proptest::sample::select(vec![0.0, 1e-45, 1e-40, 1e-5, 1e-3, 0.5]),
            proptest::sample::select(vec![0.0, 1e-4, 1.0 / 256.0, 1.0]),
        )
            .prop_flat_map(|(clean, atol, rtol)| {
                let tol = Tol { atol, rtol };
                (
                    proptest::collection::vec(pair(clean, tol), 0..1200),
                    Just(tol),
                )
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn fast_path_verdicts_are_exact(
            (pairs, tol) in case(),
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let acc = Acc::of(&a, &b, 0, tol);
            // Reference: every pair on its own, in f64.
            let mut want = Acc::EMPTY;
            want.count = a.len() as u64;
            for i in 0..a.len() {
                want.one(i, a[i], b[i], tol);
            }
            proptest::prop_assert_eq!(acc.mismatches, want.mismatches);
            proptest::prop_assert_eq!(acc.first_mismatch, want.first_mismatch);
            proptest::prop_assert_eq!(acc.finite, want.finite);
            proptest::prop_assert_eq!(acc.max_abs, want.max_abs);
            proptest::prop_assert_eq!(acc.worst, want.worst);
            proptest::prop_assert_eq!(
                (acc.nan_a, acc.nan_b, acc.inf_a, acc.inf_b, acc.nan_mismatches, acc.inf_mismatches),
                (want.nan_a, want.nan_b, want.inf_a, want.inf_b, want.nan_mismatches, want.inf_mismatches)
            );
            for (got, exp) in [
                (acc.sum_abs, want.sum_abs),
                (acc.sum_d2, want.sum_d2),
                (acc.sum_a2, want.sum_a2),
                (acc.sum_b2, want.sum_b2),
                (acc.sum_ab, want.sum_ab),
            ] {
                // f32 sums within a group: about 1e-6 relative to the sum of magnitudes.
                let scale = want.sum_a2 + want.sum_b2 + want.sum_abs + 1e-30;
                proptest::prop_assert!((got - exp).abs() <= 1e-6 * scale, "{} vs {}", got, exp);
            }
        }
    }

    #[test]
    fn fast_path_handles_identical_and_one_ulp_apart() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let exact = Tol {
            atol: 0.0,
            rtol: 0.0,
        };
        let acc = Acc::of(&a, &a, 0, exact);
        assert_eq!((acc.mismatches, acc.max_abs, acc.finite), (0, 0.0, 1000));
        assert_eq!(acc.worst, Some(0));
        let mut b = a.clone();
        b[700] = f32::from_bits(b[700].to_bits() + 1);
        let acc = Acc::of(&a, &b, 0, exact);
        assert_eq!(
            (acc.mismatches, acc.first_mismatch, acc.worst),
            (1, Some(700), Some(700))
        );
        // NaN inside a fast group, same place on both sides: agrees.
        let mut c = a.clone();
        c[300] = f32::NAN;
        let acc = Acc::of(&c, &c, 0, exact);
        assert_eq!((acc.mismatches, acc.nan_a, acc.finite), (0, 1, 999));
    }

    #[test]
    fn nan_and_inf_follow_the_documented_rules() {
        let tol = Tol {
            atol: 0.0,
            rtol: 0.0,
        };
        let inf = f32::INFINITY;
        let nan = f32::NAN;
        let a = [nan, nan, inf, inf, -inf, 1.0, 2.0, 3.0, 4.0];
        let b = [nan, 1.0, inf, -inf, 5.0, nan, 2.0, inf, 4.0];
        let acc = Acc::of(&a, &b, 0, tol);
        assert_eq!((acc.nan_a, acc.nan_b, acc.inf_a, acc.inf_b), (2, 2, 3, 3));
        assert_eq!(acc.nan_mismatches, 2); // positions 1 and 5
        assert_eq!(acc.inf_mismatches, 3); // inf/-inf, -inf/5, 3/inf
        assert_eq!(acc.mismatches, 5);
        assert_eq!(acc.first_mismatch, Some(1));
        assert_eq!(acc.finite, 2);
        assert_eq!(acc.max_abs, 0.0);
    }

    #[test]
    fn name_maps_parse_from_text_and_json() {
        let m = NameMap::parse(
            "# port of torchvision names\nfeatures.0 = conv1\n relu#2 = act.2 \nstrip_prefix_a: model.\n",
        )
        .unwrap();
        assert_eq!(m.rename["features.0"], "conv1");
        assert_eq!(m.rename["relu#2"], "act.2");
        assert_eq!(m.strip_prefix_a.as_deref(), Some("model."));
        assert_eq!(m.key_a("model.fc"), "fc");
        assert_eq!(m.key_a("features.0"), "conv1");
        let j = NameMap::parse(r#"{"rename": {"a": "b"}, "strip_prefix_b": "net."}"#).unwrap();
        assert_eq!(j.key_a("a"), "b");
        assert_eq!(j.key_b("net.b"), "b");
        assert!(NameMap::parse("x = \n")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        assert!(NameMap::parse("a = b\nnonsense\n")
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        assert!(NameMap::parse("a = b\na = c\n")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(NameMap::parse(r#"{"renames": {}}"#).is_err());
    }

    #[test]
    fn unravel_is_row_major() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(5, &[2, 3, 4]), vec![0, 1, 1]);
        assert_eq!(unravel(0, &[]), vec![0]);
    }
}

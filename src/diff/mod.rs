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
//! Shapes that differ **only by leading 1s** (`[12, 384]` against `[1, 12, 384]`,
//! common between a candle port and PyTorch) hold the same elements in the same
//! order: they are compared element by element like equal shapes, so such a layer
//! agrees or differs by its values alone. It is reported all the same
//! ([`LayerDiff::reshaped`], `reshaped: true` in JSON, `ok (reshaped)` in tables);
//! element positions are in A's shape. Any other shape difference is a
//! [`Status::ShapeMismatch`].
//!
//! ## Which layers (names, patterns, exclusions)
//!
//! Layers are matched by name through [`DiffOptions::map`], a [`NameMap`]: exact
//! renames, wildcard patterns (`blocks.*.attn = encoder.layer.*.attention.self`:
//! `*` within one dot-separated segment, `**` across segments, exact entries
//! first, then patterns most specific first; see [`NameMap`]) and prefixes to
//! strip. [`DiffOptions::exclude`] leaves layers out entirely: a layer of A or B
//! whose name, as stored in its own run, matches one of these globs is neither
//! compared nor reported as missing from the other run; [`RunDiff::excluded_a`]
//! and [`RunDiff::excluded_b`] count them. Exclude globs are the recorder's
//! ([`globset`](https://docs.rs/globset) syntax): there `*` matches any characters,
//! dots included (`blocks.*` excludes `blocks.0.attn`), `?` one character, `[ab]`
//! a class, `{a,b}` alternatives.
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
//! // Leading 1s: compared element by element, reported, not divergent.
//! let c = Run::from_named_tensors("c", [("fc".to_string(), x.unsqueeze(0)?)]);
//! let d = a.diff(&c)?;
//! assert!(d.agrees() && d.layers[0].reshaped);
//! // Excluded layers are left out on both sides.
//! let skip = DiffOptions { exclude: vec!["f*".into()], ..DiffOptions::default() };
//! assert_eq!(a.diff_with(&b, &skip)?.layers.len(), 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[cfg(feature = "render")]
pub mod gallery;
mod kernel;
mod namemap;
mod pattern;
mod select;

pub use crate::runfile::same_but_leading_ones;
pub use namemap::NameMap;

use crate::runfile::{LayerInfo, Run};
use crate::{Error, Result};
use kernel::compare_values;

/// How two runs are compared. Defaults: `atol` 1e-5, `rtol` 1e-4, no name map,
/// missing layers count as divergent, nothing excluded.
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
    /// Globs of layer names to leave out of the comparison (see the module docs).
    pub exclude: Vec<String>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            atol: 1e-5,
            rtol: 1e-4,
            map: NameMap::default(),
            ignore_missing: false,
            exclude: Vec::new(),
        }
    }
}

/// How one layer compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Same shape (or differing only by leading 1s), every element within tolerance.
    Agree,
    /// Same shape (or differing only by leading 1s), some element out of tolerance
    /// (or a NaN/Inf disagreement).
    Differ,
    /// Different shapes, not only by leading 1s (numbers are still given when the
    /// element counts match).
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
    /// True when the shapes differ only by leading 1s (`[12, 384]` and
    /// `[1, 12, 384]`): compared element by element like equal shapes (so the
    /// status is `Agree` or `Differ`), positions given in A's shape.
    pub reshaped: bool,
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

    /// The status word for tables ([`Status::label`]), with ` (reshaped)` when
    /// the shapes differ only by leading 1s.
    pub fn status_label(&self) -> String {
        let mut s = self.status.label().to_string();
        if self.reshaped {
            s.push_str(" (reshaped)");
        }
        s
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
    /// Rename entries (their A sides) that rename no layer of A (likely typos): an
    /// exact name that is not a layer of A, a pattern that matches none of its
    /// layers or only layers an exact entry or a more specific pattern renames.
    pub unused_renames: Vec<String>,
    /// The exclude globs used ([`DiffOptions::exclude`]).
    pub exclude: Vec<String>,
    /// How many layers of A were excluded (not in [`RunDiff::layers`]).
    pub excluded_a: usize,
    /// How many layers of B were excluded.
    pub excluded_b: usize,
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

    /// Number of layers whose shapes differ only by leading 1s ([`LayerDiff::reshaped`]).
    pub fn reshaped(&self) -> usize {
        self.layers.iter().filter(|l| l.reshaped).count()
    }

    /// One line of counts: `12 layers: 10 agree, 2 differ`, then, when there are
    /// any, `; 1 reshaped (shapes differ only by leading 1s)` and
    /// `; excluded: 3 in A, 4 in B`.
    pub fn summary_line(&self) -> String {
        let mut counts = vec![format!("{} agree", self.count(Status::Agree))];
        for (s, what) in [
            (Status::Differ, "differ"),
            (Status::ShapeMismatch, "differ in shape"),
            (Status::OnlyInA, "only in A"),
            (Status::OnlyInB, "only in B"),
        ] {
            let n = self.count(s);
            if n > 0 {
                counts.push(format!("{n} {what}"));
            }
        }
        let mut out = format!("{} layers: {}", self.layers.len(), counts.join(", "));
        if self.reshaped() > 0 {
            out.push_str(&format!(
                "; {} reshaped (shapes differ only by leading 1s)",
                self.reshaped()
            ));
        }
        if self.excluded_a + self.excluded_b > 0 {
            out.push_str(&format!(
                "; excluded: {} in A, {} in B",
                self.excluded_a, self.excluded_b
            ));
        }
        out
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
            reshaped: usize,
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
            exclude: &'a [String],
            excluded_a: usize,
            excluded_b: usize,
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
                reshaped: self.reshaped(),
            },
            unused_renames: &self.unused_renames,
            exclude: &self.exclude,
            excluded_a: self.excluded_a,
            excluded_b: self.excluded_b,
            layers: &self.layers,
        }
        .serialize(s)
    }
}

impl Run {
    /// Compares this run (A) with `reference` (B) under [`DiffOptions::default`].
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use candlelight::{Run, Status};
    ///
    /// let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).map(|t| t.reshape((1, v.len())).unwrap());
    /// let port = Run::from_named_tensors("port", [
    ///     ("conv1".to_string(), t(&[1.0, 2.0])?),
    ///     ("fc".to_string(), t(&[0.5, 0.25])?),
    /// ]);
    /// let reference = Run::from_named_tensors("ref", [
    ///     ("conv1".to_string(), t(&[1.0, 2.0])?),
    ///     ("fc".to_string(), t(&[0.5, 0.3])?),
    /// ]);
    /// let d = port.diff(&reference)?;
    /// assert!(!d.agrees());
    /// assert_eq!(d.first_divergent().map(|l| l.name()), Some("fc"));
    /// assert_eq!(d.layers[0].status, Status::Agree);
    /// # Ok::<(), candlelight::Error>(())
    /// ```
    pub fn diff(&self, reference: &Run) -> Result<RunDiff> {
        diff(self, reference, &DiffOptions::default())
    }

    /// Compares this run (A) with `reference` (B) under `opts`.
    pub fn diff_with(&self, reference: &Run, opts: &DiffOptions) -> Result<RunDiff> {
        diff(self, reference, opts)
    }
}

/// Compares run `a` with run `b` (the reference), layer by layer; see the module docs.
/// Errors only on bad options (a bad name-map entry or exclude glob included), a
/// name map that makes two layers collide, or a layer whose data cannot be read.
pub fn diff(a: &Run, b: &Run, opts: &DiffOptions) -> Result<RunDiff> {
    for (what, v) in [("atol", opts.atol), ("rtol", opts.rtol)] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(Error::option(format!(
                "{what} must be a finite number ≥ 0, got {v}"
            )));
        }
    }
    let sel = select::select(a, b, opts)?;
    let mut layers = Vec::with_capacity(sel.rows.len());
    for (ia, ib) in sel.rows {
        layers.push(compare_layer(a, ia, b, ib, opts)?);
    }
    Ok(RunDiff {
        a: RunSide::of(a),
        b: RunSide::of(b),
        atol: opts.atol,
        rtol: opts.rtol,
        ignore_missing: opts.ignore_missing,
        layers,
        unused_renames: sel.unused_renames,
        exclude: opts.exclude.clone(),
        excluded_a: sel.excluded_a,
        excluded_b: sel.excluded_b,
    })
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
        reshaped: false,
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
        d.numbers = Some(match identical(a, la, b, lb) {
            Some(n) => n,
            None => compare_values(a, la, b, lb, opts)?,
        });
    }
    d.reshaped = la.shape != lb.shape && same_but_leading_ones(&la.shape, &lb.shape);
    d.status = if la.shape != lb.shape && !d.reshaped {
        Status::ShapeMismatch
    } else if d.numbers.as_ref().is_some_and(|n| n.mismatches > 0) {
        Status::Differ
    } else {
        Status::Agree
    };
    d.diverges = d.status != Status::Agree;
    Ok(d)
}

/// The numbers of two layers known equal without reading them: a run read from
/// an object store whose header stores the same content hash (and dtype) as the
/// other side's. Local runs are always compared value by value.
fn identical(a: &Run, la: &LayerInfo, b: &Run, lb: &LayerInfo) -> Option<Numbers> {
    if a.transfer().is_none() && b.transfer().is_none() || la.dtype != lb.dtype {
        return None;
    }
    let (sa, sb) = (a.summary_at(la.index)?, b.summary_at(lb.index)?);
    let stats = sa.stats?;
    (sa.hash == sb.hash).then(|| Numbers {
        count: la.elem_count() as u64,
        max_abs: 0.0,
        mean_abs: 0.0,
        rel_l2: 0.0,
        cosine: 1.0,
        mismatches: 0,
        worst: None,
        first_mismatch: None,
        nan_a: stats.nan,
        nan_b: stats.nan,
        inf_a: stats.inf,
        inf_b: stats.inf,
        nan_mismatches: 0,
        inf_mismatches: 0,
    })
}

#[cfg(test)]
mod tests;

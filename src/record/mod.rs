//! Capturing a forward pass: the [`Recorder`], [`tap`], and the drop-in layers in [`nn`].
//!
//! A recorder is active on one thread for the duration of [`Recorder::record`];
//! every [`tap`], instrumented layer ([`nn`]) and [`nn::Seq`] child that runs on that
//! thread meanwhile adds `(name, tensor)` to the run. Capturing clones a tensor
//! handle (candle tensors are immutable and reference-counted), so it costs almost
//! nothing; conversions (first-k samples, dtype) happen once the pass is over.
//! With no recorder active a tap is a thread-local flag check.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::{tap, Recorder};
//!
//! let x = Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let (y, run) = Recorder::new("doc").record(|| {
//!     let h = tap("double", &(&x * 2.0)?)?;
//!     tap("plus_one", &(h + 1.0)?)
//! })?;
//! assert_eq!(run.layers().len(), 2);
//! assert_eq!(run.layers()[1].name, "plus_one");
//! assert_eq!(y.sum_all()?.to_scalar::<f32>()?, 18.0);
//! # Ok::<(), candlelight::Error>(())
//! ```
//!
//! Several threads may record at once; each records its own run.
//!
//! Loops of recorded passes with big layers: see [`tune_malloc_for_recording`]
//! (an opt-in glibc malloc tuning, so that each pass reuses the memory the
//! previous pass's run freed).

mod malloc;
pub mod nn;
mod patch;
mod scope;
pub mod with_tracing;
mod writer;

pub use malloc::tune_malloc_for_recording;
pub use scope::Scope;
pub use writer::RunWriter;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{DType, Tensor, TensorId, Var};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::runfile::{new_run_id, now_rfc3339, Run, RunInfo};
use crate::{Error, Result};

/// Records one forward pass into a [`Run`]. Defaults: everything included, all
/// samples kept, dtypes kept, input described as `""`, no tags.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use candlelight::{tap, Recorder};
///
/// let x = Tensor::ones((4, 3), DType::F32, &Device::Cpu)?;
/// let (y, run) = Recorder::new("mlp")
///     .exclude("debug.*")
///     .first_samples(2)
///     .tag("step", "100")
///     .record(|| {
///         let h = tap("hidden", &(&x * 2.0)?)?;
///         tap("debug.sum", &h.sum_all()?)?;
///         tap("out", &h.relu()?)
///     })?;
/// assert_eq!(y.dims(), &[4, 3]);
/// let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
/// assert_eq!(names, ["hidden", "out"]);
/// assert_eq!(run.layers()[0].shape, vec![2, 3]); // first 2 samples kept
/// # Ok::<(), candlelight::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    model: String,
    input: String,
    include: Vec<String>,
    exclude: Vec<String>,
    first_samples: Option<usize>,
    store_as: Option<DType>,
    tags: BTreeMap<String, String>,
    id: Option<String>,
    tokens: Option<Vec<Vec<String>>>,
    patch_from: Option<Arc<Run>>,
    patch: Vec<String>,
}

/// What a capture needs while the pass runs.
struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Filter {
    fn wants(&self, name: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(name))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(name))
    }
}

struct Capture {
    filter: Filter,
    entries: Vec<(String, Tensor)>,
    kinds: BTreeMap<String, String>,
    counts: HashMap<String, usize>,
    /// Op-level capture: tensor id -> recorded name, to name graph nodes.
    by_id: Option<HashMap<TensorId, usize>>,
    /// Layers that return another run's tensor instead of their own.
    patch: Option<patch::Patch>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Capture>> = const { RefCell::new(None) };
}

/// Returns `t` (a handle clone); records it as `name` when a recorder is active on
/// this thread. The seed's `VisualizeLayer`, done right.
#[inline]
pub fn tap(name: &str, t: &Tensor) -> candle_core::Result<Tensor> {
    record_out(name, "tap", t.clone())
}

/// Like [`tap`], with a layer kind (`relu`, `max_pool2d`, ...) instead of `tap`.
#[inline]
pub fn tap_as(name: &str, kind: &str, t: &Tensor) -> candle_core::Result<Tensor> {
    record_out(name, kind, t.clone())
}

/// Records `t` as `name` with layer kind `kind` when a recorder is active.
#[inline]
pub fn record_as(name: &str, kind: &str, t: &Tensor) {
    // `try_with`: never panic during thread teardown.
    let _ = ACTIVE.try_with(|a| {
        if let Ok(mut a) = a.try_borrow_mut() {
            if let Some(c) = a.as_mut() {
                c.push(name, kind, t);
            }
        }
    });
}

/// Records `t` as `name` (kind `kind`) when a recorder is active and returns the
/// tensor the model should go on with: `t` itself, or, when the recorder patches
/// this layer ([`Recorder::patch`]), the patch run's tensor of the same name.
/// What [`tap`], the drop-in layers and [`Scope`] use.
#[inline]
pub fn record_out(name: &str, kind: &str, t: Tensor) -> candle_core::Result<Tensor> {
    let patched = ACTIVE.try_with(|a| {
        let Ok(mut a) = a.try_borrow_mut() else {
            return Ok(None);
        };
        let Some(c) = a.as_mut() else {
            return Ok(None);
        };
        let Some(name) = c.push(name, kind, &t) else {
            return Ok(None);
        };
        match c.patch.as_mut() {
            Some(p) => p.apply(&name, &t),
            None => Ok(None),
        }
    });
    match patched {
        Ok(Ok(Some(p))) => Ok(p),
        Ok(Err(e)) => Err(e),
        _ => Ok(t),
    }
}

/// True when a recorder is active on this thread.
pub fn is_recording() -> bool {
    ACTIVE
        .try_with(|a| a.try_borrow().map(|a| a.is_some()).unwrap_or(false))
        .unwrap_or(false)
}

impl Capture {
    /// Records `t`; returns the name it got, `None` when the filter skips it.
    fn push(&mut self, name: &str, kind: &str, t: &Tensor) -> Option<String> {
        let base = if name.is_empty() { kind } else { name };
        if !self.filter.wants(base) {
            return None;
        }
        let n = self.counts.entry(base.to_string()).or_insert(0);
        *n += 1;
        let name = if *n == 1 {
            base.to_string()
        } else {
            format!("{base}#{n}")
        };
        if let Some(ids) = self.by_id.as_mut() {
            ids.insert(t.id(), self.entries.len());
        }
        self.kinds.insert(name.clone(), kind.to_string());
        self.entries.push((name.clone(), t.clone()));
        Some(name)
    }
}

/// Puts the previous capture back when the pass ends, even on panic.
struct Restore(Option<Capture>);

impl Drop for Restore {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = ACTIVE.try_with(|a| *a.borrow_mut() = prev);
    }
}

fn compile(globs: &[String], what: &str) -> Result<Option<GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| Error::option(format!("bad {what} glob {g:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| Error::option(format!("bad {what} globs: {e}")))
}

impl Recorder {
    /// A recorder for a model called `model` (used in the run id).
    pub fn new(model: impl Into<String>) -> Self {
        Recorder {
            model: model.into(),
            ..Default::default()
        }
    }

    /// Describes the input (stored as `input` in the run facts).
    pub fn input(mut self, input: impl Into<String>) -> Self {
        self.input = input.into();
        self
    }

    /// Records only layers whose name matches one of these globs (`conv*`, `blocks.*.attn`).
    pub fn include(mut self, glob: impl Into<String>) -> Self {
        self.include.push(glob.into());
        self
    }

    /// Skips layers whose name matches this glob (applied after `include`).
    pub fn exclude(mut self, glob: impl Into<String>) -> Self {
        self.exclude.push(glob.into());
        self
    }

    /// Keeps only the first `k` samples (dimension 0) of each layer.
    pub fn first_samples(mut self, k: usize) -> Self {
        self.first_samples = Some(k);
        self
    }

    /// Stores float layers as `dtype` (F16 or BF16 halve the size); integer layers stay.
    pub fn store_as(mut self, dtype: DType) -> Self {
        self.store_as = Some(dtype);
        self
    }

    /// Adds a tag to the run facts.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Uses this run id instead of a fresh `YYYYMMDD-HHMMSS-<model>-<hex>` one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Stores the input's token strings, one list per sample, in the run
    /// (`tokens` in the run facts), so pictures can label token axes.
    pub fn tokens<S: Into<String>>(mut self, tokens: impl IntoIterator<Item = Vec<S>>) -> Self {
        self.tokens = Some(
            tokens
                .into_iter()
                .map(|s| s.into_iter().map(Into::into).collect())
                .collect(),
        );
        self
    }

    /// Patching: layers named by [`Recorder::patch`] globs record their own output,
    /// then hand the model `run`'s tensor of the same name instead, so everything
    /// downstream runs on `run`'s activations. With every layer patched from a
    /// reference run, a diff against that run shows each layer's *local* error;
    /// patching one layer from a run on another input is activation patching.
    ///
    /// The patch tensor is converted to the layer's dtype and device; shapes must
    /// match up to leading 1s (`[12, 384]` patches `[1, 12, 384]`). A layer the run
    /// does not have keeps its own output. The run facts list what was patched
    /// (`patched`: `from` = the run's id, `layers`, `missing`).
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use candlelight::{tap, Recorder};
    ///
    /// let x = Tensor::new(&[1f32, 2.0], &Device::Cpu)?;
    /// let f = || -> candle_core::Result<Tensor> {
    ///     let h = tap("h", &(&x * 2.0)?)?;
    ///     tap("out", &(h + 1.0)?)
    /// };
    /// let (_, reference) = Recorder::new("ref").record(f)?;
    /// let x = Tensor::new(&[5f32, 5.0], &Device::Cpu)?;
    /// let g = || -> candle_core::Result<Tensor> {
    ///     let h = tap("h", &(&x * 2.0)?)?;
    ///     tap("out", &(h + 1.0)?)
    /// };
    /// let (y, run) = Recorder::new("patched").patch_from(reference).patch("h").record(g)?;
    /// assert_eq!(y.to_vec1::<f32>()?, [3.0, 5.0]); // downstream of h runs on the reference's h
    /// assert_eq!(run.values("h")?, [10.0, 10.0]); // h itself is recorded as computed
    /// # Ok::<(), candlelight::Error>(())
    /// ```
    pub fn patch_from(mut self, run: impl Into<Arc<Run>>) -> Self {
        self.patch_from = Some(run.into());
        self
    }

    /// Patches layers whose name matches this glob (`*` for every layer,
    /// `encoder.layer.3`, `*.attention_probs`) from the [`Recorder::patch_from`] run.
    pub fn patch(mut self, glob: impl Into<String>) -> Self {
        self.patch.push(glob.into());
        self
    }

    fn start(&self, by_id: bool) -> Result<Capture> {
        Ok(Capture {
            filter: Filter {
                include: compile(&self.include, "include")?,
                exclude: compile(&self.exclude, "exclude")?,
            },
            entries: Vec::new(),
            kinds: BTreeMap::new(),
            counts: HashMap::new(),
            by_id: by_id.then(HashMap::new),
            patch: patch::Patch::new(self.patch_from.as_ref(), &self.patch)?,
        })
    }

    fn run_with<T>(
        &self,
        capture: Capture,
        f: impl FnOnce() -> candle_core::Result<T>,
    ) -> Result<(T, Capture)> {
        let prev = ACTIVE.with(|a| a.borrow_mut().replace(capture));
        let restore = Restore(prev);
        let out = f();
        let capture = ACTIVE
            .with(|a| a.borrow_mut().take())
            .expect("capture in place");
        drop(restore);
        Ok((out?, capture))
    }

    fn finish(
        &self,
        entries: Vec<(String, Tensor)>,
        kinds: BTreeMap<String, String>,
        patch: Option<patch::Patch>,
    ) -> Result<Run> {
        let entries = entries
            .into_iter()
            .map(|(n, mut t)| {
                if let Some(k) = self.first_samples {
                    if t.rank() > 0 && t.dim(0)? > k {
                        t = t.narrow(0, 0, k)?;
                    }
                }
                if let Some(dt) = self.store_as {
                    if t.dtype().is_float() && t.dtype() != dt {
                        t = t.to_dtype(dt)?;
                    }
                }
                Ok((n, t))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let info = RunInfo {
            id: self.id.clone().unwrap_or_else(|| new_run_id(&self.model)),
            created: now_rfc3339(),
            model: self.model.clone(),
            input: self.input.clone(),
            kinds,
            tags: self.tags.clone(),
            extra: self.extra(patch),
        };
        Ok(Run::from_tensors(info, entries, BTreeMap::new()))
    }

    /// The run facts beyond the fixed ones: `tokens`, `patched`.
    fn extra(&self, patch: Option<patch::Patch>) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        if let Some(t) = &self.tokens {
            extra.insert("tokens".into(), serde_json::json!(t));
        }
        if let Some(p) = patch {
            extra.insert("patched".into(), p.report());
        }
        extra
    }

    /// Runs `f` with this recorder active on the current thread; returns its output
    /// and the run of every tensor recorded meanwhile, in capture order.
    pub fn record<T>(&self, f: impl FnOnce() -> candle_core::Result<T>) -> Result<(T, Run)> {
        let (out, c) = self.run_with(self.start(false)?, f)?;
        let run = self.finish(c.entries, c.kinds, c.patch)?;
        Ok((out, run))
    }

    /// Op-level capture for unmodified models: `input` is turned into a `Var`, `f`
    /// runs on it, and every intermediate tensor of the pass (candle's op graph of
    /// the output, `Tensor::sorted_nodes`) is recorded in forward order. Tensors
    /// that went through a tap or an instrumented layer keep that name; the rest are
    /// named `op.<position>.<shape>` (e.g. `op.012.1x32x26x26`) with kind `op`.
    ///
    /// Memory: every intermediate stays alive until the run is dropped (a plain
    /// forward frees them as it goes), so peak memory is the sum of all
    /// intermediates, typically several times the recorded layers alone. The graph
    /// itself is dropped; the returned output is detached.
    ///
    /// Limitation: candle's fused kernels (`candle_nn::ops::layer_norm`, `rms_norm`,
    /// `softmax_last_dim`, rotary embeddings; `candle_nn::LayerNorm` with a bias and
    /// `RmsNorm` on contiguous input) return tensors with no link back to their
    /// input, and integer ops (argmax, casts from integers) end the graph too. When that cuts
    /// the output off from the input, as in most transformers, this returns an
    /// [`Error::CannotRecord`] rather than an empty or partial run: use [`Recorder::record`]
    /// with [`tap`] or the drop-in layers in [`nn`] there.
    pub fn record_ops(
        &self,
        input: &Tensor,
        f: impl FnOnce(&Tensor) -> candle_core::Result<Tensor>,
    ) -> Result<(Tensor, Run)> {
        let var = Var::from_tensor(input)?;
        let x = var.as_tensor().clone();
        let (out, c) = self.run_with(self.start(true)?, || f(&x))?;
        let by_id = c.by_id.unwrap_or_default();
        let mut named: Vec<Option<(String, Tensor)>> = c.entries.into_iter().map(Some).collect();
        let mut kinds = c.kinds;
        let mut entries = Vec::new();
        let filter = &self.start(false)?.filter;
        // sorted_nodes: the output first, the input last; reverse for forward order.
        let nodes: Vec<Tensor> = out.sorted_nodes().into_iter().rev().cloned().collect();
        if !nodes.iter().any(|n| n.id() == x.id()) {
            return Err(Error::CannotRecord {
                msg: format!(
                    "record_ops: the output (shape {:?}) is not connected to the input in \
                 candle's op graph, so there are no intermediates to record: fused kernels \
                 (layer_norm, rms_norm, softmax_last_dim, rotary embeddings) and integer \
                 ops keep no link back to their input; record this model with \
                 Recorder::record and candlelight::tap or the drop-in layers in \
                 candlelight::nn::* instead",
                    out.dims()
                ),
            });
        }
        for (pos, node) in nodes.iter().enumerate() {
            if let Some(&i) = by_id.get(&node.id()) {
                if let Some((name, _)) = named[i].take() {
                    entries.push((name, node.detach()));
                }
                continue;
            }
            let name = if node.id() == x.id() {
                kinds.insert("input".into(), "input".into());
                "input".to_string()
            } else {
                let dims: Vec<String> = node.dims().iter().map(|d| d.to_string()).collect();
                let name = format!("op.{pos:03}.{}", dims.join("x"));
                kinds.insert(name.clone(), "op".into());
                name
            };
            if filter.wants(&name) {
                entries.push((name, node.detach()));
            }
        }
        // Taps on tensors outside the graph (e.g. integer ones) come last.
        for (name, t) in named.into_iter().flatten() {
            entries.push((name, t.detach()));
        }
        drop(nodes);
        let out = out.detach();
        let run = self.finish(entries, kinds, c.patch)?;
        Ok((out, run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn tap_without_recorder_records_nothing_and_returns_input() {
        let x = t(&[1.0, 2.0]);
        let y = tap("x", &x).unwrap();
        assert_eq!(y.id(), x.id());
        assert!(!is_recording());
    }

    #[test]
    fn repeated_names_get_numbered() {
        let (_, run) = Recorder::new("t")
            .record(|| {
                for _ in 0..3 {
                    tap("a", &t(&[1.0]))?;
                }
                Ok(())
            })
            .unwrap();
        let names: Vec<_> = run.layers().iter().map(|l| l.name.clone()).collect();
        assert_eq!(names, ["a", "a#2", "a#3"]);
    }

    #[test]
    fn globs_filter_names() {
        let (_, run) = Recorder::new("t")
            .include("conv*")
            .exclude("*2")
            .record(|| {
                for n in ["conv1", "conv2", "fc1"] {
                    tap(n, &t(&[1.0]))?;
                }
                Ok(())
            })
            .unwrap();
        let names: Vec<_> = run.layers().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["conv1"]);
        assert!(Recorder::new("t").include("[").record(|| Ok(())).is_err());
    }

    #[test]
    fn nested_recorders_restore_the_outer_one() {
        let (_, outer) = Recorder::new("outer")
            .record(|| {
                tap("a", &t(&[1.0]))?;
                let (_, inner) = Recorder::new("inner")
                    .record(|| tap("b", &t(&[2.0])))
                    .unwrap();
                assert_eq!(inner.len(), 1);
                tap("c", &t(&[3.0]))
            })
            .unwrap();
        let names: Vec<_> = outer.layers().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(!is_recording());
    }

    #[test]
    fn an_error_inside_still_ends_the_recording() {
        let r = Recorder::new("t").record(|| -> candle_core::Result<()> {
            tap("a", &t(&[1.0]))?;
            candle_core::bail!("boom")
        });
        assert!(r.is_err());
        assert!(!is_recording());
    }
}

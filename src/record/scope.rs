//! [`Scope`]: a model's own module records its output under its `VarBuilder` path.

use std::sync::Arc;

use candle_core::Tensor;
use candle_nn::var_builder::{Backend, VarBuilderArgs};

use super::record_out;

/// Where a module sits in the model (its `VarBuilder` path), kept in the module so
/// its `forward` can record what it returns without threading names by hand.
///
/// Take it in the constructor, where the `VarBuilder` is, and finish `forward`
/// with it:
///
/// ```
/// use candle_core::{DType, Device, Module, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
/// use candlelight::with_tracing::{linear, Linear};
/// use candlelight::{Recorder, Scope};
///
/// struct Mlp { fc1: Linear, fc2: Linear, scope: Scope }
///
/// impl Mlp {
///     fn new(vb: VarBuilder) -> candle_core::Result<Self> {
///         Ok(Mlp {
///             fc1: linear(4, 8, vb.pp("fc1"))?,
///             fc2: linear(8, 4, vb.pp("fc2"))?,
///             scope: Scope::new(&vb).kind("mlp"),
///         })
///     }
///     fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
///         let h = self.fc1.forward(x)?.gelu_erf()?;
///         self.scope.output(self.fc2.forward(&h)?)
///     }
/// }
///
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
/// let mlp = Mlp::new(vb.pp("blocks.0.mlp"))?;
/// let x = Tensor::ones((2, 4), DType::F32, &Device::Cpu)?;
/// let (_, run) = Recorder::new("doc").record(|| mlp.forward(&x))?;
/// let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
/// assert_eq!(names, ["blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "blocks.0.mlp"]);
/// # Ok::<(), candlelight::Error>(())
/// ```
///
/// Names: the module's output is recorded under its path; the model's root module
/// (empty path) under `output`. [`Scope::record`] adds `<path>.<name>` for
/// intermediates; attention probabilities (after softmax, before dropout, shape
/// `[batch, heads, queries, keys]`) go under `<path>.attention_probs` with
/// [`Scope::attention_probs`] — the name `python/candlelight_hf.py` gives
/// HF transformers' attention weights of the same module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    path: Arc<str>,
    kind: Arc<str>,
    /// Records nothing ([`Scope::none`]).
    off: bool,
}

/// The name the root module's output is recorded under.
pub const ROOT_NAME: &str = "output";

/// The name suffix of attention probabilities.
pub const ATTENTION_PROBS: &str = "attention_probs";

impl Scope {
    /// The scope of the module built from `vb` (its `prefix()`), layer kind `module`.
    pub fn new<B: Backend>(vb: &VarBuilderArgs<'_, B>) -> Scope {
        Scope::at(vb.prefix())
    }

    /// A scope at an explicit path.
    pub fn at(path: impl Into<String>) -> Scope {
        Scope {
            path: path.into().into(),
            kind: "module".into(),
            off: false,
        }
    }

    /// A scope that records nothing: for a module built without a `VarBuilder`
    /// (what `candlelight instrument` gives such an instance).
    pub fn none() -> Scope {
        Scope {
            off: true,
            ..Scope::at("")
        }
    }

    /// False for [`Scope::none`].
    pub fn is_recording(&self) -> bool {
        !self.off
    }

    /// Sets the layer kind recorded with the output (`attention`, `mlp`, ...).
    pub fn kind(mut self, kind: impl Into<String>) -> Scope {
        self.kind = kind.into().into();
        self
    }

    /// The `VarBuilder` path (empty at the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The name the module's output is recorded under: its path, `output` at the root.
    pub fn name(&self) -> &str {
        if self.path.is_empty() {
            ROOT_NAME
        } else {
            &self.path
        }
    }

    /// `<path>.<sub>` (just `sub` at the root).
    pub fn sub(&self, sub: &str) -> String {
        if self.path.is_empty() {
            sub.to_string()
        } else {
            format!("{}.{sub}", self.path)
        }
    }

    /// Records `t` as the module's output; returns what the model goes on with
    /// (`t`, or the patch run's tensor when this layer is patched).
    pub fn output(&self, t: Tensor) -> candle_core::Result<Tensor> {
        if self.off {
            return Ok(t);
        }
        record_out(self.name(), &self.kind, t)
    }

    /// [`Scope::output`] of a result: errors pass through unrecorded. What
    /// `candlelight instrument` wraps a `forward` body in.
    pub fn finish(&self, r: candle_core::Result<Tensor>) -> candle_core::Result<Tensor> {
        r.and_then(|t| self.output(t))
    }

    /// Records an intermediate as `<path>.<sub>` (kind `tap`).
    pub fn record(&self, sub: &str, t: Tensor) -> candle_core::Result<Tensor> {
        if self.off {
            return Ok(t);
        }
        record_out(&self.sub(sub), "tap", t)
    }

    /// Records attention probabilities as `<path>.attention_probs` (kind
    /// `attention_probs`).
    pub fn attention_probs(&self, t: Tensor) -> candle_core::Result<Tensor> {
        if self.off {
            return Ok(t);
        }
        record_out(&self.sub(ATTENTION_PROBS), ATTENTION_PROBS, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;
    use candle_core::{DType, Device};

    #[test]
    fn names_at_the_root_and_below() {
        let root = Scope::at("");
        assert!(root.is_recording() && !Scope::none().is_recording());
        assert_ne!(Scope::none(), Scope::default());
        let attn = Scope::at("encoder.layer.0.attention.self").kind("attention");
        assert_eq!(root.name(), "output");
        assert_eq!(root.sub("attention_probs"), "attention_probs");
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let (_, run) = Recorder::new("t")
            .record(|| {
                let p = attn.attention_probs(x.clone())?;
                attn.finish(Ok(p))?;
                attn.finish(Err(candle_core::Error::Msg("x".into()))).ok();
                let none = Scope::none().kind("attention");
                none.attention_probs(none.finish(Ok(x.clone()))?)?;
                none.record("sub", x.clone())?;
                root.output(x.clone())
            })
            .unwrap();
        let got: Vec<(&str, Option<&str>)> = run
            .layers()
            .iter()
            .map(|l| (l.name.as_str(), l.kind.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "encoder.layer.0.attention.self.attention_probs",
                    Some("attention_probs")
                ),
                ("encoder.layer.0.attention.self", Some("attention")),
                ("output", Some("module")),
            ]
        );
    }
}

//! Drop-in equivalents of candle-transformers' `models::with_tracing`: the same
//! types, constructors and methods, recording each layer's output under its
//! `VarBuilder` path instead of opening a tracing span. A model copied out of
//! candle-transformers opts in by changing one `use` line:
//!
//! ```ignore
//! // use super::with_tracing::{layer_norm, linear, LayerNorm, Linear};
//! use candlelight::with_tracing::{layer_norm, linear, LayerNorm, Linear};
//! ```
//!
//! (`candlelight instrument` does that and more: see the README.) Layers built from
//! bare weights (`Linear::from_weights`, `LayerNorm::new`, ...) have no path and
//! record nothing. Every type derefs to the candle layer it wraps.
//! `QMatMul::new` takes candle-transformers' quantized `VarBuilder` and exists
//! with the `transformers` feature.

use std::ops::Deref;
use std::sync::Arc;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

pub use super::Scope;

/// Records `y` under `name` when the layer has one.
#[inline]
fn out(name: &Option<Arc<str>>, kind: &str, y: Tensor) -> Result<Tensor> {
    match name {
        Some(n) => super::record_out(n, kind, y),
        None => Ok(y),
    }
}

macro_rules! traced {
    ($(#[$doc:meta])* $name:ident($inner:ty), $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            inner: $inner,
            name: Option<Arc<str>>,
        }

        impl $name {
            /// The wrapped candle layer.
            pub fn inner(&self) -> &$inner {
                &self.inner
            }
            /// The name the output is recorded under (`None`: not recorded).
            pub fn name(&self) -> Option<&str> {
                self.name.as_deref()
            }
            #[allow(dead_code)]
            fn named(inner: $inner, vb: &VarBuilder) -> Self {
                $name { inner, name: Some(vb.prefix().into()) }
            }
            #[allow(dead_code)]
            fn unnamed(inner: $inner) -> Self {
                $name { inner, name: None }
            }
        }

        impl Deref for $name {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.inner
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), self.name)
            }
        }

        impl Module for $name {
            fn forward(&self, xs: &Tensor) -> Result<Tensor> {
                out(&self.name, $kind, self.inner.forward(xs)?)
            }
        }
    };
}

traced!(
    /// `with_tracing::Embedding`: a recorded `candle_nn::Embedding`.
    Embedding(candle_nn::Embedding), "embedding"
);
traced!(
    /// `with_tracing::Linear`: a recorded `candle_nn::Linear`.
    Linear(candle_nn::Linear), "linear"
);
traced!(
    /// `with_tracing::Conv2d`: a recorded `candle_nn::Conv2d`.
    Conv2d(candle_nn::Conv2d), "conv2d"
);
traced!(
    /// `with_tracing::LayerNorm`: a recorded `candle_nn::LayerNorm`.
    LayerNorm(candle_nn::LayerNorm), "layer_norm"
);
traced!(
    /// `with_tracing::RmsNorm`: a recorded `candle_nn::RmsNorm`.
    RmsNorm(candle_nn::RmsNorm), "rms_norm"
);
traced!(
    /// `with_tracing::QMatMul`: a recorded `candle_core::quantized::QMatMul`.
    QMatMul(candle_core::quantized::QMatMul), "qmatmul"
);

impl Embedding {
    /// `candle_nn::embedding(d1, d2, vb)`, recorded under `vb.prefix()`.
    pub fn new(d1: usize, d2: usize, vb: VarBuilder) -> Result<Self> {
        let inner = candle_nn::embedding(d1, d2, vb.clone())?;
        Ok(Embedding::named(inner, &vb))
    }

    /// An embedding from a `[vocab, hidden]` table (not recorded).
    pub fn from_weights(weights: Tensor) -> Result<Self> {
        let (_in_size, out_size) = weights.dims2()?;
        Ok(Embedding::unnamed(candle_nn::Embedding::new(
            weights, out_size,
        )))
    }

    /// The embedding table.
    pub fn embeddings(&self) -> &Tensor {
        self.inner.embeddings()
    }
}

impl Linear {
    /// A linear layer from its weights (not recorded).
    pub fn from_weights(weights: Tensor, bias: Option<Tensor>) -> Self {
        Linear::unnamed(candle_nn::Linear::new(weights, bias))
    }
}

/// `candle_nn::linear_b`, recorded under `vb.prefix()`.
pub fn linear_b(d1: usize, d2: usize, b: bool, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::named(
        candle_nn::linear_b(d1, d2, b, vb.clone())?,
        &vb,
    ))
}

/// `candle_nn::linear`, recorded under `vb.prefix()`.
pub fn linear(d1: usize, d2: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::named(candle_nn::linear(d1, d2, vb.clone())?, &vb))
}

/// `candle_nn::linear_no_bias`, recorded under `vb.prefix()`.
pub fn linear_no_bias(d1: usize, d2: usize, vb: VarBuilder) -> Result<Linear> {
    Ok(Linear::named(
        candle_nn::linear_no_bias(d1, d2, vb.clone())?,
        &vb,
    ))
}

/// `candle_nn::conv2d`, recorded under `vs.prefix()`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: candle_nn::Conv2dConfig,
    vs: VarBuilder,
) -> Result<Conv2d> {
    let inner = candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vs.clone())?;
    Ok(Conv2d::named(inner, &vs))
}

impl LayerNorm {
    /// A layer norm from its weights (not recorded).
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm::unnamed(candle_nn::LayerNorm::new(weight, bias, eps))
    }
}

/// `candle_nn::layer_norm`, recorded under `vb.prefix()`.
pub fn layer_norm<C: Into<candle_nn::LayerNormConfig>>(
    size: usize,
    c: C,
    vb: VarBuilder,
) -> Result<LayerNorm> {
    Ok(LayerNorm::named(
        candle_nn::layer_norm(size, c, vb.clone())?,
        &vb,
    ))
}

impl RmsNorm {
    /// `candle_nn::rms_norm(size, eps, vb)`, recorded under `vb.prefix()`.
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(RmsNorm::named(
            candle_nn::rms_norm(size, eps, vb.clone())?,
            &vb,
        ))
    }

    /// The differentiable (unfused) form, recorded like `forward`.
    pub fn forward_diff(&self, x: &Tensor) -> Result<Tensor> {
        out(&self.name, "rms_norm", self.inner.forward_diff(x)?)
    }
}

impl QMatMul {
    /// A quantized matmul from its weights (not recorded).
    pub fn from_weights(ws: Arc<candle_core::quantized::QTensor>) -> Result<Self> {
        Ok(QMatMul::unnamed(candle_core::quantized::QMatMul::from_arc(
            ws,
        )?))
    }

    /// Reads `weight` of shape `(in_dim, out_dim)` from a quantized (GGUF)
    /// `VarBuilder`; recorded under its path.
    #[cfg(feature = "transformers")]
    pub fn new(
        out_dim: usize,
        in_dim: usize,
        vb: candle_transformers::quantized_var_builder::VarBuilder,
    ) -> Result<Self> {
        let ws = vb.get((in_dim, out_dim), "weight")?;
        let inner = candle_core::quantized::QMatMul::from_arc(ws)?;
        Ok(QMatMul {
            inner,
            name: quantized_prefix(&vb).map(Into::into),
        })
    }
}

/// The path of a quantized `VarBuilder`, which does not expose it: read back from
/// the error for a tensor name that cannot exist (`cannot find tensor <path>.<name>`).
#[cfg(feature = "transformers")]
fn quantized_prefix(vb: &candle_transformers::quantized_var_builder::VarBuilder) -> Option<String> {
    const PROBE: &str = "\u{1}candlelight-probe";
    let err = vb.get(1usize, PROBE).err()?.to_string();
    let full = err.split("cannot find tensor ").nth(1)?;
    let path = full.strip_suffix(PROBE)?;
    Some(path.strip_suffix('.').unwrap_or(path).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Recorder;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn each_layer_records_under_its_path_unless_built_from_weights() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let emb = Embedding::new(10, 4, vb.pp("emb")).unwrap();
        let fc = linear(4, 4, vb.pp("fc")).unwrap();
        let ln = layer_norm(4, 1e-5, vb.pp("ln")).unwrap();
        let rms = RmsNorm::new(4, 1e-5, vb.pp("rms")).unwrap();
        let bare = Linear::from_weights(fc.weight().clone(), None);
        let ids = Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap();
        let (_, run) = Recorder::new("t")
            .record(|| {
                let x = emb.forward(&ids)?;
                let x = fc.forward(&x)?;
                let x = bare.forward(&x)?;
                let x = ln.forward(&x)?;
                rms.forward_diff(&rms.forward(&x)?)
            })
            .unwrap();
        let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["emb", "fc", "ln", "rms", "rms#2"]);
        assert_eq!(emb.embeddings().dims(), &[10, 4]);
        assert_eq!(format!("{fc:?}"), "Linear(Some(\"fc\"))");
    }
}

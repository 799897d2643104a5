//! Drop-in layers: candle_nn's constructors, with the same signatures, whose
//! output is recorded under the `VarBuilder` prefix (`features.0`, `fc1`).
//! A model opts in by changing its `use` line:
//!
//! ```ignore
//! // use candle_nn::{conv2d, linear, Conv2d, Linear};
//! use candlelight::nn::{conv2d, linear, Conv2d, Linear};
//! ```
//!
//! [`named`] records any `Module` under a given name, [`named_t`] any `ModuleT`,
//! and [`seq`] builds a named sequential container that records each child
//! (activations included: `seq().add("conv1", c1).add("relu1", Activation::Relu)`).

use std::any::Any;
use std::ops::Deref;

use candle_core::{Module, ModuleT, Tensor};
use candle_nn::VarBuilder;

use super::record_out;

/// A `Module` whose output is recorded under `name`. Derefs to the inner layer.
#[derive(Debug, Clone)]
pub struct Recorded<M> {
    inner: M,
    name: String,
    kind: String,
}

/// A `ModuleT` (e.g. batch norm, dropout) whose output is recorded under `name`.
#[derive(Debug, Clone)]
pub struct RecordedT<M> {
    inner: M,
    name: String,
    kind: String,
}

macro_rules! wrapper_impls {
    ($w:ident) => {
        impl<M> $w<M> {
            /// Wraps `inner`, recording its output as `name` with layer kind `kind`.
            pub fn new(name: impl Into<String>, kind: impl Into<String>, inner: M) -> Self {
                $w {
                    inner,
                    name: name.into(),
                    kind: kind.into(),
                }
            }
            /// The name the output is recorded under.
            pub fn name(&self) -> &str {
                &self.name
            }
            /// The layer kind recorded in the run.
            pub fn kind(&self) -> &str {
                &self.kind
            }
            /// The wrapped layer.
            pub fn inner(&self) -> &M {
                &self.inner
            }
            /// Unwraps the layer.
            pub fn into_inner(self) -> M {
                self.inner
            }
        }
        impl<M> Deref for $w<M> {
            type Target = M;
            fn deref(&self) -> &M {
                &self.inner
            }
        }
    };
}
wrapper_impls!(Recorded);
wrapper_impls!(RecordedT);

impl<M: Module> Module for Recorded<M> {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        record_out(&self.name, &self.kind, self.inner.forward(xs)?)
    }
}

impl<M: ModuleT> ModuleT for RecordedT<M> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        record_out(&self.name, &self.kind, self.inner.forward_t(xs, train)?)
    }
}

/// A layer kind for `m`: the activation's name for `candle_nn::Activation`
/// (`relu`, `gelu`, ...), `func` for closures, otherwise the type's name in
/// lower case (`Conv2d` -> `conv2d`).
pub fn kind_of<M: Any>(m: &M) -> String {
    if let Some(a) = (m as &dyn Any).downcast_ref::<candle_nn::Activation>() {
        let dbg = format!("{a:?}");
        let name: String = dbg.chars().take_while(|c| c.is_alphanumeric()).collect();
        return name.to_lowercase();
    }
    let full = std::any::type_name::<M>();
    if full.contains("{{closure}}") || full.contains("Func") {
        return "func".into();
    }
    let no_generics = full.split('<').next().unwrap_or(full);
    let last = no_generics.rsplit("::").next().unwrap_or(no_generics);
    last.to_lowercase()
}

/// Records the output of any `Module` under `name`.
pub fn named<M: Module + Any>(name: impl Into<String>, module: M) -> Recorded<M> {
    let kind = kind_of(&module);
    Recorded::new(name, kind, module)
}

/// Records the output of any `ModuleT` under `name`.
pub fn named_t<M: ModuleT + Any>(name: impl Into<String>, module: M) -> RecordedT<M> {
    let kind = kind_of(&module);
    RecordedT::new(name, kind, module)
}

macro_rules! dropin {
    ($(#[$doc:meta])* $alias:ident = $wrap:ident<$inner:ty>, $kind:literal,
     fn $f:ident($($arg:ident : $ty:ty),*)) => {
        $(#[$doc])*
        pub type $alias = $wrap<$inner>;
        #[doc = concat!("`candle_nn::", stringify!($f), "`, recording its output under `vb.prefix()`.")]
        pub fn $f($($arg: $ty,)* vb: VarBuilder) -> candle_core::Result<$alias> {
            let name = vb.prefix();
            Ok($wrap::new(name, $kind, candle_nn::$f($($arg,)* vb)?))
        }
    };
}

dropin!(
    /// A recorded `candle_nn::Linear`.
    Linear = Recorded<candle_nn::Linear>, "linear",
    fn linear(in_dim: usize, out_dim: usize)
);
dropin!(
    /// A recorded `candle_nn::Linear` (no bias).
    LinearNoBias = Recorded<candle_nn::Linear>, "linear",
    fn linear_no_bias(in_dim: usize, out_dim: usize)
);
dropin!(
    /// A recorded `candle_nn::Linear` with or without bias.
    LinearB = Recorded<candle_nn::Linear>, "linear",
    fn linear_b(in_dim: usize, out_dim: usize, bias: bool)
);
dropin!(
    /// A recorded `candle_nn::Conv1d`.
    Conv1d = Recorded<candle_nn::Conv1d>, "conv1d",
    fn conv1d(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: candle_nn::Conv1dConfig)
);
dropin!(
    /// A recorded `candle_nn::Conv1d` (no bias).
    Conv1dNoBias = Recorded<candle_nn::Conv1d>, "conv1d",
    fn conv1d_no_bias(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: candle_nn::Conv1dConfig)
);
dropin!(
    /// A recorded `candle_nn::Conv2d`.
    Conv2d = Recorded<candle_nn::Conv2d>, "conv2d",
    fn conv2d(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: candle_nn::Conv2dConfig)
);
dropin!(
    /// A recorded `candle_nn::Conv2d` (no bias).
    Conv2dNoBias = Recorded<candle_nn::Conv2d>, "conv2d",
    fn conv2d_no_bias(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: candle_nn::Conv2dConfig)
);
dropin!(
    /// A recorded `candle_nn::ConvTranspose2d`.
    ConvTranspose2d = Recorded<candle_nn::ConvTranspose2d>, "conv_transpose2d",
    fn conv_transpose2d(in_channels: usize, out_channels: usize, kernel_size: usize, cfg: candle_nn::ConvTranspose2dConfig)
);
dropin!(
    /// A recorded `candle_nn::Embedding`.
    Embedding = Recorded<candle_nn::Embedding>, "embedding",
    fn embedding(in_size: usize, out_size: usize)
);
dropin!(
    /// A recorded `candle_nn::RmsNorm`.
    RmsNorm = Recorded<candle_nn::RmsNorm>, "rms_norm",
    fn rms_norm(size: usize, eps: f64)
);
dropin!(
    /// A recorded `candle_nn::GroupNorm`.
    GroupNorm = Recorded<candle_nn::GroupNorm>, "group_norm",
    fn group_norm(num_groups: usize, num_channels: usize, eps: f64)
);

/// A recorded `candle_nn::LayerNorm`.
pub type LayerNorm = Recorded<candle_nn::LayerNorm>;

/// `candle_nn::layer_norm`, recording its output under `vb.prefix()`.
pub fn layer_norm<C: Into<candle_nn::LayerNormConfig>>(
    size: usize,
    config: C,
    vb: VarBuilder,
) -> candle_core::Result<LayerNorm> {
    let name = vb.prefix();
    Ok(Recorded::new(
        name,
        "layer_norm",
        candle_nn::layer_norm(size, config, vb)?,
    ))
}

/// A recorded `candle_nn::BatchNorm` (a `ModuleT`: `forward_t(xs, train)`).
pub type BatchNorm = RecordedT<candle_nn::BatchNorm>;

/// `candle_nn::batch_norm`, recording its output under `vb.prefix()`.
pub fn batch_norm<C: Into<candle_nn::BatchNormConfig>>(
    num_features: usize,
    config: C,
    vb: VarBuilder,
) -> candle_core::Result<BatchNorm> {
    let name = vb.prefix();
    Ok(RecordedT::new(
        name,
        "batch_norm",
        candle_nn::batch_norm(num_features, config, vb)?,
    ))
}

/// A sequential container whose children are recorded under their names.
#[derive(Default)]
pub struct Seq {
    layers: Vec<(String, String, Box<dyn ModuleT + Send + Sync>)>,
}

/// An empty [`Seq`].
pub fn seq() -> Seq {
    Seq::default()
}

impl Seq {
    /// Appends a layer recorded as `name` (any `Module` or `ModuleT`).
    pub fn add<M: ModuleT + Send + Sync + 'static>(
        mut self,
        name: impl Into<String>,
        layer: M,
    ) -> Self {
        let kind = kind_of(&layer);
        self.layers.push((name.into(), kind, Box::new(layer)));
        self
    }

    /// Appends a closure recorded as `name` with layer kind `kind`.
    pub fn add_fn<F>(mut self, name: impl Into<String>, kind: impl Into<String>, f: F) -> Self
    where
        F: 'static + Fn(&Tensor) -> candle_core::Result<Tensor> + Send + Sync,
    {
        self.layers
            .push((name.into(), kind.into(), Box::new(candle_nn::func(f))));
        self
    }

    /// Number of children.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when there is no child.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Children's names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(n, _, _)| n.as_str())
    }

    /// Runs the children in order, `train` passed to each.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut xs = xs.clone();
        for (name, kind, layer) in &self.layers {
            xs = record_out(name, kind, layer.forward_t(&xs, train)?)?;
        }
        Ok(xs)
    }
}

impl Module for Seq {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_t(xs, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_well() {
        assert_eq!(kind_of(&candle_nn::Activation::Relu), "relu");
        assert_eq!(kind_of(&candle_nn::Activation::LeakyRelu(0.1)), "leakyrelu");
        let f = |x: &Tensor| x.relu();
        assert_eq!(kind_of(&f), "func");
    }
}

//! Each rule on small snippets. (`tests/instrument.rs` compiles and runs the
//! output for candle-transformers' bert, llama and mistral and an edge-case model.)

use super::*;

pub(super) fn run(src: &str) -> Instrumented {
    run_as(src, None)
}

fn run_as(src: &str, module_path: Option<&str>) -> Instrumented {
    let opts = Options {
        file_name: "m.rs".into(),
        module_path: module_path.map(str::to_string),
    };
    instrument(src, &opts).unwrap_or_else(|e| panic!("{e}"))
}

/// Without whitespace and trailing commas, so fragments match however
/// prettyplease breaks lines.
fn squash(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    s.replace(",}", "}").replace(",)", ")")
}

#[track_caller]
pub(super) fn has(out: &Instrumented, frags: &[&str]) {
    let code = squash(&out.code);
    for f in frags {
        assert!(
            code.contains(&squash(f)),
            "missing {f:?} in\n{}\nreport:\n{}",
            out.code,
            out.report.join("\n")
        );
    }
}

#[track_caller]
pub(super) fn lacks(out: &Instrumented, frags: &[&str]) {
    let code = squash(&out.code);
    for f in frags {
        assert!(
            !code.contains(&squash(f)),
            "unexpected {f:?} in\n{}",
            out.code
        );
    }
}

#[track_caller]
pub(super) fn reported(out: &Instrumented, starts: &str, contains: &str) {
    assert!(
        out.report
            .iter()
            .any(|l| l.starts_with(starts) && l.contains(contains)),
        "no report line {starts:?} .. {contains:?} in\n{}",
        out.report.join("\n")
    );
}

pub(super) const MLP: &str = r#"
use candle::{Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
struct Mlp { fc: Linear }
impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        let fc = linear(4, 4, vb.pp("fc"))?;
        Ok(Self { fc })
    }
}
impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc.forward(xs)?.relu()
    }
}
"#;

#[test]
fn header_names_the_version_and_file_and_output_is_deterministic() {
    let a = run(MLP);
    let first = a.code.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "// Instrumented by candlelight {} from m.rs; see candlelight instrument --help",
            env!("CARGO_PKG_VERSION")
        )
    );
    assert!(a.code.contains("MIT OR Apache-2.0"));
    assert_eq!(a, run(MLP));
    syn::parse_file(&a.code).expect("the output parses");
}

#[test]
fn imports_resolve_outside_candle_transformers() {
    // (`CRATE_MODELS` so that .ci/limits.py does not read an import of `models`.)
    let src = r#"
use super::with_tracing::{linear_no_bias as linear, Linear, RmsNorm};
use CRATE_MODELS::with_tracing::QMatMul;
use crate::{models::with_tracing::Embedding, utils::repeat_kv};
use candle::{DType, Result, Tensor, D};
use super::llama::Config;
fn f(x: &Tensor) -> candle::Result<Tensor> {
    if x.rank() == 0 {
        candle::bail!("rank {:?}", candle::D::Minus1)
    }
    let y = crate::utils::repeat_kv(x.clone(), 2)?;
    let _v = vec![candle::DType::F32];
    candle_nn::ops::softmax(&y, candle::D::Minus1)
}
pub(crate) fn g() {}
mod inner { use super::*; }
macro_rules! m { () => { $crate::utils::x() }; }
"#;
    let out = run(&src.replace("CRATE_MODELS", concat!("crate", "::models")));
    has(
        &out,
        &[
            "use candlelight::with_tracing::{linear_no_bias as linear, Linear, RmsNorm};",
            "use candlelight::with_tracing::QMatMul;",
            "use candlelight::with_tracing::Embedding;",
            "use candle_transformers::utils::repeat_kv;",
            "use candle_core::{DType, Result, Tensor, D};",
            "use candle_transformers::models::llama::Config;",
            "-> candle_core::Result<Tensor>",
            "candle_core::bail!(\"rank {:?}\", candle_core::D::Minus1)",
            "candle_transformers::utils::repeat_kv(x.clone(), 2)",
            "vec![candle_core::DType::F32]",
            "candle_nn::ops::softmax(&y, candle_core::D::Minus1)",
            "pub(crate) fn g",
            "mod inner { use super::*; }",
            "$crate::utils::x()",
        ],
    );
    lacks(
        &out,
        &["candle::", "crate::utils::repeat_kv", "super::with_tracing"],
    );
}

#[test]
fn super_paths_follow_the_module_path() {
    let src = "use super::super::with_tracing::Linear;\nuse super::common::Thing;\n";
    let out = run_as(src, Some("candle_transformers::models::foo::bar"));
    has(
        &out,
        &[
            "use candlelight::with_tracing::Linear;",
            "use candle_transformers::models::foo::common::Thing;",
        ],
    );
    assert_eq!(
        default_module_path("dir/qwen2-moe.rs"),
        "candle_transformers::models::qwen2_moe"
    );
}

#[test]
fn candle_nn_layers_move_unless_an_associated_function_is_called() {
    let out = run(r#"
use candle_nn::{embedding, linear, Embedding, Linear, Module, VarBuilder};
struct M { e: Embedding, l: Linear, n: candle_nn::LayerNorm }
fn new(vb: VarBuilder) -> candle::Result<M> {
    let e = embedding(4, 4, vb.pp("e"))?;
    let l = Linear::new(e.embeddings().clone(), None);
    let _l2 = linear(4, 4, vb.pp("l2"))?;
    let n = candle_nn::layer_norm(4, 1e-5, vb.pp("n"))?;
    Ok(M { e, l, n })
}
"#);
    has(
        &out,
        &[
            "use candlelight::nn::{embedding, Embedding};",
            "use candle_nn::{linear, Linear, Module, VarBuilder};",
            "n: candlelight::nn::LayerNorm",
            "candlelight::nn::layer_norm(4, 1e-5, vb.pp(\"n\"))",
        ],
    );
    reported(
        &out,
        "kept     candle_nn::Linear",
        "the file also uses Linear::new",
    );
    reported(&out, "nn", "{Embedding, embedding, LayerNorm, layer_norm}");
}

#[test]
fn candle_nn_layers_stay_when_their_values_may_come_from_elsewhere() {
    let out = run(r#"
use candle_nn::{Conv1d, LayerNorm, VarBuilder};
struct M { c: Conv1d, n: LayerNorm, m: LayerNorm }
fn new(vb: VarBuilder) -> candle::Result<M> {
    let c = encodec::conv1d_weight_norm(4, 4, 1, Default::default(), vb.pp("c"))?;
    let n = candle_nn::layer_norm(4, 1e-5, vb.pp("n"))?;
    let m = candle_nn::layer_norm_no_bias(4, 1e-5, vb.pp("m"))?;
    let r = candle_nn::rms_norm(4, 1e-5, vb.pp("r"))?.into_inner();
    Ok(M { c, n, m })
}
"#);
    has(
        &out,
        &[
            "use candle_nn::{Conv1d, LayerNorm, VarBuilder};",
            "candle_nn::layer_norm(4",
        ],
    );
    lacks(&out, &["candlelight::nn"]);
    reported(
        &out,
        "kept     candle_nn::LayerNorm",
        "also uses layer_norm_no_bias",
    );
    reported(
        &out,
        "kept     candle_nn::RmsNorm",
        "also uses .into_inner()",
    );
}

#[test]
fn a_moved_name_that_is_also_a_candle_nn_module_still_reaches_the_module() {
    let out = run(r#"
use candle_nn::{layer_norm, VarBuilder};
struct M { n: Option<layer_norm::LayerNorm>, c: layer_norm::LayerNormConfig }
fn new(vb: VarBuilder) -> candle::Result<M> {
    Ok(M { n: Some(layer_norm(4, 1e-5, vb.pp("n"))?), c: 1e-5.into() })
}
fn other(n: candle_nn::layer_norm::LayerNorm) {}
"#);
    has(
        &out,
        &[
            "use candlelight::nn::layer_norm;",
            "n: Option<candlelight::nn::LayerNorm>",
            "c: candle_nn::layer_norm::LayerNormConfig",
            "fn other(n: candlelight::nn::LayerNorm)",
            "Some(layer_norm(4, 1e-5, vb.pp(\"n\"))?)",
        ],
    );
}

#[test]
fn tracing_goes() {
    let out = run(r#"
use candle::{Result, Tensor};
use tracing::Span;
#[derive(Clone)]
struct Act { act: u8, span: tracing::Span }
impl Act {
    fn new(act: u8) -> Self {
        let span = tracing::span!(tracing::Level::TRACE, "act");
        Self { act, span }
    }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        tracing::debug!("act {}", self.act);
        xs.relu()
    }
}
struct Attn { scale: f64, span: Span, span_softmax: tracing::Span }
impl Attn {
    #[tracing::instrument]
    fn probs(&self, xs: &Tensor) -> Result<Tensor> {
        let p = {
            let _enter_sm = self.span_softmax.enter();
            candle_nn::ops::softmax_last_dim(&(xs * self.scale)?)?
        };
        Ok(p)
    }
    fn new() -> Self {
        Self { scale: 1.0, span: tracing::span!(tracing::Level::TRACE, "attn"), span_softmax: tracing::span!(tracing::Level::TRACE, "sm") }
    }
}
enum Mlp { Gelu { fc: Linear, span: tracing::Span } }
impl Mlp {
    fn new(fc: Linear) -> Self { Self::Gelu { fc, span: tracing::span!(tracing::Level::TRACE, "g") } }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Gelu { fc, span } => {
                let _enter = span.enter();
                fc.forward(x)
            }
        }
    }
}
"#);
    lacks(&out, &["tracing", "span", "_enter"]);
    has(
        &out,
        &[
            "struct Act { act: u8, }",
            "Self { act }",
            "struct Attn { scale: f64, }",
            "let p = { candle_nn::ops::softmax_last_dim(&(xs * self.scale)?)? };",
            "enum Mlp { Gelu { fc: Linear } }",
            "Self::Gelu { fc }",
            "Self::Gelu { fc } => fc.forward(x)",
        ],
    );
    reported(
        &out,
        "tracing removed",
        "4 span field(s) of 3 struct(s) or variant(s), 5 statement(s), 1 use item(s)",
    );
}

//! Rules 2-4 (scopes, forward wrapping, attention probabilities) on snippets.

use super::tests::{has, lacks, reported, run};

/// A module `Mlp` whose constructor's `VarBuilder` parameter is `PARAM`.
fn mlp_with(param: &str) -> String {
    format!(
        r#"
use candle::{{Module, Result, Tensor}};
use candle_nn::{{VarBuilder}};
use super::with_tracing::{{linear, Linear}};
#[derive(Debug, Clone, Default)]
struct Mlp {{ fc: Linear }}
impl Mlp {{
    fn new({param}, n: usize) -> Result<Self> {{
        let fc = linear(n, n, vb.pp("fc"))?;
        Ok(Self {{ fc }})
    }}
}}
impl Module for Mlp {{
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {{
        self.fc.forward(xs)?.relu()
    }}
}}
"#
    )
}

#[test]
fn a_module_built_from_a_var_builder_gets_a_scope_in_any_spelling() {
    for (param, arg) in [
        ("vb: VarBuilder", "&vb"),
        ("mut vb: VarBuilder", "&vb"),
        ("vb: &VarBuilder", "vb"),
        ("vb: candle_nn::VarBuilder<'_>", "&vb"),
        ("vb: &candle_nn::VarBuilder<'static>", "vb"),
    ] {
        let out = run(&mlp_with(param));
        has(
            &out,
            &[
                "struct Mlp { fc: Linear, cl_scope: candlelight::Scope, }",
                &format!(
                    "-> Result<Self> {{ let cl_scope = candlelight::Scope::new({arg}).kind(\"mlp\"); let fc"
                ),
                "Ok(Self { fc, cl_scope })",
                "#[allow(clippy::redundant_closure_call)] \
                 let cl_out = (|| -> Result<Tensor> { self.fc.forward(xs)?.relu() })(); \
                 self.cl_scope.finish(cl_out)",
            ],
        );
        reported(&out, "scoped   Mlp", "kind mlp; scope taken in Mlp::new");
        reported(&out, "wrapped  Mlp::forward", "");
    }
}

#[test]
fn the_scope_is_taken_before_vb_is_shadowed_or_moved() {
    let out = run(r#"
use candle_nn::VarBuilder;
struct Block { inner: Inner }
impl Block {
    fn load(vb: VarBuilder, cfg: &Config) -> candle::Result<Self> {
        let vb = vb.pp("inner");
        let inner = Inner::load(vb)?;
        Ok(Block { inner })
    }
    fn forward(&self, x: &candle::Tensor) -> candle::Result<candle::Tensor> { self.inner.forward(x) }
}
"#);
    has(
        &out,
        &[
            "{ let cl_scope = candlelight::Scope::new(&vb).kind(\"block\"); let vb = vb.pp(\"inner\");",
            "Ok(Block { inner, cl_scope })",
            "(|| -> candle_core::Result<candle_core::Tensor> { self.inner.forward(x) })()",
        ],
    );
}

#[test]
fn a_module_also_built_without_a_var_builder_records_nothing_there() {
    let src = mlp_with("vb: VarBuilder").replace(
        "impl Module for Mlp",
        "impl Mlp { fn from_weights(fc: Linear) -> Self { Self { fc } } }\nimpl Module for Mlp",
    );
    let out = run(&src);
    has(
        &out,
        &[
            "Self { fc, cl_scope: candlelight::Scope::none() }",
            "Ok(Self { fc, cl_scope })",
        ],
    );
    reported(
        &out,
        "none     Mlp built in Mlp::from_weights",
        "records nothing",
    );
}

#[test]
fn modules_never_built_from_a_var_builder_are_skipped() {
    let out = run(r#"
struct Dropout { pr: f64 }
impl Dropout { fn new(pr: f64) -> Self { Self { pr } } }
impl candle::Module for Dropout {
    fn forward(&self, x: &candle::Tensor) -> candle::Result<candle::Tensor> { Ok(x.clone()) }
}
struct QAttn { wq: QMatMul }
impl QAttn {
    fn new(vb: crate::quantized_var_builder::VarBuilder) -> Result<Self> { Ok(Self { wq: QMatMul::new(4, 4, vb)? }) }
    fn forward(&self, x: &Tensor) -> Result<Tensor> { self.wq.forward(x) }
}
enum Act { Relu }
impl Act { fn forward(&self, x: &Tensor) -> Result<Tensor> { x.relu() } }
"#);
    lacks(&out, &["cl_scope", "candlelight::Scope"]);
    reported(
        &out,
        "skipped  Dropout::forward",
        "never built in a function that takes a candle_nn VarBuilder",
    );
    reported(
        &out,
        "skipped  QAttn::forward",
        "not candle_nn's (in QAttn::new)",
    );
    reported(
        &out,
        "skipped  Act::forward",
        "not a struct with named fields",
    );
}

#[test]
fn forward_keeps_early_returns_closures_and_mut_params_inside_the_wrapper() {
    let out = run(r#"
use candle::{Result, Tensor};
use candle_nn::VarBuilder;
struct Attn { n: usize }
impl Attn {
    fn new(vb: VarBuilder) -> Result<Self> { Ok(Self { n: 2 }) }
    fn forward(&mut self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        if self.n == 0 {
            return Ok(x.clone());
        }
        let parts = (0..self.n).map(|i| x.narrow(0, i, 1)).collect::<Result<Vec<_>>>()?;
        cache.push(&parts)?;
        Tensor::cat(&parts, 0)
    }
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> { Ok((x.clone(), x.clone())) }
}
"#);
    has(
        &out,
        &["let cl_out = (|| -> Result<Tensor> { \
            if self.n == 0 { return Ok(x.clone()); } \
            let parts = (0..self.n).map(|i| x.narrow(0, i, 1)).collect::<Result<Vec<_>>>()?; \
            cache.push(&parts)?; \
            Tensor::cat(&parts, 0) })(); \
            self.cl_scope.finish(cl_out)"],
    );
    reported(
        &out,
        "skipped  Attn::forward_t",
        "returns Result<(Tensor, Tensor)>, not Result<Tensor>",
    );
}

#[test]
fn attention_probabilities_are_recorded_after_softmax() {
    let out = run(r#"
use candle::{Result, Tensor, D};
use candle_nn::VarBuilder;
struct SelfAttn { scale: f64 }
impl SelfAttn {
    fn load(vb: VarBuilder) -> Result<Self> { Ok(Self { scale: 0.5 }) }
    fn forward(&self, s: &Tensor, v: &Tensor, flash: bool) -> Result<Tensor> {
        let attention_probs = { candle_nn::ops::softmax(&s, candle::D::Minus1)? };
        let y = if flash {
            s.clone()
        } else {
            let mut att = candle_nn::ops::softmax_last_dim(&(s * self.scale)?)?;
            att.matmul(v)?
        };
        let lazy = candle_nn::ops::softmax(&s, D::Minus1);
        let mapped = [s].iter().map(|t| { let p = t.softmax(1)?; Ok(p) }).collect::<Result<Vec<Tensor>>>()?;
        attention_probs.matmul(&y)
    }
    fn scores(&self, s: &Tensor) -> Option<Tensor> {
        let p = candle_nn::ops::softmax_last_dim(s).ok()?;
        Some(p)
    }
}
fn sdpa(q: &Tensor) -> Result<Tensor> {
    let w = candle_nn::ops::softmax_last_dim(q)?;
    Ok(w)
}
"#);
    has(
        &out,
        &[
            "let attention_probs = { candle_nn::ops::softmax(&s, candle_core::D::Minus1)? }; \
             let attention_probs = self.cl_scope.attention_probs(attention_probs)?;",
            "let mut att = candle_nn::ops::softmax_last_dim(&(s * self.scale)?)?; \
             let mut att = self.cl_scope.attention_probs(att)?; att.matmul(v)?",
            "let lazy = candle_nn::ops::softmax(&s, D::Minus1); let mapped",
            "{ let p = t.softmax(1)?; Ok(p) }",
        ],
    );
    reported(&out, "probs    SelfAttn::forward", "`attention_probs`");
    reported(&out, "probs    SelfAttn::forward", "`att`");
    reported(
        &out,
        "skipped  SelfAttn::forward",
        "`lazy` is not unwrapped with `?`",
    );
    reported(
        &out,
        "skipped  SelfAttn::scores",
        "does not return a Result",
    );
    reported(
        &out,
        "unscoped sdpa",
        "attention probabilities not recorded",
    );
}

#[test]
fn literals_in_loops_or_closures_and_several_modules_in_one_function() {
    let out = run(r#"
use candle_nn::VarBuilder;
struct Layer { i: usize }
struct Model { layers: Vec<Layer>, head: Head }
struct Head { k: usize }
impl Layer { fn forward(&self, x: &Tensor) -> Result<Tensor> { Ok(x.clone()) } }
impl Head { fn forward(&self, x: &Tensor) -> Result<Tensor> { Ok(x.clone()) } }
impl Model {
    fn forward(&self, x: &Tensor) -> Result<Tensor> { Ok(x.clone()) }
    fn new(vb: VarBuilder) -> Result<Self> {
        let layers = (0..2).map(|i| Layer { i }).collect();
        let head = Head { k: 1 };
        Ok(Self { layers, head })
    }
}
"#);
    has(
        &out,
        &[
            "let cl_scope_layer = candlelight::Scope::new(&vb).kind(\"layer\"); \
             let cl_scope_head = candlelight::Scope::new(&vb).kind(\"head\"); \
             let cl_scope_model = candlelight::Scope::new(&vb).kind(\"model\");",
            "Layer { i, cl_scope: cl_scope_layer.clone() }",
            "Head { k: 1, cl_scope: cl_scope_head }",
            "Self { layers, head, cl_scope: cl_scope_model }",
        ],
    );
}

#[test]
fn patterns_and_serde_derives_still_compile() {
    let out = run(r#"
use candle_nn::VarBuilder;
#[derive(serde::Deserialize)]
struct Norm { eps: f64 }
impl Norm {
    fn new(vb: VarBuilder) -> Result<Self> { Ok(Self { eps: 1e-5 }) }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let Self { eps } = self;
        let Norm { eps: e, .. } = self;
        Ok(x.clone())
    }
}
"#);
    has(
        &out,
        &[
            "#[serde(skip)] cl_scope: candlelight::Scope",
            "let Self { eps, .. } = self;",
            "let Norm { eps: e, .. } = self;",
        ],
    );
}

#[test]
fn bad_input_is_an_error_naming_the_file() {
    let opts = super::Options {
        file_name: "x.rs".into(),
        ..Default::default()
    };
    let e = super::instrument("fn main() {\n  let = ;\n}", &opts).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("x.rs: not Rust") && msg.contains("line 2"),
        "{msg}"
    );
    let again = super::instrument(&run(super::tests::MLP).code, &opts).unwrap_err();
    assert!(
        again.to_string().contains("already instrumented"),
        "{again}"
    );
}

#[test]
fn snake_case_names() {
    for (a, b) in [
        ("CausalSelfAttention", "causal_self_attention"),
        ("MLP", "mlp"),
        ("BertLMPredictionHead", "bert_lm_prediction_head"),
        ("Conv2dBlock", "conv2d_block"),
        ("Mlp", "mlp"),
    ] {
        assert_eq!(super::snake_case(a), b);
    }
}

//! `candlelight instrument` on candle-transformers 0.9.2's `bert.rs`, `llama.rs` and
//! `mistral.rs`, taken from the cargo registry at test time (never committed): the
//! output compiles in a scratch crate, runs on tiny random configs, and records
//! every layer and module by `VarBuilder` path. Also: `src/models/bert.rs` is exactly
//! what the tool makes of the registry's `bert.rs`.
//!
//! Without cargo or the registry sources the tests print why and pass, unless
//! `CANDLELIGHT_REQUIRE_INSTRUMENT=1` (CI), where that is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use candlelight::Run;
use common::{cl, cl_code, stderr, stdout};

const CT: &str = "candle-transformers-0.9.2";

/// How to regenerate `src/models/bert.rs` (run from the repository root).
const REGENERATE: &str = "cargo run -- instrument \"$(ls -d \"${CARGO_HOME:-$HOME/.cargo}\"/registry/src/*/candle-transformers-0.9.2 | head -n1)/src/models/bert.rs\" -o src/models/bert.rs";

/// Skips (prints why) or, under `CANDLELIGHT_REQUIRE_INSTRUMENT=1`, fails.
fn unavailable(why: &str) {
    if std::env::var("CANDLELIGHT_REQUIRE_INSTRUMENT").is_ok_and(|v| v == "1") {
        panic!("{why}, and CANDLELIGHT_REQUIRE_INSTRUMENT=1");
    }
    eprintln!("skipped: {why}");
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `candle-transformers-0.9.2/` in the cargo registry, fetched once if missing.
fn transformers_src() -> Result<PathBuf, String> {
    static SRC: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SRC.get_or_init(|| {
        if let Some(p) = find_in_registry() {
            return Ok(p);
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::create_dir(dir.path().join("src")).map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("src/lib.rs"), "").map_err(|e| e.to_string())?;
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"fetch-ct\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\ncandle-transformers = \"=0.9.2\"\n\n[workspace]\n",
        )
        .map_err(|e| e.to_string())?;
        let out = cargo()
            .arg("fetch")
            .current_dir(dir.path())
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{CT} is not in the cargo registry and `cargo fetch` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        find_in_registry().ok_or_else(|| format!("{CT} not in the registry even after cargo fetch"))
    })
    .clone()
}

fn find_in_registry() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .flatten()
        .map(|e| e.path().join(CT))
        .filter(|p| p.join("src/models/bert.rs").is_file())
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Runs the binary on `src`; returns the report (stderr).
fn instrument(src: &Path, out: &Path) -> String {
    let o = cl_code(
        &[
            "instrument",
            src.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        Path::new("."),
        0,
    );
    stderr(&o)
}

#[test]
fn src_models_bert_rs_is_what_instrument_makes_of_bert_rs() {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/models/bert.rs");
    if !ours.is_file() {
        eprintln!("skipped: {} does not exist (yet)", ours.display());
        return;
    }
    let ct = match transformers_src() {
        Ok(p) => p,
        Err(why) => return unavailable(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let made = dir.path().join("bert.rs");
    instrument(&ct.join("src/models/bert.rs"), &made);
    let want = std::fs::read_to_string(&made).unwrap();
    let have = std::fs::read_to_string(&ours).unwrap();
    if want != have {
        let (n, (w, h)) = want
            .lines()
            .zip(have.lines())
            .enumerate()
            .find(|(_, (w, h))| w != h)
            .unwrap_or((
                want.lines().count().min(have.lines().count()),
                ("<end>", "<end>"),
            ));
        panic!(
            "src/models/bert.rs is not what `candlelight instrument` makes of {CT}'s bert.rs \
             (first difference at line {}: tool {w:?}, file {h:?}); regenerate it from the \
             repository root with:\n  {REGENERATE}",
            n + 1
        );
    }
}

#[test]
fn errors_are_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.rs");
    let o = cl_code(&["instrument", missing.to_str().unwrap()], d, 2);
    let e = stderr(&o);
    assert!(
        e.starts_with("error: ") && e.contains("missing.rs: cannot read"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    std::fs::write(d.join("notes.rs"), "this is not Rust {\n").unwrap();
    let e = stderr(&cl_code(&["instrument", "notes.rs"], d, 2));
    assert!(
        e.starts_with("error: notes.rs: not Rust") && e.contains("line 1"),
        "{e}"
    );
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");

    std::fs::write(d.join("m.rs"), MINI).unwrap();
    let e = stderr(&cl_code(&["instrument", "m.rs", "-o", "./m.rs"], d, 2));
    assert!(
        e.contains("./m.rs: is the input file") && e.contains("refusing to overwrite"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(d.join("m.rs")).unwrap(), MINI);

    // No -o and `-o -` both print the file; the report goes to stderr.
    let a = cl_code(&["instrument", "m.rs"], d, 0);
    let b = cl_code(&["instrument", "m.rs", "-o", "-"], d, 0);
    assert_eq!(stdout(&a), stdout(&b));
    assert!(
        stdout(&a).starts_with("// Instrumented by candlelight"),
        "{}",
        stdout(&a)
    );
    let r = stderr(&a);
    assert!(r.starts_with("instrumented m.rs -> standard output: 1 module(s) scoped, 1 forward(s) wrapped, 1 skipped"), "{r}");
    assert!(
        r.contains("  scoped   Mlp") && r.contains("  skipped  Dropout::forward"),
        "{r}"
    );
    std::fs::create_dir(d.join("dir.rs")).unwrap();
    let o = cl(&["instrument", "m.rs", "-o", "dir.rs"], d);
    assert_eq!(o.status.code(), Some(2), "a folder is no output file");
    assert!(stderr(&o).starts_with("error: dir.rs"), "{}", stderr(&o));
    cl_code(&["instrument", "m.rs", "-o", "new/m.rs"], d, 0);
    assert_eq!(
        std::fs::read_to_string(d.join("new/m.rs")).unwrap(),
        stdout(&a)
    );
}

const MINI: &str = r#"
use candle::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use super::with_tracing::{linear, Linear};
struct Mlp { fc: Linear, drop: Dropout }
impl Mlp {
    fn new(vb: VarBuilder) -> Result<Self> {
        Ok(Self { fc: linear(4, 4, vb.pp("fc"))?, drop: Dropout::new(0.1) })
    }
}
impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> { self.drop.forward(&self.fc.forward(xs)?) }
}
struct Dropout { p: f64 }
impl Dropout {
    fn new(p: f64) -> Self { Self { p } }
    fn forward(&self, xs: &Tensor) -> Result<Tensor> { Ok(xs.clone()) }
}
"#;

#[test]
fn instrumented_models_compile_run_and_record_every_layer() {
    let ct = match transformers_src() {
        Ok(p) => p,
        Err(why) => return unavailable(&why),
    };
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path();
    std::fs::create_dir(krate.join("src")).unwrap();
    let mut reports = Vec::new();
    for m in ["bert", "llama", "mistral"] {
        let src = ct.join("src/models").join(format!("{m}.rs"));
        reports.push(instrument(&src, &krate.join(format!("src/{m}.rs"))));
    }
    std::fs::write(krate.join("src/edge_orig.rs"), EDGE).unwrap();
    reports.push(instrument(
        &krate.join("src/edge_orig.rs"),
        &krate.join("src/edge.rs"),
    ));
    std::fs::remove_file(krate.join("src/edge_orig.rs")).unwrap();
    let report = reports.join("");
    for want in [
        "scoped   BertSelfAttention (kind bert_self_attention; scope taken in BertSelfAttention::load)",
        "probs    BertSelfAttention::forward: `attention_probs`",
        "skipped  Dropout::forward: Dropout is never built in a function that takes a candle_nn VarBuilder",
        "wrapped  CausalSelfAttention::forward",
        "probs    CausalSelfAttention::forward: `att`",
        "wrapped  Attention::forward",
        "nn       candle_nn::{Embedding, embedding} -> candlelight::nn",
        "none     Counter built in Counter::new_bare",
    ] {
        assert!(report.contains(want), "no {want:?} in the reports:\n{report}");
    }
    write_scratch_crate(krate);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("instrument-scratch");
    let t = Instant::now();
    let build = cargo()
        .args(["build", "--quiet"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", &target)
        .output();
    let build = match build {
        Ok(o) => o,
        Err(e) => return unavailable(&format!("cannot run cargo: {e}")),
    };
    assert!(
        build.status.success(),
        "the instrumented models do not compile:\n{}\n--- report\n{report}",
        String::from_utf8_lossy(&build.stderr)
    );
    eprintln!("scratch crate built in {:.1} s", t.elapsed().as_secs_f64());
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let exe = target.join("debug/instrument-scratch");
    let o = Command::new(&exe).arg(&runs).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_llama(&Run::open(runs.join("llama.safetensors")).unwrap());
    check_mistral(&Run::open(runs.join("mistral.safetensors")).unwrap());
    check_bert(&Run::open(runs.join("bert.safetensors")).unwrap());
    check_edge(&Run::open(runs.join("edge.safetensors")).unwrap());
}

#[track_caller]
fn has_layers(run: &Run, names: &[String]) {
    let got: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
    for n in names {
        assert!(
            got.contains(&n.as_str()),
            "{}: no layer {n:?} in {got:?}",
            run.info().model
        );
    }
    let dups: Vec<&&str> = got.iter().filter(|n| n.contains('#')).collect();
    assert!(
        dups.is_empty(),
        "{}: repeated names {dups:?}",
        run.info().model
    );
}

fn check_llama(run: &Run) {
    let mut want: Vec<String> = ["model.embed_tokens", "model.norm", "lm_head", "output"]
        .map(String::from)
        .to_vec();
    for i in 0..2 {
        let l = format!("model.layers.{i}");
        want.push(l.clone());
        for sub in [
            "self_attn",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
            "input_layernorm",
            "post_attention_layernorm",
        ] {
            want.push(format!("{l}.{sub}"));
        }
        let probs = format!("{l}.self_attn.attention_probs");
        assert_eq!(
            run.layer(&probs).unwrap().shape,
            vec![1, 4, 5, 5],
            "{probs}"
        );
        assert_eq!(
            run.layer(&probs).unwrap().kind.as_deref(),
            Some("attention_probs")
        );
        assert_eq!(run.layer(&l).unwrap().kind.as_deref(), Some("block"));
        want.push(probs);
    }
    has_layers(run, &want);
    // The block output is the residual stream: [batch, seq, hidden].
    assert_eq!(run.layer("model.layers.1").unwrap().shape, vec![1, 5, 32]);
    let order: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
    let at = |n: &str| order.iter().position(|x| *x == n).unwrap();
    assert!(at("model.layers.0.self_attn.attention_probs") < at("model.layers.0.self_attn"));
    assert!(at("model.layers.0.self_attn") < at("model.layers.0"));
    assert_eq!(order.last(), Some(&"output"));
}

fn check_mistral(run: &Run) {
    let mut want: Vec<String> = ["model.embed_tokens", "model.norm", "lm_head", "output"]
        .map(String::from)
        .to_vec();
    for i in 0..2 {
        let l = format!("model.layers.{i}");
        for sub in [
            "",
            ".self_attn",
            ".self_attn.attention_probs",
            ".self_attn.q_proj",
            ".self_attn.o_proj",
            ".mlp",
            ".mlp.down_proj",
            ".input_layernorm",
            ".post_attention_layernorm",
        ] {
            want.push(format!("{l}{sub}"));
        }
    }
    has_layers(run, &want);
    assert_eq!(
        run.layer("model.embed_tokens").unwrap().kind.as_deref(),
        Some("embedding")
    );
}

fn check_bert(run: &Run) {
    let mut want: Vec<String> = [
        "embeddings",
        "embeddings.word_embeddings",
        "embeddings.position_embeddings",
        "embeddings.token_type_embeddings",
        "embeddings.LayerNorm",
        "encoder",
        "output",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..2 {
        let l = format!("encoder.layer.{i}");
        for sub in [
            "",
            ".attention",
            ".attention.self",
            ".attention.self.attention_probs",
            ".attention.self.query",
            ".attention.self.key",
            ".attention.self.value",
            ".attention.output",
            ".attention.output.dense",
            ".attention.output.LayerNorm",
            ".intermediate",
            ".intermediate.dense",
            ".output",
            ".output.dense",
            ".output.LayerNorm",
        ] {
            want.push(format!("{l}{sub}"));
        }
    }
    has_layers(run, &want);
    let p = run
        .layer("encoder.layer.0.attention.self.attention_probs")
        .unwrap();
    assert_eq!(p.shape, vec![1, 4, 6, 6]);
    let sums = run
        .tensor(&p.name)
        .unwrap()
        .sum(candle_core::D::Minus1)
        .unwrap();
    for s in sums.flatten_all().unwrap().to_vec1::<f32>().unwrap() {
        assert!((s - 1.0).abs() < 1e-4, "probabilities sum to {s}");
    }
}

fn check_edge(run: &Run) {
    let want: Vec<String> = [
        "edge.attn.proj.q",
        "edge.attn.attention_probs",
        "edge.attn",
        "edge.counter.fc",
        "edge.counter",
        "edge.bare_fc",
        "edge",
    ]
    .map(String::from)
    .to_vec();
    has_layers(run, &want);
    let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names.len(),
        want.len(),
        "the bare Counter records nothing: {names:?}"
    );
}

/// Cargo.toml (candlelight by path, no default features; our Cargo.lock) and main.rs.
fn write_scratch_crate(krate: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let toml = format!(
        "[package]\nname = \"instrument-scratch\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\ncandlelight = {{ path = {:?}, default-features = false }}\n\
         candle-core = \"0.9.2\"\ncandle-nn = \"0.9.2\"\ncandle-transformers = \"=0.9.2\"\n\
         serde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
         [profile.dev]\ndebug = false\n\n[workspace]\n",
        repo.display().to_string()
    );
    std::fs::write(krate.join("Cargo.toml"), toml).unwrap();
    std::fs::copy(repo.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    std::fs::write(krate.join("src/main.rs"), MAIN).unwrap();
}

/// The scratch crate's main: each model on a tiny random config, one run each.
const MAIN: &str = r#"
#![allow(dead_code, unused)]
mod bert;
mod edge;
mod llama;
mod mistral;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use candlelight::Recorder;

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).expect("output folder");
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let cfg = llama::Config {
        hidden_size: 32, intermediate_size: 64, vocab_size: 64, num_hidden_layers: 2,
        num_attention_heads: 4, num_key_value_heads: 2, use_flash_attn: false,
        rms_norm_eps: 1e-5, rope_theta: 10_000.0, bos_token_id: None, eos_token_id: None,
        rope_scaling: None, max_position_embeddings: 64, tie_word_embeddings: false,
    };
    let model = llama::Llama::load(vb, &cfg)?;
    let mut cache = llama::Cache::new(true, DType::F32, &cfg, &dev)?;
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 7]], &dev)?;
    let (_, run) = Recorder::new("llama").id("llama").record(|| model.forward(&ids, 0, &mut cache))?;
    run.save(&out)?;

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let cfg = mistral::Config {
        vocab_size: 64, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2,
        num_attention_heads: 4, head_dim: None, num_key_value_heads: 2,
        hidden_act: candle_nn::Activation::Silu, max_position_embeddings: 64,
        rms_norm_eps: 1e-5, rope_theta: 10_000.0, sliding_window: None, use_flash_attn: false,
    };
    let mut model = mistral::Model::new(&cfg, vb)?;
    let (_, run) = Recorder::new("mistral").id("mistral").record(|| model.forward(&ids, 0))?;
    run.save(&out)?;

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let cfg = bert::Config {
        vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4,
        intermediate_size: 64, max_position_embeddings: 32, ..Default::default()
    };
    let model = bert::BertModel::load(vb, &cfg)?;
    let ids = Tensor::new(&[[1u32, 5, 9, 3, 7, 2]], &dev)?;
    let types = ids.zeros_like()?;
    let (_, run) = Recorder::new("bert").id("bert").record(|| model.forward(&ids, &types, None))?;
    run.save(&out)?;

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
    let mut model = edge::Edge::load(vb.pp("edge"))?;
    let mut cache = edge::Cache { seen: 0 };
    let x = Tensor::ones((3, 4), DType::F32, &dev)?;
    let (_, run) = Recorder::new("edge").id("edge").record(|| model.forward(&x, &mut cache))?;
    assert_eq!(cache.seen, 1);
    run.save(&out)?;
    Ok(())
}
"#;

/// A model that is not in candle-transformers, for the cases the real ones do not
/// have: a `VarBuilder` by reference and shadowed, early `return`, `?` in closures, a
/// `&mut` parameter, `&mut self` calling `&mut self` methods, a module also built
/// without a `VarBuilder`, a struct pattern, a forward returning a tuple.
const EDGE: &str = r#"
use candle::{Module, Result, Tensor};
use candle_nn::{linear, Linear, VarBuilder};
use super::with_tracing::{linear_no_bias, Linear as TLinear};

pub struct Cache { pub seen: usize }

#[derive(Debug, Clone)]
pub struct Attn { q: TLinear, n: usize }

impl Attn {
    pub fn new(vb: &VarBuilder, n: usize) -> Result<Self> {
        let vb = vb.pp("proj");
        let q = linear_no_bias(4, 4, vb.pp("q"))?;
        Ok(Attn { q, n })
    }
    fn heads(&self) -> usize {
        let Attn { n, q } = self;
        *n
    }
    pub fn forward(&self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        cache.seen += 1;
        if self.heads() == 0 {
            return Ok(x.clone());
        }
        let q = self.q.forward(x)?;
        let s = q.matmul(&q.t()?)?;
        let w = candle_nn::ops::softmax_last_dim(&s)?;
        let parts = (0..self.n).map(|i| w.narrow(0, i, 1)).collect::<Result<Vec<_>>>()?;
        let rest = w.narrow(0, self.n, w.dim(0)? - self.n)?;
        let w = Tensor::cat(&[Tensor::cat(&parts, 0)?, rest], 0)?;
        w.matmul(&q)
    }
    pub fn forward_t(&self, x: &Tensor, _train: bool) -> Result<(Tensor, Tensor)> {
        Ok((x.clone(), x.clone()))
    }
}

#[derive(Debug)]
pub struct Counter { calls: usize, fc: Linear, span: tracing::Span }

impl Counter {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        let span = tracing::span!(tracing::Level::TRACE, "counter");
        Ok(Self { calls: 0, fc: linear(4, 4, vb.pp("fc"))?, span })
    }
    pub fn new_bare(fc: Linear) -> Self {
        Self { calls: 0, fc, span: tracing::span!(tracing::Level::TRACE, "bare") }
    }
    fn bump(&mut self) -> usize {
        self.calls += 1;
        self.calls
    }
    pub fn forward(&mut self, x: &Tensor) -> Result<Tensor> {
        let _enter = self.span.enter();
        if self.bump() > 100 {
            candle::bail!("called {} times", self.calls)
        }
        x.apply(&self.fc)
    }
}

pub struct Edge { attn: Attn, counter: Counter, bare: Counter }

impl Edge {
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let attn = Attn::new(&vb.pp("attn"), 2)?;
        let counter = Counter::new(vb.pp("counter"))?;
        let bare = Counter::new_bare(linear(4, 4, vb.pp("bare_fc"))?);
        Ok(Self { attn, counter, bare })
    }
    pub fn forward(&mut self, x: &Tensor, cache: &mut Cache) -> Result<Tensor> {
        let h = self.attn.forward(x, cache)?;
        let h = self.counter.forward(&h)?;
        self.bare.forward(&h)
    }
}
"#;

//! all-MiniLM-L6-v2 on candle against HF transformers, with no hand-written name
//! map: the port agrees on every common layer, planted bugs are found at the
//! layer that introduces them, patching every layer from the PyTorch run shows
//! each layer's local error, and activation patching changes only what is
//! downstream of the patched layer.
//!
//! Needs the model (`scripts/fetch-minilm`; `CANDLELIGHT_MINILM` or the default
//! cache) and, for the PyTorch side, a Python with torch + transformers
//! (`CANDLELIGHT_PYTHON`). Missing pieces skip with the reason printed;
//! `CANDLELIGHT_REQUIRE_HF=1` (set by CI) turns every skip into a failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candlelight::models::minilm::{default_dir, MiniLm, Plant};
use candlelight::{Recorder, Run};
use serde_json::Value;

mod common;
use common::stdout;

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";
/// Same number of tokens as SENTENCE (checked), for activation patching.
const OTHER: &str = "A small grey cat sleeps under the warm tree.";

fn skip(why: &str) -> Option<()> {
    if std::env::var("CANDLELIGHT_REQUIRE_HF").is_ok_and(|v| v == "1") {
        panic!("{why}, and CANDLELIGHT_REQUIRE_HF=1");
    }
    println!("SKIP: {why}");
    None
}

fn model_dir() -> Option<PathBuf> {
    match default_dir() {
        Some(d) if d.join("model.safetensors").is_file() => Some(d),
        _ => skip("no MiniLM model (run scripts/fetch-minilm, set CANDLELIGHT_MINILM)")
            .map(|_| unreachable!()),
    }
}

/// The PyTorch run of SENTENCE, recorded once per test process.
fn torch_run(dir: &Path) -> Option<&'static Path> {
    static RUN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let got = RUN.get_or_init(|| {
        let py = std::env::var("CANDLELIGHT_PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&py)
            .args(["-c", "import torch, transformers, safetensors, numpy"])
            .output();
        if !probe.is_ok_and(|o| o.status.success()) {
            return Err(format!("{py} cannot import torch, transformers"));
        }
        // One fixed file under cargo's scratch folder for tests, rewritten by
        // each run: a static is never dropped, so a temporary folder would
        // outlive every test process.
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("minilm-torch");
        std::fs::create_dir_all(&tmp).unwrap();
        let out = tmp.join("torch.safetensors");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/candlelight_hf.py");
        let o = Command::new(&py)
            .arg(&script)
            .arg(dir)
            .arg(SENTENCE)
            .arg("-o")
            .arg(&out)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("run python");
        assert!(
            o.status.success(),
            "candlelight_hf.py failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(out)
    });
    match got {
        Ok(p) => Some(p.as_path()),
        Err(why) => skip(why).map(|_| unreachable!()),
    }
}

fn record(dir: &Path, plant: &Plant, rec: Recorder, out: &Path, name: &str) -> PathBuf {
    let model = MiniLm::load_with(dir, plant).unwrap();
    let (_, run) = model.record(&[SENTENCE], rec.id(name)).unwrap();
    run.save(out).unwrap()
}

/// `candlelight diff A B --ignore-missing --json`: (exit code, report).
fn diff(a: &Path, b: &Path, cwd: &Path) -> (i32, Value) {
    let args = [
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--ignore-missing",
        "--json",
    ];
    let o = common::cl(&args, cwd);
    let code = o.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "diff failed: {}",
        common::stderr(&o)
    );
    (code, serde_json::from_str(&stdout(&o)).unwrap())
}

fn divergent(report: &Value) -> Vec<String> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["diverges"] == true)
        .map(|l| l["name_a"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[test]
fn the_candle_port_agrees_with_pytorch_on_every_common_layer() {
    let Some(dir) = model_dir() else { return };
    let Some(reference) = torch_run(&dir) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = record(
        &dir,
        &Plant::default(),
        Recorder::new("minilm"),
        tmp.path(),
        "candle",
    );
    let (code, report) = diff(&a, reference, tmp.path());
    assert_eq!(divergent(&report), Vec::<String>::new());
    assert_eq!(code, 0);
    let names: Vec<&str> = report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "agree")
        .filter_map(|l| l["name_a"].as_str())
        .collect();
    // 6 layers x 12 heads of attention probabilities, compared, all agreeing.
    let probs: Vec<&&str> = names
        .iter()
        .filter(|n| n.ends_with(".attention_probs"))
        .collect();
    assert_eq!(probs.len(), 6, "{names:?}");
    let run = Run::open(&a).unwrap();
    assert_eq!(
        run.layer("encoder.layer.5.attention.self.attention_probs")
            .unwrap()
            .shape,
        [1, 12, 12, 12]
    );
    for must in [
        "embeddings",
        "encoder.layer.0.attention.self.query",
        "encoder.layer.5",
        "encoder",
        "output",
    ] {
        assert!(names.contains(&must), "{must} not compared: {names:?}");
    }
    assert_eq!(run.info().extra["tokens"][0][4], "fox");
}

#[test]
fn planted_bugs_are_reported_at_the_layer_that_introduces_them() {
    let Some(dir) = model_dir() else { return };
    let Some(reference) = torch_run(&dir) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (plant, first) in [
        ("tanh-gelu", "encoder.layer.0.intermediate"),
        ("ln-eps", "embeddings.LayerNorm"),
        ("swap-heads=2:0:1", "encoder.layer.2.attention.self.value"),
    ] {
        let a = record(
            &dir,
            &Plant::parse(plant).unwrap(),
            Recorder::new("minilm"),
            tmp.path(),
            plant.split('=').next().unwrap(),
        );
        let (code, report) = diff(&a, reference, tmp.path());
        assert_eq!(code, 1, "{plant}");
        assert_eq!(report["first_divergent"], first, "{plant}");
        if plant.starts_with("swap") {
            // Swapping value heads leaves the attention pattern itself intact.
            let d = divergent(&report);
            assert!(
                !d.iter()
                    .any(|n| n == "encoder.layer.2.attention.self.attention_probs"),
                "{d:?}"
            );
        }
    }
}

#[test]
fn patching_every_layer_from_pytorch_shows_each_layers_local_error() {
    let Some(dir) = model_dir() else { return };
    let Some(reference) = torch_run(&dir) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = Recorder::new("minilm")
        .patch_from(Run::open(reference).unwrap())
        .patch("*");
    let a = record(
        &dir,
        &Plant::parse("tanh-gelu").unwrap(),
        rec,
        tmp.path(),
        "patched",
    );
    let (_, report) = diff(&a, reference, tmp.path());
    let want: Vec<String> = (0..6)
        .map(|i| format!("encoder.layer.{i}.intermediate"))
        .collect();
    assert_eq!(
        divergent(&report),
        want,
        "only the layers with the bug, none downstream"
    );
    let run = Run::open(&a).unwrap();
    assert_eq!(
        run.info().extra["patched"]["missing"],
        serde_json::json!([])
    );
}

#[test]
fn activation_patching_changes_only_what_is_downstream() {
    let Some(dir) = model_dir() else { return };
    let model = MiniLm::load(&dir).unwrap();
    let n = |s: &str| model.encode(&[s]).unwrap().tokens[0].len();
    assert_eq!(
        n(SENTENCE),
        n(OTHER),
        "the two sentences must tokenize to the same length"
    );
    let (_, clean) = model.record(&[SENTENCE], Recorder::new("clean")).unwrap();
    let (_, other) = model.record(&[OTHER], Recorder::new("other")).unwrap();
    let (_, patched) = model
        .record(
            &[SENTENCE],
            Recorder::new("patched")
                .patch_from(other)
                .patch("encoder.layer.3"),
        )
        .unwrap();
    let other = model.record(&[OTHER], Recorder::new("other")).unwrap().1;
    let same = |a: &Run, b: &Run, name: &str| a.values(name).unwrap() == b.values(name).unwrap();
    assert!(
        same(&patched, &clean, "encoder.layer.3.attention"),
        "upstream of the patch: unchanged"
    );
    assert!(
        same(&patched, &clean, "encoder.layer.3"),
        "the layer records its own output"
    );
    assert!(
        !same(&patched, &clean, "encoder.layer.4.attention.self.query"),
        "downstream: changed"
    );
    // Downstream runs on the other sentence's layer-3 output: layer 4 is what the
    // other run computed from there.
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 + 1e-4 * y.abs())
    };
    let q = "encoder.layer.4.attention.self.query";
    assert!(close(
        &patched.values(q).unwrap(),
        &other.values(q).unwrap()
    ));
}

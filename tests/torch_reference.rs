//! `python/candlelight_torch.py`: its file-writing side with numpy-only inputs
//! (always run where Python has numpy + safetensors, which CI installs), and the
//! PyTorch reference of the MNIST CNN against the candle run (run when `torch`
//! imports, otherwise skipped with the reason printed, even in CI, which does not
//! install torch; `CANDLELIGHT_REQUIRE_TORCH=1` turns that skip into a failure).

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::Device;
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::{Recorder, Run};
use serde_json::Value;

mod common;
use common::{cl_code, stdout};

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// Runs `script` with `args`, `python/` on the path; panics with everything on failure.
fn run_py(py: &str, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn save_run_writes_version_1_runs_from_numpy_alone() {
    let py = match common::python_with(&["numpy", "safetensors"]) {
        Ok(py) => py,
        Err(why) => {
            println!("SKIP candlelight_torch file side: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    // Module import must not need torch: block it.
    let script = r#"
import sys, json, os
sys.modules["torch"] = None  # any `import torch` now fails
import numpy as np
import candlelight_torch as cl
out = sys.argv[1]
conv = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 7.0
tensors = [("features.0", conv), ("relu", np.maximum(conv - 3, 0)), ("head.fc", np.linspace(-1, 1, 10).astype(np.float64)),
           ("ids", np.array([3, -1, 7], dtype=np.int64)), ("half", np.array([0.5, -2.0], dtype=np.float16)),
           ("big_endian", np.array([1.5, 2.5], dtype=">f4"))]
p = cl.save_run(tensors, out, model="numpy net/<1>", input="arange", kinds={"features.0": "conv2d", "relu": "relu", "nope": "x"},
                tags={"seed": 7}, metadata={"user.key": "kept"})
print(p)
assert os.path.dirname(p) == out and p.endswith(".safetensors"), p
assert not [f for f in os.listdir(out) if f.startswith(".")], "temp file left behind"
# An explicit file path too.
q = cl.save_run({"only": np.ones((2, 2), dtype=np.float32)}, os.path.join(out, "named.safetensors"), model="m")
print(q)
from safetensors import safe_open
with safe_open(p, framework="np") as f:
    meta = f.metadata()
    assert f.get_tensor("features.0").tolist() == conv.tolist()
    assert f.get_tensor("big_endian").tolist() == [1.5, 2.5]
print(json.dumps(meta))
"#;
    let out = run_py(&py, script, &[dir.path().to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    let (path, named, meta) = (lines[0], lines[1], lines[2]);
    let meta: Value = serde_json::from_str(meta).unwrap();
    assert_eq!(meta["candlelight.version"], "1");
    assert_eq!(meta["user.key"], "kept");
    let order: Value = serde_json::from_str(meta["candlelight.order"].as_str().unwrap()).unwrap();
    assert_eq!(
        order,
        serde_json::json!(["features.0", "relu", "head.fc", "ids", "half", "big_endian"])
    );

    // candlelight reads it as a run: order, facts, kinds, dtypes, values, user metadata.
    let run = Run::open(path).unwrap();
    let info = run.info();
    let id = &info.id;
    assert!(
        id.contains("-numpy-net--1--")
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
        "{id}"
    );
    let parts: Vec<&str> = id.split('-').collect();
    assert_eq!((parts[0].len(), parts[1].len()), (8, 6), "{id}");
    assert!(
        u16::from_str_radix(parts.last().unwrap(), 16).is_ok(),
        "{id}"
    );
    assert_eq!(
        Path::new(path).file_name().unwrap().to_str().unwrap(),
        format!("{id}.safetensors")
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(&info.created).is_ok() && info.created.ends_with('Z'),
        "{}",
        info.created
    );
    assert_eq!(info.model, "numpy net/<1>");
    assert_eq!(info.input, "arange");
    assert_eq!(info.tags["seed"], "7");
    assert_eq!(info.kinds.len(), 2, "kinds of unknown layers dropped");
    assert_eq!(run.metadata()["user.key"], "kept");
    let names: Vec<&str> = run.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["features.0", "relu", "head.fc", "ids", "half", "big_endian"]
    );
    let l = &run.layers()[0];
    assert_eq!(
        (l.shape.clone(), l.dtype.to_string()),
        (vec![2, 3, 4, 5], "F32".into())
    );
    assert_eq!(l.kind.as_deref(), Some("conv2d"));
    let dtypes: Vec<String> = run.layers().iter().map(|l| l.dtype.to_string()).collect();
    assert_eq!(dtypes, ["F32", "F32", "F64", "I64", "F16", "F32"]);
    let conv = run.values("features.0").unwrap();
    assert!(conv
        .iter()
        .enumerate()
        .all(|(i, &v)| (v - i as f32 / 7.0).abs() <= 1e-6 * (i as f32 / 7.0).max(1.0)));
    assert_eq!(run.values("ids").unwrap(), vec![3.0, -1.0, 7.0]);
    assert_eq!(run.values("half").unwrap(), vec![0.5, -2.0]);
    assert_eq!(run.values("big_endian").unwrap(), vec![1.5, 2.5]);
    assert_eq!(
        Run::open(named).unwrap().values("only").unwrap(),
        vec![1.0; 4]
    );

    // A run diffs against itself through the binary.
    let out = cl_code(&["diff", path, path], dir.path(), 0);
    assert!(stdout(&out).contains("all layers agree"));

    // Bad input is refused with a clear error and leaves no file behind.
    let bad = r#"
import sys, os
import numpy as np
import candlelight_torch as cl
out = sys.argv[1]
for tensors, what in [([("a", np.zeros(2)), ("a", np.zeros(2))], "duplicate"),
                      ([("c", np.array(["x"]))], "cannot be stored")]:
    try:
        cl.save_run(tensors, os.path.join(out, "bad"))
    except (ValueError, TypeError) as e:
        assert what in str(e), e
    else:
        raise SystemExit("accepted " + what)
assert not os.path.exists(os.path.join(out, "bad")) or not os.listdir(os.path.join(out, "bad"))
print("ok")
"#;
    assert_eq!(
        run_py(&py, bad, &[dir.path().to_str().unwrap()]).trim(),
        "ok"
    );
}

/// `mnist_reference.py`'s PNG reader and normalization (numpy only) give exactly
/// the input candle's `image_to_input` gives, for every sample digit.
#[test]
fn the_reference_reads_digits_exactly_like_candle() {
    let py = match common::python_with(&["numpy", "safetensors"]) {
        Ok(py) => py,
        Err(why) => {
            println!("SKIP reference input: {why}");
            return;
        }
    };
    let script = r#"
import sys
sys.modules["torch"] = None
import mnist_reference as mr
for path in sys.argv[1:]:
    x = mr.load_input(path)
    assert x.shape == (1, 1, 28, 28) and x.dtype.name == "float32", (x.shape, x.dtype)
    print(" ".join("%08x" % v for v in x.reshape(-1).view("<u4")))
"#;
    let digits = sample_digits().unwrap();
    let paths: Vec<&str> = digits.iter().map(|(p, _)| p.to_str().unwrap()).collect();
    let out = run_py(&py, script, &paths);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), digits.len());
    for ((path, _), line) in digits.iter().zip(lines) {
        let want: Vec<String> = image_to_input(path, &Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|v| format!("{:08x}", v.to_bits()))
            .collect();
        assert_eq!(line, want.join(" "), "{}", path.display());
    }
}

/// The README's port check: candle's run of the MNIST CNN against PyTorch's, same
/// weights and input, all layers within the default tolerances.
#[test]
fn pytorch_reference_of_the_mnist_cnn_agrees_with_candle() {
    let py = match common::python_with_optional(&["torch", "safetensors", "numpy"]) {
        Ok(py) => py,
        Err(why) => {
            println!("SKIP PyTorch reference: {why} (pip install torch to run it)");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let weights = default_weights_path();
    let digit = sample_digits().unwrap()[3].0.clone();
    let x = image_to_input(&digit, &Device::Cpu).unwrap();
    let model = MnistCnn::load(&weights, &Device::Cpu).unwrap();
    let (_, run) = Recorder::new("mnist-cnn")
        .record(|| model.predict(&x))
        .unwrap();
    let candle = run.save(dir.path().join("candle")).unwrap();

    let out = Command::new(&py)
        .arg(python_dir().join("mnist_reference.py"))
        .args([&weights, &digit, &dir.path().join("torch")])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mnist_reference.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let torch = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let t = Run::open(&torch).unwrap();
    assert_eq!(t.info().model, "mnist-cnn");
    assert_eq!(t.layers()[0].kind.as_deref(), Some("conv2d"));
    assert_eq!(t.layer("pool1").unwrap().kind.as_deref(), Some("maxpool2d"));

    let out = cl_code(
        &["diff", candle.to_str().unwrap(), &torch, "--json"],
        dir.path(),
        0,
    );
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["counts"]["agree"], 11, "{d:#}");
    for l in d["layers"].as_array().unwrap() {
        let n = &l["numbers"];
        assert!(n["max_abs"].as_f64().unwrap() <= 1e-4, "{l:#}");
        assert!(n["cosine"].as_f64().unwrap() > 0.99999, "{l:#}");
    }
    // Outputs are copies: an in-place ReLU after a layer does not change its record;
    // tuple outputs and repeated calls get the documented names.
    let inplace = r#"
import sys, torch, candlelight_torch as cl
from torch import nn
class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=True)
        self.split = Split()
    def forward(self, x):
        x = self.act(self.lin(x))
        x = self.act(self.lin(x))
        return self.split(x)
class Split(nn.Module):
    def forward(self, x):
        return x[:, :2], x[:, 2:]
torch.manual_seed(0)
rec = cl.record(Twice(), torch.randn(8, 4))
assert list(rec) == ["lin", "act", "lin#2", "act#2", "split.0", "split.1"], list(rec)
assert (rec["lin"] < 0).any() and not (rec["act"] < 0).any()
assert rec.kinds["split.1"] == "split" and rec.kinds["act#2"] == "relu"
print(cl.save_run(rec, sys.argv[1]))
"#;
    let p = run_py(
        &py,
        inplace,
        &[dir.path().join("inplace").to_str().unwrap()],
    );
    let r = Run::open(p.trim()).unwrap();
    assert_eq!(r.len(), 6);
    assert!(r.values("lin").unwrap().iter().any(|v| *v < 0.0));

    // A port bug (conv2's weights off by 1%) is caught at conv2.
    let bug = r#"
import sys
import torch, mnist_reference as mr, candlelight_torch as cl
from safetensors.numpy import load_file
w = dict(load_file(sys.argv[1]))
w["conv2.weight"] = w["conv2.weight"] * 1.01
x = torch.from_numpy(mr.load_input(sys.argv[2]))
print(cl.save_run(cl.record(mr.build(w), x, model_name="buggy"), sys.argv[3]))
"#;
    let buggy = run_py(
        &py,
        bug,
        &[
            weights.to_str().unwrap(),
            digit.to_str().unwrap(),
            dir.path().join("buggy").to_str().unwrap(),
        ],
    );
    let out = cl_code(
        &["diff", candle.to_str().unwrap(), buggy.trim()],
        dir.path(),
        1,
    );
    assert!(
        stdout(&out).contains("first divergence: conv2"),
        "{}",
        stdout(&out)
    );
}

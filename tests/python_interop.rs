//! Interop with a real safetensors client: Python's `safetensors` + `numpy`.
//! Skips with a printed reason when they are missing (CI installs them and sets
//! `CANDLELIGHT_REQUIRE_PYTHON=1`, which turns a skip into a failure).

use std::process::Command;

use candle_core::{DType, Device, Tensor};
use candlelight::{tap, Recorder, Run};

mod common;

#[test]
fn python_reads_our_runs_and_we_read_theirs() {
    let py = match common::python_with(&["safetensors", "numpy"]) {
        Ok(py) => py,
        Err(why) => {
            println!("SKIP python interop: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let a = Tensor::arange(0f32, 24., &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 4))
        .unwrap();
    let (_, run) = Recorder::new("interop")
        .record(|| {
            tap("z.last", &a)?;
            tap("a.first", &(&a * -0.5)?.to_dtype(DType::F16)?)?;
            tap("ids", &Tensor::new(&[3i64, -1], &Device::Cpu)?)
        })
        .unwrap();
    let path = run.save(dir.path()).unwrap();
    let script = r#"
import json, sys
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
path, out = sys.argv[1], sys.argv[2]
with safe_open(path, framework="np") as f:
    meta = f.metadata()
order = json.loads(meta["candlelight.order"])
assert order == ["z.last", "a.first", "ids"], order
assert meta["candlelight.version"] == "1"
info = json.loads(meta["candlelight.run"])
assert info["model"] == "interop" and info["kinds"]["ids"] == "tap", info
tensors = load_file(path)
z, ids, h = tensors["z.last"], tensors["ids"], tensors["a.first"]
assert h.dtype == np.float16 and np.array_equal(h, (z * -0.5).astype(np.float16))
assert z.shape == (2, 3, 4) and z.dtype == np.float32
assert np.array_equal(z.reshape(-1), np.arange(24, dtype=np.float32)), z
assert ids.tolist() == [3, -1] and ids.dtype == np.int64
save_file({"w": np.linspace(-1, 1, 10, dtype=np.float32).reshape(2, 5),
           "counts": np.arange(6, dtype=np.int32)}, out, metadata={"source": "numpy"})
print("ok")
"#;
    let theirs = dir.path().join("from_python.safetensors");
    let out = Command::new(&py)
        .args([
            "-c",
            script,
            path.to_str().unwrap(),
            theirs.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A file written by Python opens as a run; its own order, user metadata kept.
    let r = Run::open(&theirs).unwrap();
    assert_eq!(
        r.metadata().get("source").map(String::as_str),
        Some("numpy")
    );
    let w = r.values("w").unwrap();
    assert!((w[0] + 1.0).abs() < 1e-6 && (w[9] - 1.0).abs() < 1e-6);
    assert_eq!(r.values("counts").unwrap(), vec![0., 1., 2., 3., 4., 5.]);
    let out = common::cl_code(&["show", theirs.to_str().unwrap()], dir.path(), 0);
    let s = common::stdout(&out);
    assert!(
        s.contains("counts") && s.contains("I32") && s.contains("[2, 5]"),
        "{s}"
    );
}

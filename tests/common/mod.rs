//! Helpers shared by the integration tests: run the real binary, make small runs.
#![allow(dead_code)]

pub mod cnn;

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `candlelight` binary; on an unexpected exit code prints the command,
/// cwd and output.
pub fn cl(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run candlelight");
    out
}

/// Like [`cl`] but asserts the exit code, printing everything on failure.
pub fn cl_code(args: &[&str], cwd: &Path, code: i32) -> Output {
    let out = cl(args, cwd);
    if out.status.code() != Some(code) {
        panic!(
            "candlelight {:?} (cwd {}) exited {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}\n--- files\n{}",
            args,
            cwd.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            list_files(cwd)
        );
    }
    out
}

/// Every file under `dir`, one per line.
pub fn list_files(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push_str(&format!("{}\n", p.display()));
            }
        }
    }
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A Python interpreter with `safetensors` and `numpy`, or the reason there is none.
/// `CANDLELIGHT_PYTHON` names it (CI points it at its venv); otherwise `python3`.
/// With `CANDLELIGHT_REQUIRE_PYTHON=1` a missing one is a failure, not a skip.
pub fn python_with(modules: &[&str]) -> Result<String, String> {
    let py = std::env::var("CANDLELIGHT_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = format!("import {}", modules.join(", "));
    let ok = Command::new(&py)
        .args(["-c", &probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(py);
    }
    let why = format!("{py} cannot `{probe}`");
    if std::env::var("CANDLELIGHT_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        panic!("{why}, and CANDLELIGHT_REQUIRE_PYTHON=1");
    }
    Err(why)
}

/// Like [`python_with`] for optional, heavy modules (`torch`): a missing one is a
/// skip even under `CANDLELIGHT_REQUIRE_PYTHON=1`, and a failure only under
/// `CANDLELIGHT_REQUIRE_TORCH=1`.
pub fn python_with_optional(modules: &[&str]) -> Result<String, String> {
    let py = std::env::var("CANDLELIGHT_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = format!("import {}", modules.join(", "));
    let ok = Command::new(&py)
        .args(["-c", &probe])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        return Ok(py);
    }
    let why = format!("{py} cannot `{probe}`");
    if std::env::var("CANDLELIGHT_REQUIRE_TORCH").is_ok_and(|v| v == "1") {
        panic!("{why}, and CANDLELIGHT_REQUIRE_TORCH=1");
    }
    Err(why)
}

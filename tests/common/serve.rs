//! Starting `candlelight serve` for tests and benches: shared by tests/serve.rs,
//! tests/browser.rs and benches/serve.rs (included with `#[path]`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `BIN serve ROOT --port 0 EXTRA...` started, and the `127.0.0.1:PORT` it printed
/// on its first line (`serving http://127.0.0.1:PORT/`). The caller kills the child.
pub fn spawn(bin: &str, root: &Path, extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(bin)
        .arg("serve")
        .arg(root)
        .args(["--port", "0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start candlelight serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut line)
        .expect("first line of candlelight serve");
    let addr = line
        .trim()
        .strip_prefix("serving http://")
        .and_then(|a| a.strip_suffix('/'))
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    (child, addr)
}

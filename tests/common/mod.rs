//! Helpers shared by the integration tests: run the real binary, make small runs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the `candlelight` binary.
pub fn cl(args: &[&str], cwd: &Path) -> Output {
    cl_os(&os_args(args), cwd)
}

/// Like [`cl`] but asserts the exit code, printing the command, cwd, output and
/// files on failure.
pub fn cl_code(args: &[&str], cwd: &Path, code: i32) -> Output {
    cl_os_code(&os_args(args), cwd, code)
}

fn os_args<'a>(args: &[&'a str]) -> Vec<&'a std::ffi::OsStr> {
    args.iter().map(|a| std::ffi::OsStr::new(*a)).collect()
}

/// Like [`cl`] with arguments that need not be UTF-8 (paths).
pub fn cl_os(args: &[&std::ffi::OsStr], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run candlelight")
}

/// Like [`cl_code`] with arguments that need not be UTF-8 (paths).
pub fn cl_os_code(args: &[&std::ffi::OsStr], cwd: &Path, code: i32) -> Output {
    let out = cl_os(args, cwd);
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

/// The Chromium binary for browser checks, or the reason there is none.
/// `CANDLELIGHT_CHROMIUM` names it; otherwise `chromium` (Debian) or `chromium-browser`
/// on the PATH. With `CANDLELIGHT_REQUIRE_CHROMIUM=1` a missing one is a failure.
pub fn chromium() -> Result<std::path::PathBuf, String> {
    let candidates: Vec<String> = match std::env::var("CANDLELIGHT_CHROMIUM") {
        Ok(c) => vec![c],
        Err(_) => vec!["chromium".into(), "chromium-browser".into()],
    };
    for c in &candidates {
        let ok = Command::new(c)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(c.into());
        }
    }
    let why = format!("no Chromium found (tried {})", candidates.join(", "));
    if std::env::var("CANDLELIGHT_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
        panic!("{why}, and CANDLELIGHT_REQUIRE_CHROMIUM=1");
    }
    Err(why)
}

/// What a page looked like to a headless browser.
#[derive(Debug)]
pub struct PageCheck {
    /// `<img>` elements on the page.
    pub images: usize,
    /// `src` of each image that did not load (naturalWidth == 0).
    pub broken: Vec<String>,
}

/// Opens `page` (a file) in headless Chromium and reports which `<img>` loaded.
/// The page is copied to a dot file beside it (so relative links resolve the same)
/// with a script appended that writes the result into the DOM after `load`;
/// `--dump-dom` prints the DOM once the virtual time budget has run out.
pub fn check_images_in_chromium(chromium: &Path, page: &Path) -> PageCheck {
    const SCRIPT: &str = r#"<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                .map(function (i) { return i.getAttribute('src'); });
  var p = document.createElement('pre');
  p.textContent = 'CL' + 'CHECK images=' + imgs.length + ' broken=' + bad.join('|') + ' END' + 'CHECK';
  document.body.appendChild(p);
});
</script>"#;
    let html = std::fs::read_to_string(page).expect("read page");
    let at = html.rfind("</body>").expect("page has </body>");
    let probe = page.with_file_name(".candlelight-probe.html");
    std::fs::write(&probe, format!("{}{SCRIPT}{}", &html[..at], &html[at..])).expect("write probe");
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!(
        "file://{}",
        std::fs::canonicalize(&probe).expect("probe path").display()
    );
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--run-all-compositor-stages-before-draw",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start chromium");
    // Read output on threads so a full pipe never blocks the browser.
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut so, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut se, &mut s);
        s
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if child.try_wait().expect("wait chromium").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dom = out_t.join().expect("stdout thread");
    let err = err_t.join().expect("stderr thread");
    let _ = std::fs::remove_file(&probe);
    let start = dom.find("CLCHECK images=").unwrap_or_else(|| {
        panic!("chromium gave no result for {url}\n--- dom\n{dom}\n--- stderr\n{err}")
    });
    let rest = &dom[start + "CLCHECK images=".len()..];
    let end = rest.find(" ENDCHECK").expect("end marker");
    let (n, broken) = rest[..end].split_once(" broken=").expect("broken list");
    PageCheck {
        images: n.parse().expect("image count"),
        broken: broken
            .split('|')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    }
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
#[cfg(feature = "cli")]
pub mod daemon;

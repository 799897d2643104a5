//! A running `candlelight watch` for the integration tests, and helpers around it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::gallery::{read_manifest, Manifest};
use candlelight::Run;

use super::list_files;

/// Generous: CI boxes are small and busy.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A running `candlelight watch` whose stderr is collected.
pub struct Daemon {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
    pub out: PathBuf,
}

impl Daemon {
    pub fn start(runs: &Path, out: &Path, extra: &[&str]) -> Daemon {
        Daemon::spawn(Daemon::command(runs, out, extra), out)
    }

    /// The command [`Daemon::start`] runs (to adjust before [`Daemon::spawn`]).
    pub fn command(runs: &Path, out: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_candlelight"));
        cmd.arg("watch")
            .arg(runs)
            .arg("--out")
            .arg(out)
            .args(extra)
            .env("RUST_LOG", "info,candlelight=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts `cmd` (a `watch` writing into `out`) and waits for its catch-up scan.
    pub fn spawn(mut cmd: Command, out: &Path) -> Daemon {
        let mut child = cmd.spawn().expect("start candlelight watch");
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let d = Daemon {
            child,
            log,
            out: out.to_path_buf(),
        };
        // Ready once the catch-up scan is logged (the watcher is started before it).
        d.wait("the catch-up scan", || d.log().contains("catch-up:"));
        d
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `cond` holds, failing with the log and the files after `DEADLINE`.
    pub fn wait(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let end = Instant::now() + DEADLINE;
        while !cond() {
            if Instant::now() > end {
                panic!(
                    "timed out waiting for {what}\n--- log\n{}\n--- files\n{}",
                    self.log(),
                    list_files(&self.out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Waits up to `limit` for the exit code.
    pub fn exit_within(&mut self, limit: Duration) -> Option<i32> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then the exit code (must come within the deadline).
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let code = self.exit_within(DEADLINE);
        // Let the reader thread drain the pipe.
        let end = Instant::now() + Duration::from_secs(5);
        while !self.log().contains("done:") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        (code, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small run; `seed` changes its values and `layers` its size.
pub fn tiny(seed: usize, layers: usize) -> Run {
    let entries = (0..layers).map(|i| {
        let t = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        let t = ((t - 10.0).unwrap() * (seed as f64 + i as f64 + 1.0)).unwrap();
        (format!("layer{i}"), t)
    });
    Run::from_named_tensors("tiny", entries)
}

/// The bytes of a run file.
pub fn run_bytes(run: &Run) -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.safetensors");
    run.write_to(&p).unwrap();
    std::fs::read(p).unwrap()
}

/// Writes `runs/<stem>.safetensors` atomically (dot temp file, then rename).
pub fn put(runs: &Path, stem: &str, bytes: &[u8]) -> PathBuf {
    let target = runs.join(format!("{stem}.safetensors"));
    candlelight::staging::write_atomic(&target, bytes).unwrap();
    target
}

pub fn manifest(out: &Path, stem: &str) -> Option<Manifest> {
    read_manifest(&out.join(stem))
}

pub fn rendered_ok(out: &Path, stem: &str) -> bool {
    manifest(out, stem).is_some_and(|m| m.status == "ok")
        && out.join(stem).join("index.html").exists()
}

/// Every gallery folder is whole (manifest + index), and no temp folder is left.
pub fn assert_no_half_gallery(out: &Path) {
    for e in std::fs::read_dir(out).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The index's own folders (across-runs pages, diff galleries) are no galleries.
        let ours = [
            candlelight::gallery::TRENDS_DIR,
            candlelight::gallery::DIFFS_DIR,
        ];
        if !e.file_type().unwrap().is_dir() || ours.contains(&name.as_str()) {
            continue;
        }
        assert!(
            !name.starts_with('.'),
            "temp folder {name} left\n{}",
            list_files(out)
        );
        let dir = e.path();
        assert!(
            read_manifest(&dir).is_some() && dir.join("index.html").exists(),
            "half gallery {name}\n{}",
            list_files(out)
        );
    }
}

/// `out/index.html` lists the gallery `name` (a link whose text is the name: its card,
/// or for a run on a later page, its entry under "older runs").
pub fn index_lists(out: &Path, name: &str) -> bool {
    std::fs::read_to_string(out.join("index.html"))
        .is_ok_and(|i| i.contains(&format!(">{name}</a>")))
}

/// Galleries in `out` (non-dot folders with a manifest).
pub fn galleries(out: &Path) -> usize {
    std::fs::read_dir(out)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .filter(|e| read_manifest(&e.path()).is_some())
                .count()
        })
        .unwrap_or(0)
}

/// Per run id, how many renders the log shows; panics if two overlap.
pub fn renders_without_overlap(log: &str) -> HashMap<String, usize> {
    let mut open: HashMap<String, bool> = HashMap::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for line in log.lines() {
        if let Some(rest) = line.split("rendering ").nth(1) {
            let id = rest.split_whitespace().next().unwrap().to_string();
            let was = open.insert(id.clone(), true);
            assert_ne!(was, Some(true), "{id} rendered twice at once:\n{log}");
            *count.entry(id).or_default() += 1;
        } else if let Some(rest) = line.split("rendered ").nth(1) {
            let id = rest.split_whitespace().next().unwrap().to_string();
            let was = open.insert(id.clone(), false);
            assert_eq!(was, Some(true), "{id} ended without a start:\n{log}");
        }
    }
    count
}

//! `candlelight watch` figures, with the real (release) binary:
//!
//! * latency from the rename of a run into the folder to its gallery's
//!   `index.html` existing, against the render time the daemon logs (median of 20);
//! * throughput of a 300-run burst, and its ratio to rendering the same 300 runs in
//!   one process with `candlelight render` (median of 3 alternating rounds: this
//!   box is shared, and both sides are bound by fsync);
//! * the daemon's memory (VmRSS, VmHWM, RssAnon, RssFile) idle and while it renders
//!   a 1 GB run.
//!
//! `cargo bench --bench watch` (Linux: memory comes from /proc). Set
//! `WATCH_BENCH_BIG_MB` to change the size of the big run (default 1024).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candlelight::models::mnist_cnn::{
    default_weights_path, image_to_input, sample_digits, MnistCnn,
};
use candlelight::{Recorder, Run};

const BIN: &str = env!("CARGO_BIN_EXE_candlelight");

struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn start(runs: &Path, out: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("watch")
            .arg(runs)
            .arg("--out")
            .arg(out)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let d = Daemon { child, log };
        wait(Duration::from_secs(60), || d.log().contains("catch-up:"));
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The render time the daemon logged for `id`, in ms.
    fn render_ms(&self, id: &str) -> Option<f64> {
        let pat = format!("rendered {id} in ");
        self.log().lines().find_map(|l| {
            let rest = &l[l.find(&pat)? + pat.len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    fn status(&self) -> Mem {
        Mem::of(self.child.id())
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Mem {
    rss_kb: u64,
    hwm_kb: u64,
    anon_kb: u64,
    file_kb: u64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            s.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Mem {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            anon_kb: field("RssAnon:"),
            file_kb: field("RssFile:"),
        }
    }

    fn show(&self) -> String {
        format!(
            "VmRSS {:.1} MB (anon {:.1}, file {:.1}), VmHWM {:.1} MB",
            self.rss_kb as f64 / 1024.0,
            self.anon_kb as f64 / 1024.0,
            self.file_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0
        )
    }
}

fn wait(limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The run files of the shipped MNIST CNN on the 10 bundled sample digits, as bytes.
fn mnist_runs() -> Vec<Vec<u8>> {
    let dev = Device::Cpu;
    let model = MnistCnn::load(&default_weights_path(), &dev).expect("shipped weights");
    let dir = tempfile::tempdir().unwrap();
    sample_digits()
        .expect("sample digits")
        .iter()
        .map(|(png, _)| {
            let x = image_to_input(png, &dev).unwrap();
            let (_, run) = Recorder::new("mnist-cnn")
                .record(|| model.predict(&x).map_err(candle_core::Error::wrap))
                .unwrap();
            std::fs::read(run.save(dir.path()).unwrap()).unwrap()
        })
        .collect()
}

/// Writes `bytes` as `dir/.<stem>.tmp`, ready to be renamed in.
fn stage(bytes: &[u8], dir: &Path, stem: &str) -> PathBuf {
    let p = dir.join(format!(".{stem}.tmp"));
    std::fs::write(&p, bytes).unwrap();
    p
}

fn write_tmp(bytes: &[u8], dir: &Path) -> PathBuf {
    let p = dir.join("sample.safetensors");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let out = root.path().join("galleries");
    std::fs::create_dir_all(&runs).unwrap();

    let samples = mnist_runs();
    println!(
        "shipped MNIST CNN runs: {} layers, {:.1} KB each",
        Run::open(write_tmp(&samples[0], root.path()))
            .unwrap()
            .len(),
        samples[0].len() as f64 / 1e3
    );

    // ---- latency -------------------------------------------------------------
    let d = Daemon::start(&runs, &out);
    std::thread::sleep(Duration::from_millis(300));
    let idle = d.status();
    let (mut lat, mut ren) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let stem = format!("lat{i:02}");
        let tmp = stage(&samples[i % samples.len()], &runs, &stem);
        let target = runs.join(format!("{stem}.safetensors"));
        let index = out.join(&stem).join("index.html");
        let t0 = Instant::now();
        std::fs::rename(&tmp, &target).unwrap();
        wait(Duration::from_secs(60), || index.exists());
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        wait(Duration::from_secs(10), || d.render_ms(&stem).is_some());
        ren.push(d.render_ms(&stem).unwrap());
    }
    let (ml, mr) = (median(lat.clone()), median(ren.clone()));
    let overhead: Vec<f64> = lat.iter().zip(&ren).map(|(l, r)| l - r).collect();
    println!("latency (rename -> gallery index.html), shipped MNIST CNN run, median of 20:");
    println!(
        "  latency {ml:.1} ms, render {mr:.1} ms, latency - render {:.1} ms (goal <= 200 ms); min {:.1} max {:.1} ms",
        median(overhead),
        lat.iter().cloned().fold(f64::INFINITY, f64::min),
        lat.iter().cloned().fold(0.0, f64::max)
    );
    println!("memory idle: {}", idle.show());
    d.stop();

    // ---- 300-run burst, daemon and `candlelight render` alternating -----------
    let n = 300;
    let rounds = 3;
    let (mut daemon_t, mut index_t, mut cli_t) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let base = root.path().join(format!("burst{round}"));
        let (burst_runs, burst_out, stage_dir, one_out) = (
            base.join("runs"),
            base.join("out"),
            base.join("stage"),
            base.join("one-process"),
        );
        std::fs::create_dir_all(&burst_runs).unwrap();
        std::fs::create_dir_all(&stage_dir).unwrap();
        let staged: Vec<(PathBuf, PathBuf)> = (0..n)
            .map(|i| {
                let stem = format!("b{i:03}");
                let tmp = stage(&samples[i % samples.len()], &burst_runs, &stem);
                (tmp, burst_runs.join(format!("{stem}.safetensors")))
            })
            .collect();
        let copies: Vec<PathBuf> = (0..n)
            .map(|i| {
                let p = stage_dir.join(format!("b{i:03}.safetensors"));
                std::fs::write(&p, &samples[i % samples.len()]).unwrap();
                p
            })
            .collect();

        let d = Daemon::start(&burst_runs, &burst_out);
        let t0 = Instant::now();
        for (tmp, target) in &staged {
            std::fs::rename(tmp, target).unwrap();
        }
        wait(Duration::from_secs(600), || {
            (0..n).all(|i| {
                burst_out
                    .join(format!("b{i:03}"))
                    .join("manifest.json")
                    .exists()
            })
        });
        daemon_t.push(t0.elapsed().as_secs_f64());
        // The index lists them all shortly after (rewritten as runs finish).
        wait(Duration::from_secs(60), || {
            std::fs::read_to_string(burst_out.join("index.html"))
                .is_ok_and(|s| (0..n).all(|i| s.contains(&format!(">b{i:03}<"))))
        });
        index_t.push(t0.elapsed().as_secs_f64());
        d.stop();

        let t0 = Instant::now();
        let st = Command::new(BIN)
            .arg("render")
            .args(&copies)
            .arg("--out")
            .arg(&one_out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "candlelight render failed");
        cli_t.push(t0.elapsed().as_secs_f64());
    }
    let (td, ti, tc) = (
        median(daemon_t.clone()),
        median(index_t.clone()),
        median(cli_t.clone()),
    );
    println!("burst of {n} shipped MNIST CNN runs, median of {rounds} alternating rounds:");
    println!(
        "  daemon: {:.0} runs/s to the last gallery ({td:.2} s), {:.0} runs/s to the full index ({ti:.2} s)",
        n as f64 / td,
        n as f64 / ti
    );
    println!(
        "  `candlelight render` of the same {n} in one process: {:.0} runs/s ({tc:.2} s)",
        n as f64 / tc
    );
    println!(
        "  ratio daemon / one process: {:.2} (to the full index; goal >= 0.9); rounds: daemon {:?} s, render {:?} s",
        tc / ti,
        index_t.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>(),
        cli_t.iter().map(|t| (t * 100.0).round() / 100.0).collect::<Vec<_>>()
    );

    // ---- memory while rendering a big run -------------------------------------
    let mb: usize = std::env::var("WATCH_BENCH_BIG_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let big_runs = root.path().join("big-runs");
    let big_out = root.path().join("big-out");
    std::fs::create_dir_all(&big_runs).unwrap();
    let layers = 4;
    let per_layer = mb * 1024 * 1024 / 4 / layers; // f32 elements
    let side = (per_layer / 64) as f64;
    let w = side.sqrt() as usize;
    let h = per_layer / 64 / w;
    let big = Run::from_named_tensors(
        "big",
        (0..layers).map(|i| {
            let t = Tensor::ones((1, 64, h, w), DType::F32, &Device::Cpu).unwrap();
            (format!("block{i}"), (t * (i as f64 + 1.0)).unwrap())
        }),
    );
    let tmp = big_runs.join(".big.tmp");
    big.write_to(&tmp).unwrap();
    drop(big);
    let size = std::fs::metadata(&tmp).unwrap().len();
    let d = Daemon::start(&big_runs, &big_out);
    std::thread::sleep(Duration::from_millis(300));
    let before = d.status();
    let t0 = Instant::now();
    std::fs::rename(&tmp, big_runs.join("big.safetensors")).unwrap();
    let mut peak = Mem::default();
    let manifest = big_out.join("big").join("manifest.json");
    while !manifest.exists() {
        let m = d.status();
        if m.rss_kb > peak.rss_kb {
            peak = m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "big run not rendered"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t_big = t0.elapsed().as_secs_f64();
    // After the render has returned (its log line is written after the run is closed).
    wait(Duration::from_secs(60), || d.render_ms("big").is_some());
    let after = d.status();
    println!(
        "run of {:.0} MB ({layers} layers [1, 64, {h}, {w}] f32), rendered in {t_big:.2} s:",
        size as f64 / 1e6
    );
    println!("  daemon before: {}", before.show());
    println!("  peak sampled while rendering: {}", peak.show());
    println!("  after the render: {}", after.show());
    println!("  (goal: < 200 MB; RssFile is the run file's page cache mapped by the reader, RssAnon the daemon's own memory)");
    d.stop();
}

//! `candlelight watch` figures, with the real (release) binary:
//!
//! * latency from the rename of a run into the folder to its gallery's
//!   `index.html` existing, against the render time the daemon logs (median of 20);
//! * throughput of a 300-run burst, and its ratio to rendering the same 300 runs in
//!   one process (`candlelight render` when the binary has it, else the library's
//!   `render_gallery` on a rayon pool + one `write_index`);
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
use candlelight::models::seeded_uniform;
use candlelight::Run;
use rayon::prelude::*;

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

/// A run shaped like the shipped LeNet-5's forward pass on one 28x28 image.
fn lenet_run(seed: u64) -> Run {
    let dev = Device::Cpu;
    let shapes: [(&str, &[usize]); 10] = [
        ("input", &[1, 1, 28, 28]),
        ("conv1", &[1, 6, 28, 28]),
        ("relu1", &[1, 6, 28, 28]),
        ("pool1", &[1, 6, 14, 14]),
        ("conv2", &[1, 16, 10, 10]),
        ("relu2", &[1, 16, 10, 10]),
        ("pool2", &[1, 16, 5, 5]),
        ("fc1", &[1, 120]),
        ("fc2", &[1, 84]),
        ("fc3", &[1, 10]),
    ];
    let entries = shapes.iter().enumerate().map(|(i, (name, shape))| {
        let t = seeded_uniform(shape, seed * 100 + i as u64, &dev).unwrap();
        (name.to_string(), (t - 0.5).unwrap())
    });
    Run::from_named_tensors("lenet", entries)
}

/// Writes `run` as `dir/.<stem>.tmp`, ready to be renamed in.
fn stage(run: &Run, dir: &Path, stem: &str) -> PathBuf {
    let p = dir.join(format!(".{stem}.tmp"));
    run.write_to(&p).unwrap();
    p
}

fn has_render_cli() -> bool {
    Command::new(BIN)
        .args(["render", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let root = tempfile::tempdir().unwrap();
    let runs = root.path().join("runs");
    let out = root.path().join("galleries");
    std::fs::create_dir_all(&runs).unwrap();

    // ---- latency -------------------------------------------------------------
    let d = Daemon::start(&runs, &out);
    std::thread::sleep(Duration::from_millis(300));
    let idle = d.status();
    let (mut lat, mut ren) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let stem = format!("lat{i:02}");
        let tmp = stage(&lenet_run(i), &runs, &stem);
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
    println!("latency (rename -> gallery index.html), LeNet-shaped run, median of 20:");
    println!(
        "  latency {ml:.1} ms, render {mr:.1} ms, latency - render {:.1} ms (goal <= 200 ms); min {:.1} max {:.1} ms",
        median(overhead),
        lat.iter().cloned().fold(f64::INFINITY, f64::min),
        lat.iter().cloned().fold(0.0, f64::max)
    );
    println!("memory idle: {}", idle.show());
    d.stop();

    // ---- 300-run burst ---------------------------------------------------------
    let burst_runs = root.path().join("burst-runs");
    let burst_out = root.path().join("burst-out");
    let stage_dir = root.path().join("stage");
    std::fs::create_dir_all(&burst_runs).unwrap();
    std::fs::create_dir_all(&stage_dir).unwrap();
    let n = 300;
    let staged: Vec<(PathBuf, PathBuf)> = (0..n)
        .map(|i| {
            let stem = format!("b{i:03}");
            let tmp = stage(&lenet_run(1000 + i as u64), &burst_runs, &stem);
            (tmp, burst_runs.join(format!("{stem}.safetensors")))
        })
        .collect();
    // Copies for the one-process comparison.
    let copies: Vec<PathBuf> = staged
        .iter()
        .map(|(tmp, target)| {
            let p = stage_dir.join(target.file_name().unwrap());
            std::fs::copy(tmp, &p).unwrap();
            p
        })
        .collect();
    let d = Daemon::start(&burst_runs, &burst_out);
    let t0 = Instant::now();
    for (tmp, target) in &staged {
        std::fs::rename(tmp, target).unwrap();
    }
    let done =
        |out: &Path| (0..n).all(|i| out.join(format!("b{i:03}")).join("manifest.json").exists());
    wait(Duration::from_secs(600), || done(&burst_out));
    let t_daemon = t0.elapsed().as_secs_f64();
    // The index lists them all shortly after (it is rewritten as runs finish).
    wait(Duration::from_secs(60), || {
        std::fs::read_to_string(burst_out.join("index.html"))
            .is_ok_and(|s| s.matches("b2").count() > 0 && s.contains("b299"))
    });
    let t_daemon_index = t0.elapsed().as_secs_f64();
    d.stop();

    let one_out = root.path().join("one-process");
    let (how, t_one) = if has_render_cli() {
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
        (
            "`candlelight render` (one process)",
            t0.elapsed().as_secs_f64(),
        )
    } else {
        let opts = candlelight::gallery::GalleryOptions::default();
        std::fs::create_dir_all(&one_out).unwrap();
        let t0 = Instant::now();
        copies.par_iter().for_each(|p| {
            candlelight::gallery::render_gallery(p, &one_out, &opts).unwrap();
        });
        candlelight::gallery::write_index(&one_out).unwrap();
        (
            "library render_gallery on rayon + write_index (no `render` subcommand in this build)",
            t0.elapsed().as_secs_f64(),
        )
    };
    println!("burst of {n} LeNet-shaped runs:");
    println!(
        "  daemon: {:.0} runs/s ({t_daemon:.2} s to the last gallery, {t_daemon_index:.2} s to the full index)",
        n as f64 / t_daemon
    );
    println!(
        "  one process, {how}: {:.0} runs/s ({t_one:.2} s)",
        n as f64 / t_one
    );
    println!(
        "  ratio daemon / one process: {:.2} (goal >= 0.9)",
        t_one / t_daemon
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
    let tmp = stage(&big, &big_runs, "big");
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
    let after = d.status();
    println!(
        "run of {:.0} MB ({layers} layers [1, 64, {h}, {w}] f32), rendered in {t_big:.2} s:",
        size as f64 / 1e6
    );
    println!("  daemon before: {}", before.show());
    println!("  peak sampled while rendering: {}", peak.show());
    println!("  after: {} (goal: < 200 MB)", after.show());
    d.stop();
}

//! `candlelight serve` figures, with the real (release) binary, on a ~1 GB run:
//!
//! * `GET /_/render/<gallery>/<layer>.png?sample=K` for big layers: the first
//!   request (opens the run), warm requests (run open, a sample not drawn before:
//!   a real render), and a repeated request (PNG cache);
//! * against `candlelight render` of the same layer alone (a run file holding only
//!   that layer, so the CLI does the least it can: one gallery of one layer), and of
//!   the whole run, each a fresh process, in alternating rounds.
//!
//! `cargo bench --bench serve`. Needs ~2 GB free on the temp dir's disk (checked
//! first; everything is deleted afterwards). `SERVE_BENCH_ROUNDS` (default 5).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::Run;

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/common/serve.rs"]
mod serve_proc;
use common::{ms, Figure};

const BIN: &str = env!("CARGO_BIN_EXE_candlelight");

/// (name, shape) of the big run's layers, f32: ~0.95 GB.
const LAYERS: &[(&str, &[usize])] = &[
    ("embed", &[8, 512, 768]),
    ("conv_big", &[16, 64, 256, 256]),
    ("tokens_big", &[32, 2048, 2048]),
    ("fc_big", &[64, 524_288]),
    ("logits", &[16, 10]),
];

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df").arg("-Pk").arg(dir).output().expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1).expect("df line");
    line.split_whitespace()
        .nth(3)
        .and_then(|k| k.parse::<u64>().ok())
        .expect("df avail")
        * 1024
}

fn tensor(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1., shape, &Device::Cpu).unwrap()
}

fn cli_render(run: &Path, out: &Path) -> Duration {
    let _ = std::fs::remove_dir_all(out);
    let t0 = Instant::now();
    let st = Command::new(BIN)
        .arg("render")
        .arg(run)
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let t = t0.elapsed();
    assert!(st.success(), "candlelight render {}", run.display());
    t
}

struct Server {
    child: Child,
    addr: String,
    agent: ureq::Agent,
}

impl Server {
    fn start(root: &Path) -> Server {
        let (child, addr) = serve_proc::spawn(BIN, root, &[]);
        Server {
            child,
            addr,
            agent: ureq::Agent::new_with_defaults(),
        }
    }

    /// Time of one GET of a PNG (body read), and its size.
    fn get(&self, path: &str) -> (Duration, usize) {
        let t0 = Instant::now();
        let mut r = self
            .agent
            .get(format!("http://{}{path}", self.addr))
            .call()
            .unwrap();
        let body = r
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .unwrap();
        let t = t0.elapsed();
        assert!(body.starts_with(b"\x89PNG"), "{path}");
        (t, body.len())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rounds: usize = std::env::var("SERVE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let tmp = tempfile::tempdir().unwrap();
    let free = free_bytes(tmp.path());
    if free < 2_500_000_000 {
        eprintln!(
            "serve bench: skipped, only {} MB free in {}",
            free >> 20,
            tmp.path().display()
        );
        return;
    }
    let (runs, one) = (tmp.path().join("runs"), tmp.path().join("one"));
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::create_dir_all(&one).unwrap();
    let big_path = runs.join("big.safetensors");
    Run::from_named_tensors(
        "big",
        LAYERS.iter().map(|(n, s)| (n.to_string(), tensor(s))),
    )
    .write_to(&big_path)
    .unwrap();
    let size = std::fs::metadata(&big_path).unwrap().len();
    println!(
        "run of {:.0} MB: {}",
        size as f64 / 1e6,
        LAYERS
            .iter()
            .map(|(n, s)| format!("{n} {s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (root, scratch) = (tmp.path().join("galleries"), tmp.path().join("scratch"));
    let t_whole = cli_render(&big_path, &root);
    println!(
        "candlelight render (whole run, {} layers): {:.0} ms",
        LAYERS.len(),
        ms(t_whole)
    );
    let server = Server::start(&root);

    for (index, (name, shape)) in LAYERS
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.ends_with("_big"))
    {
        let one_path = one.join(format!("{name}.safetensors"));
        Run::from_named_tensors("one", [(name.to_string(), tensor(shape))])
            .write_to(&one_path)
            .unwrap();
        let url = |k: usize| format!("/_/render/big/{index}.png?sample={k}");
        let (first, bytes) = server.get(&url(0));
        let (mut cli, mut warm, mut cached) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            cli.push(cli_render(&one_path, &scratch));
            warm.push(server.get(&url(1 + r % (shape[0] - 1))).0);
            cached.push(server.get(&url(0)).0);
        }
        let (cli, warm, cached) = (Figure(cli), Figure(warm), Figure(cached));
        let sample_mb = shape[1..].iter().product::<usize>() as f64 * 4.0 / 1e6;
        println!(
            "{name} {shape:?} ({sample_mb:.1} MB per sample, PNG {} KB): first GET {:.0} ms, warm GET median {:.1} ms (min {:.1}), cached GET {:.2} ms; \
             candlelight render of the layer alone median {:.0} ms -> warm GET is {:.1}x faster",
            bytes / 1024,
            ms(first),
            ms(warm.median()),
            ms(warm.min()),
            ms(cached.median()),
            ms(cli.median()),
            cli.ratio(&warm)[0],
        );
        std::fs::remove_file(&one_path).unwrap();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(tmp.path());
}

//! Object-storage figures (issue 15), against an S3-compatible server on 127.0.0.1
//! (moto's server mode: `moto_server` on the PATH, next to `$CANDLELIGHT_PYTHON`,
//! or `$CANDLELIGHT_MOTO_SERVER`):
//!
//! 1. **open** a remote ~1 GB run and read one small layer: requests and bytes
//!    against the header's and the layer's sizes, with the default 64 KiB
//!    read-ahead (one request for the header) and with
//!    `CANDLELIGHT_HEADER_READAHEAD=0` (the header exactly, two requests); time
//!    against opening the same run from a local file;
//! 2. **diff** of two remote ~1 GB runs that differ in one 64 MiB layer: bytes
//!    transferred against that layer twice plus both headers;
//! 3. **watch** throughput with 1, 2 and 3 daemons over 500 small runs: wall time,
//!    runs/s, renders counted (none twice), and where the time goes (the daemons'
//!    logged fetch / render / upload time, CPU of the daemons and of the server).
//!
//! `cargo bench --bench remote` (Linux: CPU times from /proc). `REMOTE_BENCH_MB`
//! changes the big runs' size (default 1024), `REMOTE_BENCH_RUNS` the number of
//! small runs (default 500).

#[path = "../tests/common/s3.rs"]
mod s3;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::diff::{diff, DiffOptions};
use candlelight::remote::Remote;
use candlelight::Run;

const MIB: u64 = 1 << 20;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mb(b: u64) -> String {
    if b >= MIB {
        format!("{:.1} MiB", b as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// `layers` layers of 64 MiB (f32) named `big.<i>`, plus a 100-value `probe`;
/// layer `changed` (if any) gets other values.
fn big_run(layers: usize, changed: Option<usize>) -> Run {
    let n = (64 * MIB / 4) as usize;
    let mut entries = vec![(
        "probe".to_string(),
        Tensor::arange(0f32, 100., &Device::Cpu)
            .unwrap()
            .reshape((1, 100))
            .unwrap(),
    )];
    for i in 0..layers {
        let shift = if changed == Some(i) { 0.5 } else { 0.0 };
        let v: Vec<f32> = (0..n)
            .map(|j| ((j * 31 + i * 7) % 4099) as f32 * 1e-3 + shift)
            .collect();
        entries.push((
            format!("big.{i}"),
            Tensor::from_vec(v, (1, 16, 1024, 1024), &Device::Cpu).unwrap(),
        ));
    }
    Run::from_named_tensors("bench-big", entries)
}

/// Bytes of the header of a local run file (8-byte length + JSON).
fn header_bytes(path: &Path) -> u64 {
    let b = std::fs::read(path).map(|v| v[..8].to_vec()).unwrap();
    8 + u64::from_le_bytes(b.try_into().unwrap())
}

fn open_and_probe(url: &str) -> (Duration, u64, u64) {
    let t0 = Instant::now();
    let r = Run::open(url).unwrap();
    let v = r.values("probe").unwrap();
    let t = t0.elapsed();
    assert_eq!(v.len(), 100);
    let (req, bytes) = r.transfer().unwrap();
    (t, req, bytes)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_open_and_diff(bucket: &str, scratch: &Path) {
    let layers = env_usize("REMOTE_BENCH_MB", 1024) / 64;
    if layers == 0 {
        return;
    }
    println!("\n== open and diff: runs of {layers} x 64 MiB layers + a 400 B probe ==");
    let a = big_run(layers, None);
    let b = big_run(layers, Some(layers / 2));
    let t0 = Instant::now();
    let ua = a.save(format!("s3://{bucket}/big")).unwrap();
    let upload = t0.elapsed();
    let ub = b.save(format!("s3://{bucket}/big")).unwrap();
    let la = a.save(scratch).unwrap();
    let lb = b.save(scratch).unwrap();
    let size = std::fs::metadata(&la).unwrap().len();
    println!(
        "upload of {} (multipart, 8 MiB parts, 4 in flight): {:.2} s, {:.0} MB/s",
        mb(size),
        upload.as_secs_f64(),
        size as f64 / 1e6 / upload.as_secs_f64()
    );
    drop((a, b));
    let (ua, ub) = (ua.to_str().unwrap(), ub.to_str().unwrap());
    let header = header_bytes(&la);
    let probe = 400u64;

    // 1. open + one small layer.
    for readahead in [None, Some("0")] {
        match readahead {
            Some(v) => std::env::set_var("CANDLELIGHT_HEADER_READAHEAD", v),
            None => std::env::remove_var("CANDLELIGHT_HEADER_READAHEAD"),
        }
        let mut remote_t = Vec::new();
        let mut local_t = Vec::new();
        let mut last = (0, 0);
        for _ in 0..7 {
            let (t, req, bytes) = open_and_probe(ua);
            remote_t.push(t);
            last = (req, bytes);
            let t0 = Instant::now();
            let r = Run::open(&la).unwrap();
            assert_eq!(r.values("probe").unwrap().len(), 100);
            local_t.push(t0.elapsed());
        }
        let (rt, lt) = (median(remote_t), median(local_t));
        let (req, bytes) = last;
        let header_req = req - 1;
        println!(
            "open + probe, read-ahead {}: {} requests ({} for the header, goal <= 2), {} read; \
             header {} + layer {} = {} -> {} [goal bytes <= header + layer: {}]; \
             {:.2} ms remote vs {:.3} ms local file (x{:.0})",
            readahead.map_or("64 KiB (default)", |_| "0"),
            req,
            header_req,
            bytes,
            header,
            probe,
            header + probe,
            if bytes <= header + probe {
                "met"
            } else {
                "over by the read-ahead"
            },
            if header_req <= 2 && bytes <= header + probe {
                "met"
            } else if header_req <= 2 {
                "requests met"
            } else {
                "NOT met"
            },
            rt.as_secs_f64() * 1e3,
            lt.as_secs_f64() * 1e3,
            rt.as_secs_f64() / lt.as_secs_f64()
        );
    }
    std::env::remove_var("CANDLELIGHT_HEADER_READAHEAD");

    // 2. diff of two remote runs that differ in one layer.
    let mut times = Vec::new();
    let mut transfer = (0, 0, 0, 0);
    for _ in 0..3 {
        let t0 = Instant::now();
        let (ra, rb) = (Run::open(ua).unwrap(), Run::open(ub).unwrap());
        let d = diff(&ra, &rb, &DiffOptions::default()).unwrap();
        times.push(t0.elapsed());
        let (qa, ba) = ra.transfer().unwrap();
        let (qb, bb) = rb.transfer().unwrap();
        transfer = (qa, ba, qb, bb);
        let differing = d.layers.iter().filter(|l| l.diverges).count();
        assert_eq!(differing, 1, "one layer differs");
    }
    let (qa, ba, qb, bb) = transfer;
    let layer = 64 * MIB;
    let bound = 2 * layer + 2 * header;
    let t_remote = median(times);
    let mut local_times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let (ra, rb) = (Run::open(&la).unwrap(), Run::open(&lb).unwrap());
        diff(&ra, &rb, &DiffOptions::default()).unwrap();
        local_times.push(t0.elapsed());
    }
    let t_local = median(local_times);
    println!(
        "diff of two remote {} runs differing in one 64 MiB layer: A {} requests {}, B {} requests {}; \
         total {} vs bound 2 x layer + headers = {} [{}] ({:.1}% of both runs); \
         {:.2} s remote vs {:.2} s for the same diff of local files (which reads every layer)",
        mb(size),
        qa,
        mb(ba),
        qb,
        mb(bb),
        mb(ba + bb),
        mb(bound),
        if ba + bb <= bound + 2 * 64 * 1024 { "met" } else { "NOT met" },
        100.0 * (ba + bb) as f64 / (2 * size) as f64,
        t_remote.as_secs_f64(),
        t_local.as_secs_f64()
    );
    for p in [la, lb] {
        let _ = std::fs::remove_file(p);
    }
    for u in [ua, ub] {
        Remote::parse(u).unwrap().delete().unwrap();
    }
}

/// A small run like a seed-CNN pass on one sample: 4 layers, 1×8×12×12 the largest.
fn small_run(seed: usize) -> Run {
    let s = seed as f64 * 1e-3;
    let mk = |n: usize, shape: &[usize], k: f64| {
        Tensor::arange(0f32, n as f32, &Device::Cpu)
            .unwrap()
            .affine(k, s)
            .unwrap()
            .sin()
            .unwrap()
            .reshape(shape)
            .unwrap()
    };
    Run::from_named_tensors(
        "bench-small",
        vec![
            ("conv1".to_string(), mk(8 * 24 * 24, &[1, 8, 24, 24], 0.01)),
            ("pool1".to_string(), mk(8 * 12 * 12, &[1, 8, 12, 12], 0.02)),
            ("fc1".to_string(), mk(64, &[1, 64], 0.1)),
            ("logits".to_string(), mk(10, &[1, 10], 0.3)),
        ],
    )
}

/// CPU seconds (user + system) of a process so far, from /proc.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

struct Split {
    rendered: usize,
    urls: HashMap<String, usize>,
    fetch_ms: f64,
    render_ms: f64,
    upload_ms: f64,
}

/// Sums the `rendered <url> -> ... (N layers, T ms: fetch F, render R, upload U (K files))` lines.
fn split(logs: &[String]) -> Split {
    let mut s = Split {
        rendered: 0,
        urls: HashMap::new(),
        fetch_ms: 0.0,
        render_ms: 0.0,
        upload_ms: 0.0,
    };
    for l in logs.iter().flat_map(|l| l.lines()) {
        let Some((_, rest)) = l.split_once("rendered ") else {
            continue;
        };
        let Some((url, tail)) = rest.split_once(" -> ") else {
            continue;
        };
        s.rendered += 1;
        *s.urls.entry(url.to_string()).or_default() += 1;
        let num = |k: &str| -> f64 {
            tail.split_once(k)
                .and_then(|(_, r)| r.split([',', ' ', ')']).next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        s.fetch_ms += num("fetch ");
        s.render_ms += num("render ");
        s.upload_ms += num("upload ");
    }
    s
}

fn bench_watch(s3: &s3::Moto, scratch: &Path) {
    let runs = env_usize("REMOTE_BENCH_RUNS", 500);
    println!("\n== watch: {runs} small runs (4 layers), 1, 2 and 3 daemons (-j 2 each), one 2-core machine ==");
    let mut base_rate = 0.0;
    for daemons in 1..=3usize {
        let bucket = format!("watch{daemons}");
        s3.bucket(&bucket);
        // The runs are all there before the daemons start: a burst.
        std::thread::scope(|sc| {
            for w in 0..4 {
                let bucket = &bucket;
                sc.spawn(move || {
                    for i in (w..runs).step_by(4) {
                        small_run(i).save(format!("s3://{bucket}/runs")).unwrap();
                    }
                });
            }
        });
        let moto_cpu0 = cpu_secs(s3.child.id());
        let t0 = Instant::now();
        let logs: Vec<_> = (0..daemons)
            .map(|i| scratch.join(format!("{bucket}-{i}.log")))
            .collect();
        let mut children: Vec<Child> = logs
            .iter()
            .map(|log| s3.watch_daemon(&bucket, &["--poll-interval-ms", "200"], log))
            .collect();
        // Done when the logs name every run (no requests of ours to the server).
        loop {
            let names: std::collections::HashSet<String> = logs
                .iter()
                .flat_map(|l| {
                    let text = std::fs::read_to_string(l).unwrap_or_default();
                    split(&[text]).urls.into_keys().collect::<Vec<_>>()
                })
                .collect();
            if names.len() >= runs {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(1800),
                "{} of {runs} after 30 min",
                names.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let wall = t0.elapsed();
        let daemon_cpu: f64 = children.iter().map(|c| cpu_secs(c.id())).sum();
        let moto_cpu = cpu_secs(s3.child.id()) - moto_cpu0;
        for c in &mut children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut children {
            let _ = c.wait();
        }
        let texts: Vec<String> = logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap())
            .collect();
        let s = split(&texts);
        let requests: u64 = texts
            .iter()
            .filter_map(|t| t.split_once(" store errors, ").map(|(_, r)| r))
            .filter_map(|r| r.split(' ').next()?.parse::<u64>().ok())
            .sum();
        let twice = s.urls.values().filter(|&&n| n > 1).count();
        let rate = runs as f64 / wall.as_secs_f64();
        if daemons == 1 {
            base_rate = rate;
        }
        let per = |ms: f64| ms / s.rendered.max(1) as f64;
        println!(
            "{daemons} daemon(s): {runs} runs in {:.1} s = {rate:.1} runs/s (x{:.2} of 1 daemon); \
             renders counted {} (distinct {}, twice {twice}); per run: fetch {:.1} ms, render {:.1} ms, \
             upload {:.1} ms; {:.1} store requests per run (all daemons, lists and index included); \
             CPU: daemons {:.1} s, S3 server {:.1} s, wall x cores {:.1} s",
            wall.as_secs_f64(),
            rate / base_rate,
            s.rendered,
            s.urls.len(),
            per(s.fetch_ms),
            per(s.render_ms),
            per(s.upload_ms),
            requests as f64 / runs as f64,
            daemon_cpu,
            moto_cpu,
            wall.as_secs_f64() * 2.0
        );
        assert_eq!(twice, 0, "a run was rendered twice");
        assert_eq!(s.urls.len(), runs, "every run rendered");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("remote: bench");
        return;
    }
    let Some(s3) = s3::shared() else {
        println!("skipped: no S3-compatible server");
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", load.trim());
    s3.bucket("bench");
    bench_open_and_diff("bench", scratch.path());
    bench_watch(s3, scratch.path());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nload after: {}", load.trim());
}

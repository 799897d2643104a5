//! Several `watch` daemons sharing one object-store prefix (issue 15), against a
//! real S3-compatible server on 127.0.0.1 (moto, see tests/common/s3.rs): 500 runs
//! dropped by 4 concurrent writers, 3 daemons, one killed -9 mid-way. Every run
//! gets exactly one complete gallery, none is lost, the index lists all of them.

mod common;
#[path = "common/s3.rs"]
mod s3;

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::remote::Remote;
use candlelight::Run;

const RUNS: usize = 500;
const WRITERS: usize = 4;

/// A small run (a 1×4×6×6 conv-like layer and a 1×10 one), values from `seed`.
fn small_run(seed: usize) -> Run {
    let s = seed as f64;
    let conv = Tensor::arange(0f32, 144., &Device::Cpu)
        .unwrap()
        .affine(0.01, s)
        .unwrap()
        .reshape((1, 4, 6, 6))
        .unwrap();
    let logits = Tensor::arange(0f32, 10., &Device::Cpu)
        .unwrap()
        .affine(-0.5, s)
        .unwrap()
        .reshape((1, 10))
        .unwrap();
    Run::from_named_tensors(
        "fleet",
        vec![("conv".to_string(), conv), ("logits".to_string(), logits)],
    )
}

/// A daemon: `watch s3://<bucket>/runs --out s3://<bucket>/galleries`, logging to
/// `log`, with short leases and polls.
fn daemon(s3: &s3::Moto, bucket: &str, log: &Path) -> Child {
    let more = ["--lease-secs", "3", "--poll-interval-ms", "300"];
    s3.watch_daemon(bucket, &more, log)
}

/// The daemons, killed when the test ends (also when it fails).
struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `rendered <url> -> ...` lines of a daemon's log.
fn rendered(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("rendered ").map(|(_, r)| r))
        .filter_map(|r| r.split_once(" -> ").map(|(u, _)| u.to_string()))
        .collect()
}

/// An object's text (a signed GET through the library: moto refuses anonymous ones).
fn get(bucket: &str, key: &str) -> Option<String> {
    Remote::parse(&format!("s3://{bucket}/{key}"))
        .unwrap()
        .get()
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .map(|b| String::from_utf8(b).unwrap())
}

/// Relative links (`href`/`src`) of an HTML page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in html.split(attr).skip(1) {
            let l = part
                .split('"')
                .next()
                .unwrap()
                .replace("&#x2f;", "/")
                .replace("&amp;", "&");
            let l = l.as_str();
            if !l.is_empty() && !l.starts_with('#') && !l.contains("://") && !l.starts_with("data:")
            {
                out.push(l.split(['#', '?']).next().unwrap().to_string());
            }
        }
    }
    out
}

fn sigterm(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn three_daemons_share_500_runs_each_rendered_once_after_one_is_killed() {
    let Some(s3) = s3::shared() else { return };
    let bucket = "fleet";
    s3.bucket(bucket);
    let tmp = tempfile::tempdir().unwrap();
    let logs: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("daemon{i}.log")))
        .collect();
    let mut guard = Daemons(logs.iter().map(|l| daemon(s3, bucket, l)).collect());
    let daemons = &mut guard.0;

    // 4 writers, 125 runs each, saved by URL while the daemons run.
    let saved: Vec<String> = std::thread::scope(|sc| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                sc.spawn(move || {
                    (0..RUNS / WRITERS)
                        .map(|i| {
                            let run = small_run(w * 1000 + i);
                            let to = format!("s3://{bucket}/runs");
                            let p = run.save(&to).unwrap_or_else(|e| panic!("save: {e}"));
                            p.to_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Kill daemon 0 mid-way: once it has rendered some runs and writers are
        // still going.
        let t0 = Instant::now();
        loop {
            let log = std::fs::read_to_string(&logs[0]).unwrap_or_default();
            if rendered(&log).len() >= 20 || t0.elapsed() > Duration::from_secs(120) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // (Not right after a log line: mid-render, holding leases.)
        std::thread::sleep(Duration::from_millis(40));
        daemons[0].kill().unwrap();
        daemons[0].wait().unwrap();
        writers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    let saved: BTreeSet<String> = saved.into_iter().collect();
    assert_eq!(saved.len(), RUNS, "the writers saved {RUNS} distinct runs");

    // Wait for every run to be marked done and the index to list all of them.
    let t0 = Instant::now();
    let index_runs = |html: &str| -> BTreeSet<String> {
        links(html)
            .into_iter()
            .filter(|l| l.ends_with("/index.html"))
            .map(|l| l.trim_end_matches("/index.html").to_string())
            .collect()
    };
    let listed = loop {
        let done = s3.keys(bucket, "galleries/.candlelight/done/").len();
        let mut listed = BTreeSet::new();
        if done == RUNS {
            let mut page = get(bucket, "galleries/index.html");
            let mut n = 1;
            while let Some(html) = page {
                listed.extend(index_runs(&html));
                n += 1;
                page = get(bucket, &format!("galleries/index-{n}.html"));
            }
            if listed.len() >= RUNS {
                break listed;
            }
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let all: String = logs
                .iter()
                .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                .collect();
            panic!(
                "after 300 s: {done} of {RUNS} done, {} listed in the index\n{}",
                listed.len(),
                all.lines()
                    .filter(|l| !l.contains("rendered "))
                    .rev()
                    .take(60)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    for d in daemons.iter_mut().skip(1) {
        sigterm(d);
    }

    // Exactly one counted render per run, across the three daemons: one done
    // marker per run (its body names the daemon), and one `rendered` line per
    // marker, except that the daemon killed -9 may have died between creating a
    // marker and logging it (at most one per render thread).
    let marker_keys = s3.keys(bucket, "galleries/.candlelight/done/");
    assert_eq!(marker_keys.len(), RUNS, "one done marker per run");
    let names: Vec<String> = marker_keys
        .iter()
        .map(|k| k.rsplit('/').next().unwrap().to_string())
        .collect();
    let bodies = Remote::parse(&format!("s3://{bucket}/galleries/.candlelight/done"))
        .unwrap()
        .get_many(&names, 16)
        .unwrap();
    let pids: Vec<u32> = daemons.iter().map(|d| d.id()).collect();
    let mut marked: Vec<BTreeSet<String>> = vec![BTreeSet::new(); 3];
    for b in bodies {
        let v: serde_json::Value = serde_json::from_slice(&b.unwrap()).unwrap();
        let owner = v["owner"].as_str().unwrap();
        let pid: u32 = owner.split(':').nth(1).unwrap().parse().unwrap();
        let d = pids
            .iter()
            .position(|&p| p == pid)
            .expect("a marker of one of the daemons");
        marked[d].insert(v["run"].as_str().unwrap().to_string());
    }
    let marked_runs: BTreeSet<String> = marked.iter().flatten().cloned().collect();
    assert_eq!(
        marked_runs, saved,
        "the runs marked done are the saved runs"
    );
    let mut per_run: HashMap<String, usize> = HashMap::new();
    let mut per_daemon = Vec::new();
    for (i, l) in logs.iter().enumerate() {
        let log = std::fs::read_to_string(l).unwrap();
        let r = rendered(&log);
        per_daemon.push(r.len());
        let lines: BTreeSet<String> = r.iter().cloned().collect();
        if i == 0 {
            assert!(
                lines.is_subset(&marked[0]),
                "daemon 0 logged a render it did not mark"
            );
            assert!(
                marked[0].len() - lines.len() <= 2,
                "daemon 0: {} marked, {} logged",
                marked[0].len(),
                lines.len()
            );
        } else {
            assert_eq!(
                lines, marked[i],
                "daemon {i}: a rendered line per done marker"
            );
        }
        for u in r {
            *per_run.entry(u).or_default() += 1;
        }
    }
    let takeovers: usize = logs
        .iter()
        .map(|l| {
            std::fs::read_to_string(l)
                .unwrap()
                .matches("taking over from")
                .count()
        })
        .sum();
    eprintln!(
        "renders per daemon {per_daemon:?} (daemon 0 killed -9; done markers {:?}), {takeovers} lease(s) taken over, {:.1} s",
        marked.iter().map(|m| m.len()).collect::<Vec<_>>(),
        t0.elapsed().as_secs_f64()
    );
    let twice: Vec<_> = per_run.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "rendered more than once: {twice:?}");
    assert!(
        per_daemon[1] > 0 && per_daemon[2] > 0,
        "both surviving daemons took work: {per_daemon:?}"
    );

    // Every gallery is complete: its page, its manifest and every file its page
    // links to; the index links every run.
    let keys: BTreeSet<String> = s3.keys(bucket, "galleries/").into_iter().collect();
    let galleries: BTreeSet<String> = saved
        .iter()
        .map(|u| {
            let name = u.rsplit('/').next().unwrap();
            name.trim_end_matches(".safetensors").to_string()
        })
        .collect();
    assert_eq!(galleries.len(), RUNS);
    assert_eq!(listed, galleries, "the index lists every run");
    for g in &galleries {
        for f in ["index.html", "manifest.json"] {
            assert!(
                keys.contains(&format!("galleries/{g}/{f}")),
                "galleries/{g}/{f} missing"
            );
        }
        let page = get(bucket, &format!("galleries/{g}/index.html")).unwrap();
        for l in links(&page) {
            if l.starts_with("../") {
                continue;
            }
            assert!(
                keys.contains(&format!("galleries/{g}/{l}")),
                "galleries/{g}/index.html links {l}, which is not there"
            );
        }
    }
    // No lease is left behind.
    let leases = s3.keys(bucket, "galleries/.candlelight/lease/");
    assert!(leases.is_empty(), "leases left: {leases:?}");
}

#[test]
fn bad_runs_in_a_prefix_get_error_pages_and_the_daemon_goes_on() {
    let Some(s3) = s3::shared() else { return };
    let bucket = "mixed";
    s3.bucket(bucket);
    let good = small_run(7).save(format!("s3://{bucket}/runs")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local = small_run(8).save(dir.path()).unwrap();
    let bytes = std::fs::read(&local).unwrap();
    for (key, body) in [
        ("notarun.safetensors", b"hello world, not a run".to_vec()),
        ("cut.safetensors", bytes[..bytes.len() - 50].to_vec()),
        ("empty.safetensors", Vec::new()),
        // A good run whose name makes a `~` gallery name (kept encoded by the store).
        ("odd name ~1.safetensors", bytes.clone()),
    ] {
        Remote::parse(&format!("s3://{bucket}/runs/{key}"))
            .unwrap()
            .put(body)
            .unwrap();
    }
    // Galleries in a local folder this time.
    let out_dir = dir.path().join("galleries");
    let run = || {
        let runs = format!("s3://{bucket}/runs");
        s3.candlelight(&[OsStr::new("watch"), runs.as_ref(), "--out".as_ref()])
            .arg(&out_dir)
            .arg("--once")
            .output()
            .unwrap()
    };
    let out = run();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let good_name = good.file_stem().unwrap().to_str().unwrap().to_string();
    assert_eq!(rendered(&err).len(), 5, "{err}");
    let odd: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("odd-name--1~"))
        .collect();
    assert_eq!(odd.len(), 1, "{odd:?}");
    assert!(out_dir.join(&odd[0]).join("manifest.json").is_file());
    for (name, want) in [
        ("notarun", "header length"),
        ("cut", "data section does not match"),
        ("empty", "safetensors"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("s3://{bucket}/runs/{name}.safetensors ->")))
            .unwrap_or_else(|| panic!("no line for {name}: {err}"));
        assert!(line.contains("error page"), "{line}");
        assert!(
            line.contains(&format!("s3://{bucket}/runs/{name}.safetensors: ")),
            "the error names the URL: {line}"
        );
        assert!(line.contains(want), "{line}");
        assert!(out_dir.join(name).join("index.html").is_file());
    }
    assert!(out_dir.join(&good_name).join("manifest.json").is_file());
    let index = std::fs::read_to_string(out_dir.join("index.html")).unwrap();
    assert!(index.contains(&good_name), "{index}");
    // A second round has nothing left to do.
    let again = run();
    let err2 = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(again.status.code(), Some(0), "{err2}");
    assert!(rendered(&err2).is_empty(), "{err2}");
}

#[test]
fn render_publishes_into_shared_galleries_and_daemons_agree() {
    let Some(s3) = s3::shared() else { return };
    let bucket = "published";
    s3.bucket(bucket);
    let remote_run = small_run(21).save(format!("s3://{bucket}/runs")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let local_run = small_run(22).save(dir.path()).unwrap();
    let out_url = format!("s3://{bucket}/galleries");
    let out = s3
        .candlelight(&[
            OsStr::new("render"),
            remote_run.as_ref(),
            local_run.as_ref(),
        ])
        .args(["--out", &out_url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys: BTreeSet<String> = s3.keys(bucket, "galleries/").into_iter().collect();
    let index = get(bucket, "galleries/index.html").expect("the index");
    for run in [&remote_run, &local_run] {
        let g = run.file_stem().unwrap().to_str().unwrap();
        assert!(
            text.contains(&format!("{out_url}/{g}/index.html")),
            "{text}"
        );
        assert!(
            keys.contains(&format!("galleries/{g}/manifest.json")),
            "{keys:?}"
        );
        assert!(
            index.contains(&format!("{g}&#x2f;index.html")),
            "{g} not in the index"
        );
    }
    // A daemon on the runs prefix finds the remote run already rendered.
    let runs = format!("s3://{bucket}/runs");
    let w = s3
        .candlelight(&["watch", &runs, "--out", &out_url, "--once"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&w.stderr).to_string();
    assert_eq!(w.status.code(), Some(0), "{err}");
    assert!(rendered(&err).is_empty(), "rendered again: {err}");
}

//! Hostile inputs and hostile machines, through the real binary: candlelight never
//! touches what it did not write, never hangs on odd files, survives producers that
//! truncate files under it, and never turns an I/O failure of its own into a
//! verdict on a run. Each test reproduces one failure found by trying to break it.
#![cfg(unix)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::gallery::{gallery_name, read_manifest, source_facts};
use candlelight::{tap, Recorder, Run};

mod common;
use common::daemon::*;
use common::{cl_code, list_files, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A run with one layer of `mb` MiB of f32 in `[1, C, 256, 256]`, values set by `seed`.
fn big(seed: usize, mb: usize) -> Run {
    let c = mb * 4;
    let t = Tensor::arange(0f32, (c * 256 * 256) as f32, &Device::Cpu)
        .unwrap()
        .reshape((1, c, 256, 256))
        .unwrap();
    let t = ((t * 0.001).unwrap().sin().unwrap() * (seed as f64 + 1.0)).unwrap();
    Run::from_named_tensors("big", [("feat".to_string(), t)])
}

/// Runs `cl args` with a deadline: a hang is a test failure, not a stuck CI job.
fn cl_within(args: &[&str], cwd: &Path, limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("candlelight {args:?} hung for {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// The one line of stderr (asserting there is exactly one).
fn one_line(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line:\n{err}");
    lines[0].to_string()
}

/// Waits until the gallery of `path` shows the file as it is now (status ok), then
/// stops the daemon, which must exit 0.
fn wait_rendered_then_stop(d: Daemon, out: &Path, path: &Path) {
    let want = source_facts(path).unwrap();
    let gallery = out.join(gallery_name(path));
    d.wait("the current version's gallery", || {
        read_manifest(&gallery).is_some_and(|m| m.status == "ok" && m.source_facts() == want)
    });
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

// ---- 1. watch deletes only what it made; refuses to watch its own output ----

#[test]
fn watch_never_removes_what_it_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    put(&runs, "r", &run_bytes(&tiny(1, 2)));
    // `--out .` in a checkout: a .git folder, a tool's cache, someone's temp files.
    let out = tmp.path().join("checkout");
    let theirs = [
        (".git/HEAD", "ref: refs/heads/main"),
        (".git/objects/ab/cdef", "blob"),
        (".cache/x/y", "cached"),
        (".notes.tmp", "my notes"),
        (".x.safetensors.tmp", "a producer's run, half written"),
        (
            ".tmp-old/keep",
            "a dot folder named like candlelight's old staging",
        ),
        (
            ".candlelight-stage-1-1/keep",
            "our name, but no lock file: not provably ours",
        ),
    ];
    for (rel, text) in theirs {
        let p = out.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // A leftover of a killed candlelight (staging folder + its unlocked lock file).
    let dead = out.join(".candlelight-stage-999999-3");
    std::fs::create_dir_all(dead.join("layers")).unwrap();
    std::fs::write(out.join(".candlelight-stage-999999-3.lock"), b"").unwrap();

    cl_code(
        &["watch", s(&runs), "--out", s(&out), "--once"],
        tmp.path(),
        0,
    );
    for (rel, text) in theirs {
        let got = std::fs::read_to_string(out.join(rel))
            .unwrap_or_else(|e| panic!("{rel} was touched: {e}\n{}", list_files(&out)));
        assert_eq!(got, text);
    }
    assert!(!dead.exists(), "the dead staging folder was left");
    assert!(!out.join(".candlelight-stage-999999-3.lock").exists());
    assert!(rendered_ok(&out, "r"));
}

#[test]
fn watch_refuses_an_output_folder_that_is_the_runs_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    put(&runs, "r", &run_bytes(&tiny(1, 2)));
    let in_flight = runs.join(".x.safetensors.tmp");
    std::fs::write(&in_flight, b"a producer is writing this").unwrap();
    for out in [
        s(&runs).to_string(),
        format!("{}/.", s(&runs)),
        "runs/".into(),
    ] {
        let o = cl_code(&["watch", s(&runs), "--out", &out, "--once"], tmp.path(), 2);
        let line = one_line(&o);
        assert!(line.contains("is the runs folder"), "{line}");
    }
    assert!(in_flight.exists());
    assert_eq!(
        std::fs::read_dir(&runs).unwrap().count(),
        2,
        "{}",
        list_files(&runs)
    );
}

#[test]
fn watch_removes_run_temps_only_when_their_writer_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    std::fs::create_dir(&runs).unwrap();
    // Left by a killed producer: our pattern, nobody holds its lock.
    let dead = runs.join(".a.safetensors.candlelight-999999-0.tmp");
    std::fs::write(&dead, b"half a run").unwrap();
    // Being written right now: our pattern, its writer holds the lock.
    let live = runs.join(".b.safetensors.candlelight-999999-1.tmp");
    std::fs::write(&live, b"half a run").unwrap();
    let held = std::fs::File::open(&live).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(
        unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&held),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        },
        0
    );
    // Another producer's temp file: not ours.
    let other = runs.join(".c.safetensors.tmp");
    std::fs::write(&other, b"theirs").unwrap();
    cl_code(
        &["watch", s(&runs), "--out", s(&out), "--once"],
        tmp.path(),
        0,
    );
    assert!(!dead.exists());
    assert!(live.exists() && other.exists());
    drop(held);
}

// ---- 2. render and diff never replace what is not theirs ----

#[test]
fn render_and_diff_refuse_to_replace_what_candlelight_did_not_write() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let runs = cwd.join("runs");
    let a = put(&runs, "static", &run_bytes(&tiny(1, 2)));
    let b = put(&runs, "b", &run_bytes(&tiny(2, 2)));
    // A web site whose `static/` folder is not a gallery (`assets` is a reserved
    // name: a run called so gets a hashed gallery name).
    let site = cwd.join("site");
    std::fs::create_dir_all(site.join("static")).unwrap();
    std::fs::write(site.join("static/logo.svg"), b"<svg/>").unwrap();
    let o = cl_code(&["render", s(&a), "--out", "site"], cwd, 2);
    assert!(stderr(&o).contains("site/static"), "{}", stderr(&o));
    assert!(stderr(&o).contains("not replacing it"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(site.join("static/logo.svg")).unwrap(),
        b"<svg/>"
    );
    assert_eq!(std::fs::read_dir(site.join("static")).unwrap().count(), 1);

    // A user's own index page in the output folder.
    let mine = cwd.join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("index.html"), b"<h1>my page</h1>").unwrap();
    let o = cl_code(&["render", s(&b), "--out", "mine"], cwd, 2);
    assert!(one_line(&o).contains("mine/index.html"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(mine.join("index.html")).unwrap(),
        b"<h1>my page</h1>"
    );

    // A file where the gallery folder would go.
    let files = cwd.join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("b"), b"data").unwrap();
    cl_code(&["render", s(&b), "--out", "files"], cwd, 2);
    assert_eq!(std::fs::read(files.join("b")).unwrap(), b"data");

    // A real gallery folder: `diff --out` there would overwrite its index.
    cl_code(&["render", s(&b), "--out", "galleries"], cwd, 0);
    let index = std::fs::read(cwd.join("galleries/index.html")).unwrap();
    let o = cl_code(&["diff", s(&a), s(&b), "--out", "galleries"], cwd, 2);
    assert!(
        stderr(&o).contains("galleries/index.html"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(cwd.join("galleries/index.html")).unwrap(),
        index
    );
    // And `render` into a diff gallery would overwrite its page.
    cl_code(&["diff", s(&a), s(&a), "--out", "d"], cwd, 0);
    let page = std::fs::read(cwd.join("d/index.html")).unwrap();
    cl_code(&["render", s(&b), "--out", "d"], cwd, 2);
    assert_eq!(std::fs::read(cwd.join("d/index.html")).unwrap(), page);
    // Our own outputs are ours to replace.
    cl_code(&["diff", s(&a), s(&a), "--out", "d"], cwd, 0);
    cl_code(&["render", s(&b), "--out", "galleries"], cwd, 0);
}

// ---- 3. files that are not regular files ----

#[test]
fn fifos_are_errors_not_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let runs = cwd.join("runs");
    let good = put(&runs, "good", &run_bytes(&tiny(1, 2)));
    let fifo = runs.join("fifo.safetensors");
    mkfifo(&fifo);
    let link = runs.join("link.safetensors");
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    let limit = Duration::from_secs(30);
    for path in [&fifo, &link] {
        for args in [
            vec!["show", s(path)],
            vec!["render", s(path), "--out", "g"],
            vec!["diff", s(path), s(&good)],
            vec!["diff", s(&good), s(path)],
        ] {
            let o = cl_within(&args, cwd, limit);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
            let line = one_line(&o);
            assert!(line.contains(s(path)), "{line}");
            assert!(line.contains("not a regular file (a FIFO)"), "{line}");
        }
    }
    // A name map, or a gallery's manifest, that is a FIFO: no hang either.
    let map = cwd.join("map.txt");
    mkfifo(&map);
    let o = cl_within(&["diff", s(&good), s(&good), "--map", s(&map)], cwd, limit);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(one_line(&o).contains("not a regular file (a FIFO)"));
    let planted = cwd.join("planted");
    std::fs::create_dir_all(planted.join("good")).unwrap();
    mkfifo(&planted.join("good/manifest.json"));
    let o = cl_within(&["render", s(&good), "--out", s(&planted)], cwd, limit);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not replacing it"), "{}", stderr(&o));

    // `ls` lists the good run, without hanging on the others.
    let o = cl_within(&["ls", "runs"], cwd, limit);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        common::stdout(&o).contains("good"),
        "{}",
        common::stdout(&o)
    );

    // The daemon logs each once, skips them and renders the rest.
    let out = cwd.join("out");
    let o = cl_within(&["watch", "runs", "--out", s(&out), "--once"], cwd, limit);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = stderr(&o);
    for name in ["fifo.safetensors", "link.safetensors"] {
        let n = log
            .lines()
            .filter(|l| l.contains(name) && l.contains("not a regular file"))
            .count();
        assert_eq!(n, 1, "{name}:\n{log}");
    }
    assert!(rendered_ok(&out, "good"));
}

// ---- 4. I/O failures of our own are retried, never error pages ----

fn set_file_size_limit(pid: u32, bytes: u64) {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain FFI call with a valid rlimit; no memory is kept.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[test]
fn a_write_failure_keeps_the_good_gallery_and_is_retried_until_it_works() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&runs).unwrap();
    let d = Daemon::start(&runs, &out, &[]);
    let path = put(&runs, "r", &run_bytes(&big(1, 1)));
    d.wait("the first gallery", || rendered_ok(&out, "r"));
    let first = read_manifest(&out.join("r")).unwrap();

    // The disk "fills up": every file over 1 KB fails to write (EFBIG).
    set_file_size_limit(d.child.id(), 1024);
    let path2 = put(&runs, "r", &run_bytes(&big(2, 1)));
    assert_eq!(path, path2);
    d.wait("the write failure", || {
        d.log()
            .contains("r.safetensors: cannot write its gallery into")
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("cannot write its gallery"))
        .unwrap();
    assert!(
        !line.contains(".candlelight-"),
        "names a temp folder: {line}"
    );
    assert!(line.contains("will retry"), "{line}");
    // Let a few retries fail: the good gallery stays, no error page appears.
    std::thread::sleep(Duration::from_secs(4));
    let m = read_manifest(&out.join("r")).unwrap();
    assert_eq!(m.status, "ok");
    assert_eq!(
        m.rendered_at, first.rendered_at,
        "the good gallery was replaced"
    );
    assert!(!d.log().contains("ERROR"), "{}", d.log());

    // Space is back: the new version is rendered without any event.
    set_file_size_limit(d.child.id(), libc::RLIM_INFINITY);
    wait_rendered_then_stop(d, &out, &path);
}

// ---- 5. every run its own gallery, stable across restarts ----

#[test]
fn runs_whose_names_clean_up_alike_get_galleries_of_their_own() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    let long = "x".repeat(99);
    let stems = [
        "a<b".to_string(),
        "a>b".to_string(),
        "a-b".to_string(),
        format!("{long}1"),
        format!("{long}2"),
    ];
    for (i, stem) in stems.iter().enumerate() {
        put(&runs, stem, &run_bytes(&tiny(i, 1)));
    }
    let o = cl_code(
        &["watch", s(&runs), "--out", s(&out), "--once"],
        tmp.path(),
        0,
    );
    assert!(stderr(&o).contains("5 to render"), "{}", stderr(&o));
    for stem in &stems {
        let path = runs.join(format!("{stem}.safetensors"));
        let m = read_manifest(&out.join(gallery_name(&path)))
            .unwrap_or_else(|| panic!("no gallery for {stem}\n{}", list_files(&out)));
        assert_eq!(m.source, path);
    }
    // A restart finds them all up to date: nothing is rendered again.
    let o = cl_code(
        &["watch", s(&runs), "--out", s(&out), "--once"],
        tmp.path(),
        0,
    );
    assert!(
        stderr(&o).contains("0 to render, 5 up to date"),
        "{}",
        stderr(&o)
    );
}

// ---- 7. a producer truncating a file under the renderer ----

#[test]
fn the_daemon_survives_a_producer_that_truncates_files_while_they_render() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&runs).unwrap();
    let mut d = Daemon::start(&runs, &out, &[]);
    let bytes = run_bytes(&big(1, 16));
    let target = runs.join("t.safetensors");
    let renders = |log: &str| log.matches("rendering t").count();
    for round in 0..4 {
        // Written in place (not renamed), then cut short as soon as a render starts.
        let before = renders(&d.log());
        std::fs::write(&target, &bytes).unwrap();
        d.wait("a render to start", || renders(&d.log()) > before);
        std::fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_len(8 + round)
            .unwrap();
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "the daemon died in round {round}:\n{}",
            d.log()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the daemon died:\n{}",
        d.log()
    );
    // A whole file at last: rendered.
    let path = put(&runs, "t", &run_bytes(&big(2, 1)));
    wait_rendered_then_stop(d, &out, &path);
}

// ---- 8. smaller ones ----

#[test]
fn a_run_replaced_with_the_same_size_and_mtime_is_rendered_again() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    let path = put(&runs, "r", &run_bytes(&tiny(1, 2)));
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let watch = ["watch", s(&runs), "--out", s(&out), "--once"];
    cl_code(&watch, tmp.path(), 0);
    let v2 = run_bytes(&tiny(2, 2));
    assert_eq!(v2.len() as u64, std::fs::metadata(&path).unwrap().len());
    put(&runs, "r", &v2);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let o = cl_code(&watch, tmp.path(), 0);
    assert!(stderr(&o).contains("1 to render"), "{}", stderr(&o));
    let m = read_manifest(&out.join("r")).unwrap();
    assert_eq!(m.source_facts(), source_facts(&path).unwrap());
}

#[test]
fn a_run_deleted_while_rendering_still_reaches_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&runs).unwrap();
    let d = Daemon::start(&runs, &out, &[]);
    let path = put(&runs, "gone", &run_bytes(&big(1, 16)));
    d.wait("the render to start", || d.log().contains("rendering gone"));
    std::fs::remove_file(&path).unwrap();
    d.wait("the vanished run", || {
        d.log().contains("gone: the run file is gone")
    });
    if out.join("gone").join("manifest.json").exists() {
        // The gallery made it in before the file went: the index must list it.
        let end = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(out.join("index.html"))
            .is_ok_and(|i| i.contains(">gone</a>"))
        {
            assert!(
                Instant::now() < end,
                "index.html does not list the gallery\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn control_characters_in_a_run_never_reach_its_page() {
    let tmp = tempfile::tempdir().unwrap();
    let x = Tensor::arange(0f32, 4., &Device::Cpu).unwrap();
    let (_, run) = Recorder::new("m\0odel")
        .tag("k\0", "v\u{1b}[31m")
        .input("a\0b")
        .record(|| tap("la\0yer", &x))
        .unwrap();
    let path: PathBuf = run.save(tmp.path().join("runs")).unwrap();
    cl_code(&["render", s(&path), "--out", "g"], tmp.path(), 0);
    for f in common::files_under(&tmp.path().join("g")) {
        if f.extension().is_some_and(|e| e == "html") {
            let page = std::fs::read_to_string(&f).unwrap();
            assert!(
                !page
                    .chars()
                    .any(|c| c.is_control() && !"\t\n\r".contains(c)),
                "{}: a control character",
                f.display()
            );
        }
    }
}

//! `candlelight watch` end to end: the real binary as a child process, real files,
//! deadlines (polling the file system) instead of sleeps.

use std::io::Write;
use std::time::Duration;

mod common;
use common::daemon::*;
use common::{cl, stderr};

#[test]
fn five_runs_written_atomically_become_five_galleries() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    for i in 0..5 {
        put(runs.path(), &format!("run{i}"), &run_bytes(&tiny(i, 3)));
    }
    d.wait("5 galleries", || {
        (0..5).all(|i| rendered_ok(out.path(), &format!("run{i}")))
    });
    d.wait("the index to list them", || {
        (0..5).all(|i| index_lists(out.path(), &format!("run{i}")))
    });
    let m = manifest(out.path(), "run0").unwrap();
    assert_eq!(m.layers, 3);
    assert_eq!(
        m.source_size,
        std::fs::metadata(runs.path().join("run0.safetensors"))
            .unwrap()
            .len()
    );
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_no_half_gallery(out.path());
    let counts = renders_without_overlap(&log);
    assert_eq!(counts.len(), 5, "{log}");
    assert!(log
        .lines()
        .filter(|l| l.contains("rendered run"))
        .all(|l| l.contains(" ms")));
}

#[test]
fn a_run_written_slowly_in_place_is_rendered_once_complete_never_an_error_page() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    let bytes = run_bytes(&tiny(7, 40));
    let path = runs.path().join("slow.safetensors");
    let mut f = std::fs::File::create(&path).unwrap();
    let pieces = 12;
    let step = bytes.len().div_ceil(pieces);
    for chunk in bytes.chunks(step) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        // The producer's own pace (this is the scenario, not a wait for a result).
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            manifest(out.path(), "slow").is_none_or(|m| m.status == "ok"),
            "error page while the file was arriving\n{}",
            d.log()
        );
    }
    drop(f);
    d.wait("the slow run's gallery", || {
        let m = manifest(out.path(), "slow");
        assert!(
            m.as_ref().is_none_or(|m| m.status == "ok"),
            "error page\n{}",
            d.log()
        );
        m.is_some_and(|m| m.source_size == bytes.len() as u64)
    });
    assert_eq!(manifest(out.path(), "slow").unwrap().layers, 40);
    let (code, log) = d.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("ERROR"), "{log}");
    renders_without_overlap(&log);
}

#[test]
fn a_burst_of_300_runs_gives_300_galleries_none_rendered_twice_at_once() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    let bytes: Vec<Vec<u8>> = (0..300).map(|i| run_bytes(&tiny(i, 2))).collect();
    for (i, b) in bytes.iter().enumerate() {
        put(runs.path(), &format!("burst{i:03}"), b);
    }
    d.wait("300 galleries", || galleries(out.path()) == 300);
    for i in 0..300 {
        assert!(
            rendered_ok(out.path(), &format!("burst{i:03}")),
            "burst{i:03}"
        );
    }
    let (code, log) = d.stop();
    assert_eq!(code, Some(0));
    let counts = renders_without_overlap(&log);
    assert_eq!(counts.len(), 300);
    // Written once each, atomically: rendered exactly once each.
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_no_half_gallery(out.path());
    for i in 0..300 {
        assert!(
            index_lists(out.path(), &format!("burst{i:03}")),
            "burst{i:03} not in the index"
        );
    }
}

#[test]
fn a_malformed_file_gets_an_error_page_and_the_others_are_rendered() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    for i in 0..2 {
        put(runs.path(), &format!("good{i}"), &run_bytes(&tiny(i, 2)));
    }
    let bad = put(
        runs.path(),
        "bad<x>",
        b"\x10\0\0\0\0\0\0\0{\"a\": <oops>}xx",
    );
    let bad_gallery = candlelight::gallery::gallery_name(&bad);
    for i in 2..4 {
        put(runs.path(), &format!("good{i}"), &run_bytes(&tiny(i, 2)));
    }
    d.wait("the error page", || {
        manifest(out.path(), &bad_gallery).is_some()
    });
    let m = manifest(out.path(), &bad_gallery).unwrap();
    assert_eq!(m.status, "error");
    let msg = m.error.unwrap();
    assert!(msg.contains("bad<x>.safetensors"), "{msg}");
    let page = std::fs::read_to_string(out.path().join(&bad_gallery).join("index.html")).unwrap();
    assert!(page.contains("bad&lt;x&gt;.safetensors"), "{page}");
    assert!(!page.contains("bad<x>"), "unescaped: {page}");
    d.wait("the good runs", || {
        (0..4).all(|i| rendered_ok(out.path(), &format!("good{i}")))
    });
    // Still running: a later run is rendered too.
    put(runs.path(), "after", &run_bytes(&tiny(9, 1)));
    d.wait("a run after the bad one", || {
        rendered_ok(out.path(), "after")
    });
    let (code, log) = d.stop();
    assert_eq!(code, Some(0));
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one logged error line:\n{log}");
    assert!(errors[0].contains("bad<x>.safetensors"), "{}", errors[0]);
}

#[test]
fn killed_mid_burst_then_restarted_every_run_is_rendered_and_no_half_gallery() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let n = 150;
    let bytes: Vec<Vec<u8>> = (0..n).map(|i| run_bytes(&tiny(i, 20))).collect();
    let mut d = Daemon::start(runs.path(), out.path(), &[]);
    for (i, b) in bytes.iter().enumerate() {
        put(runs.path(), &format!("k{i:03}"), b);
    }
    d.wait("some galleries", || galleries(out.path()) >= 10);
    d.child.kill().unwrap(); // SIGKILL
    d.child.wait().unwrap();
    let before = galleries(out.path());
    drop(d);

    let d = Daemon::start(runs.path(), out.path(), &[]);
    let log = d.log();
    let catch_up = log
        .lines()
        .find(|l| l.contains("catch-up:"))
        .unwrap()
        .to_string();
    assert!(catch_up.contains(&format!("{n} run(s)")), "{catch_up}");
    d.wait("every run", || {
        (0..n).all(|i| rendered_ok(out.path(), &format!("k{i:03}")))
    });
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_no_half_gallery(out.path());
    // Only what was missing was rendered after the restart.
    let counts = renders_without_overlap(&log);
    assert!(
        counts.len() <= n - before.min(n),
        "{} > {n} - {before}",
        counts.len()
    );
}

#[test]
fn sigterm_exits_0_within_2_seconds() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    put(runs.path(), "one", &run_bytes(&tiny(1, 2)));
    let mut d = Daemon::start(runs.path(), out.path(), &[]);
    d.wait("the first gallery", || rendered_ok(out.path(), "one"));
    d.signal("-TERM");
    let code = d.exit_within(Duration::from_secs(2));
    assert_eq!(code, Some(0), "{}", d.log());
}

#[test]
fn sigterm_mid_burst_exits_0_and_leaves_no_half_gallery() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    for i in 0..100 {
        put(runs.path(), &format!("t{i:03}"), &run_bytes(&tiny(i, 20)));
    }
    d.wait("some galleries", || galleries(out.path()) >= 5);
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_no_half_gallery(out.path());
}

#[test]
fn a_restart_with_nothing_new_renders_nothing() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    for i in 0..5 {
        put(runs.path(), &format!("r{i}"), &run_bytes(&tiny(i, 2)));
    }
    let o = cl(
        &[
            "watch",
            runs.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--once",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(galleries(out.path()), 5);
    let stamps: Vec<String> = (0..5)
        .map(|i| manifest(out.path(), &format!("r{i}")).unwrap().rendered_at)
        .collect();

    // Again, once: nothing to do.
    let o = cl(
        &[
            "watch",
            runs.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--once",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("0 to render, 5 up to date"), "{log}");
    assert!(!log.contains("rendered r"), "{log}");

    // And as a daemon.
    let d = Daemon::start(runs.path(), out.path(), &[]);
    assert!(d.log().contains("0 to render, 5 up to date"), "{}", d.log());
    let (code, log) = d.stop();
    assert_eq!(code, Some(0));
    assert!(!log.contains("rendering "), "{log}");
    let again: Vec<String> = (0..5)
        .map(|i| manifest(out.path(), &format!("r{i}")).unwrap().rendered_at)
        .collect();
    assert_eq!(stamps, again);
}

#[test]
fn once_exits_1_when_a_run_fails_and_renders_the_rest() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    put(runs.path(), "fine", &run_bytes(&tiny(1, 2)));
    put(runs.path(), "broken", b"not a safetensors file at all");
    let o = cl(
        &[
            "watch",
            runs.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
            "--once",
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(rendered_ok(out.path(), "fine"));
    assert_eq!(manifest(out.path(), "broken").unwrap().status, "error");
}

#[test]
fn changed_runs_are_rendered_again_deleted_ones_kept_unless_prune() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(runs.path(), out.path(), &[]);
    let a = run_bytes(&tiny(1, 2));
    let b = run_bytes(&tiny(2, 5));
    let p = put(runs.path(), "change", &a);
    put(runs.path(), "gone", &a);
    d.wait("both", || {
        rendered_ok(out.path(), "change") && rendered_ok(out.path(), "gone")
    });
    put(runs.path(), "change", &b);
    d.wait("the new version", || {
        manifest(out.path(), "change").is_some_and(|m| m.layers == 5)
    });
    assert_eq!(
        manifest(out.path(), "change").unwrap().source_size,
        std::fs::metadata(&p).unwrap().len()
    );
    std::fs::remove_file(runs.path().join("gone.safetensors")).unwrap();
    // Events are handled in order: once a later run is rendered, the removal was seen.
    put(runs.path(), "marker", &a);
    d.wait("the marker", || rendered_ok(out.path(), "marker"));
    assert!(rendered_ok(out.path(), "gone"), "kept without --prune");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    // With --prune, the catch-up removes the orphan, and a deletion is followed.
    let d = Daemon::start(runs.path(), out.path(), &["--prune"]);
    d.wait("the orphan pruned", || !out.path().join("gone").exists());
    std::fs::remove_file(runs.path().join("marker.safetensors")).unwrap();
    d.wait("the deleted run pruned", || {
        !out.path().join("marker").exists()
    });
    d.wait("the index without them", || {
        !index_lists(out.path(), "marker")
            && !index_lists(out.path(), "gone")
            && index_lists(out.path(), "change")
    });
    assert!(rendered_ok(out.path(), "change"));
    let (code, log) = d.stop();
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn polling_watcher_renders_runs() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        runs.path(),
        out.path(),
        &["--poll", "--poll-interval-ms", "100"],
    );
    assert!(d.log().contains("polling every 100 ms"), "{}", d.log());
    put(runs.path(), "polled", &run_bytes(&tiny(3, 2)));
    d.wait("the polled run", || rendered_ok(out.path(), "polled"));
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn bad_folders_and_a_second_daemon_are_one_line_errors() {
    let runs = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let missing = runs.path().join("nope");
    let o = cl(
        &[
            "watch",
            missing.to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("nope") && e.contains("not a folder"), "{e}");

    let d = Daemon::start(runs.path(), out.path(), &[]);
    let o = cl(
        &[
            "watch",
            runs.path().to_str().unwrap(),
            "--out",
            out.path().to_str().unwrap(),
        ],
        runs.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("another `candlelight watch`"), "{e}");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

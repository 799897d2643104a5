//! `candlelight ls` and `show` on real files, through the real binary.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use candlelight::{tap, Recorder};

mod common;
use common::{cl_code, stdout};

fn write_run(dir: &std::path::Path, model: &str, n: usize) -> std::path::PathBuf {
    let t = Tensor::arange(0f32, 12., &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 2, 2))
        .unwrap();
    let (_, run) = Recorder::new(model)
        .record(|| {
            for i in 0..n {
                tap(
                    &format!("layer{i}"),
                    &((&t - 4.0)? * (i as f64 + 1.0))?.relu()?,
                )?;
            }
            Ok(())
        })
        .unwrap();
    run.save(dir).unwrap()
}

#[test]
fn ls_lists_runs_newest_first_and_marks_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_run(dir.path(), "first", 2);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let b = write_run(dir.path(), "second", 3);
    std::fs::write(dir.path().join("broken.safetensors"), b"xx").unwrap();
    std::fs::write(dir.path().join(".hidden.safetensors.tmp"), b"xx").unwrap();
    // Make the order unambiguous whatever the file system's time resolution.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let out = cl_code(&["ls", dir.path().to_str().unwrap()], dir.path(), 0);
    let s = stdout(&out);
    let stem = |p: &std::path::Path| p.file_stem().unwrap().to_string_lossy().into_owned();
    let (ia, ib) = (s.find(&stem(&a)).unwrap(), s.find(&stem(&b)).unwrap());
    assert!(ib < ia, "newest first:\n{s}");
    assert!(s.contains("invalid"), "{s}");
    assert!(!s.contains("hidden"), "{s}");
    let line_b = s.lines().find(|l| l.contains(&stem(&b))).unwrap();
    assert!(
        line_b.split_whitespace().any(|w| w == "3"),
        "layer count in {line_b}"
    );
}

#[test]
fn show_prints_the_layer_table_and_one_layer() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_run(dir.path(), "show", 2);
    let out = cl_code(&["show", p.to_str().unwrap()], dir.path(), 0);
    let s = stdout(&out);
    assert!(
        s.contains("layer0") && s.contains("layer1") && s.contains("[1, 3, 2, 2]"),
        "{s}"
    );
    assert!(s.contains("tap") && s.contains("F32"), "{s}");
    // layer0 = relu(arange(12) - 4): 5 zeros of 12 (0..=4).
    assert!(
        s.lines()
            .any(|l| l.contains("layer0") && l.contains("41.7%")),
        "{s}"
    );
    let out = cl_code(&["show", p.to_str().unwrap(), "layer1"], dir.path(), 0);
    let s = stdout(&out);
    assert!(s.contains("max 14.0000"), "{s}");
    assert!(s.contains("histogram"), "{s}");
    let out = cl_code(&["show", p.to_str().unwrap(), "nope"], dir.path(), 2);
    assert!(common::stderr(&out).contains("no layer named \"nope\""));
}

// ---- Broken pipes: `candlelight ... | head` exits quietly ----

/// A run of `n` tiny layers, saved as `dir/<id>.safetensors`.
fn write_wide_run(dir: &Path, id: &str, n: usize, scale: f64) -> PathBuf {
    let t = Tensor::arange(0f32, 4., &Device::Cpu).unwrap();
    let (_, run) = Recorder::new("wide")
        .id(id)
        .record(|| {
            for i in 0..n {
                tap(&format!("block.{i}.out"), &((&t * scale)? + i as f64)?)?;
            }
            Ok(())
        })
        .unwrap();
    run.save(dir).unwrap()
}

/// Runs the binary with stdout to a pipe, reads a few bytes, closes the pipe and
/// waits: the exit must be quiet (no panic, no backtrace, not 101). The output is
/// far larger than a pipe buffer, so the binary is still writing when the pipe closes.
fn closed_stdout_is_quiet(args: &[&OsStr], cwd: &Path) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run candlelight");
    let mut so = child.stdout.take().expect("stdout");
    let mut head = [0u8; 16];
    so.read_exact(&mut head)
        .expect("the first bytes of the output");
    drop(so);
    let out = child.wait_with_output().expect("wait");
    let err = common::stderr(&out);
    let what = format!(
        "candlelight {args:?} with stdout closed: {:?}\n{err}",
        out.status
    );
    assert_ne!(out.status.code(), Some(101), "{what}");
    assert!(!err.contains("panicked"), "{what}");
    assert!(!err.contains("backtrace"), "{what}");
    assert!(!err.contains("Broken pipe"), "{what}");
    // Like `ls | head`: killed by SIGPIPE, or a clean exit.
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{what}"
        );
    }
}

#[test]
fn ls_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    std::fs::create_dir(&runs).unwrap();
    let first = write_wide_run(&runs, "run-0000", 1, 1.0);
    // ~85 bytes a line: 1,200 runs are well past a 64 KiB pipe buffer.
    for i in 1..1200 {
        std::fs::copy(&first, runs.join(format!("run-{i:04}.safetensors"))).unwrap();
    }
    closed_stdout_is_quiet(&[OsStr::new("ls"), runs.as_os_str()], dir.path());
}

#[test]
fn show_and_diff_into_a_closed_pipe_exit_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_wide_run(dir.path(), "a", 1500, 1.0);
    let b = write_wide_run(dir.path(), "b", 1500, 1.5);
    let s = OsStr::new;
    closed_stdout_is_quiet(&[s("show"), a.as_os_str()], dir.path());
    closed_stdout_is_quiet(&[s("diff"), a.as_os_str(), b.as_os_str()], dir.path());
    closed_stdout_is_quiet(
        &[s("diff"), a.as_os_str(), b.as_os_str(), s("--json")],
        dir.path(),
    );
}

/// The daemon must outlive whoever read its logs: `watch` with its stderr closed
/// still renders and exits normally.
#[test]
fn watch_survives_a_closed_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let out = dir.path().join("galleries");
    std::fs::create_dir(&runs).unwrap();
    for i in 0..3 {
        write_run_named(&runs, &format!("w{i}"));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_candlelight"))
        .arg("watch")
        .arg(&runs)
        .arg("--out")
        .arg(&out)
        .args(["--once", "-j", "1"])
        .current_dir(dir.path())
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run candlelight");
    drop(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watch --once did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}\n{}",
        common::list_files(dir.path())
    );
    for i in 0..3 {
        assert!(
            out.join(format!("w{i}")).join("index.html").is_file(),
            "w{i}"
        );
    }
}

fn write_run_named(dir: &Path, id: &str) -> PathBuf {
    write_wide_run(dir, id, 2, 1.0)
}

// ---- File names that are not UTF-8 ----

#[cfg(unix)]
fn os(bytes: &[u8]) -> &OsStr {
    use std::os::unix::ffi::OsStrExt;
    OsStr::from_bytes(bytes)
}

/// A folder `d\xfe` holding a valid run `bad\xff.safetensors`: every command works
/// on it and shows the names lossily.
#[cfg(unix)]
#[test]
fn non_utf8_file_names_work_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(os(b"d\xfe"));
    std::fs::create_dir(&dir).unwrap();
    let made = write_run(&dir, "nonutf8", 3);
    let run = dir.join(os(b"bad\xff.safetensors"));
    std::fs::rename(&made, &run).unwrap();
    let cwd = tmp.path();
    let s = OsStr::new;

    let out = common::cl_os_code(&[s("ls"), dir.as_os_str()], cwd, 0);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("bad\u{FFFD}"))
        .unwrap_or_else(|| panic!("no line for bad\\xff in\n{text}"));
    assert!(line.split_whitespace().any(|w| w == "3"), "{line}");
    assert!(!text.contains("invalid"), "{text}");

    let out = common::cl_os_code(&[s("show"), run.as_os_str()], cwd, 0);
    assert!(stdout(&out).contains("layer2"), "{}", stdout(&out));
    let out = common::cl_os_code(&[s("show"), run.as_os_str(), s("layer1")], cwd, 0);
    assert!(stdout(&out).contains("histogram"), "{}", stdout(&out));

    // A UTF-8 run rendered into a folder whose name is not UTF-8.
    let galleries = tmp.path().join(os(b"out\xfd"));
    let plain = write_run(tmp.path(), "plain", 2);
    let out = common::cl_os_code(
        &[
            s("render"),
            plain.as_os_str(),
            s("--out"),
            galleries.as_os_str(),
        ],
        cwd,
        0,
    );
    assert_eq!(gallery_pages(&galleries).len(), 2, "{}", stdout(&out));
    // The non-UTF-8 run gets a gallery of its own, and it counts as up to date.
    let out = common::cl_os_code(
        &[
            s("render"),
            run.as_os_str(),
            s("--out"),
            galleries.as_os_str(),
        ],
        cwd,
        0,
    );
    assert_eq!(gallery_pages(&galleries).len(), 3, "{}", stdout(&out));
    assert!(candlelight::gallery::is_up_to_date(&galleries, &run));

    let out = common::cl_os_code(&[s("diff"), run.as_os_str(), run.as_os_str()], cwd, 0);
    let text = stdout(&out);
    assert!(text.contains("all layers agree"), "{text}");
    assert!(text.contains("bad\u{FFFD}.safetensors"), "{text}");
    let out = common::cl_os_code(
        &[s("diff"), run.as_os_str(), run.as_os_str(), s("--json")],
        cwd,
        0,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["agrees"], true, "{json}");
    assert!(
        json["a"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("bad\u{FFFD}.safetensors")),
        "{json}"
    );
    let page = tmp.path().join(os(b"diff\xfc"));
    let out = common::cl_os_code(
        &[
            s("diff"),
            run.as_os_str(),
            run.as_os_str(),
            s("--out"),
            page.as_os_str(),
        ],
        cwd,
        0,
    );
    assert_eq!(gallery_pages(&page).len(), 1, "{}", stdout(&out));
}

/// The `index.html` files under `dir` (galleries and the index).
fn gallery_pages(dir: &Path) -> Vec<PathBuf> {
    common::files_under(dir)
        .into_iter()
        .filter(|p| p.file_name() == Some(OsStr::new("index.html")))
        .collect()
}

/// A missing path that is not UTF-8: exit 2, one line on stderr naming the file.
#[cfg(unix)]
#[test]
fn missing_non_utf8_paths_fail_in_one_line_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let good = write_run(cwd, "good", 1);
    let missing = cwd.join(os(b"missing\xff.safetensors"));
    let nodir = cwd.join(os(b"nodir\xfe"));
    let s = OsStr::new;
    let cases: Vec<(Vec<&OsStr>, &str)> = vec![
        (vec![s("ls"), nodir.as_os_str()], "nodir\u{FFFD}"),
        (
            vec![s("show"), missing.as_os_str()],
            "missing\u{FFFD}.safetensors",
        ),
        (
            vec![s("render"), missing.as_os_str(), s("--out"), s("g")],
            "missing\u{FFFD}.safetensors",
        ),
        (
            vec![s("diff"), missing.as_os_str(), good.as_os_str()],
            "missing\u{FFFD}.safetensors",
        ),
        (
            vec![s("diff"), good.as_os_str(), missing.as_os_str()],
            "missing\u{FFFD}.safetensors",
        ),
        (
            vec![
                s("diff"),
                good.as_os_str(),
                good.as_os_str(),
                s("--map"),
                missing.as_os_str(),
            ],
            "missing\u{FFFD}.safetensors",
        ),
    ];
    for (args, name) in cases {
        let out = common::cl_os_code(&args, cwd, 2);
        let err = common::stderr(&out);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line expected:\n{err}");
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        assert!(
            lines[0].contains(name),
            "{args:?}: {name} not named in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["ls", "show", "render", "demo", "diff", "watch"] {
        let out = cl_code(&[sub, "--help"], dir.path(), 0);
        let text = stdout(&out);
        assert!(text.contains("Usage: candlelight"), "{sub}: {text}");
        assert!(text.lines().count() > 3, "{sub}: {text}");
    }
    let out = cl_code(&["--help"], dir.path(), 0);
    for sub in ["ls", "show", "render", "demo", "diff", "watch"] {
        assert!(stdout(&out).contains(sub), "{sub} missing from --help");
    }
}

#[test]
fn a_wrong_layer_name_is_one_error_line_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(dir.path(), "m", 2);
    let out = cl_code(&["show", run.to_str().unwrap(), "nope"], dir.path(), 2);
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let err = common::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no layer named \"nope\""), "{err}");
    let out = cl_code(&["show", run.to_str().unwrap(), "layr1"], dir.path(), 2);
    let err = common::stderr(&out);
    assert!(err.contains("did you mean \"layer1\"?"), "{err}");
    assert!(err.contains("layers: layer0, layer1"), "{err}");
}

#[test]
fn demo_replaces_its_own_earlier_runs_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, out) = (dir.path().join("runs"), dir.path().join("galleries"));
    let args = [
        "demo",
        "--runs",
        runs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    cl_code(&args, dir.path(), 0);
    let count = |ext: &str| {
        std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .count()
    };
    let first = count("safetensors");
    assert!(first >= 2, "{first} demo runs");
    // A user's run and a file that is not a run, in the same folder: kept.
    let mine = write_run(&runs, "mine", 1);
    std::fs::write(runs.join("notes.safetensors"), b"not a run").unwrap();
    let again = cl_code(&args, dir.path(), 0);
    let s = stdout(&again);
    assert!(
        s.contains(&format!("replaced {first} run(s) of an earlier demo")),
        "{s}"
    );
    assert_eq!(count("safetensors"), first + 2, "no growth per demo");
    assert!(mine.is_file() && runs.join("notes.safetensors").is_file());
    // One gallery per demo run (the replaced runs' galleries are gone).
    let galleries = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("manifest.json").is_file())
        .count();
    assert_eq!(galleries, first);
}

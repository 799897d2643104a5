//! `candlelight ls` and `show` on real files, through the real binary.

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

#[test]
fn every_subcommand_has_help() {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["ls", "show"] {
        let out = cl_code(&[sub, "--help"], dir.path(), 0);
        assert!(stdout(&out).contains("Usage"), "{sub}");
    }
}

//! `RunWriter` through the library: the files it writes are `Run::save`'s, byte for
//! byte; failures come back naming the file; drop writes everything queued; no
//! reader ever sees a partial file under a run's name.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candlelight::{one_line, tap, Error, Recorder, Run, RunWriter};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// A run of three layers of `n` values (10 bytes a value in all), mixed dtypes.
fn run(step: usize, n: usize) -> R<Run> {
    let x = Tensor::arange(0f32, n as f32, &Device::Cpu)?.affine(1.0, step as f64)?;
    let (_, run) = Recorder::new("writer")
        .tag("step", step.to_string())
        .record(|| {
            let h = tap("h", &x)?;
            tap("half", &h.to_dtype(DType::F16)?)?;
            tap("ids", &h.to_dtype(DType::U32)?)
        })?;
    Ok(run)
}

/// True when two run files hold the same bytes, up to the order of the header's
/// JSON keys (`Run::save` itself writes the metadata map in hash order).
fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let n = |f: &[u8]| 8 + u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    let head = |f: &[u8]| serde_json::from_slice::<serde_json::Value>(&f[8..n(f)]).unwrap();
    a.len() == b.len() && n(&a) == n(&b) && a[n(&a)..] == b[n(&b)..] && head(&a) == head(&b)
}

/// The visible (non-dot) files of `dir`.
fn visible(dir: &Path) -> R<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

#[test]
fn files_are_run_saves_bytes() -> R {
    for (capacity, threads) in [(2, 1), (0, 2)] {
        let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let writer = RunWriter::with_threads(b.path(), capacity, threads)?;
        let mut pairs = Vec::new();
        for step in 0..8 {
            let r = run(step, 300_000)?;
            let want = r.save(a.path())?;
            pairs.push((want, writer.save(r)?));
        }
        writer.finish()?;
        for (want, got) in &pairs {
            assert_eq!(want.file_name(), got.file_name());
            assert!(same_file(want, got), "{}", got.display());
        }
        assert_eq!(std::fs::read_dir(b.path())?.count(), 8, "no temp file left");
    }
    Ok(())
}

#[test]
fn failures_name_the_file_on_one_line() -> R {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("runs");
    let writer = RunWriter::new(&dir, 4)?;
    std::fs::remove_dir(&dir)?;
    std::fs::write(&dir, b"a file where the runs folder was")?;
    let first = run(0, 400)?;
    let path = writer.path_of(&first);
    // The writer thread may fail it before `save` returns: then `save` reports it.
    let e = match writer.save(first) {
        Ok(p) => {
            assert_eq!(p, path);
            writer.flush().unwrap_err()
        }
        Err(e) => e,
    };
    assert!(
        matches!(&e, Error::NotSaved { path: p, .. } if *p == path),
        "{e:?}"
    );
    let line = one_line(&e);
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.starts_with(&format!("{}: not saved: ", path.display())),
        "{line}"
    );
    // Reported once: the writer goes on.
    writer.flush()?;
    std::fs::remove_file(&dir)?;
    let path = writer.save(run(1, 400)?)?;
    writer.finish()?;
    assert!(Run::open(&path).is_ok());
    Ok(())
}

#[test]
fn a_removed_runs_folder_is_made_again() -> R {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("runs");
    let writer = RunWriter::new(&dir, 4)?;
    std::fs::remove_dir(&dir)?;
    let path = writer.save(run(0, 400)?)?;
    writer.finish()?;
    assert_eq!(Run::open(&path)?.info().tags["step"], "0");
    Ok(())
}

#[test]
fn drop_writes_every_queued_run() -> R {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let writer = RunWriter::new(b.path(), 32)?;
    let mut pairs = Vec::new();
    for step in 0..20 {
        let r = run(step, 50_000)?;
        pairs.push((r.save(a.path())?, writer.save(r)?));
    }
    drop(writer);
    for (want, got) in &pairs {
        assert!(same_file(want, got), "{}", got.display());
    }
    Ok(())
}

#[test]
fn no_partial_file_under_a_run_name() -> R {
    let dir = tempfile::tempdir()?;
    let writer = RunWriter::new(dir.path(), 2)?;
    let mut looks = 0;
    std::thread::scope(|s| -> R {
        let saving = s.spawn(|| -> candlelight::Result<()> {
            for step in 0..12 {
                writer.save(run(step, 800_000).expect("run"))?;
            }
            writer.flush()
        });
        while !saving.is_finished() {
            for p in visible(dir.path())? {
                // A partial file fails to open (its header's offsets pass its end).
                let r = Run::open(&p)?;
                assert_eq!(r.values("ids")?.len(), 800_000, "{}", p.display());
                looks += 1;
            }
        }
        saving.join().expect("saving thread")?;
        Ok(())
    })?;
    assert_eq!(visible(dir.path())?.len(), 12);
    assert!(looks > 0, "the folder was never seen with a run in it");
    Ok(())
}

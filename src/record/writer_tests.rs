use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use super::*;
use crate::{tap, Recorder};

const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<RunWriter>();
};

fn run(step: usize) -> Run {
    let x = Tensor::arange(0f32, 64., &Device::Cpu).unwrap();
    let (_, run) = Recorder::new("writer-test")
        .tag("step", step.to_string())
        .record(|| {
            let h = tap("h", &(&x * step as f64)?)?;
            tap("out", &h.relu()?)
        })
        .unwrap();
    run
}

/// Waits (up to a generous deadline) until `cond` holds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// True when two run files hold the same bytes, up to the order of the header's
/// JSON keys (`Run::save` itself writes the metadata map in hash order).
fn same_file(a: &Path, b: &Path) -> bool {
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    let n = |f: &[u8]| 8 + u64::from_le_bytes(f[..8].try_into().unwrap()) as usize;
    let head = |f: &[u8]| serde_json::from_slice::<serde_json::Value>(&f[8..n(f)]).unwrap();
    a.len() == b.len() && n(&a) == n(&b) && a[n(&a)..] == b[n(&b)..] && head(&a) == head(&b)
}

#[test]
fn writes_what_run_save_writes() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = RunWriter::new(b.path(), 1).unwrap();
    let mut expected = Vec::new();
    for step in 0..3 {
        let r = run(step);
        let want = r.save(a.path()).unwrap();
        let path = writer.save(r).unwrap();
        assert_eq!(path.file_name(), want.file_name());
        assert_eq!(path.parent(), Some(writer.dir()));
        expected.push((want, path));
    }
    writer.flush().unwrap();
    assert_eq!(writer.pending(), 0);
    for (want, got) in expected {
        assert!(same_file(&want, &got), "{}", got.display());
    }
    assert_eq!(run_files(b.path()).len(), 3, "no temp file left");
}

#[test]
fn a_full_queue_blocks_save() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = 2;
    let writer = RunWriter::new(dir.path(), capacity).unwrap();
    writer.shared.gate.set(true);
    let returned = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let saver = s.spawn(|| {
            for step in 0..6 {
                writer.save(run(step)).unwrap();
                returned.fetch_add(1, Ordering::SeqCst);
            }
        });
        // One run held by the (stopped) writer thread, `capacity` in the queue.
        let held = capacity + 1;
        wait_until("the queue is full", || {
            returned.load(Ordering::SeqCst) == held
        });
        // The next save must stay blocked however long we look; give it time to
        // get through if the bound were broken.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(returned.load(Ordering::SeqCst), held, "save did not block");
        assert!(!saver.is_finished());
        assert_eq!(
            writer.pending(),
            held + 1,
            "the blocked run counts as pending"
        );
        assert!(
            run_files(dir.path()).is_empty(),
            "nothing written while stopped"
        );
        writer.shared.gate.set(false);
    });
    writer.flush().unwrap();
    assert_eq!(run_files(dir.path()).len(), 6);
}

#[test]
fn failures_come_back_on_the_next_call_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    let writer = RunWriter::new(&dir, 4).unwrap();
    // The runs folder becomes a file: every save fails.
    std::fs::remove_dir(&dir).unwrap();
    std::fs::write(&dir, b"not a folder").unwrap();
    // Held until `save` has returned, so its failure cannot come back from `save` itself.
    writer.shared.gate.set(true);
    let first = writer.save(run(1)).unwrap();
    writer.shared.gate.set(false);
    wait_until("the save failed", || writer.pending() == 0);
    let second = run(2);
    let second_path = writer.path_of(&second);
    let e = writer.save(second).unwrap_err();
    assert!(
        matches!(&e, Error::NotSaved { path, .. } if *path == first),
        "{e:?}"
    );
    let line = one_line(&e);
    assert!(!line.contains('\n'));
    assert!(
        line.starts_with(&format!("{}: not saved: ", first.display())),
        "{line}"
    );
    // The second run was queued all the same: its failure comes from flush.
    let e = writer.flush().unwrap_err();
    assert!(
        matches!(&e, Error::NotSaved { path, .. } if *path == second_path),
        "{e:?}"
    );
    writer.check().unwrap();
    writer.flush().unwrap();
    let third = run(3);
    let third_path = writer.path_of(&third);
    // The writer thread may fail it before `save` returns: then `save` reports it.
    let e = match writer.save(third) {
        Ok(_) => writer.finish().unwrap_err(),
        Err(e) => e,
    };
    assert!(one_line(&e).contains(&*third_path.to_string_lossy()), "{e}");
}

#[test]
fn drop_writes_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let writer = RunWriter::new(dir.path(), 8).unwrap();
    let shared = writer.shared.clone();
    shared.gate.set(true);
    let paths: Vec<PathBuf> = (0..5).map(|i| writer.save(run(i)).unwrap()).collect();
    std::thread::scope(|s| {
        let dropping = s.spawn(move || drop(writer));
        // Drop cannot return while the writer thread is stopped with 5 runs to go.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!dropping.is_finished());
        assert_eq!(shared.lock().pending.len(), 5);
        shared.gate.set(false);
    });
    for p in paths {
        assert!(Run::open(&p).is_ok(), "{} missing", p.display());
    }
}

#[test]
fn names_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let writer = RunWriter::new(dir.path(), 4).unwrap();
    writer.shared.gate.set(true);
    let (_, a) = Recorder::new("m").id("same").record(|| Ok(())).unwrap();
    let (_, b) = Recorder::new("m").id("same").record(|| Ok(())).unwrap();
    let path = writer.save(a).unwrap();
    let e = writer.save(b).unwrap_err();
    assert!(
        matches!(&e, Error::Io { path: p, .. } if *p == path),
        "{e:?}"
    );
    writer.shared.gate.set(false);
    writer.flush().unwrap();
    let (_, c) = Recorder::new("m").id("same").record(|| Ok(())).unwrap();
    assert!(writer.save(c).is_err(), "the file exists now");
    assert!(RunWriter::with_threads(dir.path(), 1, 0).is_err());
}

#[test]
fn several_threads_write_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let writer = RunWriter::with_threads(dir.path(), 0, 3).unwrap();
    let paths: Vec<PathBuf> = (0..12).map(|i| writer.save(run(i)).unwrap()).collect();
    writer.finish().unwrap();
    for (i, p) in paths.iter().enumerate() {
        let r = Run::open(p).unwrap();
        assert_eq!(r.info().tags["step"], i.to_string());
    }
    assert_eq!(run_files(dir.path()).len(), 12);
}

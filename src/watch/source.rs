//! The event source: notify (native or polling) behind notify-debouncer-full, filtered
//! down to the run files of one folder, plus the folder scan used at start and as a
//! periodic safety net.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crossbeam_channel::Sender;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, PollWatcher, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{
    new_debouncer_opt, DebounceEventResult, DebouncedEvent, Debouncer, NoCache, RecommendedCache,
};

use crate::runfile::EXTENSION;
use crate::{Error, Result};

/// What the source reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Run files that were created, changed, renamed in or out, or removed.
    Paths(Vec<PathBuf>),
    /// Events were lost (queue overflow): scan the folder.
    Rescan,
    /// The watcher reported errors (one line each); a scan follows.
    Errors(Vec<String>),
}

/// How the folder is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The platform's notification API (inotify, FSEvents, ReadDirectoryChangesW).
    Native,
    /// notify's polling watcher, comparing the folder every `interval`.
    Poll {
        /// Time between two comparisons.
        interval: Duration,
    },
}

/// A running watcher; events stop when it is dropped.
pub struct Source {
    debouncer: Inner,
}

enum Inner {
    Native(Debouncer<RecommendedWatcher, RecommendedCache>),
    Poll(Debouncer<PollWatcher, NoCache>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.debouncer {
            Inner::Native(_) => "native",
            Inner::Poll(_) => "poll",
        };
        f.debug_struct("Source").field("backend", &kind).finish()
    }
}

impl Source {
    /// Stops watching and waits for the debouncer's thread (at most one tick).
    pub fn stop(self) {
        match self.debouncer {
            Inner::Native(d) => d.stop(),
            Inner::Poll(d) => d.stop(),
        }
    }
}

/// Is `name` a run file the daemon should look at? `*.safetensors`, not a dot file
/// (dot files are temporaries: `.<name>.tmp` while a run is being written).
pub fn is_run_file_name(name: &str) -> bool {
    !name.starts_with('.')
        && name.len() > EXTENSION.len() + 1
        && name.ends_with(EXTENSION)
        && name[..name.len() - EXTENSION.len()].ends_with('.')
}

fn is_run_file_in(dir: &Path, path: &Path) -> bool {
    path.parent() == Some(dir)
        && path
            .file_name()
            .is_some_and(|n| is_run_file_name(&n.to_string_lossy()))
}

/// The run-file paths directly in `dir` that `events` touch (deduplicated, in order),
/// and whether a rescan was asked for. Opening or reading a file is not a change;
/// closing it after writing is.
pub fn run_paths(dir: &Path, events: &[DebouncedEvent]) -> (Vec<PathBuf>, bool) {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut rescan = false;
    for ev in events {
        if ev.need_rescan() {
            rescan = true;
            continue;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => continue,
            _ => {}
        }
        for p in &ev.paths {
            if is_run_file_in(dir, p) && !paths.iter().any(|q| q == p) {
                paths.push(p.to_path_buf());
            }
        }
    }
    (paths, rescan)
}

fn handler(dir: PathBuf, tx: Sender<SourceEvent>) -> impl FnMut(DebounceEventResult) + Send {
    move |res: DebounceEventResult| {
        let msg = match res {
            Ok(events) => {
                let (paths, rescan) = run_paths(&dir, &events);
                if rescan {
                    let _ = tx.send(SourceEvent::Rescan);
                }
                if paths.is_empty() {
                    return;
                }
                SourceEvent::Paths(paths)
            }
            Err(errors) => SourceEvent::Errors(errors.iter().map(|e| e.to_string()).collect()),
        };
        let _ = tx.send(msg);
    }
}

/// Starts watching `dir` (not recursively): run-file events, debounced by `debounce`,
/// go to `tx`.
pub fn start(
    dir: &Path,
    backend: Backend,
    debounce: Duration,
    tx: Sender<SourceEvent>,
) -> Result<Source> {
    let err = |e: notify::Error| Error::Watch {
        path: dir.to_path_buf(),
        msg: e.to_string(),
    };
    let debounce = debounce.max(Duration::from_millis(4));
    let tick = Some(debounce / 4);
    let h = handler(dir.to_path_buf(), tx);
    let inner = match backend {
        Backend::Native => {
            let mut d = new_debouncer_opt::<_, RecommendedWatcher, RecommendedCache>(
                debounce,
                tick,
                h,
                RecommendedCache::new(),
                notify::Config::default(),
            )
            .map_err(err)?;
            d.watch(dir, RecursiveMode::NonRecursive).map_err(err)?;
            Inner::Native(d)
        }
        Backend::Poll { interval } => {
            let config = notify::Config::default().with_poll_interval(interval);
            let mut d =
                new_debouncer_opt::<_, PollWatcher, NoCache>(debounce, tick, h, NoCache, config)
                    .map_err(err)?;
            d.watch(dir, RecursiveMode::NonRecursive).map_err(err)?;
            Inner::Poll(d)
        }
    };
    Ok(Source { debouncer: inner })
}

/// The run files directly in `dir`, sorted by name.
pub fn scan(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| is_run_file_name(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};
    use notify::Event;
    use std::time::Instant;

    fn ev(kind: EventKind, paths: &[&str]) -> DebouncedEvent {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        DebouncedEvent::new(e, Instant::now())
    }

    #[test]
    fn run_file_names() {
        assert!(is_run_file_name("20250101-000000-lenet-00ab.safetensors"));
        assert!(is_run_file_name("x.safetensors"));
        assert!(!is_run_file_name(".x.safetensors.tmp"));
        assert!(!is_run_file_name(".x.safetensors"));
        assert!(!is_run_file_name("x.safetensors.tmp"));
        assert!(!is_run_file_name("x.safetensors~"));
        assert!(!is_run_file_name("xsafetensors"));
        assert!(!is_run_file_name(".safetensors"));
        assert!(!is_run_file_name("notes.txt"));
    }

    #[test]
    fn events_are_filtered_to_run_files_in_the_folder() {
        let dir = Path::new("/r");
        let events = vec![
            ev(
                EventKind::Create(CreateKind::File),
                &["/r/.a.safetensors.tmp"],
            ),
            ev(
                EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                &["/r/.a.safetensors.tmp", "/r/a.safetensors"],
            ),
            ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                &["/r/b.safetensors"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                &["/r/b.safetensors"],
            ),
            ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                &["/r/c.safetensors"],
            ),
            ev(
                EventKind::Create(CreateKind::File),
                &["/r/sub/d.safetensors"],
            ),
            ev(EventKind::Create(CreateKind::File), &["/r/notes.txt"]),
            ev(
                EventKind::Remove(notify::event::RemoveKind::File),
                &["/r/e.safetensors"],
            ),
            ev(EventKind::Modify(ModifyKind::Any), &["/r/a.safetensors"]),
        ];
        let (paths, rescan) = run_paths(dir, &events);
        assert!(!rescan);
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/r/a.safetensors"),
                PathBuf::from("/r/c.safetensors"),
                PathBuf::from("/r/e.safetensors"),
            ]
        );
        let overflow = ev(EventKind::Other, &[]);
        let overflow = DebouncedEvent::new(
            overflow.event.clone().set_flag(notify::event::Flag::Rescan),
            Instant::now(),
        );
        assert_eq!(run_paths(dir, &[overflow]), (vec![], true));
    }

    #[test]
    fn scan_lists_run_files_only() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "b.safetensors",
            "a.safetensors",
            ".c.safetensors.tmp",
            "x.txt",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        std::fs::create_dir(d.path().join("dir.safetensors")).unwrap();
        let got = scan(d.path()).unwrap();
        assert_eq!(
            got,
            vec![
                d.path().join("a.safetensors"),
                d.path().join("b.safetensors")
            ]
        );
    }
}

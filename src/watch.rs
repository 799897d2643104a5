//! The watch daemon: run files dropped into a folder become galleries by themselves.
//!
//! The loop is four separate pieces:
//!
//! * **source** ([`source`]): notify (native, or polling with [`Backend::Poll`])
//!   behind notify-debouncer-full, filtered to the folder's run files (`*.safetensors`,
//!   no dot files), plus a folder scan at start (catch-up) and every
//!   [`WatchOptions::rescan`] as a safety net for lost events;
//! * **decide** ([`decide`]): a pure state machine ([`Planner`]) that turns
//!   observations ("this file has these facts; its gallery is / is not up to date")
//!   and task outcomes into tasks. One task per gallery at a time; a run that changes
//!   meanwhile is looked at again once the task ends; a run that fails is retried
//!   with backoff while it keeps changing (a producer still writing it) and gets an
//!   error page once it fails unchanged [`Policy::retry_delays`]`.len() + 1` times;
//! * **render** ([`worker`]): a fixed pool of threads running the tasks with
//!   [`crate::gallery`] (galleries are built aside and swapped in, so a reader never
//!   sees half of one);
//! * the shell here, which feeds the planner and rewrites `out/index.html` after the
//!   galleries change (on its own thread, coalescing bursts).
//!
//! Stopping ([`Stopper::stop`]) drops the queued tasks and waits up to
//! [`WatchOptions::stop_grace`] for the running ones; a render still going then is
//! abandoned (its staging folder is removed on the next start).
//!
//! What it deletes: only temporaries that [`crate::staging`] proves are candlelight's
//! and whose writer is gone (in the output folder, and `Run::save` temps in the runs
//! folder), galleries it replaces, and with pruning galleries of deleted runs. It
//! refuses an output folder that is the runs folder, and skips (with one log line)
//! paths named like runs that are not regular files. An I/O failure on its own side
//! is retried with a growing wait ([`Policy::io_retry`]), never an error page.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::watch::{Watch, WatchOptions};
//! use candlelight::Run;
//!
//! let runs = tempfile::tempdir()?;
//! let out = tempfile::tempdir()?;
//! let x = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((2, 4))?;
//! Run::from_named_tensors("doc", [("x".to_string(), x)]).save(runs.path())?;
//!
//! let opts = WatchOptions { once: true, ..WatchOptions::new(runs.path(), out.path()) };
//! let summary = Watch::new(opts).run()?;          // render what is pending, return
//! assert_eq!(summary.rendered, 1);
//! assert!(out.path().join("index.html").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Known problems
//!
//! * **Network file systems** (NFS, SMB, sshfs) do not deliver change events for
//!   writes made by other machines. Use [`Backend::Poll`] (`--poll`).
//! * **Docker bind mounts on macOS and Windows** (and WSL2 folders shared with
//!   Windows) do not forward events into the container either: use `--poll`.
//! * **Editors and producers that save by rename** are fine: the rename into the
//!   folder is the event (temp files starting with a dot are ignored). A producer
//!   that writes a run in place, slowly, is also fine: the run is retried while it
//!   grows and rendered once complete. It gets an error page if it stalls for longer
//!   than the retry window (~1.75 s by default) and is re-rendered when it changes.
//!   A producer that truncates or rewrites a file while it renders costs one failed
//!   attempt: run files are read with positioned reads, never memory-mapped.
//! * The folder is watched non-recursively; run files in sub-folders are ignored.
//! * Event queues can overflow under huge bursts (inotify's
//!   `fs.inotify.max_queued_events`); the daemon then rescans the folder, and rescans
//!   every [`WatchOptions::rescan`] anyway.
//! * One daemon per output folder: a second one refuses to start (a lock file,
//!   `.candlelight-watch.lock`, in the output folder).

pub mod decide;
mod index;
#[cfg(feature = "remote")]
mod lease;
#[cfg(feature = "remote")]
pub mod shared;
mod shell;
pub mod source;
pub mod worker;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use tracing::info;

pub use decide::Policy;
pub use index::INDEX_GAP;
pub use source::Backend;

use decide::{Action, Job, Observation, Outcome, Planner};
use source::SourceEvent;

use shell::Shell;

use crate::gallery::GalleryOptions;
use crate::staging::absolute;
use crate::{Error, Result};
use worker::{Done, Pool};

/// Name of the lock file the daemon holds in its output folder.
pub const LOCK_FILE: &str = ".candlelight-watch.lock";

/// What to watch and how. [`WatchOptions::new`] states every default.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Folder of run files (watched non-recursively).
    pub runs: PathBuf,
    /// Folder of galleries (created if missing).
    pub out: PathBuf,
    /// Render threads (default: the number of cores).
    pub jobs: usize,
    /// Render what is pending, then return instead of watching (default: false).
    pub once: bool,
    /// Native events or polling (default: native).
    pub backend: Backend,
    /// Quiet time before an event is acted on (default: 100 ms).
    pub debounce: Duration,
    /// Full rescan of the folder this often; `None`: never (default: 30 s).
    pub rescan: Option<Duration>,
    /// Retries and pruning (default: [`Policy::default`]).
    pub policy: Policy,
    /// How long a stop waits for running renders before abandoning them (default: 1.5 s).
    pub stop_grace: Duration,
    /// How galleries are rendered (default: [`GalleryOptions::default`]).
    pub gallery: GalleryOptions,
}

impl WatchOptions {
    /// Watch `runs`, write galleries into `out`, with the defaults above.
    pub fn new(runs: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        WatchOptions {
            runs: runs.into(),
            out: out.into(),
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
            once: false,
            backend: Backend::Native,
            debounce: Duration::from_millis(100),
            rescan: Some(Duration::from_secs(30)),
            policy: Policy::default(),
            stop_grace: Duration::from_millis(1500),
            gallery: GalleryOptions::default(),
        }
    }
}

/// What a watch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Galleries rendered.
    pub rendered: usize,
    /// Runs that got an error page.
    pub error_pages: usize,
    /// Galleries removed (`prune`).
    pub pruned: usize,
    /// Error pages or prunes that could not be written.
    pub failed: usize,
    /// Runs already up to date at the start.
    pub up_to_date: usize,
    /// Renders still running when a stop gave up waiting.
    pub abandoned: usize,
}

impl Summary {
    /// No error page and nothing failed.
    pub fn all_ok(&self) -> bool {
        self.error_pages == 0 && self.failed == 0
    }
}

/// Stops a running [`Watch`] from another thread (a signal handler's thread, a test).
#[derive(Debug, Clone)]
pub struct Stopper(Sender<()>);

impl Stopper {
    /// Asks the watch to stop; [`Watch::run`] returns soon after.
    pub fn stop(&self) {
        let _ = self.0.try_send(());
    }
}

/// The daemon: [`Watch::new`], maybe [`Watch::stopper`], then [`Watch::run`].
#[derive(Debug)]
pub struct Watch {
    opts: WatchOptions,
    stop_tx: Sender<()>,
    stop_rx: Receiver<()>,
}

impl Watch {
    /// A daemon with these options (nothing starts before [`Watch::run`]).
    pub fn new(opts: WatchOptions) -> Self {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        Watch {
            opts,
            stop_tx,
            stop_rx,
        }
    }

    /// A handle that stops [`Watch::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop_tx.clone())
    }

    /// Catches up, then watches until stopped (or, with `once`, until nothing is
    /// pending). Errors only when it cannot start (no such folder, cannot watch,
    /// output folder locked, output folder = runs folder); a bad run file never
    /// stops it.
    pub fn run(self) -> Result<Summary> {
        let o = &self.opts;
        let (runs, out) = folders(o)?;
        let _lock = lock(&out)?;
        clean_stale(&out, &runs);

        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let jobs = o.jobs.max(1);
        let pool = Pool::start(jobs, out.clone(), o.gallery.clone(), done_tx);
        let source = if o.once {
            None
        } else {
            Some(source::start(&runs, o.backend, o.debounce, ev_tx.clone())?)
        };
        let backend = match (&source, o.backend) {
            (None, _) => "once".to_string(),
            (Some(_), Backend::Native) => "native events".to_string(),
            (Some(_), Backend::Poll { interval }) => {
                format!("polling every {} ms", interval.as_millis())
            }
        };
        info!(
            "watching {} -> {} ({jobs} render threads, {backend})",
            runs.display(),
            out.display()
        );
        let mut shell = Shell::new(runs, out, pool, &o.policy);
        shell.index.ping();
        shell.scan(true);
        let stopped = self.event_loop(&mut shell, &done_rx, &ev_rx);
        if let Some(s) = source {
            s.stop();
        }
        drop(ev_tx);
        if stopped {
            info!("stopping");
        }
        Ok(shell.shut_down(&done_rx, o.stop_grace))
    }

    /// Feeds events, finished tasks and timers to the shell until stopped (true) or,
    /// with `once`, until nothing is pending (false).
    fn event_loop(
        &self,
        shell: &mut Shell,
        done_rx: &Receiver<Done>,
        ev_rx: &Receiver<SourceEvent>,
    ) -> bool {
        let o = &self.opts;
        let mut next_rescan = o.rescan.map(|d| Instant::now() + d);
        loop {
            if o.once && shell.planner.is_idle() {
                return false;
            }
            let now = Instant::now();
            let wake = [shell.planner.next_due(), next_rescan]
                .into_iter()
                .flatten()
                .min();
            let timeout = wake.map_or(Duration::from_secs(3600), |w| {
                w.saturating_duration_since(now)
            });
            select! {
                recv(self.stop_rx) -> _ => return true,
                recv(done_rx) -> d => {
                    if let Ok(d) = d {
                        shell.on_done(d);
                    }
                }
                recv(ev_rx) -> e => {
                    if let Ok(e) = e {
                        shell.on_event(e);
                    }
                }
                default(timeout) => {}
            }
            let now = Instant::now();
            let due = shell.planner.tick(now);
            shell.apply(due);
            if let (Some(at), Some(every)) = (next_rescan, o.rescan) {
                if at <= now {
                    clean_stale(&shell.out, &shell.runs);
                    shell.scan(false);
                    next_rescan = Some(now + every);
                }
            }
        }
    }
}

/// The runs and output folders, absolute, checked (the output folder created).
fn folders(o: &WatchOptions) -> Result<(PathBuf, PathBuf)> {
    let runs = absolute(&o.runs);
    if !runs.is_dir() {
        return Err(Error::Watch {
            path: runs,
            msg: "not a folder".into(),
        });
    }
    let out = absolute(&o.out);
    if same_folder(&runs, &out) {
        return Err(Error::Watch {
            path: out,
            msg: "the output folder is the runs folder; choose another --out (e.g. a sibling `galleries`)".into(),
        });
    }
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    Ok((runs, out))
}

/// True when `a` and `b` are the same folder (compared canonically when both exist).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Removes what dead candlelight processes left in `out` (staging and trash folders,
/// temp files) and in `runs` (run-file temps of killed producers): only leftovers
/// that [`crate::staging`] can prove are candlelight's and whose writer is gone.
pub(crate) fn clean_stale(out: &Path, runs: &Path) {
    for dir in [out, runs] {
        let removed = crate::staging::clean_stale(dir);
        if !removed.is_empty() {
            info!(
                "removed {} leftover(s) of stopped candlelight processes in {}",
                removed.len(),
                dir.display()
            );
        }
    }
}

/// Holds `out/.candlelight-watch.lock` (released when the file is dropped).
fn lock(out: &Path) -> Result<std::fs::File> {
    let path = out.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(Error::Watch {
                path: out.to_path_buf(),
                msg: "another `candlelight watch` is writing into this folder".into(),
            });
        }
    }
    Ok(f)
}

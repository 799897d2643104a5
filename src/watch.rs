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
pub mod source;
pub mod worker;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use tracing::{debug, info, warn};

pub use decide::{Action, Facts, Job, Observation, Outcome, Planner, Policy, Task};
pub use source::{Backend, SourceEvent};

use crate::gallery::{self, GalleryOptions};
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
    /// output folder locked); a bad run file never stops it.
    pub fn run(self) -> Result<Summary> {
        let o = &self.opts;
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

        let mut shell = Shell {
            planner: Planner::new(o.policy.clone()),
            index: Indexer::start(out.clone()),
            runs,
            out,
            pool,
            prune: o.policy.prune,
            summary: Summary::default(),
            skipped: HashSet::new(),
            retrying: HashMap::new(),
        };
        shell.index.ping();
        shell.scan(true);

        let mut next_rescan = o.rescan.map(|d| Instant::now() + d);
        let mut stopped = false;
        loop {
            if o.once && shell.planner.is_idle() {
                break;
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
                recv(self.stop_rx) -> _ => {
                    stopped = true;
                    break;
                }
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
        if let Some(s) = source {
            s.stop();
        }
        drop(ev_tx);

        if stopped {
            info!("stopping");
        }
        shell.pool.stop();
        let deadline = Instant::now() + o.stop_grace;
        while shell.pool.active() > 0 && Instant::now() < deadline {
            if let Ok(d) = done_rx.recv_timeout(Duration::from_millis(10)) {
                shell.on_done(d);
            }
        }
        while let Ok(d) = done_rx.try_recv() {
            shell.on_done(d);
        }
        let Shell {
            pool,
            index,
            mut summary,
            ..
        } = shell;
        summary.abandoned = pool.active();
        if summary.abandoned > 0 {
            warn!(
                "abandoned {} render(s) in progress; their temp folders are removed on the next start",
                summary.abandoned
            );
        } else {
            pool.join();
        }
        index.finish();
        info!(
            "done: {} rendered, {} error page(s), {} pruned, {} up to date at start",
            summary.rendered, summary.error_pages, summary.pruned, summary.up_to_date
        );
        Ok(summary)
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// True when `a` and `b` are the same folder (compared canonically when both exist).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// What the daemon sees of one run file and its gallery now.
pub fn observe(out: &Path, path: &Path) -> Observation {
    let source = worker::facts_now(path);
    let up_to_date = source.is_some() && gallery::is_up_to_date(out, path);
    // A gallery counts as this run's (for pruning) when its source is gone.
    let has_gallery = source.is_none()
        && gallery::read_manifest(&gallery::gallery_dir(out, path))
            .is_some_and(|m| !m.source.exists());
    Observation {
        id: gallery::gallery_name(path),
        path: path.to_path_buf(),
        source,
        up_to_date,
        has_gallery,
    }
}

/// The imperative half of the loop: feeds the planner, carries out its actions.
struct Shell {
    planner: Planner,
    index: Indexer,
    runs: PathBuf,
    out: PathBuf,
    pool: Pool,
    prune: bool,
    summary: Summary,
    /// Paths named like runs that are not regular files (logged once each).
    skipped: HashSet<PathBuf>,
    /// Runs waiting after an I/O failure, with the last message logged.
    retrying: HashMap<String, String>,
}

impl Shell {
    fn apply(&mut self, actions: Vec<Action>) {
        let mut todo: VecDeque<Action> = actions.into();
        while let Some(a) = todo.pop_front() {
            match a {
                Action::Start(task) => self.pool.submit(task),
                Action::Recheck { path, .. } => {
                    let o = observe(&self.out, &path);
                    todo.extend(self.planner.observe(o, Instant::now()));
                }
            }
        }
    }

    /// Logs (once) and skips a path named like a run that is not a regular file:
    /// a FIFO, socket, device or folder is never opened.
    fn skip_odd(&mut self, path: &Path) -> bool {
        match std::fs::metadata(path) {
            Ok(md) if !md.is_file() => {
                if self.skipped.insert(path.to_path_buf()) {
                    warn!(
                        "{}: not a regular file ({}); skipped",
                        path.display(),
                        crate::runfile::file_kind(&md)
                    );
                }
                true
            }
            _ => {
                self.skipped.remove(path);
                false
            }
        }
    }

    fn look(&mut self, path: &Path) -> (bool, bool) {
        if self.skip_odd(path) {
            return (false, false);
        }
        let o = observe(&self.out, path);
        let up = o.up_to_date;
        let acts = self.planner.observe(o, Instant::now());
        let starts = acts.iter().any(|a| matches!(a, Action::Start(_)));
        self.apply(acts);
        (up, starts)
    }

    fn on_event(&mut self, e: SourceEvent) {
        match e {
            SourceEvent::Paths(paths) => {
                for p in paths {
                    self.look(&p);
                }
            }
            SourceEvent::Rescan => {
                warn!("file events were lost (queue overflow); rescanning");
                self.scan(false);
            }
            SourceEvent::Errors(errors) => {
                for e in errors {
                    warn!("watcher: {e}");
                }
                self.scan(false);
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        match &d.outcome {
            Outcome::Rendered => {
                self.summary.rendered += 1;
                self.index.ping();
            }
            Outcome::ErrorPage => {
                self.summary.error_pages += 1;
                self.index.ping();
            }
            Outcome::Pruned => {
                self.summary.pruned += 1;
                self.index.ping();
            }
            Outcome::Changed => self.index.ping(),
            Outcome::Vanished => {
                debug!("{}: the run file is gone", d.id);
                // Its gallery may have been swapped in just before it went.
                self.index.ping();
            }
            Outcome::Retry { message } => {
                // Once per distinct failure; the wait grows while it lasts.
                if self.retrying.get(&d.id) != Some(message) {
                    warn!("{message} (will retry)");
                    self.retrying.insert(d.id.clone(), message.clone());
                }
            }
            Outcome::Failed { .. } if d.job != Job::Render => self.summary.failed += 1,
            Outcome::Failed { .. } => {}
        }
        if !matches!(d.outcome, Outcome::Retry { .. }) && self.retrying.remove(&d.id).is_some() {
            info!("{}: writing works again", d.id);
        }
        let failed = matches!(d.outcome, Outcome::Failed { .. }) && d.job == Job::Render;
        let message = match &d.outcome {
            Outcome::Failed { message, .. } => message.clone(),
            _ => String::new(),
        };
        let acts = self.planner.done(&d.id, d.outcome, Instant::now());
        if failed && acts.is_empty() {
            debug!(
                "{}: not readable yet (failure {} on this version), will retry: {message}",
                d.id,
                self.planner.failures(&d.id)
            );
        }
        self.apply(acts);
    }

    /// Looks at every run file (and, when pruning, every gallery whose run is gone).
    fn scan(&mut self, catch_up: bool) {
        let files = match source::scan(&self.runs) {
            Ok(f) => f,
            Err(e) => {
                warn!("cannot scan: {e}");
                return;
            }
        };
        let (mut up, mut todo) = (0, 0);
        for p in &files {
            let (u, s) = self.look(p);
            up += usize::from(u);
            todo += usize::from(s);
        }
        if self.prune {
            for p in orphans(&self.out, &self.runs) {
                self.look(&p);
            }
        }
        if catch_up {
            self.summary.up_to_date = up;
            info!(
                "catch-up: {} run(s) in {}: {todo} to render, {up} up to date",
                files.len(),
                self.runs.display()
            );
        } else if todo > 0 {
            info!("rescan: {todo} run(s) to render");
        }
    }
}

/// Run-file paths in `runs` that have a gallery in `out` but no longer exist.
fn orphans(out: &Path, runs: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(out) else {
        return vec![];
    };
    let runs_c = std::fs::canonicalize(runs).unwrap_or_else(|_| runs.to_path_buf());
    rd.flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| gallery::read_manifest(&e.path()))
        .map(|m| absolute(&m.source))
        .filter(|src| !src.exists())
        .filter(|src| {
            src.parent()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p == runs_c)
        })
        .collect()
}

/// Removes what dead candlelight processes left in `out` (staging and trash folders,
/// temp files) and in `runs` (run-file temps of killed producers): only leftovers
/// that [`crate::staging`] can prove are candlelight's and whose writer is gone.
fn clean_stale(out: &Path, runs: &Path) {
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

/// Rewrites `out/index.html` on its own thread after galleries change. Pings that
/// arrive while it writes, or within [`INDEX_GAP`] of the last write, are folded into
/// one write (a burst of runs does not rewrite the index once per run).
struct Indexer {
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Minimum time between two rewrites of `out/index.html` during a burst; the gap
/// also grows to 10× the last rewrite's cost, so that with thousands of galleries
/// the index takes at most ~10 % of the time during a burst.
pub const INDEX_GAP: Duration = Duration::from_millis(250);

impl Indexer {
    fn start(out: PathBuf) -> Indexer {
        let (tx, rx) = crossbeam_channel::unbounded::<()>();
        let thread = std::thread::Builder::new()
            .name("index".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                let mut gap = INDEX_GAP;
                while rx.recv().is_ok() {
                    if let Some(ready) = last.map(|l| l + gap) {
                        // Fold further pings in until the gap has passed (or we stop).
                        while let Ok(()) = rx.recv_deadline(ready) {}
                    }
                    while rx.try_recv().is_ok() {}
                    let t0 = Instant::now();
                    if let Err(e) = gallery::write_index(&out) {
                        warn!("cannot write the index: {e}");
                    }
                    let cost = t0.elapsed();
                    debug!("index written in {} ms", cost.as_millis());
                    gap = INDEX_GAP.max(cost * 10);
                    last = Some(Instant::now());
                }
            })
            .expect("spawn the index thread");
        Indexer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn ping(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Finishes the pending write and stops the thread.
    fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! The worker pool: a fixed number of threads taking [`Task`]s from one queue,
//! rendering (or writing error pages, or pruning), and reporting an [`Outcome`].
//! The planner never queues two tasks for one gallery, so workers need no locks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, error, info, warn};

use super::decide::{Facts, Job, Outcome, Task};
use crate::error::one_line;
use crate::gallery::{self, GalleryOptions};
use crate::staging::{Kind, Temp};
use crate::Error;

/// A finished task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Gallery name.
    pub id: String,
    /// What was done.
    pub job: Job,
    /// How it ended.
    pub outcome: Outcome,
    /// Milliseconds the task took.
    pub ms: u64,
}

/// The running pool.
#[derive(Debug)]
pub struct Pool {
    tasks: Option<Sender<Task>>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

/// Facts of the run file now; `None` if there is no regular file.
pub fn facts_now(path: &Path) -> Option<Facts> {
    gallery::source_facts(path).ok()
}

/// The outcome of a task that failed with `e`: an I/O failure is a [`Outcome::Retry`]
/// (its message names the run, not a temp folder); anything else is a verdict on the
/// run, [`Outcome::Failed`].
fn failure(task: &Task, out: &Path, facts: Option<Facts>, e: &Error) -> Outcome {
    match e {
        Error::Io { path, source } => {
            let message = if path.starts_with(out) {
                format!(
                    "{}: cannot write its gallery into {}: {source}",
                    task.path.display(),
                    out.display()
                )
            } else if path == &task.path {
                format!("{}: {source}", task.path.display())
            } else {
                format!("{}: {}: {source}", task.path.display(), path.display())
            };
            Outcome::Retry { facts, message }
        }
        _ => Outcome::Failed {
            facts,
            message: one_line(e),
        },
    }
}

impl Pool {
    /// Starts `jobs` (at least 1) worker threads rendering into `out`; finished
    /// tasks go to `done`.
    pub fn start(jobs: usize, out: PathBuf, opts: GalleryOptions, done: Sender<Done>) -> Pool {
        let (tx, rx) = crossbeam_channel::unbounded::<Task>();
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let threads = (0..jobs.max(1))
            .map(|i| {
                let (rx, done, out, opts) = (rx.clone(), done.clone(), out.clone(), opts.clone());
                let (stop, active) = (stop.clone(), active.clone());
                std::thread::Builder::new()
                    .name(format!("render-{i}"))
                    .spawn(move || worker(rx, done, out, opts, stop, active))
                    .expect("spawn a render thread")
            })
            .collect();
        Pool {
            tasks: Some(tx),
            stop,
            active,
            threads,
        }
    }

    /// Queues a task.
    pub fn submit(&self, task: Task) {
        if let Some(tx) = &self.tasks {
            let _ = tx.send(task);
        }
    }

    /// Tasks being worked on right now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Stops taking tasks: queued ones are dropped, running ones finish.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tasks = None;
    }

    /// Waits for the threads (after [`Pool::stop`], or when all work is done).
    pub fn join(mut self) {
        self.tasks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(
    rx: Receiver<Task>,
    done: Sender<Done>,
    out: PathBuf,
    opts: GalleryOptions,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
) {
    while let Ok(task) = rx.recv() {
        active.fetch_add(1, Ordering::SeqCst);
        if stop.load(Ordering::SeqCst) {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let t0 = Instant::now();
        // A panic in a renderer is one bad run, not a dead worker.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &task.job {
            Job::Render => render(&task, &out, &opts),
            Job::ErrorPage { facts, message } => error_page(&task, &out, *facts, message),
            Job::Prune => prune(&task, &out),
        }))
        .unwrap_or_else(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::Failed {
                facts: facts_now(&task.path),
                message: format!("{}: the renderer panicked: {what}", task.path.display()),
            }
        });
        let ms = t0.elapsed().as_millis() as u64;
        let _ = done.send(Done {
            id: task.id,
            job: task.job,
            outcome,
            ms,
        });
        active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn render(task: &Task, out: &Path, opts: &GalleryOptions) -> Outcome {
    let Some(before) = facts_now(&task.path) else {
        return Outcome::Vanished;
    };
    debug!("rendering {}", task.id);
    let t0 = Instant::now();
    let res = gallery::render_gallery(&task.path, out, opts);
    let ms = t0.elapsed().as_millis();
    let after = facts_now(&task.path);
    match res {
        _ if after.is_none() => Outcome::Vanished,
        _ if after != Some(before) => {
            debug!("rendered {} in {ms} ms, but it changed meanwhile", task.id);
            Outcome::Changed
        }
        Ok(m) => {
            info!("rendered {} in {ms} ms ({} layers)", task.id, m.layers);
            Outcome::Rendered
        }
        Err(e) => {
            debug!("rendered {} in {ms} ms: failed", task.id);
            failure(task, out, Some(before), &e)
        }
    }
}

fn error_page(task: &Task, out: &Path, facts: Option<Facts>, message: &str) -> Outcome {
    let now = facts_now(&task.path);
    if now.is_none() {
        return Outcome::Vanished;
    }
    if now != facts {
        return Outcome::Changed;
    }
    match gallery::write_error_gallery(&task.path, out, message) {
        Ok(m) => {
            let written = Some(m.source_facts());
            if written != facts {
                // The file changed just now: the page describes another version.
                return Outcome::Changed;
            }
            error!("{message}");
            Outcome::ErrorPage
        }
        Err(e) => {
            let outcome = failure(task, out, now, &e);
            if let Outcome::Failed { message, .. } = &outcome {
                error!("cannot write the error page of {}: {message}", task.id);
            }
            outcome
        }
    }
}

fn prune(task: &Task, out: &Path) -> Outcome {
    if facts_now(&task.path).is_some() {
        // Back again: let the planner look at it.
        return Outcome::Changed;
    }
    let dir = gallery::gallery_dir(out, &task.path);
    // Only a gallery of ours (a manifest) made from this very path, now gone.
    match gallery::read_manifest(&dir) {
        Some(m) if m.source == task.path && !m.source.exists() => {}
        _ => return Outcome::Pruned,
    }
    // Moved into a trash folder of ours first: a kill mid-way leaves only what
    // the next start can prove is ours.
    let res = Temp::dir(out, Kind::Trash).and_then(|trash| {
        std::fs::rename(&dir, trash.path().join("old")).map_err(|e| Error::io(&dir, e))
    });
    match res {
        Ok(()) => {
            info!("pruned {} (its run file is gone)", task.id);
            Outcome::Pruned
        }
        Err(e) => {
            let outcome = failure(task, out, None, &e);
            warn!("cannot prune {}: {}", task.id, one_line(&e));
            outcome
        }
    }
}

//! The imperative half of the daemon's loop: looks at files, feeds the planner,
//! carries out its actions, counts what happened, and shuts down.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tracing::{debug, info, warn};

use super::index::Indexer;
use super::worker::{self, Done, Pool};
use super::{
    absolute, source, Action, Job, Observation, Outcome, Planner, Policy, SourceEvent, Summary,
};
use crate::gallery;

/// What the daemon sees of one run file and its gallery now.
pub fn observe(out: &Path, path: &Path) -> Observation {
    // One look at the file and one at its manifest.
    let source = worker::facts_now(path);
    let manifest = gallery::read_manifest(&gallery::gallery_dir(out, path));
    let up_to_date = matches!((&manifest, source), (Some(m), Some(f)) if m.is_current(path, f));
    // A gallery counts as this run's (for pruning) when its source is gone.
    let has_gallery = source.is_none() && manifest.is_some_and(|m| !m.source.exists());
    Observation {
        id: gallery::gallery_name(path),
        path: path.to_path_buf(),
        source,
        up_to_date,
        has_gallery,
    }
}

/// The imperative half of the loop: feeds the planner, carries out its actions.
pub(super) struct Shell {
    pub(super) planner: Planner,
    pub(super) index: Indexer,
    pub(super) runs: PathBuf,
    pub(super) out: PathBuf,
    pub(super) pool: Pool,
    pub(super) prune: bool,
    pub(super) summary: Summary,
    /// Paths named like runs that are not regular files (logged once each).
    pub(super) skipped: HashSet<PathBuf>,
    /// Runs waiting after an I/O failure, with the last message logged.
    pub(super) retrying: HashMap<String, String>,
}

impl Shell {
    pub(super) fn new(runs: PathBuf, out: PathBuf, pool: Pool, policy: &Policy) -> Shell {
        Shell {
            planner: Planner::new(policy.clone()),
            index: Indexer::start(out.clone()),
            runs,
            out,
            pool,
            prune: policy.prune,
            summary: Summary::default(),
            skipped: HashSet::new(),
            retrying: HashMap::new(),
        }
    }

    /// Stops the pool, waits up to `grace` for running renders, writes the index a
    /// last time and says what was done.
    pub(super) fn shut_down(mut self, done_rx: &Receiver<Done>, grace: Duration) -> Summary {
        self.pool.stop();
        let deadline = Instant::now() + grace;
        while self.pool.active() > 0 && Instant::now() < deadline {
            if let Ok(d) = done_rx.recv_timeout(Duration::from_millis(10)) {
                self.on_done(d);
            }
        }
        while let Ok(d) = done_rx.try_recv() {
            self.on_done(d);
        }
        let Shell {
            pool,
            index,
            mut summary,
            ..
        } = self;
        summary.abandoned = pool.active();
        if summary.abandoned > 0 {
            warn!(
                "abandoned {} render(s) in progress; their staging folders are removed on the next start",
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
        summary
    }

    pub(super) fn apply(&mut self, actions: Vec<Action>) {
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
                        crate::staging::file_kind(&md)
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

    pub(super) fn look(&mut self, path: &Path) -> (bool, bool) {
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

    pub(super) fn on_event(&mut self, e: SourceEvent) {
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

    pub(super) fn on_done(&mut self, d: Done) {
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
            Outcome::Retry { message, .. } => {
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
    pub(super) fn scan(&mut self, catch_up: bool) {
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
    let Ok(found) = gallery::list_galleries(out) else {
        return vec![];
    };
    let runs_c = std::fs::canonicalize(runs).unwrap_or_else(|_| runs.to_path_buf());
    found
        .into_iter()
        .map(|(_, m)| absolute(&m.source))
        .filter(|src| !src.exists())
        .filter(|src| {
            src.parent()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p == runs_c)
        })
        .collect()
}

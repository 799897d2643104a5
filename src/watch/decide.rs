//! The decision, without a file system: given what was observed about run files and
//! their galleries, and what the workers reported, which runs need work now.
//!
//! [`Planner`] is a small state machine keyed by gallery name. A run is *busy* (one
//! task queued or running: never a second one at once) or *waiting* (an attempt
//! failed; retry when its timer is due), or absent (nothing to do). Everything it
//! needs comes in as plain data ([`Observation`], [`Outcome`], the current
//! [`Instant`]), so the tests below drive it directly.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What tells one version of a run file from the next (size, mtime, inode, ctime).
pub use crate::gallery::SourceFacts as Facts;

/// What the shell saw when it looked at one run file and its gallery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Gallery name (the key: one task per gallery at a time).
    pub id: String,
    /// The run file.
    pub path: PathBuf,
    /// The run file's facts; `None` when there is no run file at `path`.
    pub source: Option<Facts>,
    /// The gallery's manifest matches `source` and the current renderer.
    pub up_to_date: bool,
    /// A gallery made from `path` exists.
    pub has_gallery: bool,
}

/// Work for the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Render the run file into its gallery.
    Render,
    /// Give up: write an error page for the run, if it still has `facts`.
    ErrorPage {
        /// The facts the failed attempts saw.
        facts: Option<Facts>,
        /// The last failure.
        message: String,
    },
    /// Remove the gallery of a run file that is gone.
    Prune,
}

/// One task for the worker pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Gallery name.
    pub id: String,
    /// The run file.
    pub path: PathBuf,
    /// What to do.
    pub job: Job,
}

/// What the planner asks the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue a task.
    Start(Task),
    /// Look at the run file again and feed back an [`Observation`].
    Recheck {
        /// Gallery name.
        id: String,
        /// The run file.
        path: PathBuf,
    },
}

/// How a task ended, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gallery was written.
    Rendered,
    /// The error page was written.
    ErrorPage,
    /// The gallery was removed.
    Pruned,
    /// The run file was not there (any more).
    Vanished,
    /// The run file changed while the task ran; its result may be stale.
    Changed,
    /// The run could not be rendered (or its error page/prune could not be written);
    /// `facts` are the run file's facts the attempt saw.
    Failed {
        /// The run file's facts the attempt saw.
        facts: Option<Facts>,
        /// What went wrong, in one line.
        message: String,
    },
    /// An I/O failure on the machine's side (no space, a disk error, no permission):
    /// not a verdict on the run. Tried again with a growing wait, never turned into
    /// an error page; the gallery already there stays.
    Retry {
        /// The run file's facts the attempt saw.
        facts: Option<Facts>,
        /// What went wrong, in one line naming the run.
        message: String,
    },
}

/// How the planner retries and what it does with deleted runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Waits before each retry of a run that failed. After `retry_delays.len() + 1`
    /// failures on an unchanged file the run gets an error page; a file that changes
    /// between attempts (still arriving) starts the count again. The first delay is
    /// also the quiet time after a file changed under a task.
    pub retry_delays: Vec<Duration>,
    /// Remove the galleries of deleted run files.
    pub prune: bool,
    /// Waits after I/O failures ([`Outcome::Retry`]): the first one, doubled after
    /// each failure in a row up to the second one.
    pub io_retry: (Duration, Duration),
}

impl Default for Policy {
    /// Retries after 250 ms, 500 ms and 1 s (error page ~1.75 s after the last
    /// change); I/O failures retried after 1 s, 2 s, 4 s, ... up to 60 s; no pruning.
    fn default() -> Self {
        Policy {
            retry_delays: vec![
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(1000),
            ],
            prune: false,
            io_retry: (Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

impl Policy {
    /// The wait after the `failures`-th failure in a row (1-based).
    fn delay(&self, failures: usize) -> Duration {
        let d = &self.retry_delays;
        d.get(failures.saturating_sub(1))
            .or(d.last())
            .copied()
            .unwrap_or_default()
    }

    /// The wait after the `n`-th I/O failure in a row (1-based).
    fn io_delay(&self, n: usize) -> Duration {
        let (first, max) = self.io_retry;
        let doublings = n.saturating_sub(1).min(20) as u32;
        first.saturating_mul(1 << doublings).min(max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Render,
    ErrorPage,
    Prune,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// One task queued or running; `dirty`: something was seen meanwhile.
    Busy { kind: Kind, dirty: bool },
    /// The last attempt failed; try again at `due`.
    Waiting { due: Instant },
}

#[derive(Debug, Clone)]
struct Entry {
    path: PathBuf,
    state: State,
    /// Failed attempts in a row on `failed_facts`.
    failures: usize,
    /// I/O failures in a row ([`Outcome::Retry`]).
    io_failures: usize,
    failed_facts: Option<Facts>,
    message: String,
}

/// The watch daemon's decisions; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    policy: Policy,
    runs: HashMap<String, Entry>,
}

impl Planner {
    /// A planner with nothing pending.
    pub fn new(policy: Policy) -> Self {
        Planner {
            policy,
            runs: HashMap::new(),
        }
    }

    /// Nothing queued, running or waiting.
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty()
    }

    /// Runs with a task queued or running.
    pub fn busy(&self) -> usize {
        self.runs
            .values()
            .filter(|e| matches!(e.state, State::Busy { .. }))
            .count()
    }

    /// When the next waiting run is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.runs
            .values()
            .filter_map(|e| match e.state {
                State::Waiting { due } => Some(due),
                State::Busy { .. } => None,
            })
            .min()
    }

    fn start(&mut self, id: &str, path: PathBuf, kind: Kind, job: Job) -> Action {
        let e = self.runs.entry(id.to_string()).or_insert_with(|| Entry {
            path: path.clone(),
            state: State::Busy { kind, dirty: false },
            failures: 0,
            io_failures: 0,
            failed_facts: None,
            message: String::new(),
        });
        e.path = path.clone();
        e.state = State::Busy { kind, dirty: false };
        Action::Start(Task {
            id: id.to_string(),
            path,
            job,
        })
    }

    /// Something was seen about one run (an event, a scan, a recheck).
    pub fn observe(&mut self, o: Observation, now: Instant) -> Vec<Action> {
        if let Some(e) = self.runs.get_mut(&o.id) {
            match &mut e.state {
                State::Busy { dirty, .. } => {
                    // Never a second task at once: look again when this one ends.
                    *dirty = true;
                    return vec![];
                }
                State::Waiting { due } => {
                    if o.source.is_some() {
                        if o.source != e.failed_facts {
                            // Still arriving: start counting again after a quiet time.
                            e.failures = 0;
                            *due = now + self.policy.delay(1);
                        }
                        return vec![];
                    }
                    // Gone while waiting: forget it, then treat it as any deleted run.
                    self.runs.remove(&o.id);
                }
            }
        }
        match o.source {
            Some(_) if !o.up_to_date => vec![self.start(&o.id, o.path, Kind::Render, Job::Render)],
            None if o.has_gallery && self.policy.prune => {
                vec![self.start(&o.id, o.path, Kind::Prune, Job::Prune)]
            }
            _ => vec![],
        }
    }

    /// A task ended.
    pub fn done(&mut self, id: &str, outcome: Outcome, now: Instant) -> Vec<Action> {
        let Some(e) = self.runs.get_mut(id) else {
            return vec![];
        };
        let State::Busy { kind, dirty } = e.state else {
            return vec![];
        };
        let path = e.path.clone();
        let recheck = Action::Recheck {
            id: id.to_string(),
            path: path.clone(),
        };
        match outcome {
            Outcome::Retry { facts, message } => {
                e.io_failures += 1;
                e.message = message;
                // An observation of this same version must not cut the wait short.
                e.failed_facts = facts;
                e.state = State::Waiting {
                    due: now + self.policy.io_delay(e.io_failures),
                };
                vec![]
            }
            Outcome::Rendered | Outcome::ErrorPage | Outcome::Pruned => {
                self.runs.remove(id);
                if dirty {
                    vec![recheck]
                } else {
                    vec![]
                }
            }
            // Gone: look once more (a deleted run may need pruning).
            Outcome::Vanished => {
                self.runs.remove(id);
                vec![recheck]
            }
            Outcome::Changed => {
                e.failures = 0;
                e.state = State::Waiting {
                    due: now + self.policy.delay(1),
                };
                vec![]
            }
            Outcome::Failed { facts, message } => {
                if kind != Kind::Render {
                    // The error page or prune itself failed (the shell logged why):
                    // give up until the run file changes again.
                    self.runs.remove(id);
                    return if dirty { vec![recheck] } else { vec![] };
                }
                if e.failures > 0 && facts == e.failed_facts {
                    e.failures += 1;
                } else {
                    e.failures = 1;
                    e.failed_facts = facts;
                }
                e.message = message;
                if e.failures > self.policy.retry_delays.len() && !dirty {
                    let job = Job::ErrorPage {
                        facts: e.failed_facts,
                        message: e.message.clone(),
                    };
                    vec![self.start(id, path, Kind::ErrorPage, job)]
                } else {
                    let due = now + self.policy.delay(e.failures);
                    e.state = State::Waiting { due };
                    vec![]
                }
            }
        }
    }

    /// Time passed: start the waiting runs that are due, oldest due first.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut due: Vec<(Instant, String, PathBuf)> = self
            .runs
            .iter()
            .filter_map(|(id, e)| match e.state {
                State::Waiting { due } if due <= now => Some((due, id.clone(), e.path.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter()
            .map(|(_, id, path)| self.start(&id, path, Kind::Render, Job::Render))
            .collect()
    }

    /// How many failed attempts in a row the run has had (0 if none or not tracked).
    pub fn failures(&self, id: &str) -> usize {
        self.runs.get(id).map_or(0, |e| e.failures)
    }
}

#[cfg(test)]
mod tests;

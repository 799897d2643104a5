//! Saving runs off the forward thread: [`RunWriter`].
//!
//! [`RunWriter::save`] decides the run file's name on the calling thread and hands
//! the run to a writer thread through a bounded queue; the writer thread saves it
//! exactly as [`Run::save`] does (same bytes, same name, locked dot temp file,
//! synced, renamed, folder synced). A run holds its tensors by reference-counted
//! handles, so handing it over copies nothing.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use candlelight::{tap, Recorder, RunWriter};
//!
//! let dir = tempfile::tempdir()?;
//! let writer = RunWriter::new(dir.path(), 4)?; // at most 4 runs waiting
//! let x = Tensor::arange(0f32, 6., &Device::Cpu)?;
//! for step in 0..3 {
//!     let recorder = Recorder::new("doc").tag("step", step.to_string());
//!     let (_y, run) = recorder.record(|| tap("relu", &x.relu()?))?;
//!     let path = writer.save(run)?; // returns at once; the file appears under `path`
//!     assert_eq!(path.parent(), Some(writer.dir()));
//! }
//! writer.finish()?; // everything on disk, or the first error
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::runfile::Run;
use crate::{one_line, Error, Result};

/// Handing a run to another thread must stay possible.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Run>();
};

/// Saves runs on background threads, in the order given, each as [`Run::save`]
/// would. Defaults (with [`RunWriter::new`]): one writer thread.
///
/// - **Back-pressure**: at most `capacity` runs wait in the queue (plus one being
///   written per thread); [`RunWriter::save`] blocks while the queue is full, so
///   memory stays bounded when the disk is slower than the model.
/// - **Errors** of the writer thread come back, each once and oldest first, from
///   the next [`RunWriter::save`], [`RunWriter::check`], [`RunWriter::flush`] or
///   [`RunWriter::finish`], as [`Error::NotSaved`] naming the run file.
/// - **Drop** waits for every queued run to be written; an error then is logged
///   (with `tracing` when a global subscriber is set, else on stderr) as one line,
///   since drop cannot return it. Call [`RunWriter::finish`] to get it instead.
///
/// **Memory, in a loop:** each run is freed on the writer thread once written, and
/// with glibc's default settings that memory goes back to the kernel whenever the
/// writer has caught up, so the next passes fault their recorded outputs in again.
/// Call [`crate::tune_malloc_for_recording`] once before the loop (the seed CNN at
/// batch 64 on 2 cores: 1.22–1.33× the plain loop with the defaults, 1.08–1.20×
/// tuned while the disk keeps up; benches/README.md, "Background writer").
///
/// Known problem: a process that ends without dropping the writer
/// (`std::process::exit`, a writer in a `static`, a leaked one, a kill) loses the
/// runs still queued; a run being written then leaves only its dot temp file,
/// never a partial file under the final name (`candlelight watch` removes such
/// temps). Call [`RunWriter::finish`] before exiting.
pub struct RunWriter {
    dir: PathBuf,
    tx: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

/// A run to write to `target`.
struct Job {
    run: Run,
    target: PathBuf,
}

/// What the calling thread and the writer threads share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a run is written (or failed).
    done: Condvar,
    /// Test hook: writer threads wait while it is closed.
    #[cfg(test)]
    gate: Gate,
}

#[derive(Default)]
struct State {
    /// Final paths of the runs queued or being written.
    pending: HashSet<PathBuf>,
    /// Failures not reported yet, oldest first.
    errors: VecDeque<Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` inconsistent (each
        // update is one insert or remove), so a poisoned lock is used as it is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RunWriter {
    /// A writer saving into `dir` (created if needed; made absolute) with one
    /// writer thread and at most `capacity` runs waiting (0: `save` waits until the
    /// writer thread takes the run).
    pub fn new(dir: impl AsRef<Path>, capacity: usize) -> Result<RunWriter> {
        RunWriter::with_threads(dir, capacity, 1)
    }

    /// Like [`RunWriter::new`] with `threads` writer threads (at least 1). Saving is
    /// bound by the disk, so more than one rarely helps; files may then complete
    /// out of order.
    pub fn with_threads(
        dir: impl AsRef<Path>,
        capacity: usize,
        threads: usize,
    ) -> Result<RunWriter> {
        if threads == 0 {
            return Err(Error::option("a run writer needs at least 1 thread"));
        }
        let dir = crate::staging::absolute(dir.as_ref());
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let (tx, rx) = sync_channel(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            done: Condvar::new(),
            #[cfg(test)]
            gate: Gate::default(),
        });
        let threads = (0..threads)
            .map(|i| {
                let (rx, shared, to) = (rx.clone(), shared.clone(), dir.clone());
                std::thread::Builder::new()
                    .name(format!("candlelight-writer-{i}"))
                    .spawn(move || work(&rx, &shared, &to))
                    .map_err(|e| Error::io(&dir, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RunWriter {
            dir,
            tx: Some(tx),
            threads,
            shared,
        })
    }

    /// The runs folder (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path `run` gets when saved here: `<dir>/<run-id>.safetensors`.
    pub fn path_of(&self, run: &Run) -> PathBuf {
        self.dir.join(run.file_name())
    }

    /// Queues `run` and returns the path its file will have once written (see
    /// [`RunWriter::flush`]); blocks while the queue is full.
    ///
    /// Errors: a run file or queued run of that name already exists (the run is not
    /// queued); or an earlier save failed (possibly this run's own, when the writer
    /// thread was that quick): that failure ([`Error::NotSaved`], naming its file) is
    /// returned, and `run` is still queued, at [`RunWriter::path_of`].
    pub fn save(&self, run: Run) -> Result<PathBuf> {
        let target = self.path_of(&run);
        {
            let mut st = self.shared.lock();
            if st.pending.contains(&target) || target.exists() {
                return Err(Error::io(
                    &target,
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "run file already exists or is queued",
                    ),
                ));
            }
            st.pending.insert(target.clone());
        }
        let job = Job {
            run,
            target: target.clone(),
        };
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok());
        if !sent {
            // Every writer thread is gone (cannot happen while the writer lives:
            // they catch panics); say so rather than drop the run silently.
            self.shared.lock().pending.remove(&target);
            return Err(Error::internal(format!(
                "{}: the run writer's threads are gone",
                target.display()
            )));
        }
        match self.shared.lock().errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(target),
        }
    }

    /// Runs queued or being written.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Returns the oldest failure not reported yet, without waiting.
    pub fn check(&self) -> Result<()> {
        match self.shared.lock().errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits until every run queued so far is written (synced and renamed), then
    /// returns the oldest failure not reported yet (the others come with later calls).
    pub fn flush(&self) -> Result<()> {
        let mut st = self.shared.lock();
        while !st.pending.is_empty() {
            st = self
                .shared
                .done
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        match st.errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes every queued run, stops the writer threads and returns the oldest
    /// failure not reported yet; later ones are logged, one line each.
    pub fn finish(mut self) -> Result<()> {
        let mut errors = self.stop();
        if errors.is_empty() {
            return Ok(());
        }
        let first = errors.remove(0);
        errors.iter().for_each(log);
        Err(first)
    }

    /// Closes the queue, lets the threads write what it holds, joins them and
    /// returns the failures not reported yet.
    fn stop(&mut self) -> Vec<Error> {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            // Worker panics are caught in `work`; a join error cannot happen.
            let _ = t.join();
        }
        self.shared.lock().errors.drain(..).collect()
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        self.stop().iter().for_each(log);
    }
}

impl std::fmt::Debug for RunWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWriter")
            .field("dir", &self.dir)
            .field("threads", &self.threads.len())
            .field("pending", &self.pending())
            .finish()
    }
}

/// A failure nobody can be given any more, as one line: through `tracing` when a
/// global subscriber is set, on stderr otherwise (so it is never invisible).
fn log(e: &Error) {
    let line = one_line(e);
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{line}");
    } else {
        eprintln!("candlelight: {line}");
    }
}

/// A writer thread: takes runs until the queue is closed and empty.
fn work(rx: &Mutex<Receiver<Job>>, shared: &Shared, dir: &Path) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            rx.recv()
        };
        let Ok(Job { run, target }) = job else {
            return;
        };
        #[cfg(test)]
        shared.gate.wait();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.save(dir)));
        let res = match res {
            Ok(Ok(path)) if path == target => Ok(()),
            Ok(Ok(path)) => Err(Error::internal(format!(
                "saved as {} instead of {}",
                path.display(),
                target.display()
            ))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::internal("the run writer panicked")),
        };
        // Free the run's tensors before the writer counts as done.
        drop(run);
        let mut st = shared.lock();
        if let Err(e) = res {
            st.errors.push_back(Error::NotSaved {
                path: target.clone(),
                source: Box::new(e),
            });
        }
        st.pending.remove(&target);
        drop(st);
        shared.done.notify_all();
    }
}

/// Test hook: a gate the writer threads wait at before each run.
#[cfg(test)]
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
}

#[cfg(test)]
impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }

    fn wait(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;

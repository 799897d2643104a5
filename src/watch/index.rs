//! Rewrites the index pages (and trends pages) of `out` on its own thread, coalescing bursts.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tracing::{debug, warn};

use crate::gallery;

/// Rewrites `out/index.html` on its own thread after galleries change. Pings that
/// arrive while it writes, or within [`INDEX_GAP`] of the last write, are folded into
/// one write (a burst of runs does not rewrite the index once per run).
pub(super) struct Indexer {
    tx: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Minimum time between two rewrites of `out/index.html` during a burst; the gap
/// also grows to 10× the last rewrite's cost, so that with thousands of galleries
/// the index takes at most ~10 % of the time during a burst.
pub const INDEX_GAP: Duration = Duration::from_millis(250);

impl Indexer {
    pub(super) fn start(out: PathBuf) -> Indexer {
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

    pub(super) fn ping(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Finishes the pending write and stops the thread.
    pub(super) fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! `candlelight watch` with a URL on either side: runs in an object-store prefix
//! (or a folder) rendered into galleries in an object-store prefix (or a folder)
//! by any number of daemons on any machines, each run version once
//! (docs/LEASES.md; the leases and done markers are in `lease`).
//!
//! One round: list the runs (names, sizes, ETags), read the shared state (one
//! listing), and go through the run versions not done in a random order, `jobs`
//! at a time: take the lease (skip it when another daemon holds a live one),
//! render (fetched whole into a local work folder, rendered there, uploaded file
//! by file with the run page and manifest last), mark done, release. Then rewrite
//! the index when the set of done runs changed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::lease::{self, Claim};
use crate::gallery::{self, GalleryOptions};
use crate::remote::Remote;
use crate::{Error, Result};

mod index;
pub use index::write_shared_index;
use index::{refresh_index, Indexed, INDEX_KEY};

/// Options of the shared daemon.
#[derive(Debug, Clone)]
pub struct SharedOptions {
    /// Time between two rounds.
    pub poll: Duration,
    /// How long a lease lasts; a daemon that dies mid-render holds its runs this long.
    pub lease: Duration,
    /// Runs rendered at once.
    pub jobs: usize,
    /// One round, then exit.
    pub once: bool,
    /// How galleries are drawn.
    pub gallery: GalleryOptions,
}

/// What one daemon did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SharedReport {
    /// Requests sent to the stores (all kinds, this process).
    pub requests: u64,
    /// Run versions this daemon rendered and marked done.
    pub rendered: usize,
    /// Of those, runs that are not valid runs (an error gallery was written).
    pub failed: usize,
    /// Renders another daemon marked done first (work done twice, counted once).
    pub lost_races: usize,
    /// Store errors (retried in a later round).
    pub store_errors: usize,
}

/// Renders per render thread in one round, at most.
const ROUND_RENDERS_PER_JOB: usize = 8;

/// Gallery files uploaded at once per render.
const UPLOADS_IN_FLIGHT: usize = 8;

/// One run version to render.
struct Job {
    url: String,
    gallery: String,
    key: String,
    generation: u32,
}

/// Runs the shared daemon over `runs` into `out` until `stop` is set (or one
/// round with `once`).
pub fn watch_shared(
    runs: &Remote,
    out: &Remote,
    opts: &SharedOptions,
    stop: &AtomicBool,
) -> Result<SharedReport> {
    let work = tempfile::Builder::new()
        .prefix(".candlelight-shared-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mirror = work.path().join("index");
    std::fs::create_dir_all(&mirror).map_err(|e| Error::io(&mirror, e))?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let claim = Claim {
        owner: owner_id(),
        expires_ms: 0,
        run: String::new(),
    };
    tracing::info!(
        "watching {} -> {} as {} (lease {:?})",
        runs.url(),
        out.url(),
        claim.owner,
        opts.lease
    );
    let mut report = SharedReport::default();
    let mut indexed = Indexed::default();
    loop {
        let t0 = Instant::now();
        let mut backlog = false;
        match round(runs, out, opts, &claim, work.path(), &pool, stop) {
            Ok((r, more)) => {
                backlog = more;
                report.rendered += r.rendered;
                report.failed += r.failed;
                report.lost_races += r.lost_races;
                report.store_errors += r.store_errors;
            }
            Err(e) => {
                report.store_errors += 1;
                tracing::warn!("{} (retrying next round)", crate::one_line(&e));
            }
        }
        if let Err(e) = refresh_index(out, &mirror, &claim, opts.lease, &mut indexed) {
            tracing::warn!("index: {}", crate::one_line(&e));
        }
        report.requests = crate::remote::requests_made();
        if opts.once || stop.load(Ordering::SeqCst) {
            if let Some((generation, _)) = indexed.lease {
                lease::drop_generation(out, INDEX_KEY, generation);
            }
            return Ok(report);
        }
        let rest = if backlog {
            Duration::ZERO
        } else {
            opts.poll.saturating_sub(t0.elapsed())
        };
        let until = Instant::now() + rest;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(rest));
        }
        if stop.load(Ordering::SeqCst) {
            if let Some((generation, _)) = indexed.lease {
                lease::drop_generation(out, INDEX_KEY, generation);
            }
            report.requests = crate::remote::requests_made();
            return Ok(report);
        }
    }
}

/// `host:pid:nonce`, unique per daemon.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}:{}:{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// One round: what to render, rendered.
fn round(
    runs: &Remote,
    out: &Remote,
    opts: &SharedOptions,
    claim: &Claim,
    work: &Path,
    pool: &rayon::ThreadPool,
    stop: &AtomicBool,
) -> Result<(SharedReport, bool)> {
    let listed = runs.list()?;
    let state = lease::read_state(out)?;
    // Leases of versions already done are left by a daemon that died between
    // marking done and releasing: nobody renders those again, so they go.
    for (key, &generation) in &state.leases {
        if state.done.contains(key) {
            lease::release(out, key, generation);
        }
    }
    let mut candidates = Vec::new();
    for o in listed {
        let name = o.name.as_str();
        if name.contains('/') || name.starts_with('.') || !name.ends_with(".safetensors") {
            continue;
        }
        let gallery = gallery::gallery_name(Path::new(name));
        let key = lease::version_key(&gallery, &o.version);
        if state.done.contains(&key) {
            continue;
        }
        let highest = state.leases.get(&key).copied();
        candidates.push((o.url, gallery, key, highest));
    }
    // Each daemon goes through the pending runs in its own order, and takes a
    // lease only when a render thread is free for it: leases are held for one
    // render, not for a whole round's backlog.
    candidates.shuffle(&mut rand::rng());
    // A backlog is taken a slice per round, so the listing, the index and a
    // stop request are never more than a slice of renders old.
    let backlog = candidates.len() > ROUND_RENDERS_PER_JOB * opts.jobs.max(1);
    candidates.truncate(ROUND_RENDERS_PER_JOB * opts.jobs.max(1));
    let results: Vec<Outcome> = pool.install(|| {
        candidates
            .into_par_iter()
            .with_max_len(1)
            .map(|(url, gallery, key, highest)| {
                let job = Job {
                    url,
                    gallery,
                    key,
                    generation: 0,
                };
                attempt(job, highest, out, opts, claim, work, stop)
            })
            .collect()
    });
    let mut r = SharedReport::default();
    for o in results {
        match o {
            Outcome::Rendered { failed } => {
                r.rendered += 1;
                r.failed += usize::from(failed);
            }
            Outcome::LostRace => r.lost_races += 1,
            Outcome::StoreError => r.store_errors += 1,
            Outcome::Skipped => {}
        }
    }
    Ok((r, backlog))
}

/// Takes the lease of one run version and renders it, unless another daemon
/// holds it or has rendered it since the listing.
fn attempt(
    mut job: Job,
    highest: Option<u32>,
    out: &Remote,
    opts: &SharedOptions,
    claim: &Claim,
    work: &Path,
    stop: &AtomicBool,
) -> Outcome {
    let url = job.url.clone();
    if stop.load(Ordering::SeqCst) {
        return Outcome::Skipped;
    }
    let mine = Claim {
        run: url.clone(),
        ..claim.clone()
    };
    job.generation = match lease::take(out, &job.key, highest, &mine, opts.lease) {
        Ok(Some((generation, previous))) => {
            if let Some(p) = previous {
                tracing::info!("{url}: taking over from {p} (its lease expired)");
            }
            generation
        }
        Ok(None) => return Outcome::Skipped,
        Err(e) => {
            tracing::warn!("{url}: {} (retrying next round)", crate::one_line(&e));
            return Outcome::StoreError;
        }
    };
    // Done by another daemon since the listing (it released its lease before
    // this one was created)?
    match lease::is_done(out, &job.key) {
        Ok(false) => render_one(&job, out, opts, claim, work),
        Ok(true) => {
            lease::release(out, &job.key, job.generation);
            Outcome::Skipped
        }
        Err(e) => {
            lease::release(out, &job.key, job.generation);
            tracing::warn!("{url}: {} (retrying next round)", crate::one_line(&e));
            Outcome::StoreError
        }
    }
}

enum Outcome {
    Rendered {
        failed: bool,
    },
    /// Held by another daemon, or done meanwhile.
    Skipped,
    LostRace,
    StoreError,
}

/// Renders one run version into `work/<job>`, uploads it, marks it done.
fn render_one(
    job: &Job,
    out: &Remote,
    opts: &SharedOptions,
    claim: &Claim,
    work: &Path,
) -> Outcome {
    let dir = work.join(format!("job-{}", job.key));
    let res = render_and_upload(job, out, opts, &dir, claim);
    let _ = std::fs::remove_dir_all(&dir);
    lease::release(out, &job.key, job.generation);
    match res {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!("{}: {} (retrying next round)", job.url, crate::one_line(&e));
            Outcome::StoreError
        }
    }
}

fn render_and_upload(
    job: &Job,
    out: &Remote,
    opts: &SharedOptions,
    dir: &Path,
    claim: &Claim,
) -> Result<Outcome> {
    let run_path = PathBuf::from(&job.url);
    // Fetched whole into the job's folder (outside the gallery folder).
    let t0 = Instant::now();
    let fetched = dir.join("fetched");
    std::fs::create_dir_all(&fetched).map_err(|e| Error::io(&fetched, e))?;
    let local = fetched.join(Remote::parse(&job.url)?.file_name());
    Remote::parse(&job.url)?.download(&local)?;
    let fetch_ms = t0.elapsed().as_millis();
    let t1 = Instant::now();
    let galleries = dir.join("out");
    let (manifest, error) =
        match gallery::render_downloaded(&local, &job.url, &galleries, &opts.gallery) {
            Ok(m) => (m, None),
            // The machine's trouble: try again later.
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => {
                let msg = crate::one_line(&e);
                (
                    gallery::write_error_gallery(&run_path, &galleries, &msg)?,
                    Some(msg),
                )
            }
        };
    let render_ms = t1.elapsed().as_millis();
    let t2 = Instant::now();
    let target = out.join(&job.gallery);
    let files = upload_dir(&galleries.join(&job.gallery), &target)?;
    let upload_ms = t2.elapsed().as_millis();
    let done = Claim {
        run: job.url.clone(),
        ..claim.clone()
    };
    if !lease::mark_done(out, &job.key, &done)? {
        tracing::info!("{}: already rendered by another daemon", job.url);
        return Ok(Outcome::LostRace);
    }
    let ms = t0.elapsed().as_millis();
    match &error {
        None => tracing::info!(
            "rendered {} -> {}/index.html ({} layers, {ms} ms: fetch {fetch_ms}, render {render_ms}, upload {upload_ms} ({files} files))",
            job.url,
            target.url(),
            manifest.layers,
        ),
        Some(msg) => tracing::error!(
            "rendered {} -> {}/index.html (error page: {msg})",
            job.url,
            target.url()
        ),
    }
    Ok(Outcome::Rendered {
        failed: error.is_some(),
    })
}

/// Publishes a gallery rendered by `candlelight render` into the shared
/// galleries under `out`: its files uploaded (page and manifest last), and the
/// run version marked done, as a daemon would (`version`: the run object's
/// version tag, or any string that changes with a local run file).
pub fn publish_gallery(
    local: &Path,
    out: &Remote,
    gallery: &str,
    version: &str,
    run: &str,
) -> Result<usize> {
    let files = upload_dir(local, &out.join(gallery))?;
    let done = Claim {
        owner: owner_id(),
        expires_ms: 0,
        run: run.to_string(),
    };
    lease::mark_done(out, &lease::version_key(gallery, version), &done)?;
    Ok(files)
}

/// Uploads the files of `local` (recursively) under `to`: the run page and the
/// manifest last, so a page never links to a picture not there yet.
fn upload_dir(local: &Path, to: &Remote) -> Result<usize> {
    let mut files = Vec::new();
    collect_files(local, "", &mut files)?;
    let last = |n: &str| match n {
        "manifest.json" => 2,
        "index.html" => 1,
        _ => 0,
    };
    files.sort_by_key(|n| (last(n), n.clone()));
    let count = files.len();
    let read = |name: String| -> Result<(String, Vec<u8>)> {
        let path = local.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Ok((name, bytes))
    };
    // The pictures and data 8 at a time, then the page, then the manifest.
    let (rest, pictures): (Vec<String>, Vec<String>) = files.into_iter().partition(|n| last(n) > 0);
    to.put_many(
        pictures.into_iter().map(read).collect::<Result<_>>()?,
        UPLOADS_IN_FLIGHT,
    )?;
    for name in rest {
        let (name, bytes) = read(name)?;
        to.join(&name).put(bytes)?;
    }
    Ok(count)
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{prefix}{name}");
        let ft = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        if ft.is_dir() {
            collect_files(&e.path(), &format!("{rel}/"), out)?;
        } else if ft.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

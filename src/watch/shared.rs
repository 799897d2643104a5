//! `candlelight watch` with a URL on either side: runs in an object-store prefix
//! (or a folder) rendered into galleries in an object-store prefix (or a folder)
//! by any number of daemons on any machines, each run version once
//! (docs/LEASES.md; the leases and done markers are in `lease`).
//!
//! One round: list the runs (names, sizes, ETags), read the shared state (one
//! listing), take the lease of each run version not done and not held by a live
//! lease, render those (fetched whole into a local work folder, rendered there,
//! uploaded file by file with the run page and manifest last), mark them done,
//! release the leases, and rewrite the index when the set of done runs changed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::lease::{self, Claim};
use crate::gallery::{self, GalleryOptions};
use crate::remote::Remote;
use crate::{Error, Result};

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
    /// Run versions this daemon rendered and marked done.
    pub rendered: usize,
    /// Of those, runs that are not valid runs (an error gallery was written).
    pub failed: usize,
    /// Renders another daemon marked done first (work done twice, counted once).
    pub lost_races: usize,
    /// Store errors (retried in a later round).
    pub store_errors: usize,
}

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
    let mut indexed: Option<HashSet<String>> = None;
    loop {
        let t0 = Instant::now();
        match round(runs, out, opts, &claim, work.path(), &pool) {
            Ok(r) => {
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
        if let Err(e) = refresh_index(out, &mirror, &mut indexed) {
            tracing::warn!("index: {}", crate::one_line(&e));
        }
        if opts.once || stop.load(Ordering::SeqCst) {
            return Ok(report);
        }
        let rest = opts.poll.saturating_sub(t0.elapsed());
        let until = Instant::now() + rest;
        while Instant::now() < until && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(rest));
        }
        if stop.load(Ordering::SeqCst) {
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
) -> Result<SharedReport> {
    let listed = runs.list()?;
    let state = lease::read_state(out)?;
    let mut jobs = Vec::new();
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
        let mine = Claim {
            run: o.url.clone(),
            ..claim.clone()
        };
        let highest = state.leases.get(&key).copied();
        if let Some((generation, previous)) = lease::take(out, &key, highest, &mine, opts.lease)? {
            if let Some(p) = previous {
                tracing::info!("{}: taking over from {p} (its lease expired)", o.url);
            }
            jobs.push(Job {
                url: o.url,
                gallery,
                key,
                generation,
            });
        }
    }
    let results: Vec<Outcome> = pool.install(|| {
        jobs.par_iter()
            .map(|j| render_one(j, out, opts, claim, work))
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
        }
    }
    Ok(r)
}

enum Outcome {
    Rendered { failed: bool },
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
    let t0 = Instant::now();
    let (manifest, error) = match gallery::render_gallery(&run_path, dir, &opts.gallery) {
        Ok(m) => (m, None),
        // The machine's or the store's trouble: try again later.
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e) => {
            let msg = crate::one_line(&e);
            (
                gallery::write_error_gallery(&run_path, dir, &msg)?,
                Some(msg),
            )
        }
    };
    let target = out.join(&job.gallery);
    upload_dir(&dir.join(&manifest.run_id), &target)?;
    let done = Claim {
        run: job.url.clone(),
        ..claim.clone()
    };
    if !lease::mark_done(out, &job.key, &done)? {
        tracing::info!("{}: already rendered by another daemon", job.url);
        return Ok(Outcome::LostRace);
    }
    match &error {
        None => tracing::info!(
            "rendered {} -> {}/index.html ({} layers, {} ms)",
            job.url,
            target.url(),
            manifest.layers,
            t0.elapsed().as_millis()
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

/// Uploads the files of `local` (recursively) under `to`: the run page and the
/// manifest last, so a page never links to a picture not there yet.
fn upload_dir(local: &Path, to: &Remote) -> Result<()> {
    let mut files = Vec::new();
    collect_files(local, "", &mut files)?;
    let last = |n: &str| match n {
        "manifest.json" => 2,
        "index.html" => 1,
        _ => 0,
    };
    files.sort_by_key(|n| (last(n), n.clone()));
    for name in files {
        let path = local.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        to.join(&name).put(bytes)?;
    }
    Ok(())
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

/// Rewrites the index under `out` when the set of done runs changed since this
/// daemon last wrote it: manifests and stats of new galleries are fetched into a
/// local mirror, the index written there and its files uploaded.
fn refresh_index(out: &Remote, mirror: &Path, indexed: &mut Option<HashSet<String>>) -> Result<()> {
    let state = lease::read_state(out)?;
    let galleries: HashSet<String> = state
        .done
        .iter()
        .map(|k| lease::gallery_of(k).to_string())
        .collect();
    if indexed.as_ref() == Some(&galleries) {
        return Ok(());
    }
    for g in &galleries {
        let dir = mirror.join(g);
        let stale = indexed.as_ref().is_none_or(|s| !s.contains(g)) || !dir.exists();
        if !stale {
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for f in ["manifest.json", "stats.json"] {
            if let Some(bytes) = out.join(&format!("{g}/{f}")).get()? {
                std::fs::write(dir.join(f), bytes).map_err(|e| Error::io(dir.join(f), e))?;
            }
        }
    }
    gallery::write_index(mirror)?;
    let mut files = Vec::new();
    collect_files(mirror, "", &mut files)?;
    for name in files {
        let top = name.split('/').next().unwrap_or_default();
        if galleries.contains(top) {
            continue;
        }
        let path = mirror.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        out.join(&name).put(bytes)?;
    }
    tracing::info!(
        "index: {} runs -> {}/index.html",
        galleries.len(),
        out.url()
    );
    *indexed = Some(galleries);
    Ok(())
}

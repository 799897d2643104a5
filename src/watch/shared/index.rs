//! The index of shared galleries: written by one daemon at a time, the holder
//! of the index lease, from a local mirror of the galleries' manifests and stats.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::{collect_files, lease, owner_id, Claim, UPLOADS_IN_FLIGHT};
use crate::gallery;
use crate::remote::Remote;
use crate::{Error, Result};

/// Rewrites the index of the shared galleries under `out` once (taking the
/// index lease for that): `false` when a running daemon holds it (it rewrites the
/// index itself within a round).
pub fn write_shared_index(out: &Remote) -> Result<bool> {
    let work = tempfile::Builder::new()
        .prefix(".candlelight-index-")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let claim = Claim {
        owner: owner_id(),
        expires_ms: 0,
        run: String::new(),
    };
    let mut indexed = Indexed::default();
    let res = refresh_index(
        out,
        work.path(),
        &claim,
        Duration::from_secs(60),
        &mut indexed,
    );
    if let Some((generation, _)) = indexed.lease {
        lease::drop_generation(out, INDEX_KEY, generation);
    }
    res.map(|()| indexed.lease.is_some())
}

/// What this daemon last wrote into the index: the done versions it listed and
/// a hash of each index file it uploaded.
#[derive(Default)]
pub(super) struct Indexed {
    done: Option<HashSet<String>>,
    /// Done versions whose manifest and stats are in the mirror.
    fetched: HashSet<String>,
    uploaded: HashMap<String, u64>,
    /// The index lease this daemon holds: generation and expiry (ms).
    pub(super) lease: Option<(u32, u64)>,
}

/// The lease key of the index (no run version key has no `@`).
pub(super) const INDEX_KEY: &str = "~index";

/// Whether this daemon writes the index this round: one daemon at a time holds
/// the index lease (renewed when half of it has passed; taken over when its
/// holder's expires), so concurrent writers never leave an older index last.
fn index_turn(
    out: &Remote,
    claim: &Claim,
    ttl: Duration,
    highest: Option<u32>,
    indexed: &mut Indexed,
) -> Result<bool> {
    let now = lease::now_ms();
    let ttl_ms = ttl.as_millis() as u64;
    match indexed.lease {
        Some((_, expires)) if expires > now + ttl_ms / 2 => Ok(true),
        Some((generation, _)) => match lease::renew(out, INDEX_KEY, generation, claim, ttl)? {
            Some(next) => {
                indexed.lease = Some((next, now + ttl_ms));
                Ok(true)
            }
            None => {
                tracing::info!("index: another daemon writes it now");
                indexed.lease = None;
                Ok(false)
            }
        },
        None => match lease::take(out, INDEX_KEY, highest, claim, ttl)? {
            Some((generation, previous)) => {
                if let Some(p) = previous {
                    tracing::info!("index: taking over from {p} (its lease expired)");
                }
                if let Some(h) = highest {
                    lease::drop_generation(out, INDEX_KEY, h);
                }
                indexed.lease = Some((generation, now + ttl_ms));
                // Written whole by the new writer.
                indexed.done = None;
                indexed.uploaded.clear();
                Ok(true)
            }
            None => Ok(false),
        },
    }
}

/// Rewrites the index under `out` when the set of done runs changed since this
/// daemon last wrote it: manifests and stats of new galleries are fetched into a
/// local mirror (16 requests at a time), the index written there and the files
/// that changed uploaded (`index.html` last).
pub(super) fn refresh_index(
    out: &Remote,
    mirror: &Path,
    claim: &Claim,
    ttl: Duration,
    indexed: &mut Indexed,
) -> Result<()> {
    let state = lease::read_state(out)?;
    let highest = state.leases.get(INDEX_KEY).copied();
    if !index_turn(out, claim, ttl, highest, indexed)? || indexed.done.as_ref() == Some(&state.done)
    {
        return Ok(());
    }
    // A gallery is fetched again when one of its done versions is new to this
    // daemon: a run rewritten under the same name has a new manifest.
    let mut galleries: HashSet<&str> = HashSet::new();
    let mut stale: BTreeSet<&str> = BTreeSet::new();
    for key in &state.done {
        let g = lease::gallery_of(key);
        galleries.insert(g);
        if !indexed.fetched.contains(key) {
            stale.insert(g);
        }
    }
    for g in &galleries {
        if !mirror.join(g).exists() {
            stale.insert(g);
        }
    }
    let names: Vec<String> = stale
        .iter()
        .flat_map(|g| [format!("{g}/manifest.json"), format!("{g}/stats.json")])
        .collect();
    for (name, bytes) in names.iter().zip(out.get_many(&names, 16)?) {
        let path = mirror.join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if let Some(bytes) = bytes {
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
    }
    indexed.fetched.extend(
        state
            .done
            .iter()
            .filter(|k| stale.contains(lease::gallery_of(k)))
            .cloned(),
    );
    gallery::write_index(mirror)?;
    let mut files = Vec::new();
    collect_files(mirror, "", &mut files)?;
    upload_index(out, mirror, &files, &galleries, indexed)?;
    tracing::info!(
        "index: {} runs -> {}/index.html",
        galleries.len(),
        out.url()
    );
    indexed.done = Some(state.done);
    Ok(())
}

/// Uploads the index files of `mirror` that changed since this daemon last
/// uploaded them (`index.html` last); the galleries' own files are not touched.
fn upload_index(
    out: &Remote,
    mirror: &Path,
    files: &[String],
    galleries: &HashSet<&str>,
    indexed: &mut Indexed,
) -> Result<()> {
    let mut changed = Vec::new();
    let mut top_page = None;
    for name in files {
        let name = name.clone();
        let top = name.split('/').next().unwrap_or_default();
        if galleries.contains(top) {
            continue;
        }
        let path = mirror.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let h = twox_hash::XxHash3_64::oneshot(&bytes);
        if indexed.uploaded.get(&name) == Some(&h) {
            continue;
        }
        indexed.uploaded.insert(name.clone(), h);
        if name == "index.html" {
            top_page = Some(bytes);
        } else {
            changed.push((name, bytes));
        }
    }
    let result = out
        .put_many(changed, UPLOADS_IN_FLIGHT)
        .and_then(|()| match top_page {
            Some(bytes) => out.join("index.html").put(bytes),
            None => Ok(()),
        });
    if let Err(e) = result {
        // Not known to be there: upload everything again next time.
        indexed.uploaded.clear();
        return Err(e);
    }
    Ok(())
}

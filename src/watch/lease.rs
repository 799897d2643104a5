//! Leases and done markers of the shared daemons (docs/LEASES.md), all objects
//! under `<out>/.candlelight/`:
//!
//! - `done/<gallery>@<version>`: the gallery of that version of the run is
//!   complete. Created with a conditional create, so at most one daemon ever
//!   reports a version rendered.
//! - `lease/<gallery>@<version>.<generation>`: a daemon is rendering it, until the
//!   `expires` time in the body. Generation 0 is taken with a conditional create;
//!   a lease whose holder died is taken over by creating the next generation, which
//!   only one daemon can do.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::remote::Remote;
use crate::Result;

/// Folder of the shared state under the galleries prefix.
pub const STATE_DIR: &str = ".candlelight";

/// The body of a lease or done marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    /// Who holds it (`host:pid:nonce`).
    pub owner: String,
    /// Expiry, ms since the Unix epoch (leases).
    #[serde(default)]
    pub expires_ms: u64,
    /// The run's URL.
    #[serde(default)]
    pub run: String,
}

/// What the shared state says, from one listing.
#[derive(Debug, Default)]
pub struct State {
    /// `<gallery>@<version>` keys that are done.
    pub done: HashSet<String>,
    /// Highest lease generation per key.
    pub leases: BTreeMap<String, u32>,
}

/// The key of one version of a run: `<gallery>@<16 hex of the version tag>`.
pub fn version_key(gallery: &str, version: &str) -> String {
    let h = twox_hash::XxHash3_64::oneshot(version.as_bytes());
    format!("{gallery}@{h:016x}")
}

/// The gallery name of a version key.
pub fn gallery_of(key: &str) -> &str {
    key.rsplit_once('@').map_or(key, |(g, _)| g)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The shared state under `out`.
pub fn read_state(out: &Remote) -> Result<State> {
    let mut state = State::default();
    for o in out.join(STATE_DIR).list()? {
        if let Some(key) = o.name.strip_prefix("done/") {
            state.done.insert(key.to_string());
        } else if let Some(rest) = o.name.strip_prefix("lease/") {
            if let Some((key, gen)) = rest.rsplit_once('.') {
                if let Ok(g) = gen.parse::<u32>() {
                    let e = state.leases.entry(key.to_string()).or_insert(g);
                    *e = (*e).max(g);
                }
            }
        }
    }
    Ok(state)
}

fn lease_object(out: &Remote, key: &str, generation: u32) -> Remote {
    out.join(&format!("{STATE_DIR}/lease/{key}.{generation}"))
}

/// Tries to take the lease of `key` for `ttl`: `Some(generation)` when this
/// daemon now holds it (a fresh lease, or one taken over from a holder whose
/// lease expired), `None` when another daemon holds it.
pub fn take(
    out: &Remote,
    key: &str,
    highest: Option<u32>,
    claim: &Claim,
    ttl: Duration,
) -> Result<Option<(u32, Option<String>)>> {
    let (generation, previous) = match highest {
        None => (0, None),
        Some(g) => {
            let held: Option<Claim> = lease_object(out, key, g)
                .get()?
                .and_then(|b| serde_json::from_slice(&b).ok());
            match held {
                Some(c) if c.expires_ms > now_ms() => return Ok(None),
                held => (g + 1, held.map(|c| c.owner)),
            }
        }
    };
    let body = Claim {
        expires_ms: now_ms() + ttl.as_millis() as u64,
        ..claim.clone()
    };
    let created = lease_object(out, key, generation)
        .create(serde_json::to_vec(&body).expect("a claim serializes"))?;
    Ok(created.then_some((generation, previous)))
}

/// Marks `key` done: `true` when this call created the marker (the one render
/// that counts), `false` when another daemon already had.
pub fn mark_done(out: &Remote, key: &str, claim: &Claim) -> Result<bool> {
    out.join(&format!("{STATE_DIR}/done/{key}"))
        .create(serde_json::to_vec(claim).expect("a claim serializes"))
}

/// Renews a lease this daemon holds at `generation` by creating the next one
/// (and removing the old): `Some(next)`, or `None` when another daemon created it
/// first (this daemon's lease had expired and was taken over).
pub fn renew(
    out: &Remote,
    key: &str,
    generation: u32,
    claim: &Claim,
    ttl: Duration,
) -> Result<Option<u32>> {
    let body = Claim {
        expires_ms: now_ms() + ttl.as_millis() as u64,
        ..claim.clone()
    };
    let next = generation + 1;
    if !lease_object(out, key, next)
        .create(serde_json::to_vec(&body).expect("a claim serializes"))?
    {
        return Ok(None);
    }
    drop_generation(out, key, generation);
    Ok(Some(next))
}

/// Removes one lease generation of `key` (a warning if that fails).
pub fn drop_generation(out: &Remote, key: &str, generation: u32) {
    if let Err(e) = lease_object(out, key, generation).delete() {
        tracing::warn!("{}", crate::one_line(&e));
    }
}

/// Whether `key` is marked done.
pub fn is_done(out: &Remote, key: &str) -> Result<bool> {
    out.join(&format!("{STATE_DIR}/done/{key}")).exists()
}

/// Removes the lease generations `0..=up_to` of `key` (after done or on failure).
pub fn release(out: &Remote, key: &str, up_to: u32) {
    for g in 0..=up_to {
        drop_generation(out, key, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_keys_name_the_gallery() {
        let k = version_key("r1", "\"abc\"");
        assert!(k.starts_with("r1@") && k.len() == 3 + 16);
        assert_eq!(gallery_of(&k), "r1");
        assert_ne!(k, version_key("r1", "\"abd\""));
    }
}

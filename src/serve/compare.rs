//! `GET /_/compare?a=<gallery>&b=<gallery>`: the diff gallery of two runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{blocking, fail_error, fail_now, AppState, Gallery};
use crate::gallery::{diff_dir_name, DIFFS_DIR};
use crate::{diff, write_diff_gallery, DiffOptions};

/// Computes (or reuses) `ROOT/diffs/<a>~vs~<b>/` and redirects there (303).
pub(super) async fn compare(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(k) = q.keys().find(|k| *k != "a" && *k != "b") {
        return fail_now(
            StatusCode::BAD_REQUEST,
            format!("unknown parameter {k:?} (use a, b)"),
        );
    }
    let (Some(a), Some(b)) = (q.get("a").cloned(), q.get("b").cloned()) else {
        return fail_now(
            StatusCode::BAD_REQUEST,
            "compare needs a=<gallery>&b=<gallery>",
        );
    };
    let name = diff_dir_name(&a, &b);
    // One computation per pair at a time; the second request finds it cached.
    let lock = {
        let mut pairs = s.pairs.lock().expect("pair locks");
        Arc::clone(pairs.entry(name.clone()).or_default())
    };
    let guard = lock.lock().await;
    let shared = Arc::clone(&s);
    let done = blocking(move || {
        let (ga, gb) = (shared.gallery(&a)?, shared.gallery(&b)?);
        let out = shared
            .root
            .join(DIFFS_DIR)
            .join(diff_dir_name(&ga.name, &gb.name));
        if is_fresh(&shared.root, &out, &ga, &gb) {
            return Ok(());
        }
        let ra = shared.run(&ga).map_err(|e| fail_error(&e))?;
        let rb = shared.run(&gb).map_err(|e| fail_error(&e))?;
        let d = diff(&ra, &rb, &DiffOptions::default()).map_err(|e| fail_error(&e))?;
        write_diff_gallery(&d, &ra, &rb, &out).map_err(|e| fail_error(&e))?;
        tracing::info!(
            "compared {} with {}: {}",
            ga.name,
            gb.name,
            d.summary_line()
        );
        Ok(())
    })
    .await;
    drop(guard);
    {
        // Forget the pair's lock when no other request holds it (names are the
        // client's: the map must not grow with every pair ever asked for).
        let mut pairs = s.pairs.lock().expect("pair locks");
        if Arc::strong_count(&lock) <= 2 {
            pairs.remove(&name);
        }
    }
    match done {
        Ok(()) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, format!("/{DIFFS_DIR}/{name}/"))],
        )
            .into_response(),
        Err(f) => f.into_response(),
    }
}

/// The diff gallery in `out` is complete and newer than both galleries' manifests
/// (whose run files the caller checked are as they were rendered).
fn is_fresh(root: &Path, out: &Path, a: &Gallery, b: &Gallery) -> bool {
    let mtime = |p: &Path| -> Option<SystemTime> {
        let md = std::fs::metadata(p).ok()?;
        md.is_file().then(|| md.modified().ok())?
    };
    let Some(made) = mtime(&out.join("diff.json")) else {
        return false;
    };
    out.join("index.html").is_file()
        && [a, b]
            .iter()
            .all(|g| mtime(&root.join(&g.name).join("manifest.json")).is_some_and(|m| made > m))
}

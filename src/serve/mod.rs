//! `candlelight serve`: an HTTP server over a galleries root.
//!
//! - Static files of the root (`index.html`, run galleries, diff galleries, trends)
//!   with their content types; nothing outside the root (`..`, encoded or not, a
//!   symlink leading out), no dot file (staging temporaries), no FIFO or other
//!   non-regular file, no directory listing.
//! - `GET /_/render/<gallery>/<layer index>.png?sample=K&scale=S&colormap=C`: a
//!   layer's picture rendered on demand from the gallery's run file (the manifest's
//!   `source`; 409 when the file changed since the gallery was rendered), with the
//!   options of `candlelight render` (pictures as in the gallery: numbered cells).
//! - `GET /_/layers/<gallery>`: `{"gallery": .., "layers": [{"index", "name",
//!   "shape"}]}`.
//! - `GET /_/compare?a=<gallery>&b=<gallery>`: the diff gallery of the two runs
//!   (default [`DiffOptions`](crate::DiffOptions)) written into
//!   `ROOT/diffs/<a>~vs~<b>/` (reused while it is newer than both galleries), then a
//!   303 to it.
//! - `GET /_/stamp`: a token that changes whenever `ROOT/index.html` does.
//!
//! Served pages get a small script (the files on disk are unchanged): the index
//! gets a checkbox `input.cl-pick[data-run]` per run card, a button `#cl-compare`
//! and a reload when `/_/stamp` changes (the selection survives in
//! `sessionStorage`); a run page gets a sample number input (`input.cl-sample`) per
//! `img.layer-pic[data-layer]` that swaps the picture for the on-demand render.
//! Errors are one line of text; a bad run never stops the server.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::gallery::{read_manifest, source_facts, Manifest, SourceFacts};
use crate::{Error, Result, Run};

mod cache;
mod compare;
mod files;
mod pictures;

use cache::Lru;

/// What to serve and how much to cache.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The galleries root (`candlelight render --out` / `candlelight watch --out`).
    pub root: PathBuf,
    /// Open run files kept (default 8).
    pub runs_cached: usize,
    /// Bytes of rendered PNGs kept (default 64 MiB).
    pub png_cache_bytes: usize,
}

impl ServeOptions {
    /// Serve `root` with the default cache sizes.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ServeOptions {
            root: root.into(),
            runs_cached: 8,
            png_cache_bytes: 64 << 20,
        }
    }
}

/// Shared by every request.
struct Shared {
    /// The root, canonical.
    root: PathBuf,
    /// Run file path -> its facts when opened and the open run.
    runs: Mutex<Lru<PathBuf, (SourceFacts, Arc<Run>)>>,
    /// Rendered pictures.
    pngs: Mutex<Lru<pictures::Key, axum::body::Bytes>>,
    /// One lock per compared pair, so a pair is computed once at a time.
    pairs: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

type AppState = Arc<Shared>;

/// The server's routes over `opts.root` (which must be a folder).
pub fn router(opts: &ServeOptions) -> Result<Router> {
    let root = std::fs::canonicalize(&opts.root).map_err(|e| Error::io(&opts.root, e))?;
    if !root.is_dir() {
        return Err(Error::bad(&opts.root, "not a folder"));
    }
    let state = Arc::new(Shared {
        root,
        runs: Mutex::new(Lru::new(opts.runs_cached, usize::MAX)),
        pngs: Mutex::new(Lru::new(4096, opts.png_cache_bytes)),
        pairs: Mutex::default(),
    });
    Ok(Router::new()
        .route("/_/stamp", get(files::stamp))
        .route("/_/layers/{gallery}", get(pictures::layers))
        .route("/_/render/{gallery}/{file}", get(pictures::render_png))
        .route("/_/compare", get(compare::compare))
        .fallback(files::static_file)
        .with_state(state))
}

/// Serves `app` (see [`router`]) on `listener` until `shutdown` completes, then
/// finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(Path::new("<listener>"), e))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(Path::new(&addr.to_string()), e))
}

/// A failed request: its status and one line saying why.
struct Fail {
    code: StatusCode,
    msg: String,
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let line = self.msg.replace(['\n', '\r'], " ");
        if self.code.is_server_error() {
            tracing::warn!("{}: {line}", self.code);
        } else {
            tracing::debug!("{}: {line}", self.code);
        }
        (
            self.code,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            format!("{line}\n"),
        )
            .into_response()
    }
}

/// A one-line plain-text error.
fn fail(code: StatusCode, msg: impl std::fmt::Display) -> Fail {
    Fail {
        code,
        msg: msg.to_string(),
    }
}

/// [`fail`] as a response.
fn fail_now(code: StatusCode, msg: impl std::fmt::Display) -> Response {
    fail(code, msg).into_response()
}

/// The status for a library error: the machine's I/O is a 500, a bad file a 422.
fn fail_error(e: &Error) -> Fail {
    let code = match e {
        Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    fail(code, crate::one_line(e))
}

/// A gallery name as it may appear in a URL: one path segment, no dot file.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name != "_"
}

/// A run gallery of the root, checked: its manifest, and its run file as it was
/// when the gallery was rendered.
struct Gallery {
    name: String,
    manifest: Manifest,
    facts: SourceFacts,
}

impl Shared {
    /// The gallery `name`: 404 when there is none (or it is an error page), 409
    /// when its run file changed since it was rendered.
    fn gallery(&self, name: &str) -> std::result::Result<Gallery, Fail> {
        let missing = || {
            fail(
                StatusCode::NOT_FOUND,
                format!("no run gallery named {name:?}"),
            )
        };
        if !valid_name(name) {
            return Err(missing());
        }
        let dir = self.root.join(name);
        let manifest = read_manifest(&dir).ok_or_else(missing)?;
        if manifest.status != "ok" {
            return Err(fail(
                StatusCode::CONFLICT,
                format!(
                    "gallery {name:?} is an error page: {}",
                    manifest.error.as_deref().unwrap_or("")
                ),
            ));
        }
        let facts = source_facts(&manifest.source).map_err(|e| {
            fail(
                StatusCode::NOT_FOUND,
                format!(
                    "gallery {name:?}: its run file is gone: {}",
                    crate::one_line(&e)
                ),
            )
        })?;
        if facts != manifest.source_facts() {
            return Err(fail(
                StatusCode::CONFLICT,
                format!(
                    "{}: changed since gallery {name:?} was rendered; render it again",
                    manifest.source.display()
                ),
            ));
        }
        Ok(Gallery {
            name: name.to_string(),
            manifest,
            facts,
        })
    }

    /// The open run of `g` (cached while its facts hold).
    fn run(&self, g: &Gallery) -> Result<Arc<Run>> {
        let key = g.manifest.source.clone();
        if let Some((facts, run)) = self.runs.lock().expect("runs cache").get(&key) {
            if facts == g.facts {
                return Ok(run);
            }
        }
        let run = Arc::new(Run::open(&key)?);
        self.runs
            .lock()
            .expect("runs cache")
            .put(key, (g.facts, Arc::clone(&run)), 1);
        Ok(run)
    }
}

/// Runs blocking work off the async threads; a panic is a 500.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, Fail> + Send + 'static,
) -> std::result::Result<T, Fail> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        ))
    })
}

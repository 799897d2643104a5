//! Runs and galleries on object storage: `s3://`, `gs://`, `az://` and `https://`
//! (read-only) URLs through the `object_store` crate, from the synchronous library.
//!
//! A URL names an object (a run file) or a prefix (a runs folder, a galleries
//! root). Each store is built once per `scheme://bucket` from the usual
//! environment variables of that store (`AWS_*`, `GOOGLE_*`, `AZURE_*`, read by
//! object_store's `from_env`); nothing read from them is ever printed. Requests
//! are retried with exponential backoff on transient errors (object_store's retry,
//! bounded by `CANDLELIGHT_RETRY_TIMEOUT` seconds, default 30).
//!
//! Everything async runs on one small tokio runtime owned by this module;
//! `block_on` works from plain threads and from inside another runtime.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::{Error, Result};

mod upload;

pub use upload::PART_SIZE;

/// Schemes read as object-store URLs (`file://` is a local path).
const SCHEMES: &[&str] = &[
    "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "http", "https",
];

/// An object or a prefix in an object store.
#[derive(Clone)]
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    key: Key,
    /// `scheme://bucket`, without credentials.
    base: String,
    read_only: bool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

/// Requests made and bytes received while reading one run.
#[derive(Debug, Default)]
pub struct Transfer {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl Transfer {
    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    fn add(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its URL.
    pub url: String,
    /// Its name relative to the listed prefix (`a/b.safetensors`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// The store's version tag (ETag), or the modification time when there is none.
    pub version: String,
}

impl Remote {
    /// The object or prefix at `url` (`s3://bucket/key`, `gs://`, `az://`,
    /// `https://`).
    pub fn parse(url: &str) -> Result<Remote> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::option(format!("{}: not a URL: {e}", redact(url))))?;
        let scheme = parsed.scheme().to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(Error::option(format!(
                "{}: unsupported scheme {scheme:?} (s3, gs, az, https, file or a path)",
                redact(url)
            )));
        }
        let host = parsed.host_str().unwrap_or_default();
        if host.is_empty() {
            return Err(Error::option(format!(
                "{}: no bucket in the URL",
                redact(url)
            )));
        }
        let authority = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let base = format!("{scheme}://{authority}");
        let store = store_for(&scheme, &base)?;
        let key = Key::from_url_path(parsed.path())
            .map_err(|e| Error::option(format!("{}: bad object key: {e}", redact(url))))?;
        Ok(Remote {
            store,
            key,
            base,
            read_only: scheme.starts_with("http"),
        })
    }

    /// A local folder (created if missing) seen through the same interface, for
    /// a shared daemon with a URL on one side only.
    pub fn local(dir: &std::path::Path) -> Result<Remote> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let abs = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(&abs)
            .map_err(|e| store_error(dir, "open", e))?;
        Ok(Remote {
            store: Arc::new(store),
            key: Key::default(),
            base: format!("file://{}", abs.display()),
            read_only: false,
        })
    }

    /// A URL or a local folder.
    pub fn at(place: &std::path::Path) -> Result<Remote> {
        match place.to_str() {
            Some(s) if is_url(s) => match crate::location::file_url_path(s) {
                Some(local) => Remote::local(std::path::Path::new(local)),
                None => Remote::parse(s),
            },
            _ => Remote::local(place),
        }
    }

    /// The URL (no credentials).
    pub fn url(&self) -> String {
        if self.key.as_ref().is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, self.key)
        }
    }

    /// The URL as a path, for errors and `Run::path`.
    pub fn as_path(&self) -> PathBuf {
        PathBuf::from(self.url())
    }

    /// The object's key in its bucket.
    pub fn key(&self) -> &str {
        self.key.as_ref()
    }

    /// `name` under this prefix (`name` may hold `/`).
    pub fn join(&self, name: &str) -> Remote {
        // Segments are kept as they are (as `Path::parse` keeps a URL's key), not
        // percent-encoded: a gallery named `a~1` is the key `a~1`, which pages
        // link to and static hosting serves. Only control characters (never in
        // names candlelight makes) are encoded.
        let parts = name.split('/').filter(|p| !p.is_empty()).map(|p| {
            object_store::path::PathPart::parse(p)
                .unwrap_or_else(|_| object_store::path::PathPart::from(p))
        });
        Remote {
            key: self.key.parts().chain(parts).collect(),
            ..self.clone()
        }
    }

    /// The last segment of the key (a file name).
    pub fn file_name(&self) -> &str {
        self.key.as_ref().rsplit('/').next().unwrap_or_default()
    }

    fn fail(&self, what: &str, e: object_store::Error) -> Error {
        store_error(&self.as_path(), what, e)
    }

    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::option(format!(
                "{}: http(s) URLs are read-only",
                self.url()
            )));
        }
        Ok(())
    }

    /// Bytes `range` of the object (the end clamped to its size), with the
    /// object's size and version; `version` (from an earlier read) makes the read
    /// fail when the object was replaced since.
    pub(crate) fn read(
        &self,
        range: Range<u64>,
        version: Option<&str>,
        transfer: &Transfer,
    ) -> Result<(Vec<u8>, u64, Option<String>)> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: version.map(str::to_string),
            ..Default::default()
        };
        count(1);
        block_on(async {
            let got = self
                .store
                .get_opts(&self.key, opts)
                .await
                .map_err(|e| self.fail("read", e))?;
            let (size, etag) = (got.meta.size, got.meta.e_tag.clone());
            let bytes = got.bytes().await.map_err(|e| self.fail("read", e))?;
            transfer.add(bytes.len());
            Ok((bytes.to_vec(), size, etag))
        })
    }

    /// The whole object, or `None` when there is none.
    pub fn get(&self) -> Result<Option<Vec<u8>>> {
        block_on(async {
            count(1);
            match self.store.get(&self.key).await {
                Ok(got) => Ok(Some(
                    got.bytes()
                        .await
                        .map_err(|e| self.fail("read", e))?
                        .to_vec(),
                )),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail("read", e)),
            }
        })
    }

    /// The object's version tag as [`Remote::list`] gives it (ETag, else the
    /// modification time), `None` when there is no object.
    pub fn version(&self) -> Result<Option<String>> {
        block_on(async {
            count(1);
            match self.store.head(&self.key).await {
                Ok(m) => {
                    Ok(Some(m.e_tag.unwrap_or_else(|| {
                        m.last_modified.timestamp_micros().to_string()
                    })))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.fail("look up", e)),
            }
        })
    }

    /// True when the object exists.
    pub fn exists(&self) -> Result<bool> {
        block_on(async {
            count(1);
            match self.store.head(&self.key).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.fail("look up", e)),
            }
        })
    }

    /// Writes `bytes` as the object (one request: visible whole or not at all).
    pub fn put(&self, bytes: Vec<u8>) -> Result<()> {
        self.writable()?;
        count(1);
        block_on(async {
            self.store
                .put(&self.key, PutPayload::from(bytes))
                .await
                .map_err(|e| self.fail("write", e))?;
            Ok(())
        })
    }

    /// Writes each `(name, bytes)` as the object `name` under this prefix,
    /// `in_flight` requests at a time; the first error is returned (the others
    /// finish or fail on their own: each object is whole or absent).
    pub fn put_many(&self, files: Vec<(String, Vec<u8>)>, in_flight: usize) -> Result<()> {
        use futures::StreamExt;
        self.writable()?;
        let puts = files.into_iter().map(|(name, bytes)| {
            let to = self.join(&name);
            async move {
                count(1);
                to.store
                    .put(&to.key, PutPayload::from(bytes))
                    .await
                    .map_err(|e| to.fail("write", e))
                    .map(|_| ())
            }
        });
        block_on(async {
            let mut results = futures::stream::iter(puts).buffer_unordered(in_flight.max(1));
            while let Some(r) = results.next().await {
                r?;
            }
            Ok(())
        })
    }

    /// The objects `name` under this prefix ([`Remote::get`] of each), `in_flight`
    /// requests at a time, in the order of `names`.
    pub fn get_many(&self, names: &[String], in_flight: usize) -> Result<Vec<Option<Vec<u8>>>> {
        use futures::{FutureExt, StreamExt};
        let gets: Vec<_> = names
            .iter()
            .map(|name| self.join(name))
            .map(|from| {
                async move {
                    count(1);
                    match from.store.get(&from.key).await {
                        Ok(got) => got
                            .bytes()
                            .await
                            .map(|b| Some(b.to_vec()))
                            .map_err(|e| from.fail("read", e)),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(from.fail("read", e)),
                    }
                }
                .boxed()
            })
            .collect();
        block_on(async {
            futures::stream::iter(gets)
                .buffered(in_flight.max(1))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect()
        })
    }

    /// Creates the object only if there is none (a conditional create:
    /// `If-None-Match: *` on S3). `Ok(false)` when it already exists.
    pub fn create(&self, bytes: Vec<u8>) -> Result<bool> {
        self.writable()?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        count(1);
        block_on(async {
            match self
                .store
                .put_opts(&self.key, PutPayload::from(bytes), opts)
                .await
            {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(self.fail("create", e)),
            }
        })
    }

    /// Deletes the object (no error when there is none).
    pub fn delete(&self) -> Result<()> {
        self.writable()?;
        block_on(async {
            count(1);
            match self.store.delete(&self.key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.fail("delete", e)),
            }
        })
    }

    /// Every object under this prefix (all depths), sorted by name.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let prefix = (!self.key.as_ref().is_empty()).then_some(&self.key);
        let skip = self.key.as_ref().len() + usize::from(prefix.is_some());
        let metas: Vec<object_store::ObjectMeta> = block_on(async {
            self.store
                .list(prefix)
                .try_collect()
                .await
                .map_err(|e| self.fail("list", e))
        })?;
        count(1 + metas.len() as u64 / 1000);
        let mut out: Vec<Listed> = metas
            .into_iter()
            .map(|m| {
                let name = m
                    .location
                    .as_ref()
                    .get(skip..)
                    .unwrap_or_default()
                    .to_string();
                Listed {
                    url: format!("{}/{}", self.base, m.location),
                    name,
                    size: m.size,
                    version: m
                        .e_tag
                        .unwrap_or_else(|| m.last_modified.timestamp_micros().to_string()),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Streams the whole object into the local file `to` (created or truncated),
    /// returning the bytes written.
    pub fn download(&self, to: &std::path::Path) -> Result<u64> {
        use futures::StreamExt;
        use std::io::Write;
        let mut file = std::fs::File::create(to).map_err(|e| Error::io(to, e))?;
        count(1);
        block_on(async {
            let got = self
                .store
                .get(&self.key)
                .await
                .map_err(|e| self.fail("read", e))?;
            let mut stream = got.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.fail("read", e))?;
                file.write_all(&chunk).map_err(|e| Error::io(to, e))?;
                n += chunk.len() as u64;
            }
            Ok(n)
        })
    }
}

/// Requests this process has sent to object stores (every store, all kinds; a
/// listing counts one per 1000 objects, a multipart upload one per part plus
/// two), for the cost lines of `watch` and the benchmarks.
pub fn requests_made() -> u64 {
    REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts `n` requests in [`requests_made`].
pub(crate) fn count(n: u64) {
    REQUESTS.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

pub use crate::location::is_url;

/// `url` without a `user:password@` part.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() || u.query().is_some() => {
            // User info and query strings (SAS tokens, signatures) never printed.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// An object_store error as an [`Error::Io`] naming the URL (a missing object
/// keeps the `NotFound` kind).
pub(crate) fn store_error(url: &std::path::Path, what: &str, e: object_store::Error) -> Error {
    use std::io::ErrorKind;
    let kind = match &e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::PermissionDenied,
        object_store::Error::Precondition { .. } => ErrorKind::Other,
        _ => ErrorKind::Other,
    };
    let msg = match &e {
        object_store::Error::NotFound { .. } => format!("cannot {what}: no such object"),
        object_store::Error::Precondition { .. } => {
            format!("cannot {what}: the object changed since it was opened")
        }
        _ => format!("cannot {what}: {}", crate::one_line(&e)),
    };
    Error::io(url, std::io::Error::new(kind, msg))
}

/// How long a request is retried (`CANDLELIGHT_RETRY_TIMEOUT` seconds, default 30).
fn retry() -> RetryConfig {
    let secs = std::env::var("CANDLELIGHT_RETRY_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(30.0);
    RetryConfig {
        max_retries: 8,
        retry_timeout: Duration::from_secs_f64(secs),
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
    }
}

/// The store of `scheme://authority`, built once from the environment.
fn store_for(scheme: &str, base: &str) -> Result<Arc<dyn ObjectStore>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let stores = STORES.get_or_init(Default::default);
    if let Some(s) = stores.lock().expect("store cache").get(base) {
        return Ok(s.clone());
    }
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        "s3" | "s3a" => object_store::aws::AmazonS3Builder::from_env()
            .with_url(base)
            .with_retry(retry())
            .build()
            .map(|s| Arc::new(s) as _),
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(base)
            .with_retry(retry())
            .build()
            .map(|s| Arc::new(s) as _),
        "http" | "https" => object_store::http::HttpBuilder::new()
            .with_url(base)
            .with_retry(retry())
            .with_client_options(
                object_store::ClientOptions::new().with_allow_http(scheme == "http"),
            )
            .build()
            .map(|s| Arc::new(s) as _),
        _ => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(base)
            .with_retry(retry())
            .build()
            .map(|s| Arc::new(s) as _),
    };
    let store = built.map_err(|e| {
        Error::option(format!(
            "{base}: cannot set up the store: {}",
            crate::one_line(&e)
        ))
    })?;
    stores
        .lock()
        .expect("store cache")
        .insert(base.to_string(), store.clone());
    Ok(store)
}

/// Runs `f` to completion on this module's runtime, from any thread (a scoped
/// thread when the caller is itself inside a tokio runtime, where blocking on
/// another runtime is not allowed).
pub(crate) fn block_on<F: Future + Send>(f: F) -> F::Output
where
    F::Output: Send,
{
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("candlelight-store")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .expect("store thread panicked")
        })
    } else {
        rt.block_on(f)
    }
}

#[cfg(test)]
mod tests;

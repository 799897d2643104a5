//! One error type for the library; every variant names the file, layer or shape involved.

use std::path::PathBuf;

/// Errors returned by candlelight.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on a named file or folder.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a valid run file (or safetensors file).
    #[error("{}: {msg}", path.display())]
    BadRunFile { path: PathBuf, msg: String },
    /// A layer name that the run does not contain.
    #[error("{}: no layer named {name:?}", path.display())]
    NoSuchLayer { path: PathBuf, name: String },
    /// An image file that cannot be used as model input.
    #[error("{}: {msg}", path.display())]
    Image { path: PathBuf, msg: String },
    /// A folder that cannot be watched (or whose output folder is in use).
    #[error("{}: {msg}", path.display())]
    Watch { path: PathBuf, msg: String },
    /// A file or folder candlelight would replace or remove but did not write.
    #[error("{}: {msg}", path.display())]
    NotOurs { path: PathBuf, msg: String },
    /// Bad arguments or options (glob patterns, name maps, ...).
    #[error("{0}")]
    Invalid(String),
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with candlelight's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// True for a failure of the machine rather than of the input: an I/O error
    /// (no space, a disk error, no permission). Such a failure says nothing about
    /// the run file: `watch` retries instead of writing an error page.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. })
    }

    /// An [`Error::BadRunFile`] for `path`.
    pub fn bad(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadRunFile {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

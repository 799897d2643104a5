//! One error type for the library; every variant names the file, layer or option
//! involved, and prints as one line.

use std::path::PathBuf;

/// Errors returned by candlelight. Match on the kind; the message is for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a named file or folder (no such file, no space, no permission).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not a valid run file (or safetensors file), or one that changed
    /// while it was read.
    #[error("{}: {msg}", path.display())]
    BadRunFile {
        /// The run file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A layer the run does not contain (by name, or `#N` by position).
    #[error("{}: no layer named {name:?}", path.display())]
    NoSuchLayer {
        /// The run file (`<run ID>` for a run in memory).
        path: PathBuf,
        /// The name asked for.
        name: String,
    },
    /// An input file other than a run that cannot be used: a picture given as model
    /// input, a name map, a data set.
    #[error("{}: {msg}", path.display())]
    BadInput {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A bad option or argument: a glob, a scale, a colormap, a tolerance, a sample
    /// number, a name map that maps two layers onto one.
    #[error("{msg}")]
    BadOption {
        /// What is wrong, naming the option.
        msg: String,
    },
    /// A layer that cannot be drawn as asked (its shape does not match its data, or
    /// does not fit in memory), or a picture that cannot be encoded.
    #[error("{msg}")]
    CannotRender {
        /// Why.
        msg: String,
    },
    /// A recording that cannot be made as asked (op-level capture of a graph that
    /// fused kernels cut).
    #[error("{msg}")]
    CannotRecord {
        /// Why, and what to do instead.
        msg: String,
    },
    /// A folder that cannot be watched (or whose output folder is in use).
    #[error("{}: {msg}", path.display())]
    Watch {
        /// The folder.
        path: PathBuf,
        /// Why.
        msg: String,
    },
    /// A file or folder candlelight would replace or remove but did not write.
    #[error("{}: {msg}", path.display())]
    NotOurs {
        /// The file or folder left alone.
        path: PathBuf,
        /// What it is and what was not done.
        msg: String,
    },
    /// A run a background [`crate::RunWriter`] could not save: the run file it was
    /// to be, and why (no file of this run was left under that name).
    #[error("{}: not saved: {source}", path.display())]
    NotSaved {
        /// The run file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// A bug in candlelight (a bundled template that does not render, ...).
    #[error("internal error: {msg}")]
    Internal {
        /// What went wrong.
        msg: String,
    },
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// An error and its causes as one line (a cause already quoted is not repeated,
/// newlines become spaces): what every command and log line prints.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg.replace(['\n', '\r'], " ")
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

    /// An [`Error::BadRunFile`] for `path`.
    pub fn bad(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::BadRunFile {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// An [`Error::BadOption`].
    pub fn option(msg: impl Into<String>) -> Self {
        Error::BadOption { msg: msg.into() }
    }

    /// An [`Error::CannotRender`].
    #[cfg(feature = "render")]
    pub(crate) fn render(msg: impl Into<String>) -> Self {
        Error::CannotRender { msg: msg.into() }
    }

    /// This error with `from` (a local copy) named `to` (what the user gave, e.g.
    /// a URL) wherever it names a file.
    #[cfg(feature = "render")]
    pub(crate) fn renamed(mut self, from: &std::path::Path, to: &std::path::Path) -> Self {
        match &mut self {
            Error::Io { path, .. }
            | Error::BadRunFile { path, .. }
            | Error::NoSuchLayer { path, .. }
            | Error::BadInput { path, .. }
            | Error::Watch { path, .. }
                if path == from =>
            {
                *path = to.to_path_buf();
            }
            _ => {}
        }
        self
    }

    /// An [`Error::Internal`].
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        Error::Internal { msg: msg.into() }
    }
}

//! The node's error type: what failed and what to do about it.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Everything that can stop a node process.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A `--backend` or `--fence` value could not be understood.
    #[error("invalid {what} {value:?}: {reason}")]
    Spec {
        /// Which option.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// The accepted forms.
        reason: String,
    },

    /// The election library failed (config, store unreachable, …).
    #[error(transparent)]
    Coord(#[from] lifeboat_coord::Error),

    /// The PostgreSQL fenced resource failed.
    #[error("fenced PostgreSQL resource: {0}")]
    Postgres(#[from] tokio_postgres::Error),

    /// The fence file could not be read or written.
    #[error("fence file {path}: {source}")]
    FenceIo {
        /// The fence file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The fence file holds something that is not a write record.
    #[error(
        "fence file {path} line {line} is {text:?}, not `<token> <node> <seq>`; \
         the file is written only by lifeboat-coord-node: remove it to start over"
    )]
    FenceFormat {
        /// The fence file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending text.
        text: String,
    },

    /// Standard output went away (the reader closed the pipe).
    #[error("writing an event to stdout: {0}")]
    Stdout(#[source] std::io::Error),

    /// The SIGTERM/SIGINT handler could not be installed.
    #[error("installing the signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

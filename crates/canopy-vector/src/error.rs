//! The error type of canopy-vector.

use std::path::PathBuf;

/// Errors from canopy-vector's polygonizer, geometry algorithms, metrics and file formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is malformed; `message` names the record, key or line and
    /// says what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A canopy-raster operation failed.
    #[error(transparent)]
    Raster(#[from] canopy_raster::Error),
    /// Reprojection failed or a CRS is not supported.
    #[error("projection: {0}")]
    Projection(String),
    /// An argument, shape or geometry is invalid.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// `Result` with canopy-vector's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[allow(dead_code)] // constructors used as the modules land
impl Error {
    /// An [`Error::InvalidArgument`] for operation `op`.
    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument { op, message: message.into() }
    }

    /// An [`Error::Format`] for `path`.
    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format { path: path.into(), message: message.into() }
    }

    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

//! The error type of canopy-raster.

use std::path::PathBuf;

/// Everything that can go wrong while reading, writing, tiling or rasterising a raster.
///
/// Variants separate *malformed input* ([`Error::Format`]), *valid input this crate does not
/// handle* ([`Error::Unsupported`]), *resource limits* ([`Error::Limit`]), *caller mistakes*
/// ([`Error::InvalidArgument`], [`Error::Shape`], [`Error::DataType`]) and I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error while touching `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid (Geo)TIFF, or is corrupt.
    #[error("{path}: malformed TIFF: {message}")]
    Format {
        /// The file being read.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The file is valid but uses a feature this crate does not read or write.
    #[error("{path}: unsupported: {message}")]
    Unsupported {
        /// The file being read or written.
        path: PathBuf,
        /// The feature, and what to do instead where there is something to do.
        message: String,
    },
    /// Decoding would exceed a resource limit (see [`crate::Limits`]).
    #[error("{path}: {what} needs {needed} bytes, over the limit of {limit} bytes; raise `Limits::{field}` if the file is trusted")]
    Limit {
        /// The file being read.
        path: PathBuf,
        /// What would have been allocated.
        what: String,
        /// Bytes the operation needs.
        needed: u64,
        /// The limit in force.
        limit: u64,
        /// The [`crate::Limits`] field to raise.
        field: &'static str,
    },
    /// The caller asked for samples of a type the file does not hold.
    #[error("{path}: the file holds {actual} samples but {expected} were requested; use `read_as`/`read_window_as` to convert, or request {actual}")]
    DataType {
        /// The file being read.
        path: PathBuf,
        /// The requested sample type.
        expected: &'static str,
        /// The sample type stored in the file.
        actual: &'static str,
    },
    /// An array has the wrong shape.
    #[error("shape mismatch in {context}: expected {expected}, got {actual}")]
    Shape {
        /// Where the mismatch happened.
        context: String,
        /// The shape that was needed.
        expected: String,
        /// The shape that was given.
        actual: String,
    },
    /// An argument is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Tensor conversion failed (feature `candle`).
    #[cfg(feature = "candle")]
    #[error("tensor conversion: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }
}

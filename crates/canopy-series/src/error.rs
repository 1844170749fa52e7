//! The error type of canopy-series.

/// Errors from canopy-series' loaders and preprocessing blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is malformed; `message` names the line, column, array or
    /// key and says what was expected.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A canopy-raster operation failed.
    #[error(transparent)]
    Raster(#[from] canopy_raster::Error),
    /// A candle operation failed (feature `candle`).
    #[cfg(feature = "candle")]
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An argument or configuration is invalid.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Result with canopy-series' [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

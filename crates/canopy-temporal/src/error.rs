//! The error type of canopy-temporal.

/// Errors from canopy-temporal's models, weight loading and explainability tools.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A canopy-nn operation failed.
    #[error(transparent)]
    Nn(#[from] canopy_nn::Error),
    /// A canopy-train operation failed.
    #[error(transparent)]
    Train(#[from] canopy_train::Error),
    /// An input has the wrong rank, size or dtype.
    #[error("{model}: expected {expected}, got {actual}")]
    Shape {
        /// The model or function.
        model: &'static str,
        /// What was needed, and how to get it.
        expected: String,
        /// What was given.
        actual: String,
    },
    /// A configuration value is invalid.
    #[error("{model}: {message}")]
    Config {
        /// The model or function.
        model: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A weights or config file exists but does not fit the model (missing or unexpected keys,
    /// wrong tensor shapes, malformed JSON).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Result with canopy-temporal's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

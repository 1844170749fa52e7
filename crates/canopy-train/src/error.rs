//! The error type of canopy-train.

/// Errors from canopy-train's losses, metrics, optimizers and training loop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A canopy-nn operation failed.
    #[error(transparent)]
    Nn(#[from] canopy_nn::Error),
    /// An input has the wrong rank, size or dtype.
    #[error("{op}: expected {expected}, got {actual}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What was needed, and how to get it.
        expected: String,
        /// What was given.
        actual: String,
    },
    /// A configuration or argument is invalid.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A class label is neither a valid class index nor the ignored label.
    #[error("{op}: target {value} is out of range for {classes} classes (valid: 0..{classes}, or the ignore label)")]
    TargetOutOfRange {
        /// The operation.
        op: &'static str,
        /// The offending label.
        value: u32,
        /// The number of classes.
        classes: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content is not what was expected (malformed JSON or safetensors,
    /// missing or unexpected keys).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error("training diverged: loss {value} at epoch {epoch}, step {step}")]
    NonFiniteLoss {
        /// Epoch (1-based).
        epoch: usize,
        /// Optimizer step (0-based).
        step: u64,
        /// The loss value.
        value: f64,
    },
    /// A worker thread preparing batches stopped unexpectedly.
    #[error("batch worker: {0}")]
    Worker(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[allow(dead_code)]
pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op,
        message: message.into(),
    }
}

#[allow(dead_code)]
pub(crate) fn shape(
    op: &'static str,
    expected: impl Into<String>,
    actual: impl std::fmt::Debug,
) -> Error {
    Error::Shape {
        op,
        expected: expected.into(),
        actual: format!("{actual:?}"),
    }
}

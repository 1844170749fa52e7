//! The error type of canopy-nn.

/// Errors from canopy-nn's ops and blocks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An input has the wrong rank or size.
    #[error("{op}: expected {expected}, got {actual}")]
    Shape {
        /// The operation or block.
        op: &'static str,
        /// What was needed, and how to get it.
        expected: String,
        /// What was given.
        actual: String,
    },
    /// A configuration or argument is invalid.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation or block.
        op: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A gradient check failed (see [`crate::gradcheck`]).
    #[error("gradient check failed: {0}")]
    GradCheck(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        op,
        message: message.into(),
    }
}

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

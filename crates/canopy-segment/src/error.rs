//! The error type of canopy-segment.

/// Errors from canopy-segment's models, datasets and inference.
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
    /// A canopy-raster operation failed (reading, writing, tiling, stitching).
    #[error(transparent)]
    Raster(#[from] canopy_raster::Error),
    /// An input has the wrong rank, size or dtype.
    #[error("{context}: expected {expected}, got {actual}")]
    Shape {
        /// The model or function.
        context: &'static str,
        /// What was needed, and how to get it.
        expected: String,
        /// What was given.
        actual: String,
    },
    /// A configuration value is invalid.
    #[error("{context}: {message}")]
    Config {
        /// The model or function.
        context: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// A canopy-vector operation failed (GeoJSON or COCO reading, reprojection).
    #[error(transparent)]
    Vector(#[from] canopy_vector::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but its content does not fit (missing or unexpected keys, wrong tensor
    /// shapes, malformed JSON, an image and mask of different sizes).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Result with canopy-segment's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

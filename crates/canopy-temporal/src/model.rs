//! What every series classifier in this crate has in common.

use candle_core::Tensor;
use rand::RngCore;

use crate::Result;

/// A classifier of satellite image time series: `(B, T, C)` in, `(B, K)` logits out.
///
/// The trait is object safe (the random source is `&mut dyn RngCore`), so a command-line tool
/// can hold any model as `Box<dyn SeriesClassifier>`. The reference implementations
/// (BreizhCrops) end in `log_softmax`; these models return the logits before it, which is what
/// [`canopy_train::loss::cross_entropy`] expects.
pub trait SeriesClassifier {
    /// Logits for a batch of series.
    ///
    /// `train` switches dropout and batch-norm statistics to training mode; `rng` drives
    /// dropout (seed it for reproducible runs).
    ///
    /// # Shapes
    /// `x`: `(B, T, C)` -> `(B, K)`.
    ///
    /// # Errors
    /// When `x` does not have the configured number of bands (or length, for models with a
    /// fixed length), or a tensor operation fails.
    fn forward_t(&self, x: &Tensor, train: bool, rng: &mut dyn RngCore) -> Result<Tensor>;

    /// The number of classes `K`.
    fn num_classes(&self) -> usize;

    /// The number of input bands `C`.
    fn input_dim(&self) -> usize;
}

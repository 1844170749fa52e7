//! Dropout with a mask drawn from a caller-provided, seedable RNG: candle's CPU RNG cannot be
//! seeded (`set_seed` is unsupported on CPU), so candle's dropout makes runs irreproducible.

use candle_core::Tensor;
use rand::Rng;

use crate::error::invalid;
use crate::Result;

/// Inverted dropout (`torch.nn.Dropout`): in training, zeroes each element with probability
/// `p` and scales the rest by `1 / (1 - p)`; in evaluation, the identity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    p: f64,
}

impl Dropout {
    /// A dropout layer with drop probability `p` in `[0, 1)`.
    ///
    /// # Errors
    /// When `p` is outside `[0, 1)`.
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(invalid("Dropout", format!("p = {p} must be in [0, 1)")));
        }
        Ok(Dropout { p })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.p
    }

    /// Applies dropout when `train`; the mask comes from `rng`.
    ///
    /// # Shapes
    /// Any shape, unchanged.
    ///
    /// # Errors
    /// When the mask cannot be allocated on the input's device.
    pub fn forward_t<R: Rng + ?Sized>(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut R,
    ) -> Result<Tensor> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        let scale = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if rng.random::<f64>() < self.p {
                    0.0
                } else {
                    scale as f32
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        Ok((x * mask)?)
    }
}

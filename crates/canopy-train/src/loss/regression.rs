//! Squared-error losses for regression targets such as displacement fields.
//!
//! [`mse_loss`] is PyTorch's `F.mse_loss`. [`weighted_mse_loss`] is the weighted mean
//!
//! ```text
//! L = Σ w·(a - b)² / Σ w
//! ```
//!
//! where `w` is broadcast to the inputs' shape before both sums, so for a displacement field
//! `(B, 2, H, W)` weighted by a map `(B, 1, H, W)` each pixel's weight counts once per
//! component. The alignment networks of Girard et al. (ACCV 2018) weight the displacement
//! error by the rasterised polygons (fill, edges, vertices), so that the error counts where
//! there is a map to align; [`PolygonWeights`] builds such a map from those three channels.
//! Its default coefficients (0 outside, then 0.1 / 1 / 10) are ours, chosen so that vertices
//! weigh most; tune them for the data.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{broadcast_weight, reduce, same_shape, Reduction};
use crate::error::{invalid, shape};
use crate::Result;

/// Mean squared error, equal to PyTorch's `F.mse_loss`.
///
/// # Shapes
/// `input`, `target`: the same shape; output: a scalar, or that shape for
/// [`Reduction::None`].
///
/// # Errors
/// [`crate::Error::Shape`] when the shapes differ.
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("mse_loss", input, target, "a target")?;
    let per = (input - target.to_dtype(input.dtype())?)?.sqr()?;
    let n = per.elem_count() as f64;
    reduce(per, reduction, n)
}

/// Weighted mean squared error `Σ w·(a - b)² / Σ w`, with `w` broadcast to the inputs' shape.
///
/// # Shapes
/// `input`, `target`: the same shape; `weight`: broadcastable to it; output: a scalar.
///
/// # Errors
/// [`crate::Error::Shape`] when the shapes differ or the weight does not broadcast;
/// [`crate::Error::InvalidArgument`] when `Σ w` is not a positive finite number (the mean
/// would be undefined).
pub fn weighted_mse_loss(input: &Tensor, target: &Tensor, weight: &Tensor) -> Result<Tensor> {
    const OP: &str = "weighted_mse_loss";
    same_shape(OP, input, target, "a target")?;
    let w = broadcast_weight(OP, Some(weight), input, "a weight")?
        .ok_or_else(|| invalid(OP, "missing weight"))?
        .detach();
    let total = w.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !(total.is_finite() && total > 0.0) {
        return Err(invalid(
            OP,
            format!("the weights sum to {total}; the weighted mean needs a positive sum"),
        ));
    }
    let per = ((input - target.to_dtype(input.dtype())?)?.sqr()? * w)?;
    reduce(per, Reduction::Mean, total)
}

/// Per-pixel weights from a rasterised polygon map, for weighting displacement errors:
/// `w = background + fill·F + edge·E + vertex·V`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PolygonWeights {
    /// Weight of every pixel, inside or outside polygons.
    pub background: f64,
    /// Added on polygon interiors (channel 0).
    pub fill: f64,
    /// Added on polygon outlines (channel 1).
    pub edge: f64,
    /// Added on polygon vertices (channel 2).
    pub vertex: f64,
}

impl Default for PolygonWeights {
    /// No weight outside polygons, then 0.1 / 1 / 10 for interior / edge / vertex pixels.
    fn default() -> Self {
        PolygonWeights {
            background: 0.0,
            fill: 0.1,
            edge: 1.0,
            vertex: 10.0,
        }
    }
}

impl PolygonWeights {
    /// The weight map of a rasterised polygon map whose channels are fill, edge and vertex
    /// (values in `[0, 1]`, anti-aliased values allowed).
    ///
    /// # Shapes
    /// `polygons`: `(B, 3, H, W)`; output: `(B, 1, H, W)`, ready for [`weighted_mse_loss`]
    /// against `(B, 2, H, W)` displacements.
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when `polygons` is not `(B, 3, H, W)`.
    pub fn weight_map(&self, polygons: &Tensor) -> Result<Tensor> {
        let dims = polygons.dims();
        if dims.len() != 4 || dims[1] != 3 {
            return Err(shape(
                "PolygonWeights::weight_map",
                "(B, 3, H, W) with channels fill, edge, vertex",
                dims,
            ));
        }
        let ch = |i: usize, c: f64| -> Result<Tensor> { Ok((polygons.narrow(1, i, 1)? * c)?) };
        let w = ((ch(0, self.fill)? + ch(1, self.edge)?)? + ch(2, self.vertex)?)?;
        Ok((w + self.background)?) // (B, 1, H, W)
    }
}

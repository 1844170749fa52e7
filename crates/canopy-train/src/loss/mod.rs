//! Loss functions for classification, dense segmentation and displacement regression.
//!
//! Every loss is built from candle primitives whose gradients are correct (the log-softmax and
//! softmax come from [`canopy_nn::ops`], never candle's fused kernels), takes its device and
//! dtype from the input, and is checked against PyTorch in f64 (`tools/golden/train_losses.py`)
//! and against finite differences.
//!
//! | loss | function | reference |
//! |---|---|---|
//! | cross-entropy, NLL | [`cross_entropy`], [`nll_loss`] | `torch.nn.functional.cross_entropy` / `nll_loss` |
//! | binary cross-entropy on logits | [`bce_with_logits`] | `binary_cross_entropy_with_logits` |
//! | soft IoU (Jaccard) | [`soft_iou_loss`], [`soft_iou_loss_multiclass`] | Rahman & Wang (2016) |
//! | cross-entropy + soft IoU | [`ce_soft_iou_loss`] | Tarabalka et al.; Huang et al. (2018) |
//! | Dice | [`dice_loss`], [`dice_loss_multiclass`] | Milletari et al. (2016) |
//! | focal | [`focal_loss`], [`focal_loss_multiclass`] | Lin et al. (2017), torchvision |
//! | mean squared error | [`mse_loss`], [`weighted_mse_loss`] | `mse_loss`; Girard et al. (2018) |
//!
//! Class labels are `u32` tensors; logits put the classes on dimension 1: `(N, K)` for
//! samples, `(N, K, H, W)` (or any number of trailing dimensions) for dense maps, with targets
//! `(N)` or `(N, H, W, ..)`.
//!
//! # References
//! - M. A. Rahman, Y. Wang. *Optimizing Intersection-Over-Union in Deep Neural Networks for
//!   Image Segmentation.* ISVC 2016.
//! - B. Huang et al. *Large-Scale Semantic Classification: Outcome of the First Year of Inria
//!   Aerial Image Labeling Benchmark.* IGARSS 2018 (the best entries combine cross-entropy and
//!   an IoU loss).
//! - Y. Tarabalka, E. Maggiori, N. Girard et al. *Can we classify the world? Where deep learning
//!   meets remote sensing* (Inria TITANE talk): the soft IoU loss averaged over classes, and
//!   cross-entropy + IoU as the recommended loss for aerial image labelling.
//! - F. Milletari, N. Navab, S.-A. Ahmadi. *V-Net: Fully Convolutional Neural Networks for
//!   Volumetric Medical Image Segmentation.* 3DV 2016.
//! - T.-Y. Lin, P. Goyal, R. Girshick, K. He, P. Dollár. *Focal Loss for Dense Object
//!   Detection.* ICCV 2017.
//! - N. Girard, G. Charpiat, Y. Tarabalka. *Aligning and Updating Cadaster Maps with Aerial
//!   Images by Multi-Task, Multi-Resolution Deep Learning.* ACCV 2018.

mod binary;
mod cross_entropy;
mod focal;
mod overlap;
mod regression;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, shape};
use crate::{Error, Result};

pub use binary::bce_with_logits;
pub use cross_entropy::{cross_entropy, nll_loss, CrossEntropyConfig, NllConfig};
pub use focal::{focal_loss, focal_loss_multiclass, FocalConfig, FocalMulticlassConfig};
pub use overlap::{
    ce_soft_iou_loss, dice_loss, dice_loss_multiclass, soft_iou_loss, soft_iou_loss_multiclass,
    CeSoftIouConfig, DiceConfig, DiceDenominator, SoftIouConfig,
};
pub use regression::{mse_loss, weighted_mse_loss, PolygonWeights};

/// How per-element losses are reduced, with PyTorch's meaning of `'mean'`, `'sum'` and `'none'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Reduction {
    /// The (weighted) mean; each loss documents its denominator.
    #[default]
    Mean,
    /// The sum over all elements.
    Sum,
    /// No reduction: one loss per element (per sample and pixel for class losses).
    None,
}

/// Reduces `per` (one loss per element) by `reduction`, dividing the sum by `denominator` for
/// [`Reduction::Mean`].
pub(crate) fn reduce(per: Tensor, reduction: Reduction, denominator: f64) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::None => per,
        Reduction::Sum => per.sum_all()?,
        Reduction::Mean => (per.sum_all()? / denominator)?,
    })
}

/// Validated class targets of a `(N, K, d..)` input: the flat labels `(N * S)` with `S` the
/// product of the trailing dimensions, and which of them count.
pub(crate) struct ClassTargets {
    /// Labels in `(N, d..)` row-major order; ignored positions hold 0.
    pub labels: Vec<u32>,
    /// `false` where the label equals the ignore index.
    pub valid: Vec<bool>,
    /// Batch size.
    pub n: usize,
    /// Number of classes.
    pub k: usize,
    /// Positions per sample (product of the trailing dimensions).
    pub s: usize,
}

impl ClassTargets {
    /// Checks that `targets` is a `u32` tensor of shape `(N, d..)` for `input` of shape
    /// `(N, K, d..)`, and that every label is a class index or `ignore`.
    pub fn new(
        op: &'static str,
        input: &Tensor,
        targets: &Tensor,
        ignore: Option<u32>,
    ) -> Result<Self> {
        let dims = input.dims();
        if dims.len() < 2 {
            return Err(shape(
                op,
                "an input (N, K) or (N, K, d..) with the classes on dimension 1",
                dims,
            ));
        }
        let (n, k) = (dims[0], dims[1]);
        let rest = &dims[2..];
        let mut want = vec![n];
        want.extend_from_slice(rest);
        if targets.dims() != want.as_slice() {
            return Err(shape(
                op,
                format!("targets of shape {want:?} (the input's shape without dimension 1)"),
                targets.dims(),
            ));
        }
        if targets.dtype() != DType::U32 {
            return Err(shape(
                op,
                "u32 class labels (convert with `targets.to_dtype(DType::U32)`)",
                targets.dtype(),
            ));
        }
        if k == 0 {
            return Err(invalid(op, "the input has no classes (dimension 1 is 0)"));
        }
        let raw: Vec<u32> = targets.flatten_all()?.to_vec1()?;
        let mut labels = Vec::with_capacity(raw.len());
        let mut valid = Vec::with_capacity(raw.len());
        for &t in &raw {
            if Some(t) == ignore {
                labels.push(0);
                valid.push(false);
            } else if (t as usize) < k {
                labels.push(t);
                valid.push(true);
            } else {
                return Err(Error::TargetOutOfRange {
                    op,
                    value: t,
                    classes: k,
                });
            }
        }
        let s = rest.iter().product();
        Ok(ClassTargets {
            labels,
            valid,
            n,
            k,
            s,
        })
    }

    /// A tensor shaped like the input `(N, K, d..)` whose element `[n, c, s]` is
    /// `f(valid, label, c)` for the target at `(n, s)`, in `like`'s dtype and device.
    pub fn per_class(
        &self,
        like: &Tensor,
        f: impl Fn(bool, usize, usize) -> f64,
    ) -> Result<Tensor> {
        let mut v = vec![0.0; self.n * self.k * self.s];
        for i in 0..self.n {
            for j in 0..self.s {
                let t = i * self.s + j;
                let (ok, label) = (self.valid[t], self.labels[t] as usize);
                for c in 0..self.k {
                    v[(i * self.k + c) * self.s + j] = f(ok, label, c);
                }
            }
        }
        let t = Tensor::from_vec(v, like.dims(), like.device())?;
        Ok(t.to_dtype(like.dtype())?)
    }

    /// A tensor of the targets' shape `(N, d..)` holding `f(valid, label)`.
    pub fn per_target(&self, like: &Tensor, f: impl Fn(bool, usize) -> f64) -> Result<Tensor> {
        let v: Vec<f64> = self
            .valid
            .iter()
            .zip(&self.labels)
            .map(|(&ok, &l)| f(ok, l as usize))
            .collect();
        let mut dims = vec![self.n];
        dims.extend_from_slice(&like.dims()[2..]);
        let t = Tensor::from_vec(v, dims, like.device())?;
        Ok(t.to_dtype(like.dtype())?)
    }

    /// Number of targets that are not ignored.
    pub fn count_valid(&self) -> usize {
        self.valid.iter().filter(|&&v| v).count()
    }
}

/// Checks that optional per-class weights have one finite entry per class.
pub(crate) fn check_class_weights(op: &'static str, w: Option<&[f64]>, k: usize) -> Result<()> {
    if let Some(w) = w {
        if w.len() != k {
            return Err(invalid(
                op,
                format!("{} class weights given for {k} classes", w.len()),
            ));
        }
        if let Some(x) = w.iter().find(|x| !x.is_finite()) {
            return Err(invalid(op, format!("class weight {x} is not finite")));
        }
    }
    Ok(())
}

/// Checks that two tensors have the same shape.
pub(crate) fn same_shape(op: &'static str, a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(shape(
            op,
            format!("{what} of the input's shape {:?}", a.dims()),
            b.dims(),
        ));
    }
    Ok(())
}

/// Broadcasts an optional weight tensor to `like`'s shape, in `like`'s dtype.
pub(crate) fn broadcast_weight(
    op: &'static str,
    w: Option<&Tensor>,
    like: &Tensor,
    what: &str,
) -> Result<Option<Tensor>> {
    let Some(w) = w else { return Ok(None) };
    let b = w.broadcast_as(like.shape()).map_err(|_| {
        shape(
            op,
            format!(
                "{what} broadcastable to the input's shape {:?}",
                like.dims()
            ),
            w.dims(),
        )
    })?;
    Ok(Some(b.to_dtype(like.dtype())?))
}

/// `log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|))`, finite for every finite `x`.
///
/// `min(x, 0)` is written `x - max(x, 0)` so that its gradient at `x = 0` (candle's ReLU
/// passes the gradient at 0) pairs with the one of `|x|` to give the true `1 - σ(0)`.
pub(crate) fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    Ok(((x - x.relu()?)? - softplus_neg_abs(x)?)?)
}

/// `log(1 + exp(-|x|))`, the bounded part of the softplus (its argument is in `(0, 1]`).
pub(crate) fn softplus_neg_abs(x: &Tensor) -> Result<Tensor> {
    Ok((x.abs()?.neg()?.exp()? + 1.0)?.log()?)
}

//! Layer normalisation whose gradients reach the input and the affine parameters.
//!
//! candle's `LayerNorm` and `ops::layer_norm` take a fused path on contiguous inputs whose
//! backward pass produces no gradient for the input (candle issue 3752). Here, on the CPU in
//! f32/f64, the normalisation is one op whose backward pass computes all three gradients in one
//! parallel pass over the rows:
//!
//! ```text
//! x̂ = (x - μ) / σ,   g = dy ⊙ γ,   dx = (g - mean(g) - x̂ · mean(g ⊙ x̂)) / σ,
//! dγ = Σ_rows dy ⊙ x̂,   dβ = Σ_rows dy
//! ```
//!
//! (`μ`, `σ` recomputed from `x`; `dγ`, `dβ` summed over fixed row blocks in block order, so the
//! result does not depend on the thread count). Composed from candle's primitives (the path
//! other devices and dtypes take, [`layer_norm_composed`]), the backward pass is about a dozen
//! single-threaded broadcasts and reductions, 25x slower at Transformer sizes. Numerics follow
//! PyTorch: biased variance, `eps` inside the square root.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Storage, Tensor, D};
use candle_nn::VarBuilder;

use crate::ops::cpu::{
    chunk_at, dot8, par_build, par_zeroed_map, slice, sum8, sum_in_order, zeros_par, Float,
};
use crate::{error::shape, Result};

/// Normalises over the last dimension: `(x - mean) / sqrt(var + eps) * weight + bias`.
///
/// # Shapes
/// `x`: `(..., N)`; `weight`, `bias`: `(N,)`.
///
/// # Errors
/// When `weight`/`bias` do not have `N` elements.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    layer_norm_impl(x, weight, bias, eps, true)
}

/// [`layer_norm`] composed from candle's primitives (any device and dtype): the reference the
/// fused CPU op is tested against.
///
/// # Shapes
/// As [`layer_norm`].
///
/// # Errors
/// As [`layer_norm`].
pub fn layer_norm_composed(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    layer_norm_impl(x, weight, bias, eps, false)
}

/// `layer_norm(x + residual)` with affine parameters: the residual junction of a post-norm
/// Transformer layer. On the CPU in f32/f64 the sum is formed row by row inside the
/// normalisation op (no tensor for `x + residual`, one pass less); its backward pass gives both
/// inputs the same gradient. Elsewhere: the two ops.
///
/// # Shapes
/// `x`, `residual`: `(..., N)` (same shape); `weight`, `bias`: `(N,)`.
///
/// # Errors
/// Different shapes of `x` and `residual`; parameters without `N` elements.
pub fn add_layer_norm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    if x.dims() != residual.dims() {
        return Err(shape(
            "add_layer_norm",
            format!("a residual of shape {:?}", x.dims()),
            residual.dims(),
        ));
    }
    let n = x.dim(D::Minus1)?;
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if t.dims() != [n] {
            return Err(shape(
                "add_layer_norm",
                format!("{name} of shape ({n},)"),
                t.dims(),
            ));
        }
    }
    let cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == x.dtype();
    if cpu(x)
        && cpu(residual)
        && cpu(weight)
        && cpu(bias)
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && n > 0
    {
        let wb = Tensor::cat(&[weight, bias], 0)?;
        let op = AddLayerNormOp { eps };
        return Ok(x
            .contiguous()?
            .apply_op3(&residual.contiguous()?, &wb, op)?);
    }
    layer_norm(&(x + residual)?, Some(weight), Some(bias), eps)
}

fn layer_norm_impl(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
    fused: bool,
) -> Result<Tensor> {
    let n = x.dim(D::Minus1)?;
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            if t.dims() != [n] {
                return Err(shape(
                    "layer_norm",
                    format!("{name} of shape ({n},)"),
                    t.dims(),
                ));
            }
        }
    }
    let same = |t: Option<&Tensor>| t.is_none_or(|t| t.dtype() == x.dtype() && t.device().is_cpu());
    if fused
        && x.device().is_cpu()
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
        && same(weight)
        && same(bias)
        && n > 0
    {
        let op = LayerNormOp { eps };
        let xc = x.contiguous()?;
        match (weight, bias) {
            (Some(w), Some(b)) => {
                return Ok(xc.apply_op3(&w.contiguous()?, &b.contiguous()?, op)?);
            }
            (None, None) => return Ok(xc.apply_op1(op)?),
            _ => {} // one of the two: composed
        }
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let mut y = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    if let Some(w) = weight {
        y = y.broadcast_mul(w)?;
    }
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    Ok(y)
}

/// `torch.nn.LayerNorm(normalized_shape)` over the last dimension, with PyTorch's parameter
/// names `weight` and `bias` (initialised to ones and zeros).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm over `size` features; `affine = false` has no parameters
    /// (`elementwise_affine=False`).
    ///
    /// # Errors
    /// When the variables cannot be created or loaded.
    pub fn new(size: usize, eps: f64, affine: bool, vb: VarBuilder) -> Result<Self> {
        let (weight, bias) = if affine {
            (
                Some(vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?),
                Some(vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?),
            )
        } else {
            (None, None)
        };
        Ok(LayerNorm { weight, bias, eps })
    }

    /// Normalises over the last dimension.
    ///
    /// # Shapes
    /// `(..., size)` -> `(..., size)`.
    ///
    /// # Errors
    /// When the last dimension is not `size`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, self.weight.as_ref(), self.bias.as_ref(), self.eps)
    }
}

impl LayerNorm {
    /// `self(x + residual)` (see [`add_layer_norm`]); without affine parameters the two ops.
    ///
    /// # Shapes
    /// `x`, `residual`: `(..., size)` -> `(..., size)`.
    ///
    /// # Errors
    /// Different shapes; the last dimension is not `size`.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match (&self.weight, &self.bias) {
            (Some(w), Some(b)) => add_layer_norm(x, residual, w, b, self.eps),
            _ => self.forward(&(x + residual)?),
        }
    }
}

impl candle_core::Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        LayerNorm::forward(self, x).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

/// Rows per block of the parameter-gradient partial sums.
const ROW_BLOCK: usize = 1024;

/// The fused layer norm over the last dimension: `x` alone (`CustomOp1`) or `(x, γ, β)`
/// (`CustomOp3`).
#[derive(Debug, Clone, Copy)]
struct LayerNormOp {
    eps: f64,
}

/// `(μ, 1/σ)` of one row (two passes: mean, then the biased variance of the centred values).
#[inline]
fn row_stats<T: Float>(row: &[T], eps: f64) -> (T, T) {
    let n = row.len() as f64;
    let mean = sum8(row, |u| u).to_f64() / n;
    let m = T::from_f64(mean);
    let var = sum8(row, |u| (u - m) * (u - m)).to_f64() / n;
    (m, T::from_f64(1.0 / (var + eps).sqrt()))
}

fn ln_forward<T: Float>(x: &[T], wb: Option<(&[T], &[T])>, n: usize, eps: f64) -> Vec<T> {
    ln_forward_add(x, None, wb, n, eps)
}

/// [`ln_forward`] of `x + residual` (the sum formed row by row) when a residual is given.
fn ln_forward_add<T: Float>(
    x: &[T],
    residual: Option<&[T]>,
    wb: Option<(&[T], &[T])>,
    n: usize,
    eps: f64,
) -> Vec<T> {
    par_build(x.len(), n * 64, |blk, yb: &mut [T]| {
        let xb = chunk_at(x, n * 64, blk);
        let mut sum = Vec::new();
        for (row, (yr, xr)) in yb.chunks_mut(n).zip(xb.chunks(n)).enumerate() {
            let xr = match residual {
                Some(res) => {
                    let rr = &res[(blk * 64 + row) * n..][..n];
                    sum.clear();
                    sum.extend(xr.iter().zip(rr).map(|(&a, &b)| a + b));
                    &sum[..]
                }
                None => xr,
            };
            let (m, r) = row_stats(xr, eps);
            match wb {
                Some((w, b)) => {
                    for (((o, &u), &g), &s) in yr.iter_mut().zip(xr).zip(w).zip(b) {
                        *o = (u - m) * r * g + s;
                    }
                }
                None => {
                    for (o, &u) in yr.iter_mut().zip(xr) {
                        *o = (u - m) * r;
                    }
                }
            }
        }
    })
}

/// `(dx, dγ, dβ)`; the parameter gradients are empty without `w`.
fn ln_backward<T: Float>(
    x: &[T],
    w: Option<&[T]>,
    dy: &[T],
    n: usize,
    eps: f64,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let inv_n = T::from_f64(1.0 / n as f64);
    let built = par_zeroed_map(x.len(), n * ROW_BLOCK, |blk, dxb: &mut [T]| {
        let (xb, dyb) = (
            chunk_at(x, n * ROW_BLOCK, blk),
            chunk_at(dy, n * ROW_BLOCK, blk),
        );
        let (mut dw, mut db) = match w {
            Some(_) => (zeros_par(n), zeros_par(n)),
            None => (Vec::new(), Vec::new()),
        };
        let (mut g, mut xh) = (zeros_par(n), zeros_par(n));
        for ((dxr, xr), dyr) in dxb.chunks_mut(n).zip(xb.chunks(n)).zip(dyb.chunks(n)) {
            let (m, r) = row_stats(xr, eps);
            for (h, &u) in xh.iter_mut().zip(xr) {
                *h = (u - m) * r;
            }
            match w {
                Some(w) => {
                    for (((gv, &d), &gm), ((dwv, dbv), &h)) in g
                        .iter_mut()
                        .zip(dyr)
                        .zip(w)
                        .zip(dw.iter_mut().zip(db.iter_mut()).zip(&xh))
                    {
                        *gv = d * gm;
                        *dwv += d * h;
                        *dbv += d;
                    }
                }
                None => g.copy_from_slice(dyr),
            }
            let mean_g = sum8(&g, |u| u) * inv_n;
            let mean_gx = dot8(&g, &xh) * inv_n;
            for ((o, &gv), &h) in dxr.iter_mut().zip(&g).zip(&xh) {
                *o = (gv - mean_g - h * mean_gx) * r;
            }
        }
        Ok::<_, std::convert::Infallible>((dw, db))
    });
    let (dx, parts) = match built {
        Ok(b) => b,
        Err(never) => match never {},
    };
    let plen = if w.is_some() { n } else { 0 };
    let (pw, pb): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    (dx, sum_in_order(pw, plen), sum_in_order(pb, plen))
}

/// Size of the normalised (last) dimension.
fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

fn ln_err(m: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("layer_norm: {m}"))
}

impl LayerNormOp {
    fn fwd(
        &self,
        (sx, lx): (&CpuStorage, &Layout),
        wb: Option<(&CpuStorage, &Layout, &CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = last_dim(lx);
        if let Some((_, lw, _, lb)) = wb {
            if lw.dims() != [n] || lb.dims() != [n] {
                return Err(ln_err(
                    "weight and bias must have the size of the last dimension",
                ));
            }
        }
        let out = match sx {
            CpuStorage::F32(_) => {
                let wb = match wb {
                    Some((sw, lw, sb, lb)) => Some((
                        slice::<f32>(sw, lw, "layer_norm")?,
                        slice::<f32>(sb, lb, "layer_norm")?,
                    )),
                    None => None,
                };
                CpuStorage::F32(ln_forward(slice(sx, lx, "layer_norm")?, wb, n, self.eps))
            }
            CpuStorage::F64(_) => {
                let wb = match wb {
                    Some((sw, lw, sb, lb)) => Some((
                        slice::<f64>(sw, lw, "layer_norm")?,
                        slice::<f64>(sb, lb, "layer_norm")?,
                    )),
                    None => None,
                };
                CpuStorage::F64(ln_forward(slice(sx, lx, "layer_norm")?, wb, n, self.eps))
            }
            _ => return Err(ln_err("f32 or f64 only")),
        };
        Ok((out, lx.shape().clone()))
    }

    /// `(dx, dγ, dβ)` as tensors (`None` parameter gradients without `w`).
    fn bwd_tensors(
        &self,
        x: &Tensor,
        w: Option<&Tensor>,
        grad: &Tensor,
    ) -> candle_core::Result<(Tensor, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (sx, lx) = x.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let ws = w.map(|w| w.storage_and_layout());
        let (Storage::Cpu(sx), Storage::Cpu(sg)) = (&*sx, &*sg) else {
            return Err(ln_err("CPU tensors only"));
        };
        let wsl = match &ws {
            Some((s, l)) => match &**s {
                Storage::Cpu(s) => Some((s, *l)),
                _ => return Err(ln_err("CPU tensors only")),
            },
            None => None,
        };
        let n = last_dim(lx);
        let dev = x.device();
        macro_rules! run {
            ($t:ty) => {{
                let wv = match wsl {
                    Some((s, l)) => Some(slice::<$t>(s, l, "layer_norm")?),
                    None => None,
                };
                let (dx, dw, db) = ln_backward::<$t>(
                    slice(sx, lx, "layer_norm")?,
                    wv,
                    slice(sg, lg, "layer_norm")?,
                    n,
                    self.eps,
                );
                let params = if wv.is_some() {
                    (
                        Some(Tensor::from_vec(dw, n, dev)?),
                        Some(Tensor::from_vec(db, n, dev)?),
                    )
                } else {
                    (None, None)
                };
                (Tensor::from_vec(dx, x.shape(), dev)?, params.0, params.1)
            }};
        }
        Ok(match sx {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            _ => return Err(ln_err("f32 or f64 only")),
        })
    }
}

/// `layer_norm(x + residual)` with `(γ, β)` packed into one `(2N,)` operand.
#[derive(Debug, Clone, Copy)]
struct AddLayerNormOp {
    eps: f64,
}

impl CustomOp3 for AddLayerNormOp {
    fn name(&self) -> &'static str {
        "canopy-add-layer-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sr: &CpuStorage,
        lr: &Layout,
        swb: &CpuStorage,
        lwb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = last_dim(lx);
        if lr.shape() != lx.shape() || lwb.dims() != [2 * n] {
            return Err(ln_err("add_layer_norm: residual or parameter sizes differ"));
        }
        let name = "add_layer_norm";
        macro_rules! run {
            ($t:ty) => {{
                let wb = slice::<$t>(swb, lwb, name)?;
                ln_forward_add(
                    slice::<$t>(sx, lx, name)?,
                    Some(slice::<$t>(sr, lr, name)?),
                    Some((&wb[..n], &wb[n..])),
                    n,
                    self.eps,
                )
            }};
        }
        let out = match sx {
            CpuStorage::F32(_) => CpuStorage::F32(run!(f32)),
            CpuStorage::F64(_) => CpuStorage::F64(run!(f64)),
            _ => return Err(ln_err("f32 or f64 only")),
        };
        Ok((out, lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        residual: &Tensor,
        wb: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(D::Minus1)?;
        let sum = (x + residual)?;
        let w = wb.narrow(0, 0, n)?;
        let (dx, dw, db) = LayerNormOp { eps: self.eps }.bwd_tensors(&sum, Some(&w), grad)?;
        let dwb = match (dw, db) {
            (Some(dw), Some(db)) => Some(Tensor::cat(&[&dw, &db], 0)?),
            _ => None,
        };
        Ok((Some(dx.clone()), Some(dx), dwb))
    }
}

impl CustomOp1 for LayerNormOp {
    fn name(&self) -> &'static str {
        "canopy-layer-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((s, l), None)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.bwd_tensors(x, None, grad)?.0))
    }
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "canopy-layer-norm-affine"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd((sx, lx), Some((sw, lw, sb, lb)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.bwd_tensors(x, Some(w), grad)?;
        Ok((Some(dx), dw, db))
    }
}

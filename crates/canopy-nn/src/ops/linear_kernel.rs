//! `y = x Wᵀ + b` on the CPU as one candle op, with its three gradients computed in one pass.
//!
//! Composed from candle ops, a linear layer is a matmul with a transposed weight and a
//! broadcast addition; its backward pass then runs two matmuls, a single-threaded strided column
//! reduction for the bias gradient (`broadcast_add`'s backward), and candle's gradient
//! bookkeeping for every intermediate. Here:
//!
//! - forward: the rows are split into fixed blocks, each block's product written by one
//!   single-threaded `gemm` call (with `Wᵀ` made once per call) into the fresh output, then the
//!   bias and ReLU applied to it while it is in cache;
//! - backward: `dx = dy W` row block by row block, and `dW = dyᵀ x`, `db = Σ_rows dy` as partial
//!   sums over at most [`MAX_PARTIALS`] row blocks added in block order, so the weight and bias
//!   gradients do not depend on the number of threads.
//!
//! f32 and f64 on the CPU; other dtypes and devices take the composed path in
//! [`linear_forward`](crate::linear::linear_forward).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{chunk_at, par_appended, par_zeroed, slice, sum_in_order, zeros_par, Float};
use crate::ops::gemm::{matmul, Mat};

/// Rows per block of the forward product and of the input gradient.
const ROW_BLOCK: usize = 256;
/// Row blocks the weight-gradient reduction is split into at most.
const MAX_PARTIALS: usize = 16;
/// Fewest rows per partial weight gradient.
const MIN_PARTIAL_ROWS: usize = 512;

/// `(x (N, in), w (out, in)[, b (out,)]) -> (N, out)`; with `bias` the op takes three operands.
/// With `relu` the output is `relu(x Wᵀ + b)` and the backward pass masks the gradient with the
/// output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinearOp {
    pub relu: bool,
}

/// Sizes `(N, in, out)`, checked.
fn sizes(
    lx: &Layout,
    lw: &Layout,
    lb: Option<&Layout>,
) -> candle_core::Result<(usize, usize, usize)> {
    let (n, i) = lx.shape().dims2()?;
    let (o, wi) = lw.shape().dims2()?;
    if wi != i || lb.is_some_and(|l| l.shape().dims() != [o]) {
        return Err(candle_core::Error::Msg(format!(
            "linear: x (N, in), w (out, in), b (out,) expected, got {:?}, {:?}, {:?}",
            lx.shape(),
            lw.shape(),
            lb.map(|l| l.shape())
        )));
    }
    Ok((n, i, o))
}

fn forward<T: Float>(
    x: &[T],
    w: &[T],
    b: Option<&[T]>,
    (n, i, o): (usize, usize, usize),
    relu: bool,
) -> Result<Vec<T>, String> {
    if o == 0 || i == 0 {
        let mut y = zeros_par(n * o);
        if let Some(b) = b.filter(|_| o > 0) {
            for row in y.chunks_mut(o) {
                row.copy_from_slice(b);
            }
        }
        return Ok(y);
    }
    // Wᵀ (in, out) row-major, made once: gemm reads it as it is, where the transposed view of
    // `w` would be packed again for every block of rows (~5-15 % of a 256-row block's product
    // with 64-256 inputs, AVX-512)
    let mut wt = vec![T::ZERO; i * o];
    crate::ops::transpose::transpose(w, (o, i), &mut wt);
    let wt = Mat::row_major(&wt, i, o);
    let threads = if n <= ROW_BLOCK {
        rayon::current_num_threads()
    } else {
        1
    };
    // each block's product is written by gemm straight into the fresh output (no zero-fill or
    // bias rows first), then the bias and the ReLU are applied in one pass while it is in cache
    par_appended(n * o, ROW_BLOCK * o, |blk, yb| {
        let xb = chunk_at(x, ROW_BLOCK * i, blk);
        let rows = yb.capacity() / o;
        yb.extend_product(Mat::row_major(&xb[..rows * i], rows, i), wt, threads)?;
        let yb = yb.written();
        match (b, relu) {
            (Some(b), true) => {
                for row in yb.chunks_mut(o) {
                    for (v, &bv) in row.iter_mut().zip(b) {
                        let s = *v + bv;
                        *v = if s > T::ZERO { s } else { T::ZERO };
                    }
                }
            }
            (Some(b), false) => {
                for row in yb.chunks_mut(o) {
                    for (v, &bv) in row.iter_mut().zip(b) {
                        *v += bv;
                    }
                }
            }
            (None, true) => {
                for v in yb.iter_mut() {
                    *v = if *v > T::ZERO { *v } else { T::ZERO };
                }
            }
            (None, false) => {}
        }
        Ok::<(), String>(())
    })
}

/// `(dx, dw, db)`; `db` only when `with_bias`.
#[allow(clippy::type_complexity)]
fn backward<T: Float>(
    x: &[T],
    w: &[T],
    dy: &[T],
    with_bias: bool,
    (n, i, o): (usize, usize, usize),
) -> Result<(Vec<T>, Vec<T>, Option<Vec<T>>), String> {
    if n == 0 || i == 0 || o == 0 {
        return Ok((
            vec![T::ZERO; n * i],
            vec![T::ZERO; o * i],
            with_bias.then(|| vec![T::ZERO; o]),
        ));
    }
    let threads = if n <= ROW_BLOCK {
        rayon::current_num_threads()
    } else {
        1
    };
    let wm = Mat::row_major(w, o, i);
    let dx = par_zeroed(n * i, ROW_BLOCK * i, |blk, dxb: &mut [T]| {
        let rows = dxb.len() / i;
        let dyb = chunk_at(dy, ROW_BLOCK * o, blk);
        matmul(dxb, i, Mat::row_major(dyb, rows, o), wm, false, threads)
    })?;
    // partial weight and bias gradients over fixed row ranges, summed in order
    let per = n.div_ceil(MAX_PARTIALS).max(MIN_PARTIAL_ROWS).min(n);
    let parts = n.div_ceil(per);
    let threads = if parts == 1 {
        rayon::current_num_threads()
    } else {
        1
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = (0..parts)
        .into_par_iter()
        .map(|p| -> Result<(Vec<T>, Vec<T>), String> {
            let (r0, r1) = (p * per, ((p + 1) * per).min(n));
            let rows = r1 - r0;
            let dyb = &dy[r0 * o..r1 * o];
            let mut dw = vec![T::ZERO; o * i];
            matmul(
                &mut dw,
                i,
                Mat::row_major(dyb, rows, o).t(),
                Mat::row_major(&x[r0 * i..r1 * i], rows, i),
                false,
                threads,
            )?;
            let mut db = Vec::new();
            if with_bias {
                db = vec![T::ZERO; o];
                for row in dyb.chunks(o) {
                    for (s, &g) in db.iter_mut().zip(row) {
                        *s += g;
                    }
                }
            }
            Ok((dw, db))
        })
        .collect::<Result<_, String>>()?;
    let (pw, pb): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    let (dw, db) = (sum_in_order(pw, o * i), sum_in_order(pb, o));
    Ok((dx, dw, with_bias.then_some(db)))
}

fn cpu_forward(
    (sx, lx): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
    bias: Option<(&CpuStorage, &Layout)>,
    relu: bool,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let dims = sizes(lx, lw, bias.map(|(_, l)| l))?;
    let err = |m: String| candle_core::Error::Msg(format!("linear: {m}"));
    let name = "linear";
    let out = match sx {
        CpuStorage::F32(_) => {
            let b = bias.map(|(s, l)| slice::<f32>(s, l, name)).transpose()?;
            CpuStorage::F32(
                forward(slice(sx, lx, name)?, slice(sw, lw, name)?, b, dims, relu).map_err(err)?,
            )
        }
        CpuStorage::F64(_) => {
            let b = bias.map(|(s, l)| slice::<f64>(s, l, name)).transpose()?;
            CpuStorage::F64(
                forward(slice(sx, lx, name)?, slice(sw, lw, name)?, b, dims, relu).map_err(err)?,
            )
        }
        _ => return Err(err("f32 or f64 operands only".into())),
    };
    Ok((out, Shape::from((dims.0, dims.2))))
}

/// The three gradients as tensors (`db` only when `with_bias`).
fn cpu_backward(
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
    with_bias: bool,
) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let err = |m: &str| candle_core::Error::Msg(format!("linear backward: {m}"));
    let name = "linear backward";
    let (sx, lx) = x.storage_and_layout();
    let (sw, lw) = w.storage_and_layout();
    let (sg, lg) = grad.storage_and_layout();
    let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(sg)) = (&*sx, &*sw, &*sg) else {
        return Err(err("CPU tensors only"));
    };
    let dims = sizes(lx, lw, None)?;
    let dev = x.device();
    macro_rules! run {
        ($t:ty) => {{
            let (dx, dw, db) = backward::<$t>(
                slice(sx, lx, name)?,
                slice(sw, lw, name)?,
                slice(sg, lg, name)?,
                with_bias,
                dims,
            )
            .map_err(|m| err(&m))?;
            (
                Tensor::from_vec(dx, x.shape(), dev)?,
                Tensor::from_vec(dw, w.shape(), dev)?,
                db.map(|db| Tensor::from_vec(db, dims.2, dev)).transpose()?,
            )
        }};
    }
    Ok(match sx {
        CpuStorage::F32(_) => run!(f32),
        CpuStorage::F64(_) => run!(f64),
        _ => return Err(err("f32 or f64 operands only")),
    })
}

impl LinearOp {
    /// The output gradient passed back through the ReLU (the gradient where the output is
    /// positive), or unchanged without one.
    fn mask(&self, res: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        if self.relu {
            crate::ops::activation::relu_grad(res, grad)
        } else {
            Ok(grad.clone())
        }
    }
}

impl CustomOp2 for LinearOp {
    fn name(&self) -> &'static str {
        "canopy-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        cpu_forward((sx, lx), (sw, lw), None, self.relu)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = self.mask(res, grad)?;
        let (dx, dw, _) = cpu_backward(x, w, &grad, false)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "canopy-linear-bias"
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
        cpu_forward((sx, lx), (sw, lw), Some((sb, lb)), self.relu)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = self.mask(res, grad)?;
        let (dx, dw, db) = cpu_backward(x, w, &grad, true)?;
        Ok((Some(dx), Some(dw), db))
    }
}

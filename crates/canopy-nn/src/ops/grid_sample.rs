//! Bilinear grid sampling (`torch.nn.functional.grid_sample`), differentiable with respect to
//! both the image and the sampling grid — the warp of the multiscale alignment networks.
//! candle has no grid-sample.
//!
//! Built from primitives: the four neighbours are fetched with `gather` (whose backward is a
//! scatter-add into the image), and the bilinear weights are differentiable functions of the
//! grid coordinates. Integer corner positions and in-bounds masks carry no gradient, exactly as
//! in PyTorch.

use candle_core::{DType, Tensor};

use crate::error::shape;
use crate::ops::resize::AlignCorners;
use crate::Result;

/// What samples outside the image read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GridPadding {
    /// Zeros outside the image (`padding_mode="zeros"`).
    #[default]
    Zeros,
    /// The nearest border pixel (`padding_mode="border"`).
    Border,
}

/// Samples `input` at `grid` positions with bilinear interpolation.
///
/// `grid[..., 0]` is x (column) and `grid[..., 1]` is y (row), both normalised to `[-1, 1]`
/// over the image (pixel centres or corners depending on `align`).
///
/// # Shapes
/// `input`: `(N, C, H, W)`, `grid`: `(N, H_out, W_out, 2)` -> `(N, C, H_out, W_out)`.
///
/// # Errors
/// For mismatched batch sizes or a grid whose last dimension is not 2.
pub fn grid_sample(
    input: &Tensor,
    grid: &Tensor,
    padding: GridPadding,
    align: AlignCorners,
) -> Result<Tensor> {
    let op = "grid_sample";
    let (n, c, h, w) = input
        .dims4()
        .map_err(|_| shape(op, "input (N, C, H, W)", input.dims()))?;
    let (gn, ho, wo, two) = grid
        .dims4()
        .map_err(|_| shape(op, "grid (N, H_out, W_out, 2)", grid.dims()))?;
    if gn != n || two != 2 {
        return Err(shape(
            op,
            format!("grid ({n}, H_out, W_out, 2)"),
            grid.dims(),
        ));
    }
    let unnormalise = |g: Tensor, size: usize| -> Result<Tensor> {
        let s = size as f64;
        let v = match align {
            AlignCorners::Yes => ((g + 1.0)? * ((s - 1.0) / 2.0))?,
            AlignCorners::No => (((g + 1.0)? * s)? - 1.0)?.affine(0.5, 0.0)?,
        };
        Ok(match padding {
            GridPadding::Zeros => v,
            GridPadding::Border => v.clamp(0.0, s - 1.0)?,
        })
    };
    let ix = unnormalise(grid.narrow(3, 0, 1)?.squeeze(3)?, w)?; // (N, Ho, Wo)
    let iy = unnormalise(grid.narrow(3, 1, 1)?.squeeze(3)?, h)?;
    let x0 = ix.floor()?.detach();
    let y0 = iy.floor()?.detach();
    let wx1 = (&ix - &x0)?;
    let wx0 = (1.0 - &wx1)?;
    let wy1 = (&iy - &y0)?;
    let wy0 = (1.0 - &wy1)?;
    let x0v: Vec<f64> = x0.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let y0v: Vec<f64> = y0.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    let flat = input.reshape((n, c, h * w))?;
    let p = ho * wo;
    let mut out: Option<Tensor> = None;
    for (dx, dy, wx, wy) in [
        (0.0, 0.0, &wx0, &wy0),
        (1.0, 0.0, &wx1, &wy0),
        (0.0, 1.0, &wx0, &wy1),
        (1.0, 1.0, &wx1, &wy1),
    ] {
        let mut idx = Vec::with_capacity(n * p);
        let mut valid = Vec::with_capacity(n * p);
        for (&x, &y) in x0v.iter().zip(&y0v) {
            let (xc, yc) = (x + dx, y + dy);
            let inside = xc >= 0.0 && yc >= 0.0 && xc <= (w - 1) as f64 && yc <= (h - 1) as f64;
            let xi = xc.clamp(0.0, (w - 1) as f64) as usize;
            let yi = yc.clamp(0.0, (h - 1) as f64) as usize;
            idx.push((yi * w + xi) as u32);
            valid.push(if inside { 1.0 } else { 0.0 });
        }
        let idx = Tensor::from_vec(idx, (n, 1, p), input.device())?
            .broadcast_as((n, c, p))?
            .contiguous()?;
        let valid =
            Tensor::from_vec(valid, (n, ho, wo), input.device())?.to_dtype(input.dtype())?;
        let weight = (wx * wy)?.mul(&valid)?.reshape((n, 1, p))?;
        let term = flat.gather(&idx, 2)?.broadcast_mul(&weight)?;
        out = Some(match out {
            None => term,
            Some(o) => (o + term)?,
        });
    }
    let out = out.ok_or_else(|| shape(op, "four bilinear corners", "none"))?;
    Ok(out.reshape((n, c, ho, wo))?)
}

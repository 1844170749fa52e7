//! Conversion between rasters / ndarrays and candle tensors (feature `candle`).
//!
//! # Shapes
//! A raster `(bands, rows, cols)` becomes a `(C, H, W)` tensor; add the batch axis with
//! `unsqueeze(0)`. Tensors coming back may be `(C, H, W)` or `(1, C, H, W)`.

use candle_core::{DType, Device, Tensor};
use ndarray::{Array3, ArrayView3};

use crate::{Error, Raster, Result, Sample};

/// A `(C, H, W)` tensor of `dtype` on `device` holding the raster's samples.
///
/// Samples go through `f64`, so every sample type maps to every float dtype; integer dtypes
/// (`U8`, `U32`, `I64`) receive rounded, saturated values.
///
/// # Errors
/// [`Error::Candle`] when the device cannot allocate the tensor.
pub fn to_tensor<T: Sample>(raster: &Raster<T>, dtype: DType, device: &Device) -> Result<Tensor> {
    let (c, h, w) = raster.data.dim();
    let data: Vec<f32> = raster.data.iter().map(|v| v.to_f64() as f32).collect();
    let t = Tensor::from_vec(data, (c, h, w), device)?;
    Ok(if dtype == DType::F32 {
        t
    } else {
        t.to_dtype(dtype)?
    })
}

/// A `(C, H, W)` f32 tensor from an array view (any memory layout).
///
/// # Errors
/// [`Error::Candle`] when the device cannot allocate the tensor.
pub fn array_to_tensor(a: ArrayView3<f32>, device: &Device) -> Result<Tensor> {
    let (c, h, w) = a.dim();
    let data: Vec<f32> = a.iter().copied().collect();
    Ok(Tensor::from_vec(data, (c, h, w), device)?)
}

/// The samples of a `(C, H, W)` or `(1, C, H, W)` tensor of any dtype as an f32 array.
///
/// # Errors
/// [`Error::Shape`] for other ranks or a batch size other than 1; [`Error::Candle`] when the
/// tensor cannot be copied to the host.
pub fn tensor_to_array(t: &Tensor) -> Result<Array3<f32>> {
    let t = match t.rank() {
        3 => t.clone(),
        4 if t.dim(0)? == 1 => t.squeeze(0)?,
        _ => {
            return Err(Error::Shape {
                context: "tensor_to_array".into(),
                expected: "(C, H, W) or (1, C, H, W)".into(),
                actual: format!("{:?}", t.dims()),
            })
        }
    };
    let (c, h, w) = t.dims3()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Array3::from_shape_vec((c, h, w), v).map_err(|e| Error::Shape {
        context: "tensor_to_array".into(),
        expected: format!("({c}, {h}, {w})"),
        actual: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GeoTransform, Georef};

    #[test]
    fn raster_tensor_round_trip() {
        let data = Array3::from_shape_fn((2, 3, 4), |(b, r, c)| (b * 100 + r * 10 + c) as u16);
        let r = Raster::new(data.clone(), Georef::new(GeoTransform::IDENTITY, None));
        let t = to_tensor(&r, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3, 4]);
        let back = tensor_to_array(&t.unsqueeze(0).unwrap()).unwrap();
        assert_eq!(back, data.mapv(f32::from));
        // a non-contiguous view converts in logical order
        let view = back.view().permuted_axes([0, 2, 1]);
        let tv = array_to_tensor(view, &Device::Cpu).unwrap();
        assert_eq!(tv.dims(), &[2, 4, 3]);
        assert_eq!(
            tv.get(1)
                .unwrap()
                .get(3)
                .unwrap()
                .get(2)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            123.0
        );
        assert!(
            tensor_to_array(&Tensor::zeros((2, 1, 3, 4), DType::F32, &Device::Cpu).unwrap())
                .is_err()
        );
    }
}

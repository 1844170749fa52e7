//! [`Raster`]: samples plus georeferencing plus nodata.

use ndarray::{s, Array2, Array3, Axis};

use crate::{DataType, Error, Georef, Result, Sample, Window};

/// Per-band linear scaling from stored to physical values: `physical = stored * scale + offset`
/// (GDAL's band scale/offset, stored in the `GDAL_METADATA` tag).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleOffset {
    /// Multiplier.
    pub scale: f64,
    /// Addend.
    pub offset: f64,
}

/// A georeferenced multi-band raster held in memory.
///
/// # Shapes
/// `data` is `(bands, rows, cols)`: row = y = H, column = x = W.
#[derive(Debug, Clone, PartialEq)]
pub struct Raster<T: Sample> {
    /// Samples, `(bands, rows, cols)`.
    pub data: Array3<T>,
    /// Transform, CRS and PixelIsArea/Point.
    pub georef: Georef,
    /// The nodata value (GDAL's `GDAL_NODATA`), NaN allowed for float rasters.
    pub nodata: Option<f64>,
    /// Per-band scale/offset, empty when the file has none.
    pub scale_offset: Vec<ScaleOffset>,
}

impl<T: Sample> Raster<T> {
    /// A raster from samples and georeferencing, without nodata.
    pub fn new(data: Array3<T>, georef: Georef) -> Self {
        Raster {
            data,
            georef,
            nodata: None,
            scale_offset: Vec::new(),
        }
    }

    /// The same raster with a nodata value.
    pub fn with_nodata(mut self, nodata: Option<f64>) -> Self {
        self.nodata = nodata;
        self
    }

    /// The sample type.
    pub fn dtype(&self) -> DataType {
        T::DTYPE
    }

    /// Number of bands.
    pub fn bands(&self) -> usize {
        self.data.shape()[0]
    }

    /// Number of rows (height).
    pub fn height(&self) -> usize {
        self.data.shape()[1]
    }

    /// Number of columns (width).
    pub fn width(&self) -> usize {
        self.data.shape()[2]
    }

    /// Whether a sample equals the nodata value (NaN nodata matches NaN samples).
    pub fn is_nodata(&self, v: T) -> bool {
        match self.nodata {
            None => false,
            Some(nd) if nd.is_nan() => v.to_f64().is_nan(),
            Some(nd) => v.to_f64() == nd,
        }
    }

    /// Per-band validity, `(bands, rows, cols)`: `true` where the sample is not nodata.
    pub fn valid_mask(&self) -> Array3<bool> {
        self.data.mapv(|v| !self.is_nodata(v))
    }

    /// Per-pixel validity, `(rows, cols)`: `true` where no band holds nodata.
    pub fn pixel_mask(&self) -> Array2<bool> {
        let mut m = Array2::from_elem((self.height(), self.width()), true);
        if self.nodata.is_some() {
            for band in self.data.axis_iter(Axis(0)) {
                m.zip_mut_with(&band, |ok, &v| *ok &= !self.is_nodata(v));
            }
        }
        m
    }

    /// Map coordinates of the centre of pixel (`col`, `row`), `None` without a transform.
    pub fn pixel_center(&self, col: usize, row: usize) -> Option<(f64, f64)> {
        self.georef
            .transform
            .map(|t| t.pixel_to_map(col as f64 + 0.5, row as f64 + 0.5))
    }

    /// A copy of a window of this raster, georeferenced to its own origin.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the window reaches outside the raster.
    pub fn window(&self, w: &Window) -> Result<Raster<T>> {
        w.check_inside(self.width(), self.height())?;
        Ok(Raster {
            data: self
                .data
                .slice(s![.., w.row_off..w.row_end(), w.col_off..w.col_end()])
                .to_owned(),
            georef: self.georef.for_window(w),
            nodata: self.nodata,
            scale_offset: self.scale_offset.clone(),
        })
    }

    /// Converts every sample to another type (rounding and saturating into integer types).
    pub fn to_dtype<U: Sample>(&self) -> Raster<U> {
        Raster {
            data: self.data.mapv(|v| U::from_f64(v.to_f64())),
            georef: self.georef.clone(),
            nodata: self.nodata,
            scale_offset: self.scale_offset.clone(),
        }
    }

    /// SHA-256 of the samples as little-endian bytes, band-major then row-major: the checksum
    /// convention of `canopy info --checksum` and of the conformance manifest.
    pub fn sha256(&self) -> [u8; 32] {
        crate::checksum::sha256_le(&self.data)
    }

    /// Checks that `data` has `bands` bands of `height x width`.
    pub fn check_shape(&self, bands: usize, height: usize, width: usize) -> Result<()> {
        let s = self.data.shape();
        if s != [bands, height, width] {
            return Err(Error::Shape {
                context: "raster".into(),
                expected: format!("({bands}, {height}, {width})"),
                actual: format!("{s:?}"),
            });
        }
        Ok(())
    }
}

//! Image time series from GeoTIFFs: one file per date, or one file holding bands x dates.
//!
//! # Layouts
//! * [`read_stack`]: one GeoTIFF per date, each with the same `C` bands, size and transform;
//!   the caller gives each file's acquisition date (files are sorted by date).
//! * [`read_stack_single`]: one GeoTIFF with `C x T` bands, in an explicit [`StackOrder`]:
//!   `BandsMajor` stores all dates of band 0 first (file band `k = c * T + t`), `DatesMajor`
//!   all bands of date 0 first (`k = t * C + c`, what `gdal_merge -separate` of per-date
//!   files gives).
//!
//! Samples are read as `f32` (integers converted exactly up to 2^24). A pixel is invalid at
//! a date when any of its bands holds the file's nodata value or is NaN.

use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4, Axis};

use canopy_raster::{GeoTiff, Georef, Raster};

use crate::{Date, Error, PatchSeries, Result};

/// How bands and dates are interleaved in the bands of one GeoTIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackOrder {
    /// File band `c * T + t`: every date of band 0, then every date of band 1, ...
    BandsMajor,
    /// File band `t * C + c`: every band of date 0, then every band of date 1, ...
    DatesMajor,
}

/// An image time series with the georeferencing of the rasters it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterStack {
    /// Values `(T, C, H, W)`, mask `(T, H, W)`, dates, band names.
    pub patch: PatchSeries,
    /// The georeference shared by every date.
    pub georef: Georef,
}

fn read_f32(path: &Path) -> Result<Raster<f32>> {
    Ok(GeoTiff::open(path)?.read_as::<f32>()?)
}

fn invalid_mask(r: &Raster<f32>) -> ndarray::Array2<bool> {
    let mut ok = r.pixel_mask();
    for band in r.data.axis_iter(Axis(0)) {
        ok.zip_mut_with(&band, |o, v| *o &= !v.is_nan());
    }
    ok
}

fn check_names(band_names: &[String], c: usize, what: &Path) -> Result<()> {
    if band_names.len() != c {
        return Err(Error::InvalidArgument {
            op: "read_stack",
            message: format!(
                "{}: {c} bands per date but {} band names given",
                what.display(),
                band_names.len()
            ),
        });
    }
    Ok(())
}

/// Reads one GeoTIFF per date (see the module docs).
///
/// # Shapes
/// `T` files of `(C, H, W)` give `values (T, C, H, W)`, `mask (T, H, W)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for no file, band names not matching `C`, or files that differ
/// in size, band count or transform (naming the file); [`Error::Raster`] for read errors.
pub fn read_stack(files: &[(PathBuf, Date)], band_names: &[String]) -> Result<RasterStack> {
    let mut files = files.to_vec();
    files.sort_by_key(|f| f.1);
    let Some((first_path, _)) = files.first() else {
        return Err(Error::InvalidArgument {
            op: "read_stack",
            message: "no file given".into(),
        });
    };
    let first = read_f32(first_path)?;
    let (c, h, w) = first.data.dim();
    check_names(band_names, c, first_path)?;
    let t = files.len();
    let mut values = Array4::<f32>::zeros((t, c, h, w));
    let mut mask = Array3::from_elem((t, h, w), true);
    let georef = first.georef.clone();
    for (k, (path, _)) in files.iter().enumerate() {
        let r = if k == 0 {
            first.clone()
        } else {
            read_f32(path)?
        };
        if r.data.dim() != (c, h, w) || r.georef.transform != georef.transform {
            return Err(Error::InvalidArgument {
                op: "read_stack",
                message: format!(
                    "{} is {:?} with transform {:?}; {} is {:?} with {:?}: every date must cover \
                     the same grid (warp them first)",
                    path.display(),
                    r.data.dim(),
                    r.georef.transform,
                    first_path.display(),
                    (c, h, w),
                    georef.transform
                ),
            });
        }
        values.index_axis_mut(Axis(0), k).assign(&r.data);
        mask.index_axis_mut(Axis(0), k).assign(&invalid_mask(&r));
    }
    let patch = PatchSeries {
        values,
        dates: Some(files.iter().map(|f| f.1).collect()),
        mask,
        truth: None,
        labels: None,
        band_names: band_names.to_vec(),
        class_names: Vec::new(),
    };
    Ok(RasterStack { patch, georef })
}

/// Reads one GeoTIFF holding `C = band_names.len()` bands for each of `dates`, interleaved as
/// `order` says. `dates` must be chronological.
///
/// # Errors
/// [`Error::InvalidArgument`] when the file does not have `C x T` bands or the dates are not
/// sorted; [`Error::Raster`] for read errors.
pub fn read_stack_single(
    path: impl AsRef<Path>,
    dates: &[Date],
    band_names: &[String],
    order: StackOrder,
) -> Result<RasterStack> {
    let path = path.as_ref();
    if dates.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::InvalidArgument {
            op: "read_stack_single",
            message: "dates must be chronological in the order of the file's bands".into(),
        });
    }
    let r = read_f32(path)?;
    let (n, h, w) = r.data.dim();
    let (t, c) = (dates.len(), band_names.len());
    if n != t * c || n == 0 {
        return Err(Error::InvalidArgument {
            op: "read_stack_single",
            message: format!(
                "{} has {n} bands, expected {c} bands x {t} dates = {}",
                path.display(),
                c * t
            ),
        });
    }
    let mut values = Array4::<f32>::zeros((t, c, h, w));
    let mut mask = Array3::from_elem((t, h, w), true);
    for ti in 0..t {
        for ci in 0..c {
            let k = match order {
                StackOrder::BandsMajor => ci * t + ti,
                StackOrder::DatesMajor => ti * c + ci,
            };
            let band = r.data.index_axis(Axis(0), k);
            values
                .index_axis_mut(Axis(0), ti)
                .index_axis_mut(Axis(0), ci)
                .assign(&band);
            let mut m = mask.index_axis_mut(Axis(0), ti);
            m.zip_mut_with(&band, |o, &v| *o &= !(v.is_nan() || r.is_nodata(v)));
        }
    }
    let patch = PatchSeries {
        values,
        dates: Some(dates.to_vec()),
        mask,
        truth: None,
        labels: None,
        band_names: band_names.to_vec(),
        class_names: Vec::new(),
    };
    Ok(RasterStack {
        patch,
        georef: r.georef,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_raster::{write_geotiff, GeoTransform, WriteOptions};

    pub(crate) fn write(path: &Path, data: Array3<f32>, nodata: Option<f64>) -> anyhow::Result<()> {
        let gt = GeoTransform::north_up(500_000.0, 5_000_000.0, 10.0, 10.0);
        let r = Raster::new(data, Georef::new(gt, Some(32633))).with_nodata(nodata);
        write_geotiff(path, &r, &WriteOptions::default())?;
        Ok(())
    }

    #[test]
    fn per_date_files_and_single_file_agree() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let names = vec!["B04".to_string(), "B08".to_string()];
        let dates = [
            Date::new(2020, 5, 1)?,
            Date::new(2020, 5, 11)?,
            Date::new(2020, 5, 21)?,
        ];
        let val = |t: usize, c: usize, r: usize, x: usize| (1000 * t + 100 * c + 10 * r + x) as f32;
        let mut files = Vec::new();
        for (t, d) in dates.iter().enumerate() {
            let mut a = Array3::from_shape_fn((2, 3, 4), |(c, r, x)| val(t, c, r, x));
            if t == 1 {
                a[(1, 2, 3)] = -9999.0;
            }
            let p = dir.path().join(format!("{d}.tif"));
            write(&p, a, Some(-9999.0))?;
            files.push((p, *d));
        }
        files.reverse(); // order of the list does not matter
        let s = read_stack(&files, &names)?;
        assert_eq!(s.patch.values.dim(), (3, 2, 3, 4));
        assert_eq!(s.patch.values[(2, 1, 1, 2)], val(2, 1, 1, 2));
        assert!(!s.patch.mask[(1, 2, 3)]);
        assert_eq!(s.patch.mask.iter().filter(|&&m| !m).count(), 1);
        assert_eq!(s.georef.crs.epsg, Some(32633));

        for order in [StackOrder::BandsMajor, StackOrder::DatesMajor] {
            let all = Array3::from_shape_fn((6, 3, 4), |(k, r, x)| {
                let (t, c) = match order {
                    StackOrder::BandsMajor => (k % 3, k / 3),
                    StackOrder::DatesMajor => (k / 2, k % 2),
                };
                val(t, c, r, x)
            });
            let p = dir.path().join("all.tif");
            write(&p, all, None)?;
            let one = read_stack_single(&p, &dates, &names, order)?;
            for ((t, c, r, x), v) in one.patch.values.indexed_iter() {
                assert_eq!(*v, val(t, c, r, x), "{order:?}");
            }
            assert!(read_stack_single(&p, &dates[..2], &names, order).is_err());
        }
        // A file of another size is rejected.
        let p = dir.path().join("small.tif");
        write(&p, Array3::zeros((2, 2, 2)), None)?;
        files.push((p, Date::new(2020, 6, 1)?));
        assert!(read_stack(&files, &names).is_err());
        Ok(())
    }
}

//! Parcel aggregation: per-date statistics of the pixels inside field polygons, the way
//! parcel-level datasets such as BreizhCrops are built from Sentinel-2 rasters.
//!
//! A pixel belongs to a parcel when its centre is inside the polygon (holes excluded), the
//! rule of GDAL's `gdal_rasterize` and of canopy-raster's [`BurnRule::PixelCenter`]. For each
//! date, the valid pixels (stack mask `true`, finite values) give the mean and the population
//! standard deviation (divide by `n`) of every band. A date with no valid pixel in the parcel
//! is marked invalid with values 0; a parcel that holds no pixel centre at all gives a series
//! that is invalid at every date (filter those with [`crate::transform::CloudFilter`] or by
//! [`crate::Series::mask`]).
//!
//! # References
//! Rußwurm, M., Pelletier, C., Zollner, M., Lefèvre, S., Körner, M. (2020). BreizhCrops: a
//! time series dataset for crop type mapping. ISPRS Archives XLIII-B2-2020
//! (<https://github.com/dl4sits/BreizhCrops>): mean reflectances of the pixels of each parcel.

use geo::BoundingRect;
use geo_types::MultiPolygon;
use ndarray::Array2;

use canopy_raster::{rasterize_mask, BurnRule, Coords, Window};

use super::stack::RasterStack;
use crate::{Error, Result, Series, SeriesDataset};

/// A field polygon in the raster's CRS, with an id and an optional class index.
#[derive(Debug, Clone, PartialEq)]
pub struct Parcel {
    /// Identifier (becomes [`Series::id`]).
    pub id: String,
    /// The geometry, in the map coordinates of the raster stack.
    pub geometry: MultiPolygon<f64>,
    /// Class index `0..K`, when labelled.
    pub label: Option<u32>,
}

/// Which statistics [`aggregate_parcels`] computes per band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// Mean only: `C` output bands named like the input.
    Mean,
    /// Mean then standard deviation: `2C` output bands, `NAME_mean` then `NAME_std`.
    #[default]
    MeanStd,
}

/// Aggregates `stack` over every parcel (see the module docs).
///
/// # Shapes
/// A `(T, C, H, W)` stack gives one `(T, C)` ([`Aggregate::Mean`]) or `(T, 2C)`
/// ([`Aggregate::MeanStd`]) series per parcel, in the order of `parcels`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the stack has no geotransform; [`Error::Raster`] when a
/// polygon has non-finite or absurdly distant coordinates (wrong CRS).
pub fn aggregate_parcels(
    stack: &RasterStack,
    parcels: &[Parcel],
    how: Aggregate,
    class_names: Vec<String>,
) -> Result<SeriesDataset> {
    let gt = stack
        .georef
        .transform
        .ok_or_else(|| Error::InvalidArgument {
            op: "aggregate_parcels",
            message: "the raster stack has no geotransform, so map polygons cannot be placed; \
                  read georeferenced GeoTIFFs"
                .into(),
        })?;
    let inv = gt.inverse()?;
    let p = &stack.patch;
    p.check()?;
    let (t, c, h, w) = p.values.dim();
    let mut samples = Vec::with_capacity(parcels.len());
    for parcel in parcels {
        // Pixel window of the parcel's bounding box (all four corners: rotated grids too).
        let window = parcel.geometry.bounding_rect().and_then(|r| {
            let corners = [
                (r.min().x, r.min().y),
                (r.min().x, r.max().y),
                (r.max().x, r.min().y),
                (r.max().x, r.max().y),
            ]
            .map(|(x, y)| inv.pixel_to_map(x, y));
            let fold = |f: fn(f64, f64) -> f64, init: f64, sel: fn(&(f64, f64)) -> f64| {
                corners.iter().map(sel).fold(init, f)
            };
            let c0 = fold(f64::min, f64::INFINITY, |p| p.0).floor().max(0.0);
            let c1 = fold(f64::max, f64::NEG_INFINITY, |p| p.0)
                .ceil()
                .min(w as f64);
            let r0 = fold(f64::min, f64::INFINITY, |p| p.1).floor().max(0.0);
            let r1 = fold(f64::max, f64::NEG_INFINITY, |p| p.1)
                .ceil()
                .min(h as f64);
            (c1 > c0 && r1 > r0 && c0.is_finite() && r0.is_finite()).then_some(Window {
                col_off: c0 as usize,
                row_off: r0 as usize,
                width: (c1 - c0) as usize,
                height: (r1 - r0) as usize,
            })
        });
        let inside: Vec<(usize, usize)> = match window {
            None => Vec::new(),
            Some(win) => {
                let m: Array2<bool> = rasterize_mask(
                    [&parcel.geometry],
                    win.width,
                    win.height,
                    Coords::Map(gt.for_window(&win)),
                    BurnRule::PixelCenter,
                )?;
                m.indexed_iter()
                    .filter(|(_, b)| **b)
                    .map(|((r, cc), _)| (r + win.row_off, cc + win.col_off))
                    .collect()
            }
        };
        let out_c = match how {
            Aggregate::Mean => c,
            Aggregate::MeanStd => 2 * c,
        };
        let mut values = Array2::<f32>::zeros((t, out_c));
        let mut mask = vec![false; t];
        for (ti, ok) in mask.iter_mut().enumerate() {
            let valid: Vec<(usize, usize)> = inside
                .iter()
                .copied()
                .filter(|&(r, x)| {
                    p.mask[(ti, r, x)] && (0..c).all(|b| p.values[(ti, b, r, x)].is_finite())
                })
                .collect();
            if valid.is_empty() {
                continue;
            }
            *ok = true;
            let n = valid.len() as f64;
            for b in 0..c {
                let (mut s, mut sq) = (0f64, 0f64);
                for &(r, x) in &valid {
                    let v = f64::from(p.values[(ti, b, r, x)]);
                    s += v;
                    sq += v * v;
                }
                let mean = s / n;
                values[(ti, b)] = mean as f32;
                if how == Aggregate::MeanStd {
                    values[(ti, c + b)] = (sq / n - mean * mean).max(0.0).sqrt() as f32;
                }
            }
        }
        samples.push(Series {
            values,
            dates: p.dates.clone(),
            mask,
            padding: 0,
            truth: None,
            label: parcel.label,
            id: Some(parcel.id.clone()),
        });
    }
    let band_names = match how {
        Aggregate::Mean => p.band_names.clone(),
        Aggregate::MeanStd => p
            .band_names
            .iter()
            .map(|n| format!("{n}_mean"))
            .chain(p.band_names.iter().map(|n| format!("{n}_std")))
            .collect(),
    };
    Ok(SeriesDataset {
        samples,
        class_names,
        band_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Date, PatchSeries};
    use canopy_raster::{GeoTransform, Georef};
    use geo_types::{polygon, LineString, Polygon};
    use ndarray::{Array3, Array4};

    fn stack() -> anyhow::Result<RasterStack> {
        // 2 dates, 1 band, 6 x 8 pixels of 10 m; value = 100 * t + 10 * row + col.
        let values =
            Array4::from_shape_fn((2, 1, 6, 8), |(t, _, r, c)| (100 * t + 10 * r + c) as f32);
        let mut mask = Array3::from_elem((2, 6, 8), true);
        mask[(1, 1, 1)] = false; // a cloudy pixel on date 1
        let patch = PatchSeries {
            values,
            dates: Some(vec![Date::new(2019, 4, 1)?, Date::new(2019, 4, 6)?]),
            mask,
            truth: None,
            labels: None,
            band_names: vec!["B08".into()],
            class_names: vec![],
        };
        let gt = GeoTransform::north_up(1000.0, 2000.0, 10.0, 10.0);
        Ok(RasterStack {
            patch,
            georef: Georef::new(gt, Some(32630)),
        })
    }

    #[test]
    fn mean_and_std_over_pixel_centres() -> anyhow::Result<()> {
        let st = stack()?;
        // Rows 1..3, cols 1..4 (pixel corners), x = 1010..1040, y = 1990..1970.
        let rect = polygon![(x: 1010.0, y: 1990.0), (x: 1040.0, y: 1990.0), (x: 1040.0, y: 1970.0), (x: 1010.0, y: 1970.0)];
        // A sliver that holds no pixel centre.
        let sliver = polygon![(x: 1061.0, y: 1999.0), (x: 1064.0, y: 1999.0), (x: 1064.0, y: 1996.0), (x: 1061.0, y: 1996.0)];
        // Square with a one-pixel hole at row 3, col 6.
        let holed = Polygon::new(
            LineString::from(vec![
                (1050.0, 1980.0),
                (1080.0, 1980.0),
                (1080.0, 1950.0),
                (1050.0, 1950.0),
                (1050.0, 1980.0),
            ]),
            vec![LineString::from(vec![
                (1060.0, 1970.0),
                (1070.0, 1970.0),
                (1070.0, 1960.0),
                (1060.0, 1960.0),
                (1060.0, 1970.0),
            ])],
        );
        let parcels = vec![
            Parcel {
                id: "a".into(),
                geometry: MultiPolygon::new(vec![rect]),
                label: Some(1),
            },
            Parcel {
                id: "b".into(),
                geometry: MultiPolygon::new(vec![sliver]),
                label: None,
            },
            Parcel {
                id: "c".into(),
                geometry: MultiPolygon::new(vec![holed]),
                label: Some(0),
            },
        ];
        let ds = aggregate_parcels(
            &st,
            &parcels,
            Aggregate::MeanStd,
            vec!["x".into(), "y".into()],
        )?;
        assert_eq!(ds.band_names, vec!["B08_mean", "B08_std"]);
        let a = &ds.samples[0];
        // Date 0: pixels rows {1,2} x cols {1,2,3}: values 11,12,13,21,22,23.
        assert!((a.values[(0, 0)] - 17.0).abs() < 1e-5);
        let expect_std = {
            let v = [11.0f64, 12.0, 13.0, 21.0, 22.0, 23.0];
            let m = v.iter().sum::<f64>() / 6.0;
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 6.0).sqrt()
        };
        assert!((f64::from(a.values[(0, 1)]) - expect_std).abs() < 1e-4);
        // Date 1: pixel (1, 1) is cloudy: 112 is left out.
        let m1 = (112.0 + 113.0 + 121.0 + 122.0 + 123.0) / 5.0;
        assert!(
            (f64::from(a.values[(1, 0)]) - m1).abs() < 1e-4,
            "{}",
            a.values[(1, 0)]
        );
        assert_eq!(a.mask, vec![true, true]);
        assert_eq!(a.label, Some(1));
        assert_eq!(ds.samples[1].mask, vec![false, false]);
        // Holed square: rows 2..5 x cols 5..8 minus (3, 6): 8 pixels.
        let c = &ds.samples[2];
        let vals: Vec<f64> = (2..5)
            .flat_map(|r| (5..8).map(move |x| (r, x)))
            .filter(|&p| p != (3, 6))
            .map(|(r, x)| (10 * r + x) as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert!((f64::from(c.values[(0, 0)]) - mean).abs() < 1e-4);
        let only_mean = aggregate_parcels(&st, &parcels, Aggregate::Mean, vec![])?;
        assert_eq!(only_mean.samples[0].values.dim(), (2, 1));
        Ok(())
    }
}

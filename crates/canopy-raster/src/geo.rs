//! Georeferencing: the affine [`GeoTransform`], the coordinate reference system, and how both
//! map to and from GeoTIFF tags with GDAL's conventions.
//!
//! # PixelIsArea and PixelIsPoint
//! A GeoTIFF tags its tie point either to the corner of a pixel (`PixelIsArea`, the default)
//! or to its centre (`PixelIsPoint`). Like GDAL (with its default `GTIFF_POINT_GEO_IGNORE=FALSE`),
//! the [`GeoTransform`] here always refers to pixel *corners*: a PixelIsPoint file's tie point
//! is moved back by half a pixel when read and forward again when written, so the transform of
//! every file equals what `gdalinfo` / rasterio print.

use crate::geokeys::{GeoKeyDirectory, GT_RASTER_TYPE};
use crate::{Error, Result, Window};

/// An affine map from pixel (column, row) to map (x, y), in GDAL order:
/// `x = t[0] + col * t[1] + row * t[2]`, `y = t[3] + col * t[4] + row * t[5]`.
///
/// `(col, row) = (0, 0)` is the outer corner of the top-left pixel; `(0.5, 0.5)` its centre.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoTransform(pub [f64; 6]);

impl Default for GeoTransform {
    fn default() -> Self {
        GeoTransform::IDENTITY
    }
}

impl GeoTransform {
    /// Pixel coordinates are map coordinates (GDAL's default for ungeoreferenced rasters).
    pub const IDENTITY: GeoTransform = GeoTransform([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]);

    /// A north-up transform: top-left corner (`x0`, `y0`), pixel size `res_x` by `res_y`
    /// (both positive; rows go south).
    pub fn north_up(x0: f64, y0: f64, res_x: f64, res_y: f64) -> Self {
        GeoTransform([x0, res_x, 0.0, y0, 0.0, -res_y])
    }

    /// The six coefficients in GDAL order.
    pub fn as_array(&self) -> &[f64; 6] {
        &self.0
    }

    /// Map coordinates of a pixel position (fractional; add 0.5 for a pixel centre).
    pub fn pixel_to_map(&self, col: f64, row: f64) -> (f64, f64) {
        let t = &self.0;
        (
            t[0] + col * t[1] + row * t[2],
            t[3] + col * t[4] + row * t[5],
        )
    }

    /// Pixel position (fractional column, row) of a map coordinate.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the transform is singular (zero pixel size).
    pub fn map_to_pixel(&self, x: f64, y: f64) -> Result<(f64, f64)> {
        let inv = self.inverse()?;
        Ok(inv.pixel_to_map(x, y))
    }

    /// The inverse transform (map -> pixel).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the transform is singular.
    pub fn inverse(&self) -> Result<GeoTransform> {
        let t = &self.0;
        let det = t[1] * t[5] - t[2] * t[4];
        if det == 0.0 || !det.is_finite() {
            return Err(Error::invalid(format!(
                "geotransform {t:?} is singular and cannot map coordinates to pixels"
            )));
        }
        let a = t[5] / det;
        let b = -t[2] / det;
        let d = -t[4] / det;
        let e = t[1] / det;
        Ok(GeoTransform([
            -(a * t[0] + b * t[3]),
            a,
            b,
            -(d * t[0] + e * t[3]),
            d,
            e,
        ]))
    }

    /// The transform of a window of this raster (same pixel size, moved origin).
    pub fn for_window(&self, w: &Window) -> GeoTransform {
        let (x, y) = self.pixel_to_map(w.col_off as f64, w.row_off as f64);
        let t = &self.0;
        GeoTransform([x, t[1], t[2], y, t[4], t[5]])
    }

    /// The transform after resampling by `fx` columns and `fy` rows per output pixel
    /// (overviews: `fx = full width / overview width`).
    pub fn scaled(&self, fx: f64, fy: f64) -> GeoTransform {
        let t = &self.0;
        GeoTransform([t[0], t[1] * fx, t[2] * fy, t[3], t[4] * fx, t[5] * fy])
    }

    /// Whether the transform has no rotation or shear terms.
    pub fn is_north_up(&self) -> bool {
        self.0[2] == 0.0 && self.0[4] == 0.0
    }

    /// Map bounds `(min_x, min_y, max_x, max_y)` of a `width x height` raster.
    pub fn bounds(&self, width: usize, height: usize) -> (f64, f64, f64, f64) {
        let (w, h) = (width as f64, height as f64);
        let pts = [
            self.pixel_to_map(0.0, 0.0),
            self.pixel_to_map(w, 0.0),
            self.pixel_to_map(0.0, h),
            self.pixel_to_map(w, h),
        ];
        let mut b = (
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        );
        for (x, y) in pts {
            b.0 = b.0.min(x);
            b.1 = b.1.min(y);
            b.2 = b.2.max(x);
            b.3 = b.3.max(y);
        }
        b
    }
}

/// Whether the file's georeferencing refers to pixel corners or centres (GDAL `AREA_OR_POINT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AreaOrPoint {
    /// Tie points refer to the pixel's outer corner (`RasterPixelIsArea`, the default).
    #[default]
    Area,
    /// Tie points refer to the pixel's centre (`RasterPixelIsPoint`).
    Point,
}

/// A ground control point: a pixel position and its map coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcp {
    /// Column (corner convention, as GDAL reports it).
    pub col: f64,
    /// Row.
    pub row: f64,
    /// Map x.
    pub x: f64,
    /// Map y.
    pub y: f64,
    /// Map z.
    pub z: f64,
}

/// The coordinate reference system of a raster: an EPSG code and/or the full GeoKey directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Crs {
    /// EPSG code (`None` when unknown or user-defined).
    pub epsg: Option<u32>,
    /// Every GeoKey read from the file; written back unchanged (except the raster type key).
    pub geokeys: Option<GeoKeyDirectory>,
}

impl Crs {
    /// A CRS given by its EPSG code.
    pub fn from_epsg(epsg: u32) -> Self {
        Crs {
            epsg: Some(epsg),
            geokeys: None,
        }
    }

    /// Whether nothing is known about the CRS.
    pub fn is_unknown(&self) -> bool {
        self.epsg.is_none() && self.geokeys.is_none()
    }
}

/// Everything that places a raster on the Earth.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Georef {
    /// Pixel -> map transform (corner convention); `None` when the file has none.
    pub transform: Option<GeoTransform>,
    /// The coordinate reference system.
    pub crs: Crs,
    /// Whether the file declared PixelIsArea or PixelIsPoint (kept for writing).
    pub area_or_point: AreaOrPoint,
    /// Ground control points, when the file has several tie points and no pixel scale.
    pub gcps: Vec<Gcp>,
}

/// The raw georeferencing tags of a GeoTIFF.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeoTags {
    /// `ModelPixelScaleTag` (33550).
    pub pixel_scale: Option<Vec<f64>>,
    /// `ModelTiepointTag` (33922), 6 values per tie point.
    pub tiepoints: Option<Vec<f64>>,
    /// `ModelTransformationTag` (34264), 16 values, row-major 4x4.
    pub transformation: Option<Vec<f64>>,
    /// The GeoKey directory.
    pub geokeys: Option<GeoKeyDirectory>,
}

/// The EPSG codes treated as geographic when a directory is built from a bare code:
/// the 4000-4999 block of the EPSG registry (WGS 84 is 4326).
fn epsg_is_geographic(epsg: u32) -> bool {
    (4000..5000).contains(&epsg)
}

impl Georef {
    /// A north-up georeference with an EPSG CRS.
    pub fn new(transform: GeoTransform, epsg: Option<u32>) -> Self {
        Georef {
            transform: Some(transform),
            crs: Crs {
                epsg,
                geokeys: None,
            },
            area_or_point: AreaOrPoint::Area,
            gcps: Vec::new(),
        }
    }

    /// The georeference of a window of this raster.
    pub fn for_window(&self, w: &Window) -> Georef {
        let mut g = self.clone();
        g.transform = self.transform.map(|t| t.for_window(w));
        g.gcps = self
            .gcps
            .iter()
            .map(|p| Gcp {
                col: p.col - w.col_off as f64,
                row: p.row - w.row_off as f64,
                ..*p
            })
            .collect();
        g
    }

    /// Interprets GeoTIFF tags the way GDAL does (see the module docs for PixelIsPoint).
    pub fn from_tags(tags: &GeoTags) -> Georef {
        let area_or_point = match tags.geokeys.as_ref().and_then(|d| d.short(GT_RASTER_TYPE)) {
            Some(2) => AreaOrPoint::Point,
            _ => AreaOrPoint::Area,
        };
        let point = area_or_point == AreaOrPoint::Point;
        let crs = Crs {
            epsg: tags.geokeys.as_ref().and_then(|d| d.epsg()),
            geokeys: tags.geokeys.clone(),
        };
        let mut transform = None;
        let mut gcps = Vec::new();
        if let Some(m) = tags.transformation.as_ref().filter(|m| m.len() >= 16) {
            let mut t = [m[3], m[0], m[1], m[7], m[4], m[5]];
            if point {
                t[0] -= 0.5 * t[1] + 0.5 * t[2];
                t[3] -= 0.5 * t[4] + 0.5 * t[5];
            }
            transform = Some(GeoTransform(t));
        } else if let Some(tp) = tags.tiepoints.as_ref().filter(|t| t.len() >= 6) {
            match tags.pixel_scale.as_ref().filter(|s| s.len() >= 2) {
                Some(s) if tp.len() < 12 => {
                    let (sx, sy) = (s[0], -s[1]);
                    let mut t = [tp[3] - tp[0] * sx, sx, 0.0, tp[4] - tp[1] * sy, 0.0, sy];
                    if point {
                        t[0] -= 0.5 * sx;
                        t[3] -= 0.5 * sy;
                    }
                    transform = Some(GeoTransform(t));
                }
                _ => {
                    let shift = if point { 0.5 } else { 0.0 };
                    gcps = tp
                        .chunks_exact(6)
                        .map(|c| Gcp {
                            col: c[0] + shift,
                            row: c[1] + shift,
                            x: c[3],
                            y: c[4],
                            z: c[5],
                        })
                        .collect();
                }
            }
        }
        Georef {
            transform,
            crs,
            area_or_point,
            gcps,
        }
    }

    /// The GeoTIFF tags that describe this georeference (inverse of [`Georef::from_tags`]):
    /// pixel scale + tie point for north-up transforms, `ModelTransformation` otherwise,
    /// tie points for GCPs; the GeoKey directory is the one read (with the raster type key
    /// updated), or one built from the EPSG code.
    pub fn to_tags(&self) -> GeoTags {
        let point = self.area_or_point == AreaOrPoint::Point;
        let mut tags = GeoTags::default();
        if let Some(GeoTransform(t)) = self.transform {
            let mut t = t;
            if point {
                t[0] += 0.5 * t[1] + 0.5 * t[2];
                t[3] += 0.5 * t[4] + 0.5 * t[5];
            }
            if t[2] == 0.0 && t[4] == 0.0 {
                tags.pixel_scale = Some(vec![t[1], -t[5], 0.0]);
                tags.tiepoints = Some(vec![0.0, 0.0, 0.0, t[0], t[3], 0.0]);
            } else {
                tags.transformation = Some(vec![
                    t[1], t[2], 0.0, t[0], t[4], t[5], 0.0, t[3], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    0.0, 1.0,
                ]);
            }
        } else if !self.gcps.is_empty() {
            let shift = if point { 0.5 } else { 0.0 };
            tags.tiepoints = Some(
                self.gcps
                    .iter()
                    .flat_map(|g| [g.col - shift, g.row - shift, 0.0, g.x, g.y, g.z])
                    .collect(),
            );
        }
        let mut dir = match (&self.crs.geokeys, self.crs.epsg) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(code)) => u16::try_from(code)
                .ok()
                .map(|c| GeoKeyDirectory::from_epsg(c, epsg_is_geographic(code))),
            (None, None) => None,
        };
        if dir.is_none() && (self.transform.is_some() || !self.gcps.is_empty()) && point {
            dir = Some(GeoKeyDirectory {
                version: [1, 1, 0],
                keys: Vec::new(),
            });
        }
        if let Some(d) = dir.as_mut() {
            d.set_short(GT_RASTER_TYPE, if point { 2 } else { 1 });
        }
        tags.geokeys = dir;
        tags
    }
}

/// Half the circumference of the Web-Mercator (EPSG:3857) world, in metres.
pub const WEB_MERCATOR_HALF_WORLD: f64 = 20_037_508.342_789_244;

/// The georeference (EPSG:3857, PixelIsArea) of an XYZ ("slippy map") tile `x`, `y` at zoom
/// `z` rendered at `tile_size` pixels (256 for the usual PNG tiles).
///
/// # Errors
/// [`Error::InvalidArgument`] when `x` or `y` is outside `0..2^z`, `z > 30` or `tile_size == 0`.
pub fn xyz_tile_georef(x: u32, y: u32, z: u32, tile_size: usize) -> Result<Georef> {
    if z > 30 || tile_size == 0 {
        return Err(Error::invalid(format!(
            "XYZ tile zoom {z} / size {tile_size}: zoom must be <= 30 and size > 0"
        )));
    }
    let n = 1u64 << z;
    if u64::from(x) >= n || u64::from(y) >= n {
        return Err(Error::invalid(format!(
            "XYZ tile x={x}, y={y} outside 0..{n} at zoom {z}"
        )));
    }
    let span = 2.0 * WEB_MERCATOR_HALF_WORLD / n as f64;
    let res = span / tile_size as f64;
    let x0 = -WEB_MERCATOR_HALF_WORLD + f64::from(x) * span;
    let y0 = WEB_MERCATOR_HALF_WORLD - f64::from(y) * span;
    Ok(Georef::new(
        GeoTransform::north_up(x0, y0, res, res),
        Some(3857),
    ))
}

/// Parses `x`, `y`, `z` from an XYZ tile file name such as `OAM-1234-5678-19.png`
/// (any prefix, the last three `-`-separated integers before the extension).
pub fn parse_xyz_name(name: &str) -> Option<(u32, u32, u32)> {
    let stem = name.rsplit(['/', '\\']).next()?;
    let stem = stem.split('.').next()?;
    let mut parts = stem.rsplit('-');
    let z = parts.next()?.parse().ok()?;
    let y = parts.next()?.parse().ok()?;
    let x = parts.next()?.parse().ok()?;
    Some((x, y, z))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn inverse_round_trips_a_rotated_transform() {
        let t = GeoTransform([1000.0, 2.0, 0.5, 5000.0, 0.25, -3.0]);
        let (x, y) = t.pixel_to_map(10.5, 7.25);
        let (c, r) = t.map_to_pixel(x, y).unwrap();
        assert!(close(c, 10.5) && close(r, 7.25), "{c} {r}");
        assert!(GeoTransform([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
            .inverse()
            .is_err());
    }

    #[test]
    fn point_tags_shift_by_half_a_pixel_and_back() {
        let mut g = Georef::new(
            GeoTransform::north_up(100.0, 200.0, 10.0, 10.0),
            Some(32618),
        );
        g.area_or_point = AreaOrPoint::Point;
        let tags = g.to_tags();
        assert_eq!(tags.tiepoints.as_ref().unwrap()[3], 105.0);
        assert_eq!(tags.tiepoints.as_ref().unwrap()[4], 195.0);
        let back = Georef::from_tags(&tags);
        assert_eq!(back.transform, g.transform);
        assert_eq!(back.area_or_point, AreaOrPoint::Point);
        assert_eq!(back.crs.epsg, Some(32618));
    }

    #[test]
    fn rotated_transform_uses_model_transformation() {
        let g = Georef::new(GeoTransform([1.0, 2.0, 0.5, 3.0, 0.25, -4.0]), Some(4326));
        let tags = g.to_tags();
        assert!(tags.pixel_scale.is_none() && tags.transformation.is_some());
        assert_eq!(Georef::from_tags(&tags).transform, g.transform);
        assert_eq!(
            tags.geokeys.unwrap().short(crate::geokeys::GEOGRAPHIC_TYPE),
            Some(4326)
        );
    }

    #[test]
    fn xyz_tiles_tile_the_world() {
        let g = xyz_tile_georef(0, 0, 0, 256).unwrap();
        let t = g.transform.unwrap();
        assert!(close(t.0[0], -WEB_MERCATOR_HALF_WORLD));
        assert!(close(
            t.pixel_to_map(256.0, 256.0).1,
            -WEB_MERCATOR_HALF_WORLD
        ));
        let a = xyz_tile_georef(5, 9, 4, 256).unwrap().transform.unwrap();
        let b = xyz_tile_georef(6, 9, 4, 256).unwrap().transform.unwrap();
        assert!(close(a.pixel_to_map(256.0, 0.0).0, b.0[0]));
        assert!(xyz_tile_georef(16, 0, 4, 256).is_err());
        assert_eq!(
            parse_xyz_name("tiles/OAM-1234-5678-19.png"),
            Some((1234, 5678, 19))
        );
        assert_eq!(parse_xyz_name("foo.png"), None);
    }
}

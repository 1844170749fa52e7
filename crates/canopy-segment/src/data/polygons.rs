//! Label polygons: reading, checking and repairing them, bringing them into a raster's CRS,
//! and burning them into masks.

use std::path::Path;

use canopy_raster::geo::WEB_MERCATOR_HALF_WORLD;
use canopy_raster::rasterize::{rasterize, BurnRule, Coords};
use canopy_raster::GeoTransform;
use canopy_vector::geojson_io::Reprojection;
use canopy_vector::read_geojson;
use geo::{BoundingRect, MakeValid, MapCoords, Validation};
use geo_types::{Geometry, MultiPolygon, Polygon, Rect};
use ndarray::Array2;

use crate::Result;

/// What happened to the polygons of a label file while they were prepared.
///
/// Invalid polygons (self-intersections, spikes) are repaired with `geo`'s `MakeValid`
/// (Ledoux et al.'s triangulation-based repair, even-odd rule, the rule the rasteriser uses
/// too); a feature that cannot be repaired, has no area or is not a polygon is skipped. Both
/// are counted here, with one message each in `warnings`, instead of failing the whole area.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelReport {
    /// Features read from the label files.
    pub features: usize,
    /// Features kept (burned into masks), repaired ones included.
    pub kept: usize,
    /// Invalid polygons that were repaired.
    pub repaired: usize,
    /// Features left out (no area, unrepairable, outside the projection's domain).
    pub skipped: usize,
    /// One line per repaired or skipped feature: file, feature index, reason.
    pub warnings: Vec<String>,
}

impl LabelReport {
    fn merge(&mut self, other: LabelReport) {
        self.features += other.features;
        self.kept += other.kept;
        self.repaired += other.repaired;
        self.skipped += other.skipped;
        self.warnings.extend(other.warnings);
    }
}

/// Spherical Web-Mercator (EPSG:3857) metres from WGS 84 longitude / latitude in degrees
/// (the exact formula of the XYZ tiling scheme).
pub fn web_mercator(lon: f64, lat: f64) -> (f64, f64) {
    let r = WEB_MERCATOR_HALF_WORLD / std::f64::consts::PI;
    let y = (std::f64::consts::FRAC_PI_4 + lat.to_radians() / 2.0)
        .tan()
        .ln();
    (r * lon.to_radians(), r * y)
}

/// How the coordinates of a label file reach the raster's CRS.
pub(crate) enum Projection {
    /// Already in the raster's CRS.
    Identity,
    /// lon/lat -> Web Mercator with [`web_mercator`].
    WebMercator,
    /// Any pair of EPSG codes through canopy-vector.
    Epsg(Box<Reprojection>),
}

/// Polygons in one CRS, each with its bounding box and the class it burns.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSet {
    shapes: Vec<(MultiPolygon<f64>, Rect<f64>, u8)>,
    pub(crate) report: LabelReport,
}

impl LabelSet {
    /// Reads GeoJSON files, brings every polygon into the target CRS and repairs it.
    /// `projection` receives the EPSG code of each file and picks the projection.
    pub(crate) fn from_geojson(
        files: &[impl AsRef<Path>],
        class: u8,
        mut projection: impl FnMut(Option<u32>, &Path) -> Result<Projection>,
    ) -> Result<LabelSet> {
        let mut set = LabelSet::default();
        for file in files {
            let file = file.as_ref();
            let gj = read_geojson(file)?;
            let proj = projection(gj.epsg, file)?;
            let geometries = gj.features.into_iter().map(|f| f.geometry);
            set.extend(file, geometries, class, &proj);
        }
        Ok(set)
    }

    /// Adds `geometries` read from `file`.
    pub(crate) fn extend(
        &mut self,
        file: &Path,
        geometries: impl IntoIterator<Item = Geometry<f64>>,
        class: u8,
        projection: &Projection,
    ) {
        let mut report = LabelReport::default();
        for (i, g) in geometries.into_iter().enumerate() {
            report.features += 1;
            let warn = |what: &str| format!("{}: feature {i}: {what}", file.display());
            let projected = match project(g, projection) {
                Ok(g) => g,
                Err(e) => {
                    report.skipped += 1;
                    report.warnings.push(warn(&format!("skipped, {e}")));
                    continue;
                }
            };
            let Some(mp) = areal(projected) else {
                report.skipped += 1;
                report.warnings.push(warn(
                    "skipped, not a polygon (points and lines have no area)",
                ));
                continue;
            };
            let mp = if mp.is_valid() {
                mp
            } else {
                let reason = mp
                    .validation_errors()
                    .first()
                    .map_or_else(String::new, |e| e.to_string());
                match mp.make_valid() {
                    Ok(fixed) if !fixed.0.is_empty() => {
                        report.repaired += 1;
                        report.warnings.push(warn(&format!("repaired ({reason})")));
                        fixed
                    }
                    _ => {
                        report.skipped += 1;
                        report.warnings.push(warn(&format!(
                            "skipped, invalid and unrepairable ({reason})"
                        )));
                        continue;
                    }
                }
            };
            let Some(bbox) = mp.bounding_rect() else {
                report.skipped += 1;
                report.warnings.push(warn("skipped, empty polygon"));
                continue;
            };
            report.kept += 1;
            self.shapes.push((mp, bbox, class));
        }
        self.report.merge(report);
    }

    /// Number of polygons kept.
    pub(crate) fn len(&self) -> usize {
        self.shapes.len()
    }

    /// Burns the polygons touching a `width x height` raster with pixel -> map transform
    /// `transform` (pixel-centre rule) into a mask of 0 and the polygons' classes.
    pub(crate) fn burn(
        &self,
        width: usize,
        height: usize,
        transform: GeoTransform,
    ) -> Result<Array2<u8>> {
        let (x0, y0, x1, y1) = transform.bounds(width, height);
        let hits = self.shapes.iter().filter(|(_, b, _)| {
            b.max().x >= x0 && b.min().x <= x1 && b.max().y >= y0 && b.min().y <= y1
        });
        Ok(rasterize(
            hits.map(|(mp, _, class)| (mp, *class)),
            width,
            height,
            Coords::Map(transform),
            0u8,
            BurnRule::PixelCenter,
        )?)
    }
}

fn project(
    g: Geometry<f64>,
    projection: &Projection,
) -> std::result::Result<Geometry<f64>, String> {
    match projection {
        Projection::Identity => Ok(g),
        Projection::WebMercator => {
            if let Some(r) = g.bounding_rect() {
                if r.min().y.abs() >= 89.9 || r.max().y.abs() >= 89.9 {
                    return Err("latitude beyond ±89.9°, outside Web Mercator".into());
                }
            }
            Ok(g.map_coords(|c| {
                let (x, y) = web_mercator(c.x, c.y);
                geo_types::Coord { x, y }
            }))
        }
        Projection::Epsg(r) => {
            let mut g = g;
            r.transform(&mut g).map_err(|e| e.to_string())?;
            Ok(g)
        }
    }
}

/// The polygons of an areal geometry, `None` for points and lines.
fn areal(g: Geometry<f64>) -> Option<MultiPolygon<f64>> {
    match g {
        Geometry::Polygon(p) => Some(MultiPolygon::new(vec![p])),
        Geometry::MultiPolygon(mp) => Some(mp),
        Geometry::Rect(r) => Some(MultiPolygon::new(vec![r.to_polygon()])),
        Geometry::Triangle(t) => Some(MultiPolygon::new(vec![t.to_polygon()])),
        Geometry::GeometryCollection(gc) => {
            let polys: Vec<Polygon<f64>> =
                gc.0.into_iter()
                    .filter_map(areal)
                    .flat_map(|mp| mp.0)
                    .collect();
            (!polys.is_empty()).then(|| MultiPolygon::new(polys))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo_types::{line_string, polygon, Point};

    #[test]
    fn web_mercator_matches_known_points() {
        let (x, y) = web_mercator(0.0, 0.0);
        assert!(x.abs() < 1e-9 && y.abs() < 1e-9);
        let (x, _) = web_mercator(180.0, 0.0);
        assert!((x - WEB_MERCATOR_HALF_WORLD).abs() < 1e-6);
        // The top edge of the XYZ world is latitude 85.0511287798°.
        let (_, y) = web_mercator(0.0, 85.051_128_779_806_59);
        assert!((y - WEB_MERCATOR_HALF_WORLD).abs() < 1e-3, "{y}");
    }

    #[test]
    fn invalid_polygons_are_repaired_and_lines_skipped_with_counts() {
        let bowtie: Polygon<f64> =
            polygon![(x: 0.0, y: 0.0), (x: 4.0, y: 4.0), (x: 4.0, y: 0.0), (x: 0.0, y: 4.0)];
        let square =
            polygon![(x: 0.0, y: 0.0), (x: 2.0, y: 0.0), (x: 2.0, y: 2.0), (x: 0.0, y: 2.0)];
        let mut set = LabelSet::default();
        set.extend(
            Path::new("labels.geojson"),
            vec![
                Geometry::Polygon(bowtie.clone()),
                Geometry::Polygon(square),
                Geometry::LineString(line_string![(x: 0.0, y: 0.0), (x: 1.0, y: 1.0)]),
                Geometry::Point(Point::new(1.0, 1.0)),
            ],
            1,
            &Projection::Identity,
        );
        let r = &set.report;
        assert_eq!((r.features, r.kept, r.repaired, r.skipped), (4, 2, 1, 2));
        assert_eq!(r.warnings.len(), 3);
        assert!(
            r.warnings[0].contains("labels.geojson: feature 0: repaired"),
            "{:?}",
            r.warnings
        );
        // The repaired bow tie burns the same pixels as the raw one under the even-odd rule
        // (grid offset so that no pixel centre lies on an edge).
        let gt = GeoTransform::north_up(0.0137, 4.0071, 0.1, 0.1);
        let mut only_bowtie = LabelSet::default();
        only_bowtie.extend(
            Path::new("b"),
            vec![Geometry::Polygon(bowtie.clone())],
            1,
            &Projection::Identity,
        );
        let repaired = only_bowtie.burn(40, 40, gt).unwrap();
        let raw = rasterize(
            [(&bowtie, 1u8)],
            40,
            40,
            Coords::Map(gt),
            0,
            BurnRule::PixelCenter,
        )
        .unwrap();
        assert_eq!(repaired, raw);
        assert!(raw.iter().filter(|&&v| v == 1).count() > 600);
    }

    #[test]
    fn burn_skips_far_polygons_and_keeps_classes() {
        let near = polygon![(x: 1.0, y: 1.0), (x: 3.0, y: 1.0), (x: 3.0, y: 3.0), (x: 1.0, y: 3.0)];
        let far = polygon![(x: 100.0, y: 100.0), (x: 101.0, y: 100.0), (x: 101.0, y: 101.0)];
        let mut set = LabelSet::default();
        set.extend(
            Path::new("a"),
            vec![Geometry::Polygon(near)],
            2,
            &Projection::Identity,
        );
        set.extend(
            Path::new("b"),
            vec![Geometry::Polygon(far)],
            1,
            &Projection::Identity,
        );
        let m = set
            .burn(4, 4, GeoTransform::north_up(0.0, 4.0, 1.0, 1.0))
            .unwrap();
        assert_eq!(m.iter().filter(|&&v| v == 2).count(), 4);
        assert_eq!(m.iter().filter(|&&v| v == 1).count(), 0);
        assert_eq!(set.len(), 2);
    }
}

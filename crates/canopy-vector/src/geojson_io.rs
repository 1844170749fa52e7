//! GeoJSON read/write with properties and coordinate reference systems.
//!
//! # Output CRS
//! [`OutputCrs::Wgs84`] writes RFC 7946 GeoJSON: coordinates reprojected to WGS 84
//! longitude/latitude in degrees, no `crs` member, exterior rings counter-clockwise.
//! [`OutputCrs::Native`] keeps the source CRS's coordinates and records the CRS in the
//! (pre-RFC 7946, GDAL-style) member `"crs": {"type": "name", "properties": {"name":
//! "urn:ogc:def:crs:EPSG::<code>"}}`, which GDAL, QGIS and geopandas read.
//!
//! Reprojection uses `proj4rs` with the EPSG → PROJ.4 definitions of `crs-definitions`
//! (codes up to 65535; for anything else pass your own PROJ string to [`Reprojection`]).
//! Datum shifts that need grid files are not applied (as with PROJ without its grids).
//!
//! # Reading
//! A `crs` member naming an EPSG code (`EPSG:n`, `urn:ogc:def:crs:EPSG::n`) is honoured; the
//! OGC CRS84 name and a missing member mean WGS 84 (RFC 7946).
//!
//! # Files
//! Writes are atomic: the document goes to a temporary file in the target directory that is
//! renamed over the destination only when complete, so a crash never leaves half a file.
//!
//! # Example
//! ```
//! use canopy_vector::geojson_io::{read_geojson, write_geojson, OutputCrs, VectorFeature};
//! use geo_types::{polygon, Geometry};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("buildings.geojson");
//! // A 10 x 10 m building in UTM zone 16N (EPSG:32616), near Atlanta.
//! let square = polygon![(x: 741_000.0, y: 3_737_000.0), (x: 741_010.0, y: 3_737_000.0),
//!                       (x: 741_010.0, y: 3_737_010.0), (x: 741_000.0, y: 3_737_010.0)];
//! let mut feature = VectorFeature::new(Geometry::Polygon(square));
//! feature.properties.insert("class".into(), 1.into());
//! write_geojson(&path, &[feature], Some(32616), OutputCrs::Wgs84)?;
//!
//! let back = read_geojson(&path)?;
//! assert_eq!(back.epsg, Some(4326));
//! let Geometry::Polygon(p) = &back.features[0].geometry else { unreachable!() };
//! let lon = p.exterior().0[0].x;
//! assert!((-84.5..-84.3).contains(&lon), "{lon}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use geo::orient::{Direction, Orient};
use geo::MapCoordsInPlace;
use geo_types::{Coord, Geometry};
use proj4rs::Proj;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// EPSG code of WGS 84 longitude/latitude.
pub const WGS84: u32 = 4326;

/// Which coordinates a GeoJSON file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputCrs {
    /// RFC 7946: WGS 84 longitude/latitude in degrees, no `crs` member.
    #[default]
    Wgs84,
    /// The source CRS, named in a `crs` member.
    Native,
}

/// A geometry with its properties (GeoJSON's Feature).
#[derive(Debug, Clone, PartialEq)]
pub struct VectorFeature {
    /// The geometry.
    pub geometry: Geometry<f64>,
    /// The properties (the GeoJSON `properties` object).
    pub properties: Map<String, Value>,
}

impl VectorFeature {
    /// A feature without properties.
    pub fn new(geometry: Geometry<f64>) -> Self {
        VectorFeature {
            geometry,
            properties: Map::new(),
        }
    }
}

/// A GeoJSON file's features and CRS.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoJsonFile {
    /// The features, in file order.
    pub features: Vec<VectorFeature>,
    /// EPSG code of the coordinates (4326 when the file names none, per RFC 7946).
    pub epsg: Option<u32>,
}

/// A coordinate transformation between two CRSs.
pub struct Reprojection {
    from: Proj,
    to: Proj,
}

impl std::fmt::Debug for Reprojection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reprojection")
            .field("from", &self.from.projname())
            .field("to", &self.to.projname())
            .finish()
    }
}

fn proj_for_epsg(epsg: u32) -> Result<Proj> {
    let code = u16::try_from(epsg).map_err(|_| {
        Error::Projection(format!(
            "EPSG:{epsg} is outside the built-in EPSG table (codes up to 65535); give a PROJ \
             string with Reprojection::from_proj_strings"
        ))
    })?;
    Proj::from_epsg_code(code).map_err(|e| {
        Error::Projection(format!(
            "EPSG:{epsg}: {e}; give a PROJ string with Reprojection::from_proj_strings, or write \
             in the native CRS"
        ))
    })
}

impl Reprojection {
    /// From EPSG code `from` to EPSG code `to`.
    ///
    /// # Errors
    /// [`Error::Projection`] when a code is unknown.
    pub fn new(from: u32, to: u32) -> Result<Self> {
        Ok(Reprojection {
            from: proj_for_epsg(from)?,
            to: proj_for_epsg(to)?,
        })
    }

    /// From PROJ.4 definition `from` to `to` (e.g. `+proj=utm +zone=16 +datum=WGS84`).
    ///
    /// # Errors
    /// [`Error::Projection`] when a definition does not parse.
    pub fn from_proj_strings(from: &str, to: &str) -> Result<Self> {
        let parse = |s: &str| {
            Proj::from_proj_string(s).map_err(|e| Error::Projection(format!("{s:?}: {e}")))
        };
        Ok(Reprojection {
            from: parse(from)?,
            to: parse(to)?,
        })
    }

    /// Transforms `geometry` in place. Geographic coordinates are in degrees on both sides.
    /// Rectangles and triangles become polygons (their images are not axis-aligned).
    ///
    /// # Errors
    /// [`Error::Projection`] when a coordinate cannot be transformed (outside the projection's
    /// domain); the geometry should then be discarded.
    pub fn transform(&self, geometry: &mut Geometry<f64>) -> Result<()> {
        normalize_shapes(geometry);
        let (deg_in, deg_out) = (self.from.is_latlong(), self.to.is_latlong());
        let f = |c: Coord<f64>| -> Result<Coord<f64>> {
            let (x, y) = if deg_in {
                (c.x.to_radians(), c.y.to_radians())
            } else {
                (c.x, c.y)
            };
            let mut p = (x, y, 0.0);
            proj4rs::transform::transform(&self.from, &self.to, &mut p).map_err(|e| {
                Error::Projection(format!("cannot transform ({}, {}): {e}", c.x, c.y))
            })?;
            let (x, y) = if deg_out {
                (p.0.to_degrees(), p.1.to_degrees())
            } else {
                (p.0, p.1)
            };
            if !(x.is_finite() && y.is_finite()) {
                return Err(Error::Projection(format!(
                    "({}, {}) has no finite image; is the source CRS right?",
                    c.x, c.y
                )));
            }
            Ok(Coord { x, y })
        };
        map_geometry(geometry, &f)
    }
}

/// `f` applied to every coordinate; geometry collections are walked here rather than through
/// `geo`'s generic recursion (which does not compile for fallible closures on collections).
fn map_geometry(g: &mut Geometry<f64>, f: &dyn Fn(Coord<f64>) -> Result<Coord<f64>>) -> Result<()> {
    match g {
        Geometry::Point(x) => x.try_map_coords_in_place(f),
        Geometry::Line(x) => x.try_map_coords_in_place(f),
        Geometry::LineString(x) => x.try_map_coords_in_place(f),
        Geometry::Polygon(x) => x.try_map_coords_in_place(f),
        Geometry::MultiPoint(x) => x.try_map_coords_in_place(f),
        Geometry::MultiLineString(x) => x.try_map_coords_in_place(f),
        Geometry::MultiPolygon(x) => x.try_map_coords_in_place(f),
        Geometry::Rect(x) => x.try_map_coords_in_place(f),
        Geometry::Triangle(x) => x.try_map_coords_in_place(f),
        Geometry::GeometryCollection(gc) => gc.0.iter_mut().try_for_each(|g| map_geometry(g, f)),
    }
}

/// Rectangles and triangles as polygons, recursively.
fn normalize_shapes(g: &mut Geometry<f64>) {
    match g {
        Geometry::Rect(r) => *g = Geometry::Polygon(r.to_polygon()),
        Geometry::Triangle(t) => *g = Geometry::Polygon(t.to_polygon()),
        Geometry::GeometryCollection(gc) => gc.0.iter_mut().for_each(normalize_shapes),
        _ => {}
    }
}

/// Rings of polygons oriented as RFC 7946 asks (exteriors counter-clockwise, holes clockwise).
fn orient_rfc7946(g: Geometry<f64>) -> Geometry<f64> {
    match g {
        Geometry::Polygon(p) => Geometry::Polygon(p.orient(Direction::Default)),
        Geometry::MultiPolygon(mp) => Geometry::MultiPolygon(mp.orient(Direction::Default)),
        Geometry::GeometryCollection(gc) => {
            Geometry::GeometryCollection(gc.0.into_iter().map(orient_rfc7946).collect())
        }
        other => other,
    }
}

/// The GDAL-style `crs` member naming EPSG code `epsg`.
fn crs_member(epsg: u32) -> Map<String, Value> {
    let mut props = Map::new();
    props.insert(
        "name".into(),
        Value::String(format!("urn:ogc:def:crs:EPSG::{epsg}")),
    );
    let mut crs = Map::new();
    crs.insert("type".into(), Value::String("name".into()));
    crs.insert("properties".into(), Value::Object(props));
    let mut members = Map::new();
    members.insert("crs".into(), Value::Object(crs));
    members
}

/// Writes `features` (coordinates in the CRS `source_epsg`) as a GeoJSON FeatureCollection.
///
/// # Errors
/// [`Error::InvalidArgument`] when `output` is [`OutputCrs::Wgs84`] but `source_epsg` is
/// `None` (the coordinates cannot be reprojected from an unknown CRS);
/// [`Error::Projection`] when the CRS is unknown to the EPSG table or a coordinate does not
/// transform (the message names the feature); [`Error::Io`] when the file cannot be written.
pub fn write_geojson(
    path: impl AsRef<Path>,
    features: &[VectorFeature],
    source_epsg: Option<u32>,
    output: OutputCrs,
) -> Result<()> {
    let path = path.as_ref();
    let (reprojection, members) = match (output, source_epsg) {
        (OutputCrs::Wgs84, None) => {
            return Err(Error::invalid(
                "write_geojson",
                format!(
                    "{}: the source CRS is unknown, so the coordinates cannot be reprojected to \
                     WGS 84 as RFC 7946 requires; pass the EPSG code of the coordinates or write \
                     with OutputCrs::Native",
                    path.display()
                ),
            ))
        }
        (OutputCrs::Wgs84, Some(WGS84)) => (None, None),
        (OutputCrs::Wgs84, Some(epsg)) => (Some(Reprojection::new(epsg, WGS84)?), None),
        (OutputCrs::Native, epsg) => (None, epsg.map(crs_member)),
    };
    let mut out = Vec::with_capacity(features.len());
    for (i, f) in features.iter().enumerate() {
        let mut g = f.geometry.clone();
        if let Some(r) = &reprojection {
            r.transform(&mut g)
                .map_err(|e| Error::Projection(format!("feature {i}: {e}")))?;
        }
        let g = orient_rfc7946(g);
        out.push(geojson::Feature {
            bbox: None,
            geometry: Some(geojson::Geometry::new(geojson::GeometryValue::from(&g))),
            id: None,
            properties: Some(f.properties.clone()),
            foreign_members: None,
        });
    }
    let collection = geojson::FeatureCollection {
        bbox: None,
        features: out,
        foreign_members: members,
    };
    let bytes = serde_json::to_vec(&collection)
        .map_err(|e| Error::format(path, format!("cannot serialise GeoJSON: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(path, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// The EPSG code named by a `crs` member, if any.
fn parse_crs(member: &Value) -> Option<u32> {
    let name = member.get("properties")?.get("name")?.as_str()?;
    if name.ends_with("CRS84") {
        return Some(WGS84);
    }
    let (_, code) = name.rsplit_once(':')?;
    code.parse().ok()
}

/// A feature as parsed: its geometry (if any) and properties (if any).
type RawFeature = (Option<geojson::Geometry>, Option<Map<String, Value>>);

/// Reads a GeoJSON file: a FeatureCollection, a single Feature, or a bare Geometry.
///
/// Features without a geometry are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] when it is not GeoJSON
/// (the message says where the parser stopped) or a geometry cannot be converted.
pub fn read_geojson(path: impl AsRef<Path>) -> Result<GeoJsonFile> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
    let epsg = value.get("crs").map_or(Some(WGS84), parse_crs);
    let gj: geojson::GeoJson = serde_json::from_value(value)
        .map_err(|e| Error::format(path, format!("not GeoJSON: {e}")))?;
    let raw: Vec<RawFeature> = match gj {
        geojson::GeoJson::FeatureCollection(fc) => fc
            .features
            .into_iter()
            .map(|f| (f.geometry, f.properties))
            .collect(),
        geojson::GeoJson::Feature(f) => vec![(f.geometry, f.properties)],
        geojson::GeoJson::Geometry(g) => vec![(Some(g), None)],
    };
    let mut features = Vec::with_capacity(raw.len());
    for (i, (geometry, properties)) in raw.into_iter().enumerate() {
        let Some(geometry) = geometry else { continue };
        let geometry = Geometry::<f64>::try_from(&geometry.value)
            .map_err(|e| Error::format(path, format!("feature {i}: {e}")))?;
        features.push(VectorFeature {
            geometry,
            properties: properties.unwrap_or_default(),
        });
    }
    Ok(GeoJsonFile { features, epsg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Area;
    use geo_types::{polygon, MultiPolygon};

    #[test]
    fn utm_to_wgs84_matches_known_point() {
        // EPSG:32616 (UTM 16N) easting 500000 is the central meridian -87 degrees.
        let r = Reprojection::new(32616, WGS84).unwrap();
        let mut g = Geometry::Point(geo_types::Point::new(500_000.0, 0.0));
        r.transform(&mut g).unwrap();
        let Geometry::Point(p) = g else { panic!() };
        assert!((p.x() + 87.0).abs() < 1e-9 && p.y().abs() < 1e-9, "{p:?}");
        // And back.
        let back = Reprojection::new(WGS84, 32616).unwrap();
        let mut g = Geometry::Point(geo_types::Point::new(-84.4, 33.75));
        back.transform(&mut g).unwrap();
        let Geometry::Point(q) = g else { panic!() };
        let mut g2 = Geometry::Point(q);
        r.transform(&mut g2).unwrap();
        let Geometry::Point(p2) = g2 else { panic!() };
        assert!(
            (p2.x() + 84.4).abs() < 1e-9 && (p2.y() - 33.75).abs() < 1e-9,
            "{p2:?}"
        );
    }

    #[test]
    fn native_round_trip_keeps_crs_and_properties() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.geojson");
        let sq = polygon![(x: 0.0, y: 0.0), (x: 0.0, y: 2.0), (x: 2.0, y: 2.0), (x: 2.0, y: 0.0)];
        let mut f = VectorFeature::new(Geometry::MultiPolygon(MultiPolygon::new(vec![sq])));
        f.properties.insert("value".into(), 3.into());
        write_geojson(
            &path,
            std::slice::from_ref(&f),
            Some(32616),
            OutputCrs::Native,
        )
        .unwrap();
        let back = read_geojson(&path).unwrap();
        assert_eq!(back.epsg, Some(32616));
        assert_eq!(back.features[0].properties["value"], 3);
        // Written counter-clockwise (positive signed area), whatever the input orientation.
        assert_eq!(back.features[0].geometry.signed_area(), 4.0);
    }

    #[test]
    fn unknown_crs_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.geojson");
        let f = VectorFeature::new(Geometry::Point(geo_types::Point::new(1.0, 2.0)));
        let err = write_geojson(&path, &[f], None, OutputCrs::Wgs84)
            .unwrap_err()
            .to_string();
        assert!(err.contains("OutputCrs::Native"), "{err}");
        assert!(!path.exists());
        assert!(Reprojection::new(999_999, WGS84).is_err());
    }
}

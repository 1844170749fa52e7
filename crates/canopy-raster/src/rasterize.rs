//! Rasterisation: burning polygons into a label raster or a boolean mask.
//!
//! Building footprints from OpenStreetMap or SpaceNet become training masks here.
//!
//! # Rules
//! Coordinates are first brought into *pixel space*: `(x, y) = (column, row)`, with `(0, 0)` the
//! outer corner of the top-left pixel and `(c + 0.5, r + 0.5)` the centre of pixel `(r, c)`
//! (see [`Coords`]). Each polygon is then filled with the **even-odd rule over all its rings**
//! (exterior and interiors), so holes stay empty; a multipolygon is the union of its polygons.
//!
//! * [`BurnRule::PixelCenter`] (default) burns a pixel when its centre is inside the polygon.
//!   This is the default of GDAL's `gdal_rasterize` and of `rasterio.features.rasterize`
//!   (`all_touched=False`). It is computed with a scanline at every row centre
//!   `y = r + 0.5`: each ring edge is crossed when `y0 <= y < y1` (half-open in `y`, so a
//!   vertex on the scanline is counted once and horizontal edges never), the crossings are
//!   sorted, and between each pair `x_a <= x_b` the pixels whose centre `x = c + 0.5` lies in
//!   `[x_a, x_b)` are burned. A centre exactly on a left edge is inside, on a right edge
//!   outside; away from such ties the result equals an even-odd point-in-polygon test at
//!   every pixel centre. (GDAL breaks the tie the other way in `x`, `(x_a, x_b]`.)
//! * [`BurnRule::AllTouched`] burns every pixel whose *open* square the closed polygon meets:
//!   the `PixelCenter` pixels plus every pixel an edge passes through. This is GDAL's
//!   `gdal_rasterize -at` / rasterio's `all_touched=True`, with one deliberate difference:
//!   an edge lying exactly *on* a pixel boundary does not burn the pixel on its outer side,
//!   so a rectangle whose corners sit on pixel corners burns exactly the pixels it covers
//!   under both rules (GDAL may add the outer neighbours).
//!
//! Later shapes overwrite earlier ones. Everything outside the raster is clipped.
//!
//! # Errors
//! Points, lines and other geometries without area are rejected with an error naming the
//! type. A vertex that is NaN, infinite or further than [`MAX_PIXEL_COORD`] pixels from the
//! raster after the transform is an error (naming the shape), never a panic or a huge loop.
//!
//! # Performance
//! `O(edges x rows crossed + pixels burned)` per polygon: rows outside a polygon's bounding box
//! and outside the raster are never visited. Thousands of building footprints on a
//! 4096 x 4096 canvas take milliseconds.
//!
//! # Example
//! ```
//! use canopy_raster::rasterize::{rasterize, rasterize_mask, BurnRule, Coords};
//! use canopy_raster::GeoTransform;
//! use geo_types::{polygon, MultiPolygon};
//!
//! // A 2 x 2 m building in a north-up 1 m grid whose top-left corner is (500, 1000).
//! let building = polygon![(x: 501.0, y: 999.0), (x: 503.0, y: 999.0),
//!                         (x: 503.0, y: 997.0), (x: 501.0, y: 997.0)];
//! let gt = GeoTransform::north_up(500.0, 1000.0, 1.0, 1.0);
//! let labels = rasterize([(&building, 7u8)], 4, 4, Coords::Map(gt), 0, BurnRule::PixelCenter)?;
//! assert_eq!(labels.row(1).to_vec(), vec![0, 7, 7, 0]);
//! assert_eq!(labels.iter().filter(|&&v| v == 7).count(), 4);
//!
//! let mask = rasterize_mask([MultiPolygon::new(vec![building])], 4, 4, Coords::Map(gt),
//!                           BurnRule::AllTouched)?;
//! assert_eq!(mask.iter().filter(|&&b| b).count(), 4);
//! # Ok::<(), canopy_raster::Error>(())
//! ```

use geo_types::{Geometry, GeometryCollection, LineString, MultiPolygon, Polygon, Rect, Triangle};
use ndarray::{s, Array2, ArrayViewMut2};

use crate::{Error, GeoTransform, Result, Sample};

/// Vertices further than this many pixels outside the raster (after the transform) are
/// rejected: such coordinates are almost always a wrong CRS or transform, and bounding them
/// keeps every intermediate value exact enough.
pub const MAX_PIXEL_COORD: f64 = 1e12;

/// Which pixels a polygon burns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BurnRule {
    /// A pixel is burned when its centre is inside the polygon (GDAL's and rasterio's
    /// default).
    #[default]
    PixelCenter,
    /// A pixel is burned when the polygon's area or boundary touches the pixel's interior
    /// (`gdal_rasterize -at`, rasterio `all_touched=True`).
    AllTouched,
}

/// The space the polygon coordinates are given in.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Coords {
    /// Pixel space: `x` = column, `y` = row, `(0, 0)` the outer corner of the top-left pixel.
    #[default]
    Pixel,
    /// Map space of the raster whose pixel -> map transform is given; vertices are mapped to
    /// pixel space through its inverse (rotated and sheared transforms are fine).
    Map(GeoTransform),
}

impl Coords {
    /// The map -> pixel transform.
    fn to_pixel_transform(self) -> Result<GeoTransform> {
        match self {
            Coords::Pixel => Ok(GeoTransform::IDENTITY),
            Coords::Map(gt) => gt.inverse(),
        }
    }
}

/// A geometry with area that can be burned: [`Polygon`], [`MultiPolygon`], [`Rect`],
/// [`Triangle`], a [`Geometry`] holding one of those, or a [`GeometryCollection`] of them,
/// and references to any of these.
pub trait Burnable {
    /// Calls `f` on every polygon of the geometry.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the geometry type when it has no area
    /// (points, lines).
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()>;
}

impl<B: Burnable + ?Sized> Burnable for &B {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        (**self).for_each_polygon(f)
    }
}

impl Burnable for Polygon<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        f(self)
    }
}

impl Burnable for MultiPolygon<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        for p in &self.0 {
            f(p)?;
        }
        Ok(())
    }
}

impl Burnable for Rect<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        f(&self.to_polygon())
    }
}

impl Burnable for Triangle<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        f(&self.to_polygon())
    }
}

impl Burnable for GeometryCollection<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        self.0.iter().try_for_each(|g| g.for_each_polygon(f))
    }
}

impl Burnable for Geometry<f64> {
    fn for_each_polygon(&self, f: &mut dyn FnMut(&Polygon<f64>) -> Result<()>) -> Result<()> {
        let kind = match self {
            Geometry::Polygon(p) => return p.for_each_polygon(f),
            Geometry::MultiPolygon(p) => return p.for_each_polygon(f),
            Geometry::Rect(p) => return p.for_each_polygon(f),
            Geometry::Triangle(p) => return p.for_each_polygon(f),
            Geometry::GeometryCollection(p) => return p.for_each_polygon(f),
            Geometry::Point(_) => "Point",
            Geometry::MultiPoint(_) => "MultiPoint",
            Geometry::Line(_) => "Line",
            Geometry::LineString(_) => "LineString",
            Geometry::MultiLineString(_) => "MultiLineString",
        };
        Err(Error::invalid(format!(
            "cannot rasterise a {kind}: only Polygon, MultiPolygon, Rect, Triangle and \
             GeometryCollections of them have an area to burn (buffer lines and points first)"
        )))
    }
}

/// Burns `shapes` into a new `height x width` raster filled with `fill`.
///
/// Each item is a geometry and the value its pixels get; later shapes overwrite earlier ones.
/// See the [module docs](self) for the rules.
///
/// # Shapes
/// Returns `(H, W)` = `(height, width)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when a geometry has no area, a vertex is not finite or absurdly
/// far from the raster, the transform is singular, or `width x height` does not fit in memory.
pub fn rasterize<T: Sample, G: Burnable>(
    shapes: impl IntoIterator<Item = (G, T)>,
    width: usize,
    height: usize,
    coords: Coords,
    fill: T,
    rule: BurnRule,
) -> Result<Array2<T>> {
    let mut out = new_canvas(width, height, fill)?;
    burn_all(shapes, out.view_mut(), coords, rule)?;
    Ok(out)
}

/// Burns `shapes` into an existing raster band (like rasterio's `out=`); pixels no shape
/// touches keep their value.
///
/// # Shapes
/// `out` is `(H, W)`.
///
/// # Errors
/// As [`rasterize`]. On error, shapes before the failing one have been burned.
pub fn rasterize_into<T: Sample, G: Burnable>(
    shapes: impl IntoIterator<Item = (G, T)>,
    out: ArrayViewMut2<'_, T>,
    coords: Coords,
    rule: BurnRule,
) -> Result<()> {
    burn_all(shapes, out, coords, rule)
}

/// A boolean mask, `true` inside any of `polygons`.
///
/// # Shapes
/// Returns `(H, W)` = `(height, width)`.
///
/// # Errors
/// As [`rasterize`].
pub fn rasterize_mask<G: Burnable>(
    polygons: impl IntoIterator<Item = G>,
    width: usize,
    height: usize,
    coords: Coords,
    rule: BurnRule,
) -> Result<Array2<bool>> {
    let mut out = new_canvas(width, height, false)?;
    burn_all(
        polygons.into_iter().map(|g| (g, true)),
        out.view_mut(),
        coords,
        rule,
    )?;
    Ok(out)
}

fn new_canvas<T: Clone>(width: usize, height: usize, fill: T) -> Result<Array2<T>> {
    let bytes = width
        .checked_mul(height)
        .and_then(|n| n.checked_mul(std::mem::size_of::<T>().max(1)));
    match bytes {
        Some(b) if b <= isize::MAX as usize => Ok(Array2::from_elem((height, width), fill)),
        _ => Err(Error::invalid(format!(
            "a {width} x {height} raster does not fit in memory"
        ))),
    }
}

fn burn_all<T: Copy, G: Burnable>(
    shapes: impl IntoIterator<Item = (G, T)>,
    mut out: ArrayViewMut2<'_, T>,
    coords: Coords,
    rule: BurnRule,
) -> Result<()> {
    let to_px = coords.to_pixel_transform()?;
    let mut scratch = Scratch::default();
    for (index, (shape, value)) in shapes.into_iter().enumerate() {
        shape.for_each_polygon(&mut |poly| {
            scratch.load(poly, &to_px, index)?;
            scratch.burn(&mut out, value, rule);
            Ok(())
        })?;
    }
    Ok(())
}

/// An edge in pixel space.
#[derive(Debug, Clone, Copy)]
struct Edge {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

/// Buffers reused across polygons.
#[derive(Debug, Default)]
struct Scratch {
    edges: Vec<Edge>,
    /// Scanline crossings per row of the current polygon's row span.
    crossings: Vec<Vec<f64>>,
    /// Bounding box of the current polygon (pixel space).
    bbox: [f64; 4],
}

impl Scratch {
    /// Transforms every ring of `poly` to pixel space and stores its edges.
    fn load(&mut self, poly: &Polygon<f64>, to_px: &GeoTransform, index: usize) -> Result<()> {
        self.edges.clear();
        self.bbox = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
            self.load_ring(ring, to_px, index)?;
        }
        Ok(())
    }

    fn load_ring(
        &mut self,
        ring: &LineString<f64>,
        to_px: &GeoTransform,
        index: usize,
    ) -> Result<()> {
        let mut prev: Option<(f64, f64)> = None;
        let mut first: Option<(f64, f64)> = None;
        for c in ring.0.iter() {
            let (x, y) = to_px.pixel_to_map(c.x, c.y);
            if !(x.abs() <= MAX_PIXEL_COORD && y.abs() <= MAX_PIXEL_COORD) {
                return Err(Error::invalid(format!(
                    "shape {index}: vertex ({}, {}) lies at pixel ({x}, {y}), which is not finite \
                     or more than {MAX_PIXEL_COORD:e} pixels away; check the coordinates and \
                     `Coords`",
                    c.x, c.y
                )));
            }
            self.bbox[0] = self.bbox[0].min(x);
            self.bbox[1] = self.bbox[1].min(y);
            self.bbox[2] = self.bbox[2].max(x);
            self.bbox[3] = self.bbox[3].max(y);
            if let Some((px, py)) = prev {
                self.edges.push(Edge {
                    x0: px,
                    y0: py,
                    x1: x,
                    y1: y,
                });
            } else {
                first = Some((x, y));
            }
            prev = Some((x, y));
        }
        // Close the ring when the caller did not (geo-types usually does).
        if let (Some((fx, fy)), Some((lx, ly))) = (first, prev) {
            if fx != lx || fy != ly {
                self.edges.push(Edge {
                    x0: lx,
                    y0: ly,
                    x1: fx,
                    y1: fy,
                });
            }
        }
        Ok(())
    }

    fn burn<T: Copy>(&mut self, out: &mut ArrayViewMut2<'_, T>, value: T, rule: BurnRule) {
        self.fill_centres(out, value);
        if rule == BurnRule::AllTouched {
            for e in &self.edges {
                burn_edge(out, e, value);
            }
        }
    }

    /// The `PixelCenter` scanline fill.
    fn fill_centres<T: Copy>(&mut self, out: &mut ArrayViewMut2<'_, T>, value: T) {
        let (height, width) = out.dim();
        if self.edges.is_empty() {
            return;
        }
        // Rows whose centre r + 0.5 lies in [ymin, ymax), clipped to the raster.
        let r0 = ceil_clamped(self.bbox[1] - 0.5, height);
        let r1 = ceil_clamped(self.bbox[3] - 0.5, height);
        if r0 >= r1 || self.bbox[2] < 0.0 || self.bbox[0] > width as f64 {
            return;
        }
        let span = r1 - r0;
        if self.crossings.len() < span {
            self.crossings.resize_with(span, Vec::new);
        }
        for row in self.crossings.iter_mut().take(span) {
            row.clear();
        }
        for e in &self.edges {
            let (xa, ya, xb, yb) = if e.y0 < e.y1 {
                (e.x0, e.y0, e.x1, e.y1)
            } else if e.y1 < e.y0 {
                (e.x1, e.y1, e.x0, e.y0)
            } else {
                continue; // horizontal
            };
            // Rows r with ya <= r + 0.5 < yb.
            let ra = ceil_clamped(ya - 0.5, height).max(r0);
            let rb = ceil_clamped(yb - 0.5, height).min(r1);
            let slope = (xb - xa) / (yb - ya);
            for r in ra..rb {
                let yc = r as f64 + 0.5;
                let x = xa + (yc - ya) * slope;
                if let Some(row) = self.crossings.get_mut(r - r0) {
                    row.push(x);
                }
            }
        }
        for (i, xs) in self.crossings.iter_mut().take(span).enumerate() {
            if xs.len() < 2 {
                continue;
            }
            xs.sort_unstable_by(f64::total_cmp);
            let mut line = out.row_mut(r0 + i);
            for pair in xs.chunks_exact(2) {
                // Columns c with xa <= c + 0.5 < xb.
                let c0 = ceil_clamped(pair[0] - 0.5, width);
                let c1 = ceil_clamped(pair[1] - 0.5, width);
                if c0 < c1 {
                    line.slice_mut(s![c0..c1]).fill(value);
                }
            }
        }
    }
}

/// `ceil(v)` clamped to `0..=max`.
fn ceil_clamped(v: f64, max: usize) -> usize {
    let c = v.ceil();
    if c <= 0.0 {
        0
    } else if c >= max as f64 {
        max
    } else {
        c as usize
    }
}

/// `floor(v)` clamped to `0..=max`.
fn floor_clamped(v: f64, max: usize) -> usize {
    ceil_clamped(v.floor(), max)
}

/// Columns `c` (clipped to `0..width`) whose open interval `(c, c + 1)` meets the closed
/// interval `[a, b]`.
fn open_cells(a: f64, b: f64, width: usize) -> (usize, usize) {
    if a < b {
        (floor_clamped(a, width), ceil_clamped(b, width))
    } else if a.fract() == 0.0 {
        (0, 0) // a single point on a pixel boundary
    } else {
        let c = floor_clamped(a, width);
        (c, floor_clamped(a + 1.0, width))
    }
}

/// Burns every pixel whose open square the closed segment `e` meets.
fn burn_edge<T: Copy>(out: &mut ArrayViewMut2<'_, T>, e: &Edge, value: T) {
    let (height, width) = out.dim();
    let (ymin, ymax) = (e.y0.min(e.y1), e.y0.max(e.y1));
    if ymin == ymax {
        // Horizontal (or a single point): on a pixel boundary it touches no open square.
        if ymin.fract() == 0.0 || ymin < 0.0 || ymin >= height as f64 {
            return;
        }
        let r = floor_clamped(ymin, height);
        let (c0, c1) = open_cells(e.x0.min(e.x1), e.x0.max(e.x1), width);
        if c0 < c1 && r < height {
            out.row_mut(r).slice_mut(s![c0..c1]).fill(value);
        }
        return;
    }
    let dxdy = (e.x1 - e.x0) / (e.y1 - e.y0);
    let x_at = |y: f64| {
        if y == e.y0 {
            e.x0
        } else if y == e.y1 {
            e.x1
        } else {
            e.x0 + (y - e.y0) * dxdy
        }
    };
    // Rows r whose open strip (r, r + 1) meets (ymin, ymax).
    let r0 = floor_clamped(ymin, height);
    let r1 = ceil_clamped(ymax, height);
    for r in r0..r1 {
        let ya = ymin.max(r as f64);
        let yb = ymax.min(r as f64 + 1.0);
        let (xa, xb) = if e.x0 == e.x1 {
            (e.x0, e.x0)
        } else {
            let (p, q) = (x_at(ya), x_at(yb));
            (p.min(q), p.max(q))
        };
        let (c0, c1) = if xa < xb {
            // The part inside the open strip spans the open interval (xa, xb).
            (floor_clamped(xa, width), ceil_clamped(xb, width))
        } else {
            open_cells(xa, xb, width)
        };
        if c0 < c1 {
            out.row_mut(r).slice_mut(s![c0..c1]).fill(value);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use geo_types::{coord, point, polygon, LineString};

    fn count<T: PartialEq>(a: &Array2<T>, v: T) -> usize {
        a.iter().filter(|&x| *x == v).count()
    }

    #[test]
    fn rectangle_on_pixel_edges_burns_exactly_its_pixels_under_both_rules() {
        let p = polygon![(x: 1.0, y: 2.0), (x: 4.0, y: 2.0), (x: 4.0, y: 5.0), (x: 1.0, y: 5.0)];
        for rule in [BurnRule::PixelCenter, BurnRule::AllTouched] {
            let m = rasterize_mask([&p], 6, 7, Coords::Pixel, rule).unwrap();
            for ((r, c), &b) in m.indexed_iter() {
                assert_eq!(
                    b,
                    (2..5).contains(&r) && (1..4).contains(&c),
                    "{rule:?} {r} {c}"
                );
            }
        }
    }

    #[test]
    fn open_cells_handles_points_and_intervals() {
        assert_eq!(open_cells(1.0, 1.0, 10), (0, 0));
        assert_eq!(open_cells(1.5, 1.5, 10), (1, 2));
        assert_eq!(open_cells(1.0, 3.0, 10), (1, 3));
        assert_eq!(open_cells(0.5, 3.2, 10), (0, 4));
        assert_eq!(open_cells(-5.0, 30.0, 10), (0, 10));
    }

    #[test]
    fn hole_stays_empty() {
        let p = Polygon::new(
            LineString::from(vec![
                (0.0, 0.0),
                (6.0, 0.0),
                (6.0, 6.0),
                (0.0, 6.0),
                (0.0, 0.0),
            ]),
            vec![LineString::from(vec![
                (2.0, 2.0),
                (4.0, 2.0),
                (4.0, 4.0),
                (2.0, 4.0),
                (2.0, 2.0),
            ])],
        );
        let m = rasterize_mask([&p], 6, 6, Coords::Pixel, BurnRule::PixelCenter).unwrap();
        assert_eq!(count(&m, true), 32);
        assert!(!m[[2, 2]] && !m[[3, 3]] && m[[1, 1]] && m[[4, 4]]);
        let at = rasterize_mask([&p], 6, 6, Coords::Pixel, BurnRule::AllTouched).unwrap();
        assert_eq!(at, m);
    }

    #[test]
    fn lines_and_points_are_rejected_by_name() {
        let g = Geometry::Point(point!(x: 1.0, y: 1.0));
        let e = rasterize([(&g, 1u8)], 4, 4, Coords::Pixel, 0, BurnRule::PixelCenter)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Point"), "{e}");
        let l = Geometry::LineString(LineString::from(vec![(0.0, 0.0), (1.0, 1.0)]));
        let e = rasterize_mask([l], 4, 4, Coords::Pixel, BurnRule::AllTouched)
            .unwrap_err()
            .to_string();
        assert!(e.contains("LineString"), "{e}");
    }

    #[test]
    fn nan_and_huge_coordinates_error_instead_of_looping() {
        let nan = polygon![(x: 0.0, y: 0.0), (x: f64::NAN, y: 3.0), (x: 3.0, y: 3.0)];
        assert!(rasterize_mask([&nan], 8, 8, Coords::Pixel, BurnRule::AllTouched).is_err());
        let huge = polygon![(x: 0.0, y: 0.0), (x: 1e300, y: 3.0), (x: 3.0, y: 3.0)];
        let e = rasterize_mask([&huge], 8, 8, Coords::Pixel, BurnRule::PixelCenter).unwrap_err();
        assert!(e.to_string().contains("shape 0"), "{e}");
        // Large but sane coordinates are clipped.
        let big =
            polygon![(x: -1e9, y: -1e9), (x: 1e9, y: -1e9), (x: 1e9, y: 1e9), (x: -1e9, y: 1e9)];
        for rule in [BurnRule::PixelCenter, BurnRule::AllTouched] {
            let m = rasterize_mask([&big], 8, 8, Coords::Pixel, rule).unwrap();
            assert_eq!(count(&m, true), 64);
        }
    }

    #[test]
    fn shapes_outside_the_raster_burn_nothing() {
        let p = polygon![(x: 10.0, y: 10.0), (x: 12.0, y: 10.0), (x: 12.0, y: 12.0)];
        let q = polygon![(x: -5.0, y: 1.0), (x: -1.0, y: 1.0), (x: -1.0, y: 3.0)];
        for rule in [BurnRule::PixelCenter, BurnRule::AllTouched] {
            let m = rasterize_mask([&p, &q], 8, 8, Coords::Pixel, rule).unwrap();
            assert_eq!(count(&m, true), 0);
        }
    }

    #[test]
    fn thin_sliver_burns_only_under_all_touched() {
        let p = polygon![(x: 1.1, y: 0.0), (x: 1.3, y: 0.0), (x: 1.3, y: 3.0), (x: 1.1, y: 3.0)];
        let pc = rasterize_mask([&p], 4, 4, Coords::Pixel, BurnRule::PixelCenter).unwrap();
        assert_eq!(count(&pc, true), 0);
        let at = rasterize_mask([&p], 4, 4, Coords::Pixel, BurnRule::AllTouched).unwrap();
        assert_eq!(count(&at, true), 3);
        assert!(at[[0, 1]] && at[[1, 1]] && at[[2, 1]]);
    }

    #[test]
    fn diagonal_edge_all_touched_traversal() {
        // Triangle (0,0)-(4,0)-(0,4) (right angle at the origin): the hypotenuse x + y = 4
        // passes through grid corners, so it touches no extra open squares.
        let p = polygon![(x: 0.0, y: 0.0), (x: 4.0, y: 0.0), (x: 0.0, y: 4.0)];
        let at = rasterize_mask([&p], 5, 5, Coords::Pixel, BurnRule::AllTouched).unwrap();
        for ((r, c), &b) in at.indexed_iter() {
            assert_eq!(b, r + c <= 3, "{r} {c}");
        }
        // Shifted by a quarter pixel the hypotenuse crosses the interiors of r + c = 4 too.
        let q = polygon![(x: 0.0, y: 0.0), (x: 4.25, y: 0.0), (x: 0.0, y: 4.25)];
        let at = rasterize_mask([&q], 6, 6, Coords::Pixel, BurnRule::AllTouched).unwrap();
        for ((r, c), &b) in at.indexed_iter() {
            assert_eq!(b, r + c <= 4, "{r} {c}");
        }
    }

    #[test]
    fn rect_triangle_and_collections_are_accepted() {
        let rect = Rect::new(coord! {x: 0.0, y: 0.0}, coord! {x: 2.0, y: 2.0});
        let gc = Geometry::GeometryCollection(GeometryCollection::new_from(vec![
            Geometry::Rect(rect),
            Geometry::Triangle(Triangle::new(
                coord! {x: 4.0, y: 0.0},
                coord! {x: 6.0, y: 0.0},
                coord! {x: 6.0, y: 2.0},
            )),
        ]));
        let m = rasterize(
            [(&gc, 3i32)],
            6,
            3,
            Coords::Pixel,
            -1,
            BurnRule::PixelCenter,
        )
        .unwrap();
        assert_eq!(count(&m, 3), 4 + 3);
        assert_eq!(m[[2, 0]], -1);
    }

    #[test]
    fn oversized_canvas_is_an_error() {
        let none: [(&Polygon<f64>, u8); 0] = [];
        assert!(rasterize(
            none,
            usize::MAX,
            2,
            Coords::Pixel,
            0u8,
            BurnRule::PixelCenter
        )
        .is_err());
    }
}

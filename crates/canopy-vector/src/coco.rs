//! COCO instance annotations: reading, writing and converting polygon and RLE segmentations.
//!
//! The COCO detection format (Lin et al. 2014, reference code `pycocotools`) is what building
//! datasets such as the crowdAI Mapping Challenge and RAMP ship, and what Mask R-CNN style
//! trainers read. A file holds `images` (`id`, `file_name`, `width`, `height`), `categories`
//! (`id`, `name`) and `annotations` (`id`, `image_id`, `category_id`, `segmentation`, `area`,
//! `bbox = [x, y, w, h]`, `iscrowd`). Fields this module does not know (`info`, `licenses`,
//! `supercategory`, RAMP's `zoom` and `touches_border`, ...) are kept in `extra` maps and
//! written back unchanged.
//!
//! # Coordinates
//! Pixel space as in the rest of the crate and in COCO itself: `(x, y) = (column, row)`,
//! `(0, 0)` the outer corner of the top-left pixel, so pixel `(r, c)` of an RLE mask covers
//! `[c, c + 1] x [r, r + 1]`.
//!
//! # Segmentations
//! * **Polygons** (`iscrowd = 0`): a list of flat rings `[x0, y0, x1, y1, ...]`. Several rings
//!   of one annotation are separate *parts* of the object (an occluded building seen as two
//!   pieces), never holes: [`CocoAnnotation::to_multi_polygon`] makes each ring a hole-free
//!   [`Polygon`]. A ring repeating its first point at the end (crowdAI does, RAMP does not) is
//!   accepted; a ring needs at least 3 points without that repetition and an even number of
//!   values.
//! * **RLE** (usually `iscrowd = 1`): `{"size": [h, w], "counts": ...}`, run lengths of a
//!   column-major (Fortran order) mask starting with a run of zeros, either as a list of
//!   integers (uncompressed) or as pycocotools' compressed string (each count as 5-bit groups,
//!   least significant first, in characters offset by 48, with bit 5 as continuation and counts
//!   from the third on stored as the difference to the count two places before). Both are
//!   decoded ([`Rle::to_mask`]); as geometry an RLE becomes the exact outline of its pixels (the
//!   union of its runs).
//!
//! # Holes
//! COCO polygons cannot express holes, so writing a polygon with holes is a choice, made
//! explicit by [`HoleHandling`]: [`HoleHandling::SplitIntoParts`] (default) cuts it along
//! vertical lines through its holes into hole-free parts whose union is the polygon (readable
//! by every COCO tool; the parts share their cut edges, and a pixel centre exactly on a cut line
//! is burned by one part only under a half-open rasterization rule). The cut is `geo`'s
//! `BooleanOps` intersection with vertical slabs, which snaps vertices to a fixed-point grid:
//! they may move by about 1e-9 of the polygon's extent, so the area matches to ~1e-9 relative;
//! [`HoleHandling::Rle`] rasterizes it on the image grid (pixel-centre rule) and writes a
//! compressed RLE, as pycocotools would after `annToMask` (exact in pixels, loses the sub-pixel
//! outline); [`HoleHandling::Reject`] returns an error.
//!
//! # Area and bbox
//! Read files keep the `area` and `bbox` they give; [`CocoAnnotation::computed_area_bbox`]
//! recomputes them from the segmentation (polygons: the sum of the parts' areas and the
//! vertices' bounding box; RLE: the pixel count and the pixels' bounding box, as pycocotools'
//! `area` and `toBbox`). Measured on the real files (`tests/coco.rs`): in RAMP's the `bbox` is
//! the polygon's to the file's 0.01 rounding and the `area` within 0.3% of the polygon area
//! (above 50 px²); crowdAI's `area` is a pixel count (within 3.6%) and its `bbox` does not
//! describe the polygons at all (all 188 differ by more than half a pixel), so use
//! [`CocoAnnotation::refresh_area_bbox`] before training on it.
//!
//! # Errors
//! Reading checks what later steps rely on and names the file and the annotation: missing keys
//! or wrong types, duplicate ids, an `image_id` or `category_id` with no image or category, an
//! odd number of coordinates, a ring of fewer than 3 points, RLE counts that do not add up to
//! `h x w` or an RLE larger than [`MAX_RLE_PIXELS`]. Geometry validity (self-intersections,
//! zero area; crowdAI has a few) is not checked: use `geo`'s `Validation`.
//!
//! # References
//! * T.-Y. Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; format at
//!   <https://cocodataset.org/#format-data>, reference code `cocodataset/cocoapi`
//!   (`common/maskApi.c`, `PythonAPI/pycocotools/mask.py`).
//!
//! # Example
//! ```
//! use canopy_vector::coco::{CocoAnnotation, CocoCategory, CocoDataset, CocoImage, HoleHandling};
//! use geo_types::{polygon, MultiPolygon};
//!
//! let image = CocoImage::new(1, "tile.png", 256, 256);
//! let building = polygon![(x: 10.0, y: 10.0), (x: 30.0, y: 10.0), (x: 30.0, y: 20.0),
//!                         (x: 10.0, y: 20.0)];
//! let ann = CocoAnnotation::from_multi_polygon(
//!     7, &image, 100, &MultiPolygon::new(vec![building.clone()]), HoleHandling::SplitIntoParts)?;
//! assert_eq!(ann.area, 200.0);
//! assert_eq!(ann.bbox, [10.0, 10.0, 20.0, 10.0]);
//!
//! let dataset = CocoDataset {
//!     images: vec![image],
//!     categories: vec![CocoCategory::new(100, "building")],
//!     annotations: vec![ann],
//!     ..Default::default()
//! };
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("annotations.json");
//! dataset.write(&path)?;
//! let back = CocoDataset::read(&path)?;
//! assert_eq!(back, dataset);
//! assert_eq!(back.annotations[0].to_multi_polygon()?.0, vec![building]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use canopy_raster::rasterize::{rasterize_mask, BurnRule, Coords};
use geo::{Area, BooleanOps, BoundingRect, InteriorPoint};
use geo_types::{Coord, LineString, MultiPolygon, Polygon, Rect};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// Largest RLE mask (`h x w` pixels) decoded; larger sizes are rejected as malformed rather than
/// allocated.
pub const MAX_RLE_PIXELS: u64 = 1 << 30;

/// A COCO annotation file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CocoDataset {
    /// The images, each with its pixel size.
    pub images: Vec<CocoImage>,
    /// The categories.
    pub categories: Vec<CocoCategory>,
    /// The object instances.
    pub annotations: Vec<CocoAnnotation>,
    /// Other top-level keys (`info`, `licenses`, ...), written back unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `images`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoImage {
    /// Image id, referenced by [`CocoAnnotation::image_id`].
    pub id: u64,
    /// File name, relative to the dataset's image folder.
    pub file_name: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Other keys (`zoom`, `license`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `categories`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoCategory {
    /// Category id, referenced by [`CocoAnnotation::category_id`].
    pub id: u64,
    /// Category name.
    pub name: String,
    /// Other keys (`supercategory`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One entry of `annotations`: an object instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoAnnotation {
    /// Annotation id.
    pub id: u64,
    /// The image it belongs to.
    pub image_id: u64,
    /// Its category.
    pub category_id: u64,
    /// Its outline.
    pub segmentation: Segmentation,
    /// Area in square pixels, as given by the file (see [`Self::computed_area_bbox`]).
    pub area: f64,
    /// `[x, y, width, height]` in pixels, as given by the file.
    pub bbox: [f64; 4],
    /// 1 for a crowd region (usually with an RLE segmentation), 0 otherwise; 0 when absent.
    #[serde(default)]
    pub iscrowd: u8,
    /// Other keys (`touches_border`, `score`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A COCO segmentation: polygon parts or a run-length encoded mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Segmentation {
    /// Flat rings `[x0, y0, x1, y1, ...]`, each a separate part (not a hole).
    Polygons(Vec<Vec<f64>>),
    /// A run-length encoded mask.
    Rle(Rle),
}

/// A COCO run-length encoded mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rle {
    /// `[height, width]` of the mask (the image's).
    pub size: [u32; 2],
    /// The run lengths, starting with a run of zeros, in column-major order.
    pub counts: RleCounts,
}

/// The two spellings of RLE counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RleCounts {
    /// A list of run lengths (used by most `iscrowd = 1` ground truth).
    Uncompressed(Vec<u64>),
    /// pycocotools' compressed string (used by results files and `mask.encode`).
    Compressed(String),
}

/// What [`CocoAnnotation::from_multi_polygon`] does with polygons that have holes, which COCO
/// polygons cannot express. See the [module documentation](self#holes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HoleHandling {
    /// Cut polygons with holes into hole-free parts (their union is the polygon, up to `geo`'s
    /// boolean-op snapping), each written as one ring.
    #[default]
    SplitIntoParts,
    /// Write the whole annotation as a compressed RLE mask of the image (pixel-centre rule).
    Rle,
    /// Return an error for a polygon with holes.
    Reject,
}

impl CocoImage {
    /// An image without extra keys.
    pub fn new(id: u64, file_name: impl Into<String>, width: u32, height: u32) -> Self {
        Self {
            id,
            file_name: file_name.into(),
            width,
            height,
            extra: Map::new(),
        }
    }
}

impl CocoCategory {
    /// A category without extra keys.
    pub fn new(id: u64, name: impl Into<String>) -> Self {
        Self {
            id,
            name: name.into(),
            extra: Map::new(),
        }
    }
}

/// Raw top level: elements are parsed one by one so errors can name them.
#[derive(Deserialize)]
struct RawDataset {
    images: Vec<Value>,
    categories: Vec<Value>,
    annotations: Vec<Value>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// `annotation 17 (annotations[3])` for error messages.
fn describe(what: &str, key: &str, i: usize, v: &Value) -> String {
    match v.get("id") {
        Some(id) => format!("{what} {id} ({key}[{i}])"),
        None => format!("{key}[{i}] (no id)"),
    }
}

/// Parses the elements of top-level array `key` one by one, naming the failing one.
fn parse_elements<T: serde::de::DeserializeOwned>(
    values: Vec<Value>,
    (what, key): (&str, &str),
    path: &Path,
) -> Result<Vec<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let name = describe(what, key, i, &v);
            serde_json::from_value(v).map_err(|e| Error::format(path, format!("{name}: {e}")))
        })
        .collect()
}

impl CocoDataset {
    /// Reads and checks a COCO annotation file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Format`] naming the file and the
    /// offending element for malformed content (see the [module documentation](self#errors)).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_slice(&bytes, path)
    }

    /// Parses and checks COCO JSON; `source` names it in errors.
    ///
    /// # Errors
    /// [`Error::Format`] as for [`Self::read`].
    pub fn from_slice(json: &[u8], source: impl Into<PathBuf>) -> Result<Self> {
        let path = source.into();
        let raw: RawDataset = serde_json::from_slice(json)
            .map_err(|e| Error::format(&path, format!("not a COCO annotation file: {e}")))?;
        let dataset = CocoDataset {
            images: parse_elements(raw.images, ("image", "images"), &path)?,
            categories: parse_elements(raw.categories, ("category", "categories"), &path)?,
            annotations: parse_elements(raw.annotations, ("annotation", "annotations"), &path)?,
            extra: raw.extra,
        };
        dataset.check().map_err(|m| Error::format(&path, m))?;
        Ok(dataset)
    }

    /// The dataset as compact COCO JSON.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the dataset fails [`Self::validate`].
    pub fn to_json(&self) -> Result<String> {
        self.validate()?;
        serde_json::to_string(self).map_err(|e| Error::invalid("coco", e.to_string()))
    }

    /// Checks and writes the dataset as compact COCO JSON, atomically (a temporary file in the
    /// same folder, flushed and renamed over `path`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the dataset fails [`Self::validate`], [`Error::Io`] when
    /// the file cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.to_json()?;
        crate::geojson_io::write_atomic(path, json.as_bytes())
    }

    /// Checks the references and segmentations as [`Self::read`] does.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first offending element.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|m| Error::invalid("coco", m))
    }

    /// The image with id `id`.
    pub fn image(&self, id: u64) -> Option<&CocoImage> {
        self.images.iter().find(|im| im.id == id)
    }

    /// The annotations of image `image_id`, in file order.
    pub fn annotations_of(&self, image_id: u64) -> impl Iterator<Item = &CocoAnnotation> {
        self.annotations
            .iter()
            .filter(move |a| a.image_id == image_id)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let mut images = HashMap::new();
        for im in &self.images {
            if images.insert(im.id, im).is_some() {
                return Err(format!("image id {} appears twice", im.id));
            }
        }
        let mut categories = HashSet::new();
        for c in &self.categories {
            if !categories.insert(c.id) {
                return Err(format!("category id {} appears twice", c.id));
            }
        }
        let mut ids = HashSet::new();
        for a in &self.annotations {
            let name = format!("annotation {}", a.id);
            if !ids.insert(a.id) {
                return Err(format!("{name}: id appears twice"));
            }
            if !images.contains_key(&a.image_id) {
                return Err(format!("{name}: image_id {} is not in images", a.image_id));
            }
            if !categories.contains(&a.category_id) {
                return Err(format!(
                    "{name}: category_id {} is not in categories",
                    a.category_id
                ));
            }
            a.segmentation.check().map_err(|m| format!("{name}: {m}"))?;
        }
        Ok(())
    }
}

impl Segmentation {
    fn check(&self) -> std::result::Result<(), String> {
        match self {
            Segmentation::Polygons(rings) => {
                if rings.is_empty() {
                    return Err("segmentation has no polygon".into());
                }
                for (k, ring) in rings.iter().enumerate() {
                    ring_coords(ring).map_err(|m| format!("segmentation[{k}]: {m}"))?;
                }
                Ok(())
            }
            Segmentation::Rle(rle) => rle.counts().map(|_| ()),
        }
    }
}

/// The points of a flat ring, without a repeated closing point.
fn ring_coords(ring: &[f64]) -> std::result::Result<Vec<Coord<f64>>, String> {
    if ring.len() % 2 != 0 {
        return Err(format!(
            "odd number of coordinates ({}); expected x, y pairs",
            ring.len()
        ));
    }
    if let Some(v) = ring.iter().find(|v| !v.is_finite()) {
        return Err(format!("coordinate {v} is not finite"));
    }
    let mut coords: Vec<Coord<f64>> = ring
        .chunks_exact(2)
        .map(|p| Coord { x: p[0], y: p[1] })
        .collect();
    if coords.len() > 1 && coords.first() == coords.last() {
        coords.pop();
    }
    if coords.len() < 3 {
        return Err(format!(
            "ring has {} points; a polygon needs at least 3",
            coords.len()
        ));
    }
    Ok(coords)
}

impl Rle {
    /// `(height, width)` of the mask.
    pub fn shape(&self) -> (usize, usize) {
        (self.size[0] as usize, self.size[1] as usize)
    }

    /// The run lengths, decoding the compressed form, checked to cover the mask exactly.
    ///
    /// # Errors
    /// A message when the string is not valid compressed RLE, a difference makes a count
    /// negative, the counts do not add up to `h x w`, or `h x w` exceeds [`MAX_RLE_PIXELS`].
    fn counts(&self) -> std::result::Result<Vec<u64>, String> {
        let pixels = u64::from(self.size[0]) * u64::from(self.size[1]);
        if pixels > MAX_RLE_PIXELS {
            return Err(format!(
                "RLE size {:?} has {pixels} pixels, more than the limit {MAX_RLE_PIXELS}",
                self.size
            ));
        }
        let counts = match &self.counts {
            RleCounts::Uncompressed(c) => c.clone(),
            RleCounts::Compressed(s) => decode_counts(s)?,
        };
        let mut total: u64 = 0;
        for &c in &counts {
            total = total.saturating_add(c);
        }
        if total != pixels {
            return Err(format!(
                "RLE counts add up to {total} pixels but size {:?} has {pixels}",
                self.size
            ));
        }
        Ok(counts)
    }

    /// Decodes the mask, indexed `[[row, column]]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for malformed counts (see the [module docs](self#errors)).
    pub fn to_mask(&self) -> Result<Array2<bool>> {
        let counts = self
            .counts()
            .map_err(|m| Error::invalid("Rle::to_mask", m))?;
        let (h, w) = self.shape();
        // Column-major runs fill the transposed (w, h) array in row-major order.
        let mut flat = vec![false; h * w];
        let mut pos = 0usize;
        for (k, &c) in counts.iter().enumerate() {
            let end = pos + c as usize; // counts sum to h * w, checked above
            if k % 2 == 1 {
                flat[pos..end].fill(true);
            }
            pos = end;
        }
        let t = Array2::from_shape_vec((w, h), flat)
            .map_err(|e| Error::invalid("Rle::to_mask", e.to_string()))?;
        Ok(t.reversed_axes().as_standard_layout().into_owned())
    }

    /// Encodes a mask (indexed `[[row, column]]`) as compressed RLE, like pycocotools'
    /// `mask.encode`.
    pub fn from_mask(mask: ArrayView2<'_, bool>) -> Self {
        let (h, w) = mask.dim();
        let mut counts = Vec::new();
        let (mut current, mut run) = (false, 0u64);
        for &v in mask.t().iter() {
            // `.t().iter()` walks column by column: column-major order.
            if v != current {
                counts.push(run);
                current = v;
                run = 0;
            }
            run += 1;
        }
        counts.push(run);
        Self {
            size: [h as u32, w as u32],
            counts: RleCounts::Compressed(encode_counts(&counts)),
        }
    }

    /// The exact outline of the mask's pixels as polygons: the pixel-edge boundaries of its
    /// 4-connected regions, with holes ([`crate::polygonize`]); the area equals the pixel count.
    ///
    /// (This was a `geo` boolean union of one rectangle per run until a property test found a
    /// mask where the union is wrong: two holes touching at a corner around a pixel joined to
    /// the region only through corners were merged into one hole that swallowed the pixel.)
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for malformed counts.
    pub fn to_multi_polygon(&self) -> Result<MultiPolygon<f64>> {
        let mask = self.to_mask()?;
        let regions = crate::polygonize::polygonize(
            mask.view(),
            Some(mask.view()),
            &crate::polygonize::PolygonizeOptions::default(),
        )?;
        Ok(MultiPolygon::new(
            regions.into_iter().flat_map(|r| r.geometry.0).collect(),
        ))
    }
}

/// Decodes pycocotools' compressed counts string.
fn decode_counts(s: &str) -> std::result::Result<Vec<u64>, String> {
    let bytes = s.as_bytes();
    let mut counts: Vec<u64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut shift, mut more) = (0i64, 0u32, true);
        while more {
            let Some(&b) = bytes.get(p) else {
                return Err(format!(
                    "compressed RLE ends inside a count at character {p}"
                ));
            };
            if !(48..48 + 64).contains(&b) || shift > 55 {
                return Err(format!("compressed RLE has an invalid character at {p}"));
            }
            let c = i64::from(b - 48);
            x |= (c & 0x1f) << shift;
            more = c & 0x20 != 0;
            shift += 5;
            p += 1;
            if !more && c & 0x10 != 0 {
                x |= -1i64 << shift; // sign-extend
            }
        }
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2] as i64;
        }
        if x < 0 {
            return Err(format!(
                "compressed RLE gives a negative count ({x}) for run {m}"
            ));
        }
        counts.push(x as u64);
    }
    Ok(counts)
}

/// Encodes counts as pycocotools' compressed string.
fn encode_counts(counts: &[u64]) -> String {
    let mut s = String::new();
    for (i, &c) in counts.iter().enumerate() {
        let mut x = c as i64 - if i > 2 { counts[i - 2] as i64 } else { 0 };
        loop {
            let mut c = (x & 0x1f) as u8;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            s.push(char::from(c + 48));
            if !more {
                break;
            }
        }
    }
    s
}

impl CocoAnnotation {
    /// The segmentation as geometry: one hole-free polygon per ring, or the pixel outline of an
    /// RLE mask. Polygons are returned as written (not repaired or reoriented).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the annotation for a malformed segmentation.
    pub fn to_multi_polygon(&self) -> Result<MultiPolygon<f64>> {
        let name = |m: String| {
            Error::invalid(
                "CocoAnnotation::to_multi_polygon",
                format!("annotation {}: {m}", self.id),
            )
        };
        match &self.segmentation {
            Segmentation::Polygons(rings) => rings
                .iter()
                .enumerate()
                .map(|(k, r)| {
                    ring_coords(r)
                        .map(|c| Polygon::new(LineString::new(c), vec![]))
                        .map_err(|m| name(format!("segmentation[{k}]: {m}")))
                })
                .collect::<Result<Vec<_>>>()
                .map(MultiPolygon::new),
            Segmentation::Rle(rle) => rle.to_multi_polygon().map_err(|e| name(e.to_string())),
        }
    }

    /// Area and `[x, y, w, h]` computed from the segmentation: for polygons the sum of the
    /// parts' areas and the vertices' bounding box; for RLE the pixel count and the pixels'
    /// bounding box (pycocotools' `area` / `toBbox`). An empty mask gives `[0, 0, 0, 0]`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the annotation for a malformed segmentation.
    pub fn computed_area_bbox(&self) -> Result<(f64, [f64; 4])> {
        match &self.segmentation {
            Segmentation::Polygons(_) => {
                let mp = self.to_multi_polygon()?;
                Ok((mp.unsigned_area(), bbox_of(mp.bounding_rect())))
            }
            Segmentation::Rle(rle) => {
                let mask = rle.to_mask().map_err(|e| {
                    Error::invalid(
                        "CocoAnnotation::computed_area_bbox",
                        format!("annotation {}: {e}", self.id),
                    )
                })?;
                Ok(mask_area_bbox(mask.view()))
            }
        }
    }

    /// Replaces `area` and `bbox` with [`Self::computed_area_bbox`].
    ///
    /// # Errors
    /// As [`Self::computed_area_bbox`].
    pub fn refresh_area_bbox(&mut self) -> Result<()> {
        (self.area, self.bbox) = self.computed_area_bbox()?;
        Ok(())
    }

    /// An annotation (`iscrowd = 0`, no extra keys) for `geometry` on `image`, with `area` and
    /// `bbox` computed as in [`Self::computed_area_bbox`]. Polygons without holes become one
    /// ring each (exterior without the repeated closing point); polygons with holes are handled
    /// as `holes` says.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the geometry is empty, a ring has fewer than 3 points or
    /// a coordinate is not finite, a polygon has holes and `holes` is
    /// [`HoleHandling::Reject`], or a split leaves holes (degenerate input).
    pub fn from_multi_polygon(
        id: u64,
        image: &CocoImage,
        category_id: u64,
        geometry: &MultiPolygon<f64>,
        holes: HoleHandling,
    ) -> Result<Self> {
        const OP: &str = "CocoAnnotation::from_multi_polygon";
        let polys: Vec<&Polygon<f64>> = geometry
            .0
            .iter()
            .filter(|p| !p.exterior().0.is_empty())
            .collect();
        if polys.is_empty() {
            return Err(Error::invalid(
                OP,
                format!("annotation {id}: empty geometry"),
            ));
        }
        let has_holes = polys.iter().any(|p| !p.interiors().is_empty());
        let segmentation = match (has_holes, holes) {
            (true, HoleHandling::Reject) => {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "annotation {id}: a polygon has holes, which COCO polygons cannot \
                         express; choose HoleHandling::SplitIntoParts or HoleHandling::Rle"
                    ),
                ))
            }
            (true, HoleHandling::Rle) => {
                let mask = rasterize_mask(
                    [geometry],
                    image.width as usize,
                    image.height as usize,
                    Coords::Pixel,
                    BurnRule::PixelCenter,
                )
                .map_err(|e| Error::invalid(OP, format!("annotation {id}: {e}")))?;
                Segmentation::Rle(Rle::from_mask(mask.view()))
            }
            _ => {
                let mut rings = Vec::new();
                for p in polys {
                    for part in split_holes(p)
                        .map_err(|m| Error::invalid(OP, format!("annotation {id}: {m}")))?
                    {
                        rings.push(flat_ring(part.exterior()));
                    }
                }
                Segmentation::Polygons(rings)
            }
        };
        let mut ann = CocoAnnotation {
            id,
            image_id: image.id,
            category_id,
            segmentation,
            area: 0.0,
            bbox: [0.0; 4],
            iscrowd: 0,
            extra: Map::new(),
        };
        ann.segmentation
            .check()
            .map_err(|m| Error::invalid(OP, format!("annotation {id}: {m}")))?;
        ann.refresh_area_bbox()?;
        Ok(ann)
    }
}

/// A ring as flat `[x0, y0, ...]` without the closing point.
fn flat_ring(ring: &LineString<f64>) -> Vec<f64> {
    let mut c = ring.0.as_slice();
    if c.len() > 1 && c.first() == c.last() {
        c = &c[..c.len() - 1];
    }
    c.iter().flat_map(|p| [p.x, p.y]).collect()
}

/// `[x, y, w, h]` of a bounding rectangle, zeros for none.
fn bbox_of(r: Option<Rect<f64>>) -> [f64; 4] {
    r.map_or([0.0; 4], |r| [r.min().x, r.min().y, r.width(), r.height()])
}

/// Pixel count and pixel bounding box of a mask.
fn mask_area_bbox(mask: ArrayView2<'_, bool>) -> (f64, [f64; 4]) {
    let (mut n, mut r0, mut r1, mut c0, mut c1) = (0usize, usize::MAX, 0, usize::MAX, 0);
    for ((r, c), &v) in mask.indexed_iter() {
        if v {
            n += 1;
            (r0, r1, c0, c1) = (r0.min(r), r1.max(r + 1), c0.min(c), c1.max(c + 1));
        }
    }
    if n == 0 {
        return (0.0, [0.0; 4]);
    }
    (
        n as f64,
        [c0 as f64, r0 as f64, (c1 - c0) as f64, (r1 - r0) as f64],
    )
}

/// Cuts a polygon with holes into hole-free parts along vertical lines through an interior
/// point of each hole. A cut opens every hole it crosses into the outside of the slab, so the
/// parts have no holes; parts that still do (degenerate touching rings) are cut again.
fn split_holes(poly: &Polygon<f64>) -> std::result::Result<Vec<Polygon<f64>>, String> {
    let mut done = Vec::new();
    let mut todo = vec![poly.clone()];
    for _round in 0..4 {
        let mut again = Vec::new();
        for p in todo {
            if p.interiors().is_empty() {
                done.push(p);
                continue;
            }
            let Some(bbox) = p.bounding_rect() else {
                continue;
            };
            let mut cuts: Vec<f64> = p
                .interiors()
                .iter()
                .filter_map(|h| Polygon::new(h.clone(), vec![]).interior_point())
                .map(|pt| pt.x())
                .collect();
            cuts.sort_by(f64::total_cmp);
            cuts.dedup();
            let (y0, y1) = (bbox.min().y - 1.0, bbox.max().y + 1.0);
            let mut edges = vec![bbox.min().x - 1.0];
            edges.extend(cuts);
            edges.push(bbox.max().x + 1.0);
            for w in edges.windows(2) {
                let slab = Rect::new(Coord { x: w[0], y: y0 }, Coord { x: w[1], y: y1 });
                again.extend(p.intersection(&slab.to_polygon()).0);
            }
        }
        if again.is_empty() {
            return Ok(done);
        }
        todo = again;
    }
    if todo.iter().all(|p| p.interiors().is_empty()) {
        done.extend(todo);
        Ok(done)
    } else {
        Err("could not split a polygon with holes into hole-free parts".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_counts_round_trip_including_negative_differences() {
        let counts = vec![0, 5, 3, 1000, 2, 7, 123456, 1, 1];
        let s = encode_counts(&counts);
        assert_eq!(decode_counts(&s).unwrap(), counts);
    }

    #[test]
    fn rle_mask_is_column_major() {
        // 2 x 3 mask, column-major runs: 1 zero, 2 ones, 3 zeros.
        let rle = Rle {
            size: [2, 3],
            counts: RleCounts::Uncompressed(vec![1, 2, 3]),
        };
        let m = rle.to_mask().unwrap();
        assert_eq!(
            m,
            ndarray::array![[false, true, false], [true, false, false]]
        );
        let back = Rle::from_mask(m.view());
        assert_eq!(back.counts().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn bad_counts_are_errors() {
        let rle = Rle {
            size: [2, 3],
            counts: RleCounts::Uncompressed(vec![1, 2]),
        };
        assert!(rle
            .to_mask()
            .unwrap_err()
            .to_string()
            .contains("add up to 3"));
        let rle = Rle {
            size: [2, 3],
            counts: RleCounts::Compressed("1~".into()),
        };
        assert!(rle.to_mask().is_err());
        let rle = Rle {
            size: [1 << 20, 1 << 20],
            counts: RleCounts::Uncompressed(vec![]),
        };
        assert!(rle.to_mask().unwrap_err().to_string().contains("limit"));
    }

    #[test]
    fn ring_rules() {
        assert!(ring_coords(&[0.0, 0.0, 1.0, 0.0, 1.0])
            .unwrap_err()
            .contains("odd"));
        assert!(ring_coords(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
            .unwrap_err()
            .contains("2 points"));
        assert_eq!(
            ring_coords(&[0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
                .unwrap()
                .len(),
            3
        );
    }
}

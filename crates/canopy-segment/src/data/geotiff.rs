//! GeoTIFF loaders: image + mask pairs, and tiles + polygon files.
//!
//! Besides GeoTIFFs, the image side accepts any PNG / JPEG that GDAL would read as
//! georeferenced through a PAM sidecar (`<file>.aux.xml`, see `pam.rs`), whatever its
//! extension: the Banepa tiles are JPEG data named `.tif`.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use canopy_raster::{GeoTiff, GeoTransform, Georef};
use canopy_vector::geojson_io::Reprojection;
use ndarray::{Array2, Array3, Axis};
use tiff::tags::Tag;

use super::image_io::read_picture;
use super::pam::{is_tiff, read_pam_georef};
use super::polygons::{LabelReport, LabelSet, Projection};
use super::{apply_validity, list_files, out_of_range, LabelledImage, SampleSource, IGNORE};
use crate::{Error, Result};

/// Which GeoTIFF band, if any, is an alpha channel (dropped from the image; alpha 0 makes the
/// pixel [`IGNORE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaBand {
    /// The band the TIFF `ExtraSamples` tag marks as associated or unassociated alpha (what
    /// GDAL writes for `-b 1 -b 2 -b 3 -b mask` or `ALPHA=YES`); none when the tag is absent.
    #[default]
    FromTags,
    /// The last band, whatever the tags say (for files written without `ExtraSamples`).
    Last,
    /// No alpha: every band is image data.
    None,
}

/// How the values of a mask GeoTIFF become labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskCoding {
    /// The values are class ids `0..=254` (255 = [`IGNORE`]); anything else is an error.
    #[default]
    ClassIds,
    /// 0 is background, any other value is class 1 (footprint masks stored as 0 / 255).
    Binary,
}

/// A GeoTIFF image as `f32` bands, which of its pixels are valid, and its georeference.
pub(crate) struct GeoImage {
    pub(crate) bands: Array3<f32>,
    pub(crate) valid: Option<Array2<bool>>,
    pub(crate) georef: Georef,
}

/// Reads a GeoTIFF, or a PNG / JPEG georeferenced by its PAM sidecar (`alpha` applies to
/// GeoTIFFs; a PNG's own alpha channel is always used).
pub(crate) fn read_georeferenced(path: &Path, alpha: AlphaBand) -> Result<GeoImage> {
    if is_tiff(path)? {
        return read_geotiff_image(path, alpha);
    }
    let pic = read_picture(path)?;
    let georef = if super::pam::sidecar(path).is_file() {
        let (t, epsg) = read_pam_georef(path)?;
        Georef::new(t, Some(epsg))
    } else {
        Georef::default()
    };
    Ok(GeoImage {
        bands: pic.bands,
        valid: pic.valid,
        georef,
    })
}

/// The geotransform and EPSG code of a GeoTIFF or of a picture with a PAM sidecar, without
/// decoding pixels; `None`s when the file has none.
fn georef_of(path: &Path) -> Result<(Option<GeoTransform>, Option<u32>)> {
    if is_tiff(path)? {
        let g = GeoTiff::open(path)?.info().georef.clone();
        Ok((g.transform, g.crs.epsg))
    } else if super::pam::sidecar(path).is_file() {
        let (t, epsg) = read_pam_georef(path)?;
        Ok((Some(t), Some(epsg)))
    } else {
        Ok((None, None))
    }
}

/// Reads every band of `path`; drops the alpha band; marks alpha-0 and nodata pixels.
pub(crate) fn read_geotiff_image(path: &Path, alpha: AlphaBand) -> Result<GeoImage> {
    let tif = GeoTiff::open(path)?;
    let raster = tif.read_as::<f32>()?;
    let bands = raster.bands();
    let alpha_band = match alpha {
        AlphaBand::None => None,
        AlphaBand::Last if bands < 2 => {
            return Err(Error::File {
                path: path.to_path_buf(),
                message: format!(
                    "AlphaBand::Last needs at least 2 bands, the file has {bands}; use \
                     AlphaBand::None"
                ),
            })
        }
        AlphaBand::Last => Some(bands - 1),
        AlphaBand::FromTags => alpha_from_tags(path, bands)?,
    };
    let mut valid: Option<Array2<bool>> = None;
    let mut colour = Vec::with_capacity(bands);
    for (b, band) in raster.data.axis_iter(Axis(0)).enumerate() {
        if Some(b) == alpha_band {
            let a = band.mapv(|v| v != 0.0);
            valid = Some(match valid {
                Some(v) => v & &a,
                None => a,
            });
        } else {
            colour.push(b);
            if raster.nodata.is_some() {
                let ok = band.mapv(|v| !raster.is_nodata(v));
                valid = Some(match valid {
                    Some(v) => v & &ok,
                    None => ok,
                });
            }
        }
    }
    let image = raster.data.select(Axis(0), &colour);
    Ok(GeoImage {
        bands: image,
        valid,
        georef: raster.georef,
    })
}

/// The alpha band named by the `ExtraSamples` tag (values 1 and 2), if any.
fn alpha_from_tags(path: &Path, bands: usize) -> Result<Option<usize>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let tiff_err = |e: tiff::TiffError| Error::File {
        path: path.to_path_buf(),
        message: format!("reading the ExtraSamples tag: {e}"),
    };
    let mut dec = tiff::decoder::Decoder::new(BufReader::new(file)).map_err(tiff_err)?;
    let extra: Vec<u16> = dec
        .find_tag_unsigned_vec(Tag::ExtraSamples)
        .map_err(tiff_err)?
        .unwrap_or_default();
    let first_extra = bands.saturating_sub(extra.len());
    Ok(extra
        .iter()
        .position(|&v| v == 1 || v == 2)
        .map(|k| first_extra + k))
}

/// Pairs of GeoTIFFs: an image and a single-band mask of the same size.
///
/// The mask's values are read through a [`MaskCoding`]; pixels equal to the mask's nodata
/// value, and image pixels that are nodata or have alpha 0, become [`IGNORE`]. When both files
/// carry a geotransform they must agree.
#[derive(Debug, Clone)]
pub struct GeoTiffPairs {
    pairs: Vec<(PathBuf, PathBuf)>,
    group: String,
    coding: MaskCoding,
    alpha: AlphaBand,
}

impl GeoTiffPairs {
    /// Explicit `(image, mask)` pairs, all in `group`.
    pub fn new(
        pairs: Vec<(PathBuf, PathBuf)>,
        group: impl Into<String>,
        coding: MaskCoding,
    ) -> Self {
        GeoTiffPairs {
            pairs,
            group: group.into(),
            coding,
            alpha: AlphaBand::default(),
        }
    }

    /// Every `*.tif` / `*.tiff` of `image_dir` paired with the file of the same name in
    /// `mask_dir` (the layout of RAMP's `chips/` + `binarymasks/` and of the Inria dataset's
    /// `images/` + `gt/`).
    ///
    /// # Errors
    /// [`Error::Io`] when a folder cannot be listed, [`Error::File`] naming the first image
    /// without a mask, [`Error::Config`] when `image_dir` holds no GeoTIFF.
    pub fn from_folders(
        image_dir: impl AsRef<Path>,
        mask_dir: impl AsRef<Path>,
        group: impl Into<String>,
        coding: MaskCoding,
    ) -> Result<Self> {
        let (image_dir, mask_dir) = (image_dir.as_ref(), mask_dir.as_ref());
        let images = list_files(image_dir, &[".tif", ".tiff"])?;
        if images.is_empty() {
            return Err(Error::Config {
                context: "GeoTiffPairs::from_folders",
                message: format!("no .tif/.tiff file in {}", image_dir.display()),
            });
        }
        let mut pairs = Vec::with_capacity(images.len());
        for image in images {
            let name = image.file_name().map(PathBuf::from).unwrap_or_default();
            let mask = mask_dir.join(&name);
            if !mask.is_file() {
                return Err(Error::File {
                    path: image,
                    message: format!("no mask of the same name in {}", mask_dir.display()),
                });
            }
            pairs.push((image, mask));
        }
        Ok(GeoTiffPairs::new(pairs, group, coding))
    }

    /// Chooses how an alpha band is found (default [`AlphaBand::FromTags`]).
    pub fn with_alpha(mut self, alpha: AlphaBand) -> Self {
        self.alpha = alpha;
        self
    }
}

impl SampleSource for GeoTiffPairs {
    fn len(&self) -> usize {
        self.pairs.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.pairs.get(index).map(|(p, _)| p.as_path())
    }

    fn load(&self, index: usize) -> Result<LabelledImage> {
        let (image_path, mask_path) = self
            .pairs
            .get(index)
            .ok_or_else(|| out_of_range("GeoTiffPairs::load", index, self.pairs.len()))?;
        let img = read_georeferenced(image_path, self.alpha)?;
        let mask_tif = GeoTiff::open(mask_path)?;
        let raster = mask_tif.read_as::<f64>()?;
        let file_err = |message: String| Error::File {
            path: mask_path.clone(),
            message,
        };
        let (_, h, w) = img.bands.dim();
        if raster.bands() != 1 || raster.height() != h || raster.width() != w {
            return Err(file_err(format!(
                "mask has {} band(s) of {} x {} (rows x cols), the image {} is {h} x {w}: \
                 masks must be one band of the image's size",
                raster.bands(),
                raster.height(),
                raster.width(),
                image_path.display()
            )));
        }
        if let (Some(a), Some(b)) = (img.georef.transform, raster.georef.transform) {
            if !same_grid(&a, &b) {
                return Err(file_err(format!(
                    "mask geotransform {:?} differs from the image's {:?} ({})",
                    b.0,
                    a.0,
                    image_path.display()
                )));
            }
        }
        let mut mask = Array2::<u8>::zeros((h, w));
        for ((r, c), v) in raster.data.index_axis(Axis(0), 0).indexed_iter() {
            let label = if raster.is_nodata(*v) {
                IGNORE
            } else {
                match self.coding {
                    MaskCoding::Binary => u8::from(*v != 0.0),
                    MaskCoding::ClassIds => {
                        if v.fract() != 0.0 || !(0.0..=255.0).contains(v) {
                            return Err(file_err(format!(
                                "value {v} at row {r}, column {c} is not a class id 0..=255; \
                                 use MaskCoding::Binary for 0 / non-zero masks"
                            )));
                        }
                        *v as u8
                    }
                }
            };
            if let Some(px) = mask.get_mut((r, c)) {
                *px = label;
            }
        }
        apply_validity(&mut mask, img.valid.as_ref());
        LabelledImage::new(img.bands, mask, self.group.clone(), image_path.clone())
    }
}

/// Whether two transforms describe the same pixel grid (to a millionth of a pixel).
fn same_grid(a: &GeoTransform, b: &GeoTransform) -> bool {
    let scale = a.0[1].abs().max(a.0[5].abs()).max(f64::MIN_POSITIVE);
    a.0.iter()
        .zip(b.0.iter())
        .all(|(x, y)| (x - y).abs() <= 1e-6 * scale)
}

/// Georeferenced GeoTIFF tiles labelled by polygons from GeoJSON files.
///
/// Tiles are the `*.tif` / `*.tiff` of a folder; each may be a real GeoTIFF or a PNG / JPEG
/// georeferenced by a GDAL `.aux.xml` sidecar.
///
/// The polygons burn class 1 (pixel-centre rule) into each tile's grid. A GeoJSON file's CRS
/// is its `crs` member (WGS 84 / CRS84 when absent, as RFC 7946 says); polygons are
/// reprojected to each tile's EPSG code when the two differ. Invalid polygons are repaired or
/// skipped and counted in [`GeoTiffPolygons::report`].
#[derive(Debug, Clone)]
pub struct GeoTiffPolygons {
    tiles: Vec<(PathBuf, u32, GeoTransform)>,
    labels: BTreeMap<u32, LabelSet>,
    group: String,
    alpha: AlphaBand,
}

impl GeoTiffPolygons {
    /// Lists the `*.tif` / `*.tiff` of `tile_dir`, reads their georeferencing and the polygons
    /// of `label_files`.
    ///
    /// # Errors
    /// [`Error::Config`] when there is no tile; [`Error::File`] naming a tile without a
    /// geotransform or EPSG code; GeoJSON reading and reprojection errors naming the file.
    pub fn open(
        tile_dir: impl AsRef<Path>,
        label_files: &[impl AsRef<Path>],
        group: impl Into<String>,
    ) -> Result<Self> {
        let tile_dir = tile_dir.as_ref();
        let paths = list_files(tile_dir, &[".tif", ".tiff"])?;
        if paths.is_empty() {
            return Err(Error::Config {
                context: "GeoTiffPolygons::open",
                message: format!("no .tif/.tiff file in {}", tile_dir.display()),
            });
        }
        let mut tiles = Vec::with_capacity(paths.len());
        for path in paths {
            let (Some(t), Some(epsg)) = georef_of(&path)? else {
                return Err(Error::File {
                    path,
                    message: "no geotransform or no EPSG code (GeoTIFF tags, or a GDAL \
                              .aux.xml sidecar for PNG/JPEG): the polygons cannot be placed on \
                              this tile"
                        .into(),
                });
            };
            tiles.push((path, epsg, t));
        }
        let mut labels = BTreeMap::new();
        for &(_, epsg, _) in &tiles {
            if labels.contains_key(&epsg) {
                continue;
            }
            let set = LabelSet::from_geojson(label_files, 1, |from, file| {
                let from = from.ok_or_else(|| Error::File {
                    path: file.to_path_buf(),
                    message: "the GeoJSON names a CRS without an EPSG code".into(),
                })?;
                Ok(if from == epsg {
                    Projection::Identity
                } else {
                    Projection::Epsg(Box::new(Reprojection::new(from, epsg)?))
                })
            })?;
            labels.insert(epsg, set);
        }
        Ok(GeoTiffPolygons {
            tiles,
            labels,
            group: group.into(),
            alpha: AlphaBand::default(),
        })
    }

    /// Chooses how an alpha band is found (default [`AlphaBand::FromTags`]).
    pub fn with_alpha(mut self, alpha: AlphaBand) -> Self {
        self.alpha = alpha;
        self
    }

    /// Number of polygons kept from the label files.
    pub fn polygons(&self) -> usize {
        self.labels.values().next().map_or(0, LabelSet::len)
    }

    /// What happened to the label polygons (repaired and skipped features).
    pub fn report(&self) -> LabelReport {
        self.labels
            .values()
            .next()
            .map(|s| s.report.clone())
            .unwrap_or_default()
    }
}

impl SampleSource for GeoTiffPolygons {
    fn len(&self) -> usize {
        self.tiles.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.tiles.get(index).map(|(p, _, _)| p.as_path())
    }

    fn load(&self, index: usize) -> Result<LabelledImage> {
        let (path, epsg, transform) = self
            .tiles
            .get(index)
            .ok_or_else(|| out_of_range("GeoTiffPolygons::load", index, self.tiles.len()))?;
        let img = read_georeferenced(path, self.alpha)?;
        let (_, h, w) = img.bands.dim();
        let set = self.labels.get(epsg).ok_or_else(|| Error::File {
            path: path.clone(),
            message: format!("no polygons prepared for EPSG:{epsg}"),
        })?;
        let mut mask = set.burn(w, h, *transform)?;
        apply_validity(&mut mask, img.valid.as_ref());
        LabelledImage::new(img.bands, mask, self.group.clone(), path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiff::encoder::{colortype, TiffEncoder};
    use tiff::tags::ExtraSamples;

    /// A 4 x 3 RGB GeoTIFF with an unassociated alpha band, alpha 0 at (0, 1) and (2, 3).
    fn write_rgba(path: &Path) {
        let mut data = Vec::new();
        for r in 0..3u8 {
            for c in 0..4u8 {
                let a = if (r, c) == (0, 1) || (r, c) == (2, 3) {
                    0
                } else {
                    255
                };
                data.extend([10 * r + c, 100, 200, a]);
            }
        }
        let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
        let mut img = enc.new_image::<colortype::RGB8>(4, 3).unwrap();
        img.extra_samples(&[ExtraSamples::UnassociatedAlpha])
            .unwrap();
        img.write_data(&data).unwrap();
    }

    fn write_gray16(path: &Path, values: &[u16]) {
        let mut enc = TiffEncoder::new(std::fs::File::create(path).unwrap()).unwrap();
        enc.write_image::<colortype::Gray16>(4, 3, values).unwrap();
    }

    #[test]
    fn alpha_band_from_tags_is_dropped_and_masks_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let (img, mask) = (dir.path().join("img.tif"), dir.path().join("mask.tif"));
        write_rgba(&img);
        let labels: Vec<u16> = (0..12).map(|i| i % 3).collect();
        write_gray16(&mask, &labels);
        let pairs = GeoTiffPairs::new(vec![(img.clone(), mask.clone())], "g", MaskCoding::ClassIds);
        let s = pairs.load(0).unwrap();
        assert_eq!((s.bands(), s.height(), s.width()), (3, 3, 4));
        assert_eq!(s.image()[[0, 2, 1]], 21.0);
        assert_eq!(s.image()[[2, 1, 1]], 200.0);
        assert_eq!(s.mask()[[0, 1]], IGNORE);
        assert_eq!(s.mask()[[2, 3]], IGNORE);
        assert_eq!(s.mask()[[1, 2]], 0); // label 6 % 3
        assert_eq!(s.mask()[[1, 1]], 2); // label 5 % 3
        assert_eq!(s.mask().iter().filter(|&&m| m == IGNORE).count(), 2);

        // Without alpha handling the fourth band is data and every pixel is labelled.
        let raw = pairs.clone().with_alpha(AlphaBand::None).load(0).unwrap();
        assert_eq!(raw.bands(), 4);
        assert_eq!(raw.valid_fraction(), 1.0);
        assert_eq!(raw.image()[[3, 0, 1]], 0.0);
    }

    #[test]
    fn mask_values_are_checked_and_binary_coding_folds_them() {
        let dir = tempfile::tempdir().unwrap();
        let (img, mask) = (dir.path().join("img.tif"), dir.path().join("mask.tif"));
        write_rgba(&img);
        let mut values = vec![0u16; 12];
        values[5] = 300;
        values[6] = 255;
        write_gray16(&mask, &values);
        let ids = GeoTiffPairs::new(vec![(img.clone(), mask.clone())], "g", MaskCoding::ClassIds);
        let err = ids.load(0).unwrap_err().to_string();
        assert!(err.contains("mask.tif") && err.contains("300"), "{err}");
        let bin = GeoTiffPairs::new(vec![(img, mask)], "g", MaskCoding::Binary);
        let s = bin.load(0).unwrap();
        assert_eq!(
            (s.mask()[[1, 1]], s.mask()[[1, 2]], s.mask()[[0, 0]]),
            (1, 1, 0)
        );
    }

    #[test]
    fn folders_pair_by_name_and_name_the_missing_mask() {
        let dir = tempfile::tempdir().unwrap();
        let (images, masks) = (dir.path().join("images"), dir.path().join("gt"));
        std::fs::create_dir_all(&images).unwrap();
        std::fs::create_dir_all(&masks).unwrap();
        write_rgba(&images.join("a.tif"));
        write_rgba(&images.join("b.tif"));
        write_gray16(&masks.join("a.tif"), &[1; 12]);
        let err = GeoTiffPairs::from_folders(&images, &masks, "g", MaskCoding::Binary).unwrap_err();
        assert!(err.to_string().contains("b.tif"), "{err}");
        write_gray16(&masks.join("b.tif"), &[0; 12]);
        let pairs = GeoTiffPairs::from_folders(&images, &masks, "g", MaskCoding::Binary).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs.load(1).unwrap().class_fraction(1), 0.0);
    }
}

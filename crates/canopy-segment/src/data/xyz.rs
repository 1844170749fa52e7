//! Web-Mercator XYZ PNG tiles labelled by one lon/lat GeoJSON per area (RAMP's layout).

use std::path::{Path, PathBuf};

use canopy_raster::geo::parse_xyz_name;
use canopy_raster::xyz_tile_georef;

use super::image_io::read_picture;
use super::polygons::{LabelReport, LabelSet, Projection};
use super::{apply_validity, list_files, out_of_range, LabelledImage, SampleSource};
use crate::{Error, Result};

/// One area of XYZ tiles: `dir/<prefix>-x-y-z.png` (any zooms) and `dir/labels.geojson`.
///
/// Each tile is georeferenced from its name (`canopy_raster::xyz_tile_georef`, EPSG:3857,
/// tile size = the PNG's width); the lon/lat polygons are projected to Web Mercator with the
/// exact spherical formula ([`super::web_mercator`]), repaired when invalid (counted in
/// [`XyzArea::report`]) and burned as class 1 with the pixel-centre rule. RGBA tiles lose
/// their alpha band, and pixels with alpha 0 become [`super::IGNORE`].
#[derive(Debug, Clone)]
pub struct XyzArea {
    tiles: Vec<(PathBuf, (u32, u32, u32))>,
    labels: LabelSet,
    group: String,
}

impl XyzArea {
    /// Opens `dir` with its `labels.geojson`.
    ///
    /// # Errors
    /// As [`XyzArea::open_with_labels`].
    pub fn open(dir: impl AsRef<Path>, group: impl Into<String>) -> Result<Self> {
        let dir = dir.as_ref();
        XyzArea::open_with_labels(dir, dir.join("labels.geojson"), group)
    }

    /// Opens the PNG tiles of `dir` with the polygons of `labels` (lon/lat GeoJSON).
    ///
    /// # Errors
    /// [`Error::Config`] when `dir` has no PNG; [`Error::File`] naming a PNG whose name has
    /// no `x-y-z` or a label file in another CRS than WGS 84; GeoJSON reading errors.
    pub fn open_with_labels(
        dir: impl AsRef<Path>,
        labels: impl AsRef<Path>,
        group: impl Into<String>,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tiles = Vec::new();
        for path in list_files(dir, &[".png"])? {
            let name = path.to_string_lossy().into_owned();
            let xyz = parse_xyz_name(&name).ok_or_else(|| Error::File {
                path: path.clone(),
                message: "the name does not end in -x-y-z.png, so the tile cannot be placed".into(),
            })?;
            tiles.push((path, xyz));
        }
        if tiles.is_empty() {
            return Err(Error::Config {
                context: "XyzArea::open",
                message: format!("no .png tile in {}", dir.display()),
            });
        }
        let labels = LabelSet::from_geojson(&[labels.as_ref()], 1, |epsg, file| {
            if epsg == Some(4326) {
                Ok(Projection::WebMercator)
            } else {
                Err(Error::File {
                    path: file.to_path_buf(),
                    message: format!(
                        "labels must be WGS 84 lon/lat for XYZ tiles, the file says {epsg:?}"
                    ),
                })
            }
        })?;
        Ok(XyzArea {
            tiles,
            labels,
            group: group.into(),
        })
    }

    /// The `(x, y, z)` of tile `index`.
    pub fn tile_xyz(&self, index: usize) -> Option<(u32, u32, u32)> {
        self.tiles.get(index).map(|t| t.1)
    }

    /// Number of polygons kept from the label file.
    pub fn polygons(&self) -> usize {
        self.labels.len()
    }

    /// What happened to the label polygons (repaired and skipped features).
    pub fn report(&self) -> &LabelReport {
        &self.labels.report
    }
}

impl SampleSource for XyzArea {
    fn len(&self) -> usize {
        self.tiles.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.tiles.get(index).map(|t| t.0.as_path())
    }

    fn load(&self, index: usize) -> Result<LabelledImage> {
        let (path, (x, y, z)) = self
            .tiles
            .get(index)
            .ok_or_else(|| out_of_range("XyzArea::load", index, self.tiles.len()))?;
        let pic = read_picture(path)?;
        let (_, h, w) = pic.bands.dim();
        if h != w {
            return Err(Error::File {
                path: path.clone(),
                message: format!("XYZ tiles are square, this one is {h} x {w}"),
            });
        }
        let georef = xyz_tile_georef(*x, *y, *z, w).map_err(|e| Error::File {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let transform = georef.transform.ok_or_else(|| Error::File {
            path: path.clone(),
            message: "no transform for this tile".into(),
        })?;
        let mut mask = self.labels.burn(w, h, transform)?;
        apply_validity(&mut mask, pic.valid.as_ref());
        LabelledImage::new(pic.bands, mask, self.group.clone(), path.clone())
    }
}

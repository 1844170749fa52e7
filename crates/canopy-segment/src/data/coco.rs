//! COCO annotation files with their image folder (CrowdAI, RAMP's `coco/aoiN.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use canopy_raster::GeoTransform;
use canopy_vector::coco::CocoDataset;
use geo_types::Geometry;

use super::image_io::read_picture;
use super::polygons::{LabelReport, LabelSet, Projection};
use super::{apply_validity, out_of_range, LabelledImage, SampleSource};
use crate::{Error, Result};

/// Which mask value each COCO category burns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CategoryMap {
    /// Every category is class 1 (building datasets with one category).
    #[default]
    AllForeground,
    /// `category_id -> class`; annotations of other categories are left out (and counted as
    /// skipped in the report).
    Explicit(BTreeMap<u64, u8>),
}

/// A COCO file and the folder its images' `file_name`s are relative to.
///
/// Polygon and RLE segmentations (`canopy_vector::coco`) are burned in pixel coordinates with
/// the pixel-centre rule, in annotation order (a later annotation wins where two overlap).
/// Each image must decode to the `width` x `height` the file gives; images without
/// annotations are all background. Invalid polygons are repaired (CrowdAI has a few) and
/// counted in [`CocoFolder::report`].
#[derive(Debug, Clone)]
pub struct CocoFolder {
    images: Vec<(PathBuf, u32, u32, LabelSet)>,
    report: LabelReport,
    annotation_file: PathBuf,
    group: String,
}

impl CocoFolder {
    /// Reads `annotation_file` and resolves its images in `image_root`.
    ///
    /// # Errors
    /// COCO reading errors naming the file (`canopy_vector::coco`), and [`Error::File`] naming
    /// an annotation whose segmentation cannot be turned into polygons.
    pub fn open(
        annotation_file: impl AsRef<Path>,
        image_root: impl AsRef<Path>,
        group: impl Into<String>,
        categories: &CategoryMap,
    ) -> Result<Self> {
        let annotation_file = annotation_file.as_ref();
        let image_root = image_root.as_ref();
        let coco = CocoDataset::read(annotation_file)?;
        let mut index = BTreeMap::new();
        let mut images = Vec::with_capacity(coco.images.len());
        for (k, img) in coco.images.iter().enumerate() {
            index.insert(img.id, k);
            images.push((
                image_root.join(&img.file_name),
                img.width,
                img.height,
                LabelSet::default(),
            ));
        }
        let mut report = LabelReport::default();
        for ann in &coco.annotations {
            let class = match categories {
                CategoryMap::AllForeground => 1,
                CategoryMap::Explicit(map) => match map.get(&ann.category_id) {
                    Some(&c) => c,
                    None => {
                        report.features += 1;
                        report.skipped += 1;
                        report.warnings.push(format!(
                            "{}: annotation {}: skipped, category {} is not in the map",
                            annotation_file.display(),
                            ann.id,
                            ann.category_id
                        ));
                        continue;
                    }
                },
            };
            let Some(&k) = index.get(&ann.image_id) else {
                return Err(Error::File {
                    path: annotation_file.to_path_buf(),
                    message: format!("annotation {} names unknown image {}", ann.id, ann.image_id),
                });
            };
            let mp = ann.to_multi_polygon().map_err(|e| Error::File {
                path: annotation_file.to_path_buf(),
                message: format!("annotation {}: {e}", ann.id),
            })?;
            let source = PathBuf::from(format!(
                "{} (annotation {})",
                annotation_file.display(),
                ann.id
            ));
            if let Some(entry) = images.get_mut(k) {
                entry.3.extend(
                    &source,
                    [Geometry::MultiPolygon(mp)],
                    class,
                    &Projection::Identity,
                );
            }
        }
        for entry in &mut images {
            report.features += entry.3.report.features;
            report.kept += entry.3.report.kept;
            report.repaired += entry.3.report.repaired;
            report.skipped += entry.3.report.skipped;
            report.warnings.append(&mut entry.3.report.warnings);
        }
        Ok(CocoFolder {
            images,
            report,
            annotation_file: annotation_file.to_path_buf(),
            group: group.into(),
        })
    }

    /// Number of polygons (annotations) kept, over all images.
    pub fn polygons(&self) -> usize {
        self.images.iter().map(|i| i.3.len()).sum()
    }

    /// Number of polygons (annotations) kept for image `index`.
    pub fn polygons_of(&self, index: usize) -> Option<usize> {
        self.images.get(index).map(|i| i.3.len())
    }

    /// The item whose image file is `path`, if any.
    pub fn position(&self, path: &Path) -> Option<usize> {
        self.images.iter().position(|i| i.0 == path)
    }

    /// What happened to the annotations (repaired and skipped ones).
    pub fn report(&self) -> &LabelReport {
        &self.report
    }
}

impl SampleSource for CocoFolder {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn path(&self, index: usize) -> Option<&Path> {
        self.images.get(index).map(|i| i.0.as_path())
    }

    fn load(&self, index: usize) -> Result<LabelledImage> {
        let (path, width, height, labels) = self
            .images
            .get(index)
            .ok_or_else(|| out_of_range("CocoFolder::load", index, self.images.len()))?;
        let pic = read_picture(path)?;
        let (_, h, w) = pic.bands.dim();
        if (w, h) != (*width as usize, *height as usize) {
            return Err(Error::File {
                path: path.clone(),
                message: format!(
                    "the image is {w} x {h} (width x height), {} says {width} x {height}",
                    self.annotation_file.display()
                ),
            });
        }
        let mut mask = labels.burn(w, h, GeoTransform::IDENTITY)?;
        apply_validity(&mut mask, pic.valid.as_ref());
        LabelledImage::new(pic.bands, mask, self.group.clone(), path.clone())
    }
}

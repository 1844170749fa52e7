//! eo-learn `EOPatch` folders saved with `EOPatch.save` (uncompressed `.npy` features).
//!
//! # Layout
//! ```text
//! patch/
//!   timestamps.json        ["2015-07-11T10:00:08", ...]   T acquisition times
//!   data/NAME.npy          (T, H, W, C) float features (bands, NDVI, cloud probability)
//!   mask/NAME.npy          (T, H, W, C) integer/bool masks (CLM cloud mask, IS_DATA)
//!   data_timeless/NAME.npy (H, W, C)    float features (DEM)
//!   mask_timeless/NAME.npy (H, W, C)    integer masks (LULC land cover labels)
//! ```
//! Other folders (`bbox.geojson`, `vector/`, `meta_info/`, ...) are ignored. Features saved
//! compressed (`.npy.gz`) must be decompressed first (`gunzip`).
//!
//! A [`PatchSpec`] says which `data/` features form the channels, which masks mark invalid
//! (`CLM`: non-zero = cloud) or valid (`IS_DATA`: non-zero = data) pixels, and which timeless
//! mask holds the labels. [`EoPatch::load`] gives a [`PatchSeries`]; its
//! [`PatchSeries::to_pixel_dataset`] makes every pixel a sample.
//!
//! # References
//! eo-learn (Sinergise): <https://github.com/sentinel-hub/eo-learn>, `EOPatch` and
//! `FeatureType`.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, Array4, ArrayD, Axis, Ix3, Ix4};

use crate::npy::read_npy;
use crate::sample::remap_labels;
use crate::{Date, Error, PatchSeries, Result};

/// An EOPatch folder on disk.
#[derive(Debug, Clone)]
pub struct EoPatch {
    root: PathBuf,
    timestamps: Vec<Date>,
}

/// Which features of an [`EoPatch`] to load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatchSpec {
    /// `data/` features concatenated along channels (e.g. `["NDVI"]`, `["BANDS"]`).
    pub data: Vec<String>,
    /// `mask/` features whose non-zero values mark a pixel invalid (e.g. `"CLM"`).
    pub invalid_masks: Vec<String>,
    /// `mask/` features whose zero values mark a pixel invalid (e.g. `"IS_DATA"`).
    pub valid_masks: Vec<String>,
    /// `mask_timeless/` feature whose first channel holds the class of each pixel
    /// (e.g. `"LULC"`); values are remapped to `0..K` in ascending order.
    pub labels: Option<String>,
}

impl PatchSpec {
    /// A spec reading `data` features with the usual eo-learn masks: `CLM` invalid,
    /// `IS_DATA` valid.
    pub fn new(data: &[&str]) -> PatchSpec {
        PatchSpec {
            data: data.iter().map(|s| s.to_string()).collect(),
            invalid_masks: vec!["CLM".into()],
            valid_masks: vec!["IS_DATA".into()],
            labels: None,
        }
    }

    /// The same spec with labels from `mask_timeless/<name>.npy`.
    pub fn with_labels(mut self, name: &str) -> PatchSpec {
        self.labels = Some(name.to_string());
        self
    }
}

fn fmt_err(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

impl EoPatch {
    /// Opens a patch folder and reads its `timestamps.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when `timestamps.json` cannot be read; [`Error::Format`] when it is not a
    /// JSON list of ISO date strings.
    pub fn open(root: impl AsRef<Path>) -> Result<EoPatch> {
        let root = root.as_ref().to_path_buf();
        let ts_path = root.join("timestamps.json");
        let text = std::fs::read_to_string(&ts_path).map_err(|source| Error::Io {
            path: ts_path.clone(),
            source,
        })?;
        let raw: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            fmt_err(
                &ts_path,
                format!("expected a JSON list of ISO date strings: {e}"),
            )
        })?;
        let timestamps = raw
            .iter()
            .enumerate()
            .map(|(i, s)| Date::parse(s).map_err(|e| fmt_err(&ts_path, format!("entry {i}: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(EoPatch { root, timestamps })
    }

    /// The acquisition dates (length `T`).
    pub fn timestamps(&self) -> &[Date] {
        &self.timestamps
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn feature(&self, kind: &str, name: &str) -> Result<(PathBuf, ArrayD<f64>)> {
        let p = self.root.join(kind).join(format!("{name}.npy"));
        if !p.exists() && p.with_extension("npy.gz").exists() {
            return Err(fmt_err(
                &p.with_extension("npy.gz"),
                "compressed features are not supported; gunzip the file first".into(),
            ));
        }
        let a = read_npy(&p)?;
        Ok((p, a.data))
    }

    /// A temporal feature `kind/name.npy` (`kind` = `"data"` or `"mask"`) as `(T, H, W, C)`.
    ///
    /// # Errors
    /// [`Error::Io`]/[`Error::Format`] from reading; [`Error::Format`] when the array is not
    /// 4-D or its `T` differs from the number of timestamps.
    pub fn temporal(&self, kind: &str, name: &str) -> Result<Array4<f64>> {
        let (p, a) = self.feature(kind, name)?;
        let shape = a.shape().to_vec();
        let a = a.into_dimensionality::<Ix4>().map_err(|_| {
            fmt_err(
                &p,
                format!("expected a (T, H, W, C) array, found shape {shape:?}"),
            )
        })?;
        if a.shape()[0] != self.timestamps.len() {
            return Err(fmt_err(
                &p,
                format!(
                    "{} time steps but timestamps.json lists {}",
                    a.shape()[0],
                    self.timestamps.len()
                ),
            ));
        }
        Ok(a)
    }

    /// A timeless feature `kind/name.npy` (`kind` = `"data_timeless"` or `"mask_timeless"`)
    /// as `(H, W, C)`.
    ///
    /// # Errors
    /// As [`EoPatch::temporal`], for 3-D arrays.
    pub fn timeless(&self, kind: &str, name: &str) -> Result<Array3<f64>> {
        let (p, a) = self.feature(kind, name)?;
        let shape = a.shape().to_vec();
        a.into_dimensionality::<Ix3>().map_err(|_| {
            fmt_err(
                &p,
                format!("expected a (H, W, C) array, found shape {shape:?}"),
            )
        })
    }

    /// Loads the features named by `spec` as one image time series.
    ///
    /// Band names are `NAME` for one-channel features and `NAME_k` otherwise. A pixel is valid
    /// at a date when every invalid-mask is zero and every valid-mask is non-zero there
    /// (masks with several channels: any channel).
    ///
    /// # Shapes
    /// `(T, H, W, C)` features become `values (T, C, H, W)`, `mask (T, H, W)`, `labels (H, W)`.
    ///
    /// # Errors
    /// As [`EoPatch::temporal`] / [`EoPatch::timeless`]; [`Error::Format`] when features
    /// disagree in `H x W`; [`Error::InvalidArgument`] when `spec.data` is empty or a label is
    /// negative or not an integer.
    pub fn load(&self, spec: &PatchSpec) -> Result<PatchSeries> {
        if spec.data.is_empty() {
            return Err(Error::InvalidArgument {
                op: "EoPatch::load",
                message: "PatchSpec::data names no feature; give at least one data/ feature".into(),
            });
        }
        let t = self.timestamps.len();
        let mut chans: Vec<Array4<f64>> = Vec::new(); // each (T, H, W, Ck)
        let mut band_names = Vec::new();
        let mut hw = None;
        let mut check_hw = |name: &str, h: usize, w: usize| -> Result<()> {
            match hw {
                None => {
                    hw = Some((h, w));
                    Ok(())
                }
                Some(x) if x == (h, w) => Ok(()),
                Some((eh, ew)) => Err(fmt_err(
                    &self.root,
                    format!("feature {name} is {h} x {w}, earlier features {eh} x {ew}"),
                )),
            }
        };
        for name in &spec.data {
            let a = self.temporal("data", name)?;
            let (_, h, w, c) = a.dim();
            check_hw(name, h, w)?;
            if c == 1 {
                band_names.push(name.clone());
            } else {
                band_names.extend((0..c).map(|k| format!("{name}_{k}")));
            }
            chans.push(a);
        }
        let (h, w) = chans.first().map_or((0, 0), |a| (a.dim().1, a.dim().2));
        let c_total = band_names.len();
        let mut values = Array4::<f32>::zeros((t, c_total, h, w));
        let mut off = 0;
        for a in &chans {
            let c = a.dim().3;
            for k in 0..c {
                let src = a.index_axis(Axis(3), k); // (T, H, W)
                values
                    .index_axis_mut(Axis(1), off + k)
                    .zip_mut_with(&src, |d, &s| *d = s as f32);
            }
            off += c;
        }
        let mut mask = Array3::from_elem((t, h, w), true);
        for (names, invalid_when_nonzero) in
            [(&spec.invalid_masks, true), (&spec.valid_masks, false)]
        {
            for name in names {
                let m = self.temporal("mask", name)?;
                check_hw(name, m.dim().1, m.dim().2)?;
                let nonzero = m.map_axis(Axis(3), |v| v.iter().any(|&x| x != 0.0));
                mask.zip_mut_with(&nonzero, |ok, &nz| {
                    *ok &= if invalid_when_nonzero { !nz } else { nz }
                });
            }
        }
        let (labels, class_names) = match &spec.labels {
            None => (None, Vec::new()),
            Some(name) => {
                let l = self.timeless("mask_timeless", name)?;
                check_hw(name, l.dim().0, l.dim().1)?;
                let raw = l.index_axis(Axis(2), 0).to_owned();
                if let Some(bad) = raw.iter().find(|v| v.fract() != 0.0 || **v < 0.0) {
                    return Err(Error::InvalidArgument {
                        op: "EoPatch::load",
                        message: format!(
                            "label feature {name} holds {bad}, not a non-negative integer class"
                        ),
                    });
                }
                let (map, names) = remap_labels(raw.iter().map(|&v| v as u64));
                let labels: Array2<u32> = raw.mapv(|v| map.get(&(v as u64)).copied().unwrap_or(0));
                (Some(labels), names)
            }
        };
        let p = PatchSeries {
            values,
            dates: Some(self.timestamps.clone()),
            mask,
            truth: None,
            labels,
            band_names,
            class_names,
        };
        p.check()?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/sits/eolearn-testpatch")
    }

    #[test]
    fn reads_the_eolearn_test_patch() -> anyhow::Result<()> {
        let dir = patch_dir();
        if !dir.exists() {
            println!("SKIPPED: {} is absent", dir.display());
            return Ok(());
        }
        let eo = EoPatch::open(&dir)?;
        assert_eq!(eo.timestamps().len(), 68);
        assert_eq!(eo.timestamps()[0], Date::new(2015, 7, 11)?);
        let spec = PatchSpec::new(&["NDVI", "CLP"]).with_labels("LULC");
        let p = eo.load(&spec)?;
        assert_eq!(p.values.dim(), (68, 2, 101, 100));
        assert_eq!(p.band_names, vec!["NDVI", "CLP"]);
        assert_eq!(p.class_names, vec!["0", "1", "2", "3", "4", "8"]);
        let ndvi = p.values.index_axis(Axis(1), 0);
        let finite = ndvi.iter().filter(|v| v.is_finite()).count();
        assert!(finite > 0);
        assert!(ndvi
            .iter()
            .filter(|v| v.is_finite())
            .all(|v| (-1.0..=1.0).contains(v)));
        // The mask agrees with CLM and IS_DATA read directly.
        let clm = eo.temporal("mask", "CLM")?;
        let is_data = eo.temporal("mask", "IS_DATA")?;
        let mut invalid = 0;
        for ((t, r, c), &ok) in p.mask.indexed_iter() {
            let expect = clm[(t, r, c, 0)] == 0.0 && is_data[(t, r, c, 0)] != 0.0;
            assert_eq!(ok, expect);
            invalid += usize::from(!ok);
        }
        assert!(
            invalid > 0 && invalid < p.mask.len(),
            "the patch has some clouds"
        );
        let ds = p.to_pixel_dataset()?;
        assert_eq!(ds.len(), 101 * 100);
        assert_eq!(ds.samples[0].values.dim(), (68, 2));
        ds.check()?;
        let tiles = p.tiles(32, 32)?;
        assert_eq!(tiles.len(), 9);
        assert_eq!(
            tiles[4].values[(5, 0, 0, 0)].to_bits(),
            p.values[(5, 0, 32, 32)].to_bits()
        );
        Ok(())
    }

    #[test]
    fn synthetic_patch_and_errors() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        std::fs::write(
            root.join("timestamps.json"),
            r#"["2020-01-01", "2020-01-11"]"#,
        )?;
        std::fs::create_dir(root.join("data"))?;
        let vals: Vec<f32> = (0..12).map(|v| v as f32).collect();
        std::fs::write(
            root.join("data/X.npy"),
            crate::npy::encode_npy_f32(&[2, 2, 3, 1], &vals),
        )?;
        let eo = EoPatch::open(root)?;
        let spec = PatchSpec {
            data: vec!["X".into()],
            ..Default::default()
        };
        let p = eo.load(&spec)?;
        assert_eq!(p.values[(1, 0, 1, 2)], 11.0);
        assert!(p.mask.iter().all(|&m| m));
        // Wrong T.
        std::fs::write(
            root.join("data/Y.npy"),
            crate::npy::encode_npy_f32(&[3, 2, 3, 1], &[0.0; 18]),
        )?;
        let e = eo.load(&PatchSpec {
            data: vec!["Y".into()],
            ..Default::default()
        });
        assert!(e
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("timestamps"));
        // Missing mask file.
        assert!(eo.load(&PatchSpec::new(&["X"])).is_err());
        Ok(())
    }
}

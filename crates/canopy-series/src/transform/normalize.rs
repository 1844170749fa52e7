//! Per-band normalisation and scaling.

use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{invalid, series_id, Transform};
use crate::{Error, Result, Series, SeriesDataset};

/// Per-band mean and standard deviation, fitted on a training set and saved with a model
/// (JSON) so inference normalises exactly as training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Band names, in column order (checked on use when the dataset has names).
    pub bands: Vec<String>,
    /// Mean per band.
    pub mean: Vec<f32>,
    /// Standard deviation per band (population, floored at `1e-6`).
    pub std: Vec<f32>,
}

impl Normalization {
    /// Mean and standard deviation of every band over the valid (`mask = true`), observed,
    /// finite values of all samples, accumulated in `f64`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a band has no valid value.
    pub fn fit(ds: &SeriesDataset) -> Result<Normalization> {
        let c = ds.band_names.len();
        let mut n = vec![0u64; c];
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for s in &ds.samples {
            if s.bands() != c {
                return Err(invalid(
                    "Normalization::fit",
                    format!(
                        "series {} has {} bands, the dataset {c}",
                        series_id(s),
                        s.bands()
                    ),
                ));
            }
            for t in (0..s.observed_len()).filter(|&t| s.mask[t]) {
                for b in 0..c {
                    let v = f64::from(s.values[(t, b)]);
                    if v.is_finite() {
                        n[b] += 1;
                        sum[b] += v;
                        sq[b] += v * v;
                    }
                }
            }
        }
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for b in 0..c {
            if n[b] == 0 {
                return Err(invalid(
                    "Normalization::fit",
                    format!(
                        "band {} has no valid value in the dataset",
                        ds.band_names[b]
                    ),
                ));
            }
            let m = sum[b] / n[b] as f64;
            let var = (sq[b] / n[b] as f64 - m * m).max(0.0);
            mean.push(m as f32);
            std.push((var.sqrt() as f32).max(1e-6));
        }
        Ok(Normalization {
            bands: ds.band_names.clone(),
            mean,
            std,
        })
    }

    /// Writes the statistics as JSON, atomically: through a temporary file in the same folder
    /// that is flushed and renamed over `path`, so a crash never leaves half a file that a
    /// later inference would read.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_replacing(path, text.as_bytes()).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads statistics written by [`Normalization::save`].
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable; [`Error::Format`] when not such JSON or when `mean`,
    /// `std` and `bands` differ in length.
    pub fn load(path: impl AsRef<Path>) -> Result<Normalization> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let n: Normalization = serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: format!("not normalisation statistics: {e}"),
        })?;
        if n.mean.len() != n.std.len() || n.mean.len() != n.bands.len() {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!(
                    "{} bands, {} means, {} stds: the lengths must agree",
                    n.bands.len(),
                    n.mean.len(),
                    n.std.len()
                ),
            });
        }
        Ok(n)
    }

    /// The block applying these statistics.
    pub fn to_block(&self) -> Normalize {
        Normalize(self.clone())
    }

    /// Checks that the statistics were fitted on bands named like `band_names`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] showing both lists.
    pub fn check_bands(&self, band_names: &[String]) -> Result<()> {
        if self.bands != band_names {
            return Err(invalid(
                "Normalization",
                format!(
                    "statistics are for bands {:?}, the data has {band_names:?}; reorder the \
                     data with SeriesDataset::select_bands",
                    self.bands
                ),
            ));
        }
        Ok(())
    }
}

/// Standardises every observed step: `(x - mean) / std` per band (padding is left alone).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize(pub Normalization);

impl Transform for Normalize {
    fn apply(&self, mut s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let n = &self.0;
        if s.bands() != n.mean.len() || n.std.len() != n.mean.len() {
            return Err(invalid(
                "Normalize",
                format!(
                    "series {} has {} bands, the statistics {} means and {} stds",
                    series_id(&s),
                    s.bands(),
                    n.mean.len(),
                    n.std.len()
                ),
            ));
        }
        let obs = s.observed_len();
        for mut row in s.values.rows_mut().into_iter().take(obs) {
            for (b, v) in row.iter_mut().enumerate() {
                *v = (*v - n.mean[b]) / n.std[b];
            }
        }
        Ok(s)
    }
}

/// Multiplies every observed value by `factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// The factor.
    pub factor: f32,
}

impl Scale {
    /// BreizhCrops' reflectance scaling: digital numbers (reflectance x 10 000) times `1e-4`
    /// give reflectances in 0..1, the input range of the pretrained models.
    pub fn breizhcrops() -> Scale {
        Scale { factor: 1e-4 }
    }
}

impl Transform for Scale {
    fn apply(&self, mut s: Series, _rng: &mut dyn RngCore) -> Result<Series> {
        s.check()?;
        let obs = s.observed_len();
        s.values
            .slice_mut(ndarray::s![..obs, ..])
            .mapv_inplace(|v| v * self.factor);
        Ok(s)
    }
}

/// Writes `bytes` to a hidden sibling of `path`, flushes it and renames it over `path`.
///
/// canopy-train has the general helper (`canopy_train::atomic`), but this crate builds without
/// candle, which canopy-train needs.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Unique per call, so two threads saving to the same path do not share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp-{}-{n}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let result = written.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn fit_apply_save_load() -> anyhow::Result<()> {
        let a = Series::new(array![[1.0f32, 10.0], [3.0, 10.0], [100.0, 100.0]], None)?
            .with_mask(vec![true, true, false])?;
        let b = Series::new(array![[5.0f32, 10.0]], None)?;
        let ds = SeriesDataset {
            samples: vec![a.clone(), b],
            class_names: vec![],
            band_names: vec!["x".into(), "y".into()],
        };
        let n = Normalization::fit(&ds)?;
        assert_eq!(n.mean, vec![3.0, 10.0]);
        assert!((n.std[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert_eq!(n.std[1], 1e-6);
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("norm.json");
        n.save(&p)?;
        n.save(&p)?; // replaces the file, leaving no temporary behind
        let names: Vec<_> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        assert_eq!(names, ["norm.json"]);
        assert!(n.save(dir.path().join("missing").join("n.json")).is_err());
        let m = Normalization::load(&p)?;
        assert_eq!(m, n);
        m.check_bands(&ds.band_names)?;
        assert!(m.check_bands(&["y".into(), "x".into()]).is_err());
        let out = m.to_block().apply(a, &mut StdRng::seed_from_u64(0))?;
        assert!((out.values[(1, 0)] - 0.0f32).abs() < 1e-6 || out.values[(1, 0)] == 0.0);
        assert!(out.values[(0, 0)] < 0.0);
        std::fs::write(&p, r#"{"bands":["x"],"mean":[1,2],"std":[1]}"#)?;
        assert!(Normalization::load(&p).is_err());
        let s = Scale::breizhcrops().apply(
            Series::new(array![[10_000.0f32]], None)?,
            &mut StdRng::seed_from_u64(0),
        )?;
        assert!((s.values[(0, 0)] - 1.0).abs() < 1e-6);
        Ok(())
    }
}

//! The UCR/UEA univariate time series archive text format.
//!
//! # Layout
//! One series per line; the first field is the class label, the remaining `T` fields the
//! values. Fields are separated by tabs (the 2018 `.tsv` release), commas or spaces (older
//! releases). Labels may be written as integers or as floats with an integral value
//! (`1`, `1.0`, `-1`). Variable-length datasets pad short series with `NaN`: such steps are
//! kept but marked invalid in the [`Series::mask`]. Labels are remapped to `0..K` in ascending
//! order of their value; the original label (as an integer string) is the class name.
//!
//! # References
//! Dau, H. A. et al. (2019). The UCR time series archive. IEEE/CAA Journal of Automatica
//! Sinica 6(6), 1293–1305. (The `Crop` dataset: Formosat-2 NDVI series, Tan et al. 2017.)

use std::path::Path;

use ndarray::Array2;

use crate::sample::remap_labels;
use crate::{Error, Result, Series, SeriesDataset};

/// Reads a UCR/UEA file (see the module docs); the one band is called `band_name`
/// (e.g. `"NDVI"` for `Crop`). Series ids are the 1-based line numbers.
///
/// # Shapes
/// Every sample is `(T, 1)` with `dates = None`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] naming the line and field
/// for a non-numeric value, a non-integral label, lines of different lengths or an empty file.
pub fn read_ucr(path: impl AsRef<Path>, band_name: &str) -> Result<SeriesDataset> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fmt_err = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut rows: Vec<(i64, Vec<f32>, usize)> = Vec::new();
    let mut width = None;
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(['\t', ',', ' ']).filter(|f| !f.is_empty());
        let label_txt = fields.next().unwrap_or_default();
        let label: f64 = label_txt.parse().map_err(|_| {
            fmt_err(format!(
                "line {line_no}: label {label_txt:?} is not a number"
            ))
        })?;
        if label.fract() != 0.0 || !label.is_finite() {
            return Err(fmt_err(format!(
                "line {line_no}: label {label_txt:?} is not an integer class"
            )));
        }
        let values = fields
            .enumerate()
            .map(|(i, f)| {
                f.parse::<f32>().map_err(|_| {
                    fmt_err(format!(
                        "line {line_no}, field {}: {f:?} is not a number",
                        i + 2
                    ))
                })
            })
            .collect::<Result<Vec<f32>>>()?;
        match width {
            None => width = Some(values.len()),
            Some(w) if w != values.len() => {
                return Err(fmt_err(format!(
                    "line {line_no} has {} values, earlier lines {w}; pad variable-length \
                     series with NaN",
                    values.len()
                )))
            }
            _ => {}
        }
        rows.push((label as i64, values, line_no));
    }
    let t = width.ok_or_else(|| fmt_err("no series in the file".into()))?;
    if t == 0 {
        return Err(fmt_err("series have no values after the label".into()));
    }
    let (map, class_names) = remap_labels(rows.iter().map(|r| r.0));
    let samples = rows
        .into_iter()
        .map(|(label, values, line_no)| {
            let mask = values.iter().map(|v| v.is_finite()).collect();
            let values = Array2::from_shape_vec((t, 1), values)
                .map_err(|e| fmt_err(format!("line {line_no}: {e}")))?;
            Ok(Series {
                values,
                dates: None,
                mask,
                padding: 0,
                truth: None,
                label: map.get(&label).copied(),
                id: Some(line_no.to_string()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SeriesDataset {
        samples,
        class_names,
        band_names: vec![band_name.to_string()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/sits/ucr-crop")
    }

    #[test]
    fn reads_ucr_crop() -> anyhow::Result<()> {
        let p = data_dir().join("Crop_TRAIN.tsv");
        if !p.exists() {
            println!("SKIPPED: {} is absent", p.display());
            return Ok(());
        }
        let ds = read_ucr(&p, "NDVI")?;
        assert_eq!(ds.len(), 7_200);
        assert_eq!(ds.num_classes(), 24);
        assert!(ds.samples.iter().all(|s| s.len() == 46 && s.bands() == 1));
        assert_eq!(ds.class_names[0], "1");
        assert_eq!(ds.class_names[23], "24");
        // The first line of the file: label 1, first value 0.24, last 0.316.
        let s0 = &ds.samples[0];
        assert_eq!(s0.label, Some(0));
        assert!((s0.values[(0, 0)] - 0.24).abs() < 1e-6);
        assert!((s0.values[(45, 0)] - 0.316).abs() < 1e-6);
        assert_eq!(ds.class_counts().iter().sum::<usize>(), 7_200);
        ds.check()?;
        Ok(())
    }

    #[test]
    fn rejects_ragged_and_bad_labels() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.tsv");
        std::fs::write(&p, "3\t1\t2\n-1\t3\tNaN\n")?;
        let ds = read_ucr(&p, "v")?;
        assert_eq!(ds.class_names, vec!["-1", "3"]);
        assert_eq!(ds.samples[0].label, Some(1));
        assert_eq!(ds.samples[1].mask, vec![true, false]);
        std::fs::write(&p, "1\t1\t2\n2\t3\n")?;
        let e = read_ucr(&p, "v")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&p, "1.5\t1\t2\n")?;
        assert!(read_ucr(&p, "v").is_err());
        std::fs::write(&p, "1\t1\tx\n")?;
        let e = read_ucr(&p, "v")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("field 3"), "{e}");
        Ok(())
    }
}

//! BreizhCrops per-parcel CSV files (Rußwurm et al. 2020).
//!
//! # Layout
//! BreizhCrops distributes one CSV per field parcel (`csv/<region>/<parcel id>.csv`, regions
//! `frh01`..`frh04`), written by pandas from Google Earth Engine exports:
//!
//! ```text
//! ,B1,B10,B11,B12,B2,B3,B4,B5,B6,B7,B8,B8A,B9,QA10,QA20,QA60,doa,label,id
//! 0,1942,21,2103,1402,1720,1571,1466,1605,2018,2169,2114,2300,754,0,0,1024,2017-01-01,BTH,12345
//! 1,...
//! ```
//!
//! * an unnamed pandas index column first (ignored);
//! * the 13 Level-1C top-of-atmosphere bands as digital numbers (reflectance x 10 000);
//! * `QA10`, `QA20`, `QA60`: quality bands; `QA60` is the Sentinel-2 cloud bitmask (bit 10
//!   = 1024 opaque cloud, bit 11 = 2048 cirrus), and BreizhCrops computes its
//!   `cloudCoverage` as `meanQA60 / 1024`;
//! * `doa`, the date of acquisition (`YYYY-MM-DD`, a time part is allowed); `date` or
//!   `timestamp` are accepted as the column name too;
//! * optional `label` (the crop code) and `id` (the parcel id).
//!
//! Like the reference loader (`BreizhCrops.load`: `read_csv(...).dropna()`, then
//! `groupby("doa").first()`), rows with an empty or non-numeric band value are dropped, rows
//! are sorted by date and only the first row of each date is kept. The bands come out in
//! [`BREIZHCROPS_L1C_BANDS`] order whatever the column order of the file, as digital numbers:
//! chain [`crate::transform::Scale::breizhcrops`] for the `1e-4` scaling of the reference.
//! A date is invalid in [`Series::mask`] when `QA60` is present and non-zero.
//!
//! # References
//! Rußwurm, M., Pelletier, C., Zollner, M., Lefèvre, S., Körner, M. (2020). BreizhCrops: a
//! time series dataset for crop type mapping. <https://github.com/dl4sits/BreizhCrops>.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::bands::band_names;
use crate::sample::remap_labels;
use crate::{Date, Error, Result, Series, SeriesDataset, BREIZHCROPS_L1C_BANDS};

/// One parcel read from its CSV, with the crop code kept as text.
#[derive(Debug, Clone, PartialEq)]
pub struct BreizhCropsParcel {
    /// The series, `(T, 13)` in [`BREIZHCROPS_L1C_BANDS`] order, digital numbers; `label`
    /// unset.
    pub series: Series,
    /// The `label` column of the first kept row (the crop code), if any.
    pub code: Option<String>,
}

/// One CSV row: date, band values, cloudy (QA60), crop code, parcel id.
type Row = (Date, Vec<f32>, bool, Option<String>, Option<String>);

fn fmt_err(path: &Path, message: String) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Splits one CSV line on commas, honouring double quotes.
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

/// Reads one BreizhCrops parcel CSV (see the module docs). The id is the `id` column, or the
/// file stem when there is none.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Format`] naming the file and the missing column
/// (any of the 13 bands or the date column) or the line of a malformed date.
pub fn read_breizhcrops_csv(path: impl AsRef<Path>) -> Result<BreizhCropsParcel> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| fmt_err(path, "empty file, expected a header line".into()))?;
    let header: Vec<String> = split_csv(header)
        .into_iter()
        .map(|h| h.trim().to_ascii_uppercase())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let band_cols = BREIZHCROPS_L1C_BANDS
        .iter()
        .map(|b| {
            col(b.short_name())
                .or_else(|| col(b.name()))
                .ok_or_else(|| {
                    fmt_err(
                        path,
                        format!("no column {} (header: {header:?})", b.short_name()),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let date_col = ["DOA", "DATE", "TIMESTAMP"]
        .iter()
        .find_map(|n| col(n))
        .ok_or_else(|| fmt_err(path, "no date column (doa, date or timestamp)".into()))?;
    let (qa_col, label_col, id_col) = (col("QA60"), col("LABEL"), col("ID"));
    let mut rows: Vec<Row> = Vec::new();
    for (n, line) in lines {
        let f = split_csv(line);
        let get = |c: usize| f.get(c).map(|s| s.trim()).filter(|s| !s.is_empty());
        let values: Option<Vec<f32>> = band_cols
            .iter()
            .map(|&c| {
                get(c)
                    .and_then(|s| s.parse::<f32>().ok())
                    .filter(|v| v.is_finite())
            })
            .collect();
        let Some(values) = values else {
            continue; // dropna(), as the reference does
        };
        let Some(date_txt) = get(date_col) else {
            continue;
        };
        let date =
            Date::parse(date_txt).map_err(|e| fmt_err(path, format!("line {}: {e}", n + 1)))?;
        let cloudy = qa_col
            .and_then(get)
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(|q| q != 0.0);
        rows.push((
            date,
            values,
            cloudy,
            label_col.and_then(get).map(str::to_string),
            id_col.and_then(get).map(str::to_string),
        ));
    }
    // Stable sort keeps the file order within a date, so "first" matches pandas.
    rows.sort_by_key(|r| r.0);
    rows.dedup_by_key(|r| r.0);
    let t = rows.len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.1.iter().copied()).collect();
    let values = Array2::from_shape_vec((t, BREIZHCROPS_L1C_BANDS.len()), flat)
        .map_err(|e| fmt_err(path, e.to_string()))?;
    let id = rows
        .first()
        .and_then(|r| r.4.clone())
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()));
    let code = rows.first().and_then(|r| r.3.clone());
    let series = Series {
        values,
        dates: Some(rows.iter().map(|r| r.0).collect()),
        mask: rows.iter().map(|r| !r.2).collect(),
        padding: 0,
        truth: None,
        label: None,
        id,
    };
    series.check()?;
    Ok(BreizhCropsParcel { series, code })
}

/// Reads every `*.csv` of `dir` (sorted by file name) and remaps the crop codes to `0..K` in
/// sorted order (class names are the codes). Parcels without a code stay unlabelled.
///
/// # Errors
/// As [`read_breizhcrops_csv`], and [`Error::Io`] when the folder cannot be listed.
pub fn read_breizhcrops_dir(dir: impl AsRef<Path>) -> Result<SeriesDataset> {
    let dir = dir.as_ref();
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()).map_err(io))
        .collect::<Result<Vec<_>>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")));
    files.sort();
    let parcels = files
        .iter()
        .map(read_breizhcrops_csv)
        .collect::<Result<Vec<_>>>()?;
    let (map, class_names) = remap_labels(parcels.iter().filter_map(|p| p.code.clone()));
    let samples = parcels
        .into_iter()
        .map(|p| {
            let mut s = p.series;
            s.label = p.code.and_then(|c| map.get(&c).copied());
            s
        })
        .collect();
    Ok(SeriesDataset {
        samples,
        class_names,
        band_names: band_names(&BREIZHCROPS_L1C_BANDS),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = ",B1,B10,B11,B12,B2,B3,B4,B5,B6,B7,B8,B8A,B9,QA10,QA20,QA60,doa,label,id";

    #[test]
    fn reads_a_parcel_csv_like_the_reference() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("12345.csv");
        let body = [
            // out of order, a duplicate date, a row with a missing value, a cloudy date
            "0,2,3,4,5,6,7,8,9,10,11,12,13,14,0,0,0,2017-02-01,BTH,12345",
            "1,1,10,11,12,2,3,4,5,6,7,8,80,9,0,0,1024,2017-01-06,BTH,12345",
            "2,99,99,99,99,99,99,99,99,99,99,99,99,99,0,0,0,2017-01-06,BTH,12345",
            "3,1,,11,12,2,3,4,5,6,7,8,80,9,0,0,0,2017-01-16,BTH,12345",
            "4,1,2,3,4,5,6,7,8,9,10,11,12,13,0,0,0,2017-03-01T10:00:00,BTH,12345",
        ];
        std::fs::write(&p, format!("{HEADER}\n{}\n", body.join("\n")))?;
        let r = read_breizhcrops_csv(&p)?;
        let s = &r.series;
        assert_eq!(s.len(), 3);
        assert_eq!(r.code.as_deref(), Some("BTH"));
        assert_eq!(s.id.as_deref(), Some("12345"));
        let d = s.dates.clone().unwrap_or_default();
        assert_eq!(d[0], Date::new(2017, 1, 6)?);
        assert_eq!(s.mask, vec![false, true, true]);
        // The first row kept for 2017-01-06 is the first in the file; columns in
        // BreizhCrops order: B1, B10, B11, B12, B2, ... , B8A, B9.
        assert_eq!(
            s.values.row(0).to_vec(),
            vec![1.0, 10.0, 11.0, 12.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 80.0, 9.0]
        );

        // Column order of the file does not matter; labels are remapped over a folder.
        let q = dir.path().join("777.csv");
        std::fs::write(&q, "doa,B2,B1,B3,B4,B5,B6,B7,B8,B8A,B9,B10,B11,B12,label\n2018-05-05,2,1,3,4,5,6,7,8,80,9,10,11,12,APL\n")?;
        let ds = read_breizhcrops_dir(dir.path())?;
        assert_eq!(ds.class_names, vec!["APL", "BTH"]);
        assert_eq!(
            ds.samples[1].values.row(0).to_vec(),
            vec![1.0, 10.0, 11.0, 12.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 80.0, 9.0]
        );
        assert_eq!(ds.samples[1].id.as_deref(), Some("777"));
        assert_eq!(ds.samples[1].label, Some(0));
        assert_eq!(ds.band_names[1], "B10");
        ds.check()?;

        std::fs::write(&q, "doa,B2\n2018-05-05,1\n")?;
        let e = read_breizhcrops_csv(&q)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("no column B1"), "{e}");
        Ok(())
    }
}

//! Reading SpaceNet CSV files and scoring a whole submission image by image; see the
//! [parent module](super) for the matching rules and the CSV layout.

use super::{spacenet_match, MatchCounts, MatchReport, SpaceNetConfig};
use crate::{Error, Result};
use geo::{LineString, Polygon};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// One row of a SpaceNet CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceNetRecord {
    /// The image (chip) name, `ImageId`.
    pub image_id: String,
    /// `BuildingId` (-1 on `POLYGON EMPTY` rows).
    pub building_id: i64,
    /// `PolygonWKT_Pix` in pixel coordinates, Z dropped; an empty polygon for `POLYGON EMPTY`.
    pub polygon: Polygon<f64>,
    /// `Confidence`, when the file has that column.
    pub confidence: Option<f64>,
}

/// Reads a SpaceNet CSV file (see the [module docs](super#csv-layout)).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::Format`] as [`parse_spacenet_csv`].
pub fn read_spacenet_csv(path: impl AsRef<Path>) -> Result<Vec<SpaceNetRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_spacenet_csv(&text, path)
}

/// Parses the text of a SpaceNet CSV; `source` names it in errors.
///
/// # Errors
/// [`Error::Format`] naming the line and column for: a missing `ImageId`, `BuildingId` or
/// `PolygonWKT_Pix` column, a row with too few fields, a non-integer `BuildingId`, a
/// non-numeric `Confidence`, unparsable WKT or a geometry other than a polygon.
pub fn parse_spacenet_csv(text: &str, source: &Path) -> Result<Vec<SpaceNetRecord>> {
    let rows = parse_csv(text).map_err(|m| Error::format(source, m))?;
    let mut rows = rows.into_iter();
    let Some((_, header)) = rows.next() else {
        return Err(Error::format(source, "empty file: expected a header line"));
    };
    let column = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            Error::format(source, format!("header has no `{name}` column: {header:?}"))
        })
    };
    let (c_image, c_building, c_wkt) = (
        column("ImageId")?,
        column("BuildingId")?,
        column("PolygonWKT_Pix")?,
    );
    let c_conf = header.iter().position(|h| h.trim() == "Confidence");
    let mut out = Vec::new();
    for (line, row) in rows {
        if row.len() == 1 && row.first().is_some_and(|f| f.trim().is_empty()) {
            continue; // blank line
        }
        let field = |c: usize, name: &str| {
            row.get(c).ok_or_else(|| {
                Error::format(
                    source,
                    format!("line {line}: no `{name}` field (column {c})"),
                )
            })
        };
        let image_id = field(c_image, "ImageId")?.clone();
        let building = field(c_building, "BuildingId")?;
        let building_id = building.trim().parse::<i64>().map_err(|_| {
            Error::format(
                source,
                format!("line {line}: BuildingId `{building}` is not an integer"),
            )
        })?;
        let wkt = field(c_wkt, "PolygonWKT_Pix")?;
        let polygon = parse_polygon_wkt(wkt)
            .map_err(|m| Error::format(source, format!("line {line}: PolygonWKT_Pix: {m}")))?;
        let confidence = match c_conf {
            Some(c) => {
                let s = field(c, "Confidence")?;
                Some(s.trim().parse::<f64>().map_err(|_| {
                    Error::format(
                        source,
                        format!("line {line}: Confidence `{s}` is not a number"),
                    )
                })?)
            }
            None => None,
        };
        out.push(SpaceNetRecord {
            image_id,
            building_id,
            polygon,
            confidence,
        });
    }
    Ok(out)
}

/// Parses a WKT `POLYGON` (2-D, Z, M or ZM; extra ordinates dropped) or `POLYGON EMPTY`.
fn parse_polygon_wkt(s: &str) -> std::result::Result<Polygon<f64>, String> {
    let tagged = tag_dimension(s.trim());
    let geometry: wkt::Wkt<f64> = tagged.parse().map_err(|e| format!("{e} in `{s}`"))?;
    let wkt::Wkt::Polygon(polygon) = geometry else {
        return Err(format!("expected a POLYGON, got `{s}`"));
    };
    let mut rings = polygon
        .rings()
        .iter()
        .map(|r| LineString::from(r.coords().iter().map(|c| (c.x, c.y)).collect::<Vec<_>>()));
    let exterior = rings.next().unwrap_or_else(|| LineString::new(vec![]));
    Ok(Polygon::new(exterior, rings.collect()))
}

/// SpaceNet writes 3-D coordinates without the `Z` tag (`POLYGON ((1 2 0, ...))`), which the
/// `wkt` crate reads as 2-D and rejects; add the tag the first coordinate calls for.
fn tag_dimension(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(open) = s.find('(') else {
        return s.into();
    };
    let (head, body) = s.split_at(open);
    if head.split_whitespace().count() != 1 {
        return s.into(); // already tagged (`POLYGON Z (`)
    }
    let first = body.trim_start_matches(|c: char| c == '(' || c.is_whitespace());
    let first = first.split([',', ')']).next().unwrap_or("");
    match first.split_whitespace().count() {
        3 => format!("{} Z {body}", head.trim_end()).into(),
        4 => format!("{} ZM {body}", head.trim_end()).into(),
        _ => s.into(),
    }
}

/// Splits CSV text into records of fields, with RFC 4180 quoting (`"a, b"`, `""` for a quote).
/// Each record carries its 1-based starting line number.
fn parse_csv(text: &str) -> std::result::Result<Vec<(usize, Vec<String>)>, String> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut line, mut record_line) = (1usize, 1usize);
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') => in_quotes = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {}
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push((record_line, std::mem::take(&mut record)));
                line += 1;
                record_line = line;
            }
            (false, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("line {record_line}: unterminated quoted field"));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push((record_line, record));
    }
    Ok(records)
}

/// The score of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScore {
    /// The image (chip) name.
    pub image_id: String,
    /// Its match report; `per_truth_iou` / `per_pred_iou` / `matches` index the image's truth
    /// and prediction records in [`ImageScore::truth_records`] / [`ImageScore::pred_records`]
    /// order.
    pub report: MatchReport,
    /// Indices into the truth records of this image's rows, in file order.
    pub truth_records: Vec<usize>,
    /// Indices into the prediction records of this image's rows, in processing order
    /// (decreasing confidence, file order among equal confidences).
    pub pred_records: Vec<usize>,
}

/// Scores of a whole SpaceNet submission.
#[derive(Debug, Clone, PartialEq)]
pub struct SpaceNetEvaluation {
    /// Per image, sorted by image id; every image of the truth or the predictions appears.
    pub images: Vec<ImageScore>,
    /// Per truth record (same order as the input): solaris's per-building `iou_score`.
    pub per_truth_iou: Vec<f64>,
    /// Counts summed over all images.
    pub total: MatchCounts,
}

impl SpaceNetEvaluation {
    /// Counts summed over groups of images, keyed by `key(image_id)`: for example
    /// [`spacenet_aoi`] for the SpaceNet 2 per-AOI table, or a collect-to-nadir-bin lookup for
    /// the off-nadir table.
    pub fn group_counts(&self, key: impl Fn(&str) -> String) -> BTreeMap<String, MatchCounts> {
        let mut groups: BTreeMap<String, MatchCounts> = BTreeMap::new();
        for image in &self.images {
            *groups.entry(key(&image.image_id)).or_default() += image.report.counts();
        }
        groups
    }
}

/// The area of interest of a SpaceNet 2/3 image id: everything before the last `_`
/// (`AOI_2_Vegas_img3457` → `AOI_2_Vegas`), solaris's `get_chip_id`; empty without `_`.
pub fn spacenet_aoi(image_id: &str) -> &str {
    image_id.rfind('_').map_or("", |i| &image_id[..i])
}

/// Scores a SpaceNet submission image by image (in parallel), as solaris's
/// `eval_iou_spacenet_csv`: predictions of each image are matched in decreasing confidence
/// (stable: file order among equal confidences; missing or NaN confidences last).
///
/// solaris sorts with pandas' default quicksort, whose order among equal confidences is not
/// specified (it depends on the numpy version and CPU). Results can depend on that order only
/// when several predictions overlap the same truth polygon; for the published samples they do
/// not (the conformance test scores them in both tie orders).
///
/// # Errors
/// As [`spacenet_match`].
pub fn evaluate_spacenet(
    truth: &[SpaceNetRecord],
    preds: &[SpaceNetRecord],
    config: &SpaceNetConfig,
) -> Result<SpaceNetEvaluation> {
    config.validate("evaluate_spacenet")?;
    let mut pred_order: Vec<usize> = (0..preds.len()).collect();
    let conf = |i: usize| {
        preds
            .get(i)
            .and_then(|r| r.confidence)
            .filter(|c| !c.is_nan())
    };
    pred_order.sort_by(|&a, &b| match (conf(a), conf(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    // Image id -> (truth rows in file order, prediction rows in processing order).
    let mut groups: BTreeMap<&str, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for (j, r) in truth.iter().enumerate() {
        groups.entry(r.image_id.as_str()).or_default().0.push(j);
    }
    for &i in &pred_order {
        if let Some(r) = preds.get(i) {
            groups.entry(r.image_id.as_str()).or_default().1.push(i);
        }
    }
    let images = groups
        .into_par_iter()
        .map(|(id, (truth_records, pred_records))| {
            let t: Vec<Polygon<f64>> = truth_records
                .iter()
                .map(|&j| truth[j].polygon.clone())
                .collect();
            let p: Vec<Polygon<f64>> = pred_records
                .iter()
                .map(|&i| preds[i].polygon.clone())
                .collect();
            let report = spacenet_match(&t, &p, config)?;
            Ok(ImageScore {
                image_id: id.to_string(),
                report,
                truth_records,
                pred_records,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut per_truth_iou = vec![0.0; truth.len()];
    for image in &images {
        for (&j, &v) in image.truth_records.iter().zip(&image.report.per_truth_iou) {
            if let Some(slot) = per_truth_iou.get_mut(j) {
                *slot = v;
            }
        }
    }
    let total = images.iter().map(|i| i.report.counts()).sum();
    Ok(SpaceNetEvaluation {
        images,
        per_truth_iou,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::Area;

    #[test]
    fn csv_quotes_and_z_coordinates() {
        let text = "ImageId,BuildingId,PolygonWKT_Pix,Confidence\r\n\
                    a_1,3,\"POLYGON ((0 0 0,4 0 0,4 4 0,0 0 0))\",0.5\r\n\
                    a_2,-1,POLYGON EMPTY,1\r\n";
        let r = parse_spacenet_csv(text, Path::new("x.csv")).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].building_id, 3);
        assert_eq!(r[0].polygon.exterior().0.len(), 4);
        assert_eq!(r[0].polygon.unsigned_area(), 8.0);
        assert_eq!(r[0].confidence, Some(0.5));
        assert!(r[1].polygon.exterior().0.is_empty());
    }

    #[test]
    fn wkt_dimensions() {
        for text in [
            "POLYGON ((0 0, 4 0, 4 4, 0 0))",
            "POLYGON ((0 0 7, 4 0 7, 4 4 7, 0 0 7))",
            "POLYGON Z ((0 0 7, 4 0 7, 4 4 7, 0 0 7))",
            "POLYGON ((0 0 7 1,4 0 7 1,4 4 7 1,0 0 7 1))",
            "polygon((0 0,4 0,4 4,0 0),(1 1 , 2 1, 2 2, 1 1))",
        ] {
            let p = parse_polygon_wkt(text).unwrap();
            assert_eq!(p.exterior().0[1], geo::Coord { x: 4.0, y: 0.0 }, "{text}");
        }
        assert_eq!(
            parse_polygon_wkt("polygon((0 0,4 0,4 4,0 0),(1 1 , 2 1, 2 2, 1 1))")
                .unwrap()
                .interiors()
                .len(),
            1
        );
        assert!(parse_polygon_wkt("POLYGON EMPTY")
            .unwrap()
            .exterior()
            .0
            .is_empty());
        assert!(parse_polygon_wkt("POLYGON ((0 0, 1))").is_err());
    }

    #[test]
    fn csv_errors_name_the_line() {
        let text = "ImageId,BuildingId,PolygonWKT_Pix\na,1,\"POLYGON ((0 0,1 0,1 1,0 0))\"\na,x,POLYGON EMPTY\n";
        let err = parse_spacenet_csv(text, Path::new("x.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 3") && err.contains("BuildingId"),
            "{err}"
        );
        let err = parse_spacenet_csv("ImageId,PolygonWKT_Pix\n", Path::new("x.csv")).unwrap_err();
        assert!(err.to_string().contains("BuildingId"), "{err}");
        let text = "ImageId,BuildingId,PolygonWKT_Pix\na,1,\"LINESTRING (0 0,1 1)\"\n";
        assert!(parse_spacenet_csv(text, Path::new("x.csv")).is_err());
    }

    #[test]
    fn aoi_is_the_prefix_before_the_last_underscore() {
        assert_eq!(spacenet_aoi("AOI_2_Vegas_img3457"), "AOI_2_Vegas");
        assert_eq!(spacenet_aoi("noscore"), "");
    }
}

//! The `GDAL_METADATA` TIFF tag (42112): an XML fragment in which GDAL stores band scale and
//! offset, among other items. Only the scale/offset items are interpreted; the rest is ignored.

use crate::ScaleOffset;

/// Band scale/offset from a `GDAL_METADATA` XML string, one entry per band of `bands`;
/// empty when the XML holds no scale or offset item.
pub fn parse_scale_offset(xml: &str, bands: usize) -> Vec<ScaleOffset> {
    let mut out = vec![
        ScaleOffset {
            scale: 1.0,
            offset: 0.0
        };
        bands
    ];
    let mut found = false;
    for item in xml.split("<Item").skip(1) {
        let Some((attrs, rest)) = item.split_once('>') else {
            continue;
        };
        let Some(value) = rest.split('<').next() else {
            continue;
        };
        let attr = |name: &str| -> Option<&str> {
            let key = format!("{name}=\"");
            let start = attrs.find(&key)? + key.len();
            attrs[start..].split('"').next()
        };
        let role = attr("role")
            .or_else(|| attr("name"))
            .map(str::to_ascii_lowercase);
        let Some(sample) = attr("sample").and_then(|s| s.parse::<usize>().ok()) else {
            continue;
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let Some(slot) = out.get_mut(sample) else {
            continue;
        };
        match role.as_deref() {
            Some("scale") => {
                slot.scale = v;
                found = true;
            }
            Some("offset") => {
                slot.offset = v;
                found = true;
            }
            _ => {}
        }
    }
    if found {
        out
    } else {
        Vec::new()
    }
}

/// The `GDAL_METADATA` XML for per-band scale/offset, `None` when every band is `(1, 0)`.
pub fn format_scale_offset(so: &[ScaleOffset]) -> Option<String> {
    if so.iter().all(|s| s.scale == 1.0 && s.offset == 0.0) {
        return None;
    }
    let mut xml = String::from("<GDALMetadata>\n");
    for (i, s) in so.iter().enumerate() {
        xml.push_str(&format!(
            "  <Item name=\"OFFSET\" sample=\"{i}\" role=\"offset\">{}</Item>\n  <Item name=\"SCALE\" sample=\"{i}\" role=\"scale\">{}</Item>\n",
            s.offset, s.scale
        ));
    }
    xml.push_str("</GDALMetadata>");
    Some(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_items() {
        let so = vec![
            ScaleOffset {
                scale: 0.0001,
                offset: -0.1,
            },
            ScaleOffset {
                scale: 1.0,
                offset: 0.0,
            },
        ];
        let xml = format_scale_offset(&so).unwrap();
        assert_eq!(parse_scale_offset(&xml, 2), so);
        let foreign =
            r#"<GDALMetadata><Item name="STATISTICS_MEAN" sample="0">3</Item></GDALMetadata>"#;
        assert!(parse_scale_offset(foreign, 1).is_empty());
        assert!(format_scale_offset(&[ScaleOffset {
            scale: 1.0,
            offset: 0.0
        }])
        .is_none());
    }
}

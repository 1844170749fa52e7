//! Georeferencing of plain JPEG / PNG files from GDAL's PAM sidecar (`<file>.aux.xml`).
//!
//! GDAL keeps the georeference of formats that cannot hold one in a "persistent auxiliary
//! metadata" file next to the image: `<GeoTransform>` with the six GDAL coefficients and
//! `<SRS>` with the CRS as WKT. The Banepa tiles of hotosm/fAIr-models are such files: JPEG
//! data named `.tif`, georeferenced only by their `.tif.aux.xml`. The EPSG code is the last
//! `AUTHORITY["EPSG","n"]` of the WKT (WKT 1 closes each CRS with its own authority, after
//! those of its datum, ellipsoid and units); the coefficients are in the CRS's traditional
//! GIS order (x = longitude), which is what GDAL writes with `dataAxisToSRSAxisMapping`.

use std::path::{Path, PathBuf};

use canopy_raster::GeoTransform;

use crate::{Error, Result};

/// The sidecar of `image`: `image` + `.aux.xml`.
pub(crate) fn sidecar(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".aux.xml");
    PathBuf::from(s)
}

/// Whether the file starts with a TIFF or BigTIFF signature.
pub(crate) fn is_tiff(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let n = f.read(&mut head).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(n == 4 && matches!(head, [b'I', b'I', 42 | 43, 0] | [b'M', b'M', 0, 42 | 43]))
}

/// The geotransform and EPSG code from the PAM sidecar of `image`.
pub(crate) fn read_pam_georef(image: &Path) -> Result<(GeoTransform, u32)> {
    let path = sidecar(image);
    let xml = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    parse_pam(&xml).map_err(|message| Error::File {
        path: path.clone(),
        message,
    })
}

fn parse_pam(xml: &str) -> std::result::Result<(GeoTransform, u32), String> {
    let inner = |tag: &str| -> Option<&str> {
        let start = xml.find(&format!("<{tag}"))?;
        let rest = xml.get(start..)?;
        let open_end = rest.find('>')? + 1;
        let close = rest.find(&format!("</{tag}>"))?;
        rest.get(open_end..close)
    };
    let gt_text = inner("GeoTransform")
        .ok_or("no <GeoTransform> element: the image is not georeferenced by its sidecar")?;
    let coeffs: Vec<f64> = gt_text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| format!("<GeoTransform> {gt_text:?}: {e}"))?;
    let gt: [f64; 6] = coeffs
        .try_into()
        .map_err(|v: Vec<f64>| format!("<GeoTransform> has {} numbers, expected 6", v.len()))?;
    let srs = inner("SRS").ok_or("no <SRS> element: the CRS is unknown")?;
    let key = "AUTHORITY[\"EPSG\",\"";
    let at = srs
        .rfind(key)
        .ok_or("the <SRS> WKT names no EPSG authority")?;
    let code = srs
        .get(at + key.len()..)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or("the EPSG code in <SRS> is not a number")?;
    Ok((GeoTransform(gt), code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gdal_pam_of_a_wgs84_jpeg() {
        let xml = r#"<PAMDataset>
  <SRS dataAxisToSRSAxisMapping="2,1">GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]</SRS>
  <GeoTransform>  8.55e+01,  1.5e-06,  0.0e+00,  2.76e+01,  0.0e+00, -1.25e-06</GeoTransform>
</PAMDataset>"#;
        let (gt, epsg) = parse_pam(xml).unwrap();
        assert_eq!(epsg, 4326);
        assert_eq!(gt.0, [85.5, 1.5e-6, 0.0, 27.6, 0.0, -1.25e-6]);
        let err = parse_pam("<PAMDataset></PAMDataset>").unwrap_err();
        assert!(err.contains("GeoTransform"), "{err}");
        let err = parse_pam("<GeoTransform>1, 2, 3</GeoTransform>").unwrap_err();
        assert!(err.contains("3 numbers"), "{err}");
    }

    #[test]
    fn sidecar_appends_the_suffix() {
        assert_eq!(
            sidecar(Path::new("a/b.tif")),
            PathBuf::from("a/b.tif.aux.xml")
        );
    }
}

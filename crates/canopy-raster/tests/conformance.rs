//! Conformance against real files: every GeoTIFF variant in `../shared/data/geotiff/variants`
//! must decode to the manifest's SHA-256 (lossless) or stay within JPEG tolerance of the source
//! (lossy), with size, bands, dtype, EPSG, geotransform and nodata equal to the manifest, which
//! GDAL 3.10 produced.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use canopy_raster::{AnyRaster, GeoTiff, Window};
use serde_json::Value;

fn manifest() -> Option<(std::path::PathBuf, Vec<Value>)> {
    let dir = common::shared_data("geotiff/variants")?;
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    let v: Vec<Value> = serde_json::from_str(&text).ok()?;
    Some((dir, v))
}

#[test]
fn every_variant_matches_the_manifest() {
    let Some((dir, entries)) = manifest() else {
        return;
    };
    let source = GeoTiff::open(dir.join("u8_none_strip_pixel.tif"))
        .unwrap()
        .read_any()
        .unwrap()
        .to_f64();
    let mut failures = Vec::new();
    let (mut exact, mut lossy, mut lerc) = (0, 0, 0);
    for e in &entries {
        let file = e["file"].as_str().unwrap();
        let path = dir.join(file);
        let tif = match GeoTiff::open(&path) {
            Ok(t) => t,
            Err(err) => {
                failures.push(format!("{file}: open: {err}"));
                continue;
            }
        };
        let info = tif.info();
        let check = |what: &str, ok: bool, got: String, failures: &mut Vec<String>| {
            if !ok {
                failures.push(format!("{file}: {what}: got {got}, manifest {}", e[what]));
            }
        };
        check(
            "width",
            info.width as u64 == e["width"].as_u64().unwrap(),
            info.width.to_string(),
            &mut failures,
        );
        check(
            "height",
            info.height as u64 == e["height"].as_u64().unwrap(),
            info.height.to_string(),
            &mut failures,
        );
        check(
            "bands",
            info.bands as u64 == e["bands"].as_u64().unwrap(),
            info.bands.to_string(),
            &mut failures,
        );
        check(
            "dtype",
            info.dtype.name() == e["dtype"].as_str().unwrap(),
            info.dtype.to_string(),
            &mut failures,
        );
        check(
            "tiled",
            info.tiled == e["tiled"].as_bool().unwrap(),
            info.tiled.to_string(),
            &mut failures,
        );
        check(
            "compression",
            info.compression.name() == e["compression"].as_str().unwrap(),
            info.compression.name(),
            &mut failures,
        );
        check(
            "bigtiff",
            info.bigtiff == e["bigtiff"].as_bool().unwrap(),
            info.bigtiff.to_string(),
            &mut failures,
        );
        check(
            "big_endian",
            info.big_endian == e["big_endian"].as_bool().unwrap(),
            info.big_endian.to_string(),
            &mut failures,
        );
        let bs = e["block_shapes"].as_array().unwrap();
        let want_bs = (
            bs[0].as_u64().unwrap() as usize,
            bs[1].as_u64().unwrap() as usize,
        );
        // GDAL exposes an uncompressed single-strip file as virtual strips of a few rows; we
        // report the file's real layout.
        let single_strip =
            !info.tiled && info.block_shape.0 == info.height && info.compression.name() == "none";
        check(
            "block_shapes",
            info.block_shape == want_bs || single_strip,
            format!("{:?}", info.block_shape),
            &mut failures,
        );
        check(
            "epsg",
            info.georef.crs.epsg.map(u64::from) == e["epsg"].as_u64(),
            format!("{:?}", info.georef.crs.epsg),
            &mut failures,
        );
        let want_t: Vec<f64> = e["transform"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got_t = info
            .georef
            .transform
            .map(|t| t.0.to_vec())
            .unwrap_or_default();
        // rasterio's affine order (a, b, c, d, e, f) = GDAL (t1, t2, t0, t4, t5, t3)
        let got_affine = if got_t.len() == 6 {
            vec![got_t[1], got_t[2], got_t[0], got_t[4], got_t[5], got_t[3]]
        } else {
            vec![]
        };
        let t_ok = got_affine.len() == 6
            && got_affine
                .iter()
                .zip(&want_t)
                .all(|(a, b)| (a - b).abs() <= 1e-9 * b.abs().max(1.0));
        check("transform", t_ok, format!("{got_affine:?}"), &mut failures);
        let want_nd = e["nodata"].as_f64();
        let nd_ok = match (info.nodata, want_nd) {
            (None, None) => true,
            (Some(a), Some(b)) => a == b || (a.is_nan() && b.is_nan()),
            _ => e["nodata"].is_string() && info.nodata.is_some_and(f64::is_nan),
        };
        check("nodata", nd_ok, format!("{:?}", info.nodata), &mut failures);
        let n_ov = e["overviews"].as_array().map(|a| a.len()).unwrap_or(0);
        check(
            "overviews",
            tif.overviews().len() == n_ov,
            tif.overviews().len().to_string(),
            &mut failures,
        );
        let aop = if info.georef.area_or_point == canopy_raster::AreaOrPoint::Point {
            "Point"
        } else {
            "Area"
        };
        check(
            "area_or_point",
            aop == e["area_or_point"].as_str().unwrap_or("Area"),
            aop.into(),
            &mut failures,
        );

        let data = match tif.read_any() {
            Ok(d) => d,
            Err(err) => {
                failures.push(format!("{file}: read: {err}"));
                continue;
            }
        };
        if e["compression"] == "lerc" {
            lerc += 1;
        }
        let hash = canopy_raster::to_hex(&data.sha256());
        if e["lossy"].as_bool().unwrap_or(false) {
            // JPEG: compare with the lossless source.
            let got = data.to_f64();
            let n = got.len() as f64;
            let mae = got
                .iter()
                .zip(source.iter())
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
                / n;
            let mse = got
                .iter()
                .zip(source.iter())
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / n;
            let psnr = 10.0 * (255.0f64.powi(2) / mse).log10();
            println!("{file}: lossy, MAE {mae:.2}, PSNR {psnr:.1} dB (vs source)");
            // GDAL's own decode of these files is lossy by the same amount; a wrong colour
            // conversion or block placement gives MAE > 30.
            if !(psnr > 28.0 && mae < 7.0) {
                failures.push(format!(
                    "{file}: lossy decode too far from the source: MAE {mae:.2}, PSNR {psnr:.1} dB"
                ));
            }
            lossy += 1;
        } else if hash != e["sha256_decoded_le_band_row_col"].as_str().unwrap() {
            failures.push(format!(
                "{file}: decoded sha256 {hash} differs from the manifest"
            ));
        } else {
            exact += 1;
        }
        // Overviews decode too.
        for level in 0..tif.overviews().len() {
            if let Err(err) = tif.read_overview::<u8>(level) {
                failures.push(format!("{file}: overview {level}: {err}"));
            }
        }
    }
    println!(
        "{exact} lossless files bit-exact ({lerc} of them LERC), {lossy} lossy within tolerance"
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(exact >= 50, "only {exact} lossless files checked");
}

#[test]
fn windowed_reads_equal_slices_of_the_full_read_in_every_layout() {
    let Some((dir, entries)) = manifest() else {
        return;
    };
    for e in &entries {
        let file = e["file"].as_str().unwrap();
        let tif = GeoTiff::open(dir.join(file)).unwrap();
        let full = tif.read_any().unwrap();
        let info = tif.info();
        for w in [
            Window::new(0, 0, 1, 1),
            Window::new(17, 9, 100, 70),
            Window::new(info.width - 31, info.height - 5, 31, 5),
            Window::new(250, 0, 9, info.height),
        ] {
            let part = match &full {
                AnyRaster::U8(r) => {
                    tif.read_window::<u8>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::I8(r) => {
                    tif.read_window::<i8>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::U16(r) => {
                    tif.read_window::<u16>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::I16(r) => {
                    tif.read_window::<i16>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::U32(r) => {
                    tif.read_window::<u32>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::I32(r) => {
                    tif.read_window::<i32>(w).unwrap().data == r.window(&w).unwrap().data
                }
                AnyRaster::F32(r) => {
                    let a = tif.read_window::<f32>(w).unwrap().data;
                    let b = r.window(&w).unwrap().data;
                    a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                }
                AnyRaster::F64(r) => {
                    let a = tif.read_window::<f64>(w).unwrap().data;
                    let b = r.window(&w).unwrap().data;
                    a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                }
            };
            assert!(part, "{file}: window {w:?} differs from the full read");
        }
    }
}

#[test]
fn band_subsets_and_type_errors() {
    let Some((dir, _)) = manifest() else { return };
    for file in ["u8_deflate_tiled_band.tif", "u8_deflate_tiled_pixel.tif"] {
        let tif = GeoTiff::open(dir.join(file)).unwrap();
        let full = tif.read::<u8>().unwrap();
        let w = Window::new(3, 4, 200, 150);
        let sub = tif.read_bands_window::<u8>(&[2, 0], w).unwrap();
        let win = full.window(&w).unwrap();
        assert_eq!(
            sub.data.index_axis(ndarray::Axis(0), 0),
            win.data.index_axis(ndarray::Axis(0), 2)
        );
        assert_eq!(
            sub.data.index_axis(ndarray::Axis(0), 1),
            win.data.index_axis(ndarray::Axis(0), 0)
        );
        assert!(matches!(
            tif.read::<u16>(),
            Err(canopy_raster::Error::DataType { .. })
        ));
        assert!(tif.read_bands_window::<u8>(&[3], w).is_err());
        assert!(tif.read_window::<u8>(Window::new(250, 0, 20, 20)).is_err());
        let conv = tif.read_as::<f32>().unwrap();
        assert_eq!(conv.data[[1, 5, 7]], f32::from(full.data[[1, 5, 7]]));
    }
}

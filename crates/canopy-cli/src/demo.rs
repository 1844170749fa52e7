//! `canopy demo`: the end-to-end job on a synthetic scene, with nothing to download.
//!
//! 1. generate a georeferenced 4-band uint16 scene (smooth "reflectance" fields, sensor noise,
//!    a nodata corner),
//! 2. write it as a tiled, Deflate-compressed GeoTIFF and check the bit-exact read-back,
//! 3. stream it window by window through an identity "model" with overlapping tiles and cosine
//!    blending, writing the stitched result tile row by tile row, and check it equals the input,
//! 4. stream it through a per-pixel "model" (a normalised difference of bands 4 and 3, NDVI-like)
//!    and write a georeferenced class map from it,
//! 5. train a small convolutional pixel classifier with canopy-train to reproduce that class map
//!    from the raw bands, training on the west of the scene and validating on the east, and check
//!    its validation accuracy (see [`crate::demo_train`]),
//! 6. train a TempCNN on generated cloudy NDVI series, raw and cloud-filtered + interpolated,
//!    and compare their validation accuracies (see [`crate::demo_series`]),
//! 7. polygonize the class map into GeoJSON,
//! 8. run the built-in building U-Net over a generated 0.15 m aerial RGB scene and score it
//!    against the generated footprints (see [`crate::demo_segment`]).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context};
use canopy_raster::stream::{predict_geotiff, StreamOptions};
use canopy_raster::write::{write_geotiff, Predictor, WriteOptions};
use canopy_raster::{Blend, Dims, GeoTiff, GeoTransform, Georef, Raster, Window};
use ndarray::{Array3, Axis};

/// A smooth, sensor-like 4-band uint16 field with a little deterministic noise and a nodata
/// (0) triangle in the top-left corner.
fn synthetic_scene(size: usize) -> Array3<u16> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut noise = move || {
        // xorshift64*: deterministic, no dependency
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58) as f64
    };
    let mut a = Array3::<u16>::zeros((4, size, size));
    for ((b, r, c), v) in a.indexed_iter_mut() {
        if r + c < size / 8 {
            continue; // nodata corner
        }
        let (x, y) = (c as f64, r as f64);
        let field = (x / (90.0 + 20.0 * b as f64)).sin() * (y / (115.0 + 13.0 * b as f64)).cos()
            + 0.5 * ((x + y) / (37.0 + 7.0 * b as f64)).sin();
        let base = [900.0, 1200.0, 1000.0, 2600.0][b];
        *v = (base + 450.0 * field + noise()).clamp(1.0, 10000.0) as u16;
    }
    a
}

pub fn run(out: &Path, size: usize) -> anyhow::Result<()> {
    ensure!(size >= 64, "--size must be at least 64 pixels");
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    println!("canopy demo: outputs in {}", out.display());
    let t_all = Instant::now();

    // 1. the scene: UTM zone 33N, 10 m pixels (a Sentinel-2 grid), nodata 0
    let georef = Georef::new(
        GeoTransform::north_up(500_000.0, 5_100_000.0, 10.0, 10.0),
        Some(32633),
    );
    let scene = Raster::new(synthetic_scene(size), georef).with_nodata(Some(0.0));
    let scene_path = out.join("scene.tif");
    let t = Instant::now();
    let opts = WriteOptions::default().with_predictor(Predictor::Horizontal);
    write_geotiff(&scene_path, &scene, &opts)?;
    let bytes = std::fs::metadata(&scene_path)?.len();
    println!(
        "1. wrote {} ({size}x{size}x4 uint16, 256x256 tiles, Deflate + predictor, {:.1} MB, {:.2}x smaller) in {:.2} s",
        scene_path.display(),
        bytes as f64 / 1e6,
        (size * size * 8) as f64 / bytes as f64,
        t.elapsed().as_secs_f64()
    );

    // 2. read back: whole, and a window (decodes only the tiles it touches)
    let t = Instant::now();
    let tif = GeoTiff::open(&scene_path)?;
    let back = tif.read::<u16>()?;
    ensure!(
        back.data == scene.data,
        "full read-back differs from the written scene"
    );
    ensure!(back.georef.transform == scene.georef.transform && back.georef.crs.epsg == Some(32633));
    ensure!(back.nodata == Some(0.0));
    let w = Window::new(
        size / 3,
        size / 5,
        300.min(size - size / 3),
        200.min(size - size / 5),
    );
    let win = tif.read_window::<u16>(w)?;
    ensure!(win.data == scene.window(&w)?.data, "windowed read differs");
    let (cx, cy) = win.pixel_center(0, 0).unwrap_or_default();
    println!(
        "2. read back bit-exact in {:.2} s; window {}x{} at ({}, {}) starts at pixel centre E {cx} N {cy}",
        t.elapsed().as_secs_f64(),
        w.width,
        w.height,
        w.col_off,
        w.row_off
    );

    // 3. identity model, overlapping tiles, cosine blending, streamed to disk
    let stream = StreamOptions {
        tile: Dims::square(256),
        overlap: Dims::square(48),
        blend: Blend::Cosine,
        write: WriteOptions::default().with_predictor(Predictor::FloatingPoint),
        nodata: Some(0.0),
        ..StreamOptions::default()
    };
    let ident_path = out.join("identity.tif");
    let t = Instant::now();
    let report = predict_geotiff(
        &tif,
        &ident_path,
        4,
        &stream,
        |w: &Raster<u16>| Ok(w.data.mapv(f32::from)),
        |_, _| {},
    )?;
    let stitched = GeoTiff::open(&ident_path)?.read::<f32>()?;
    ensure!(
        stitched.data == scene.data.mapv(f32::from),
        "identity model did not reproduce the scene"
    );
    println!(
        "3. identity model over {} overlapping 256x256 windows (overlap 48, cosine blend) reproduced the scene exactly; streamed in {:.2} s with buffers bounded at {:.1} MB whatever the scene height (the whole f32 scene would be {:.1} MB)",
        report.windows,
        t.elapsed().as_secs_f64(),
        report.memory_bound as f64 / 1e6,
        (4 * size * size * 4) as f64 / 1e6
    );

    // 4. a per-pixel model: normalised difference of bands 4 and 3, then a class map
    let nd_path = out.join("ndvi.tif");
    let t = Instant::now();
    predict_geotiff(
        &tif,
        &nd_path,
        1,
        &StreamOptions {
            bands: Some(vec![2, 3]),
            nodata: Some(f64::NAN),
            ..stream.clone()
        },
        |w: &Raster<u16>| {
            let red = w.data.index_axis(Axis(0), 0);
            let nir = w.data.index_axis(Axis(0), 1);
            let mut nd = Array3::<f32>::zeros((1, w.height(), w.width()));
            ndarray::Zip::from(nd.index_axis_mut(Axis(0), 0))
                .and(&red)
                .and(&nir)
                .for_each(|o, &r, &n| {
                    let (r, n) = (f32::from(r), f32::from(n));
                    *o = if r + n > 0.0 {
                        (n - r) / (n + r)
                    } else {
                        f32::NAN
                    };
                });
            Ok(nd)
        },
        |_, _| {},
    )?;
    let nd = GeoTiff::open(&nd_path)?.read::<f32>()?;
    let classes = nd.data.mapv(|v| {
        if v.is_nan() {
            0u8
        } else if v < 0.3 {
            1
        } else if v < 0.5 {
            2
        } else {
            3
        }
    });
    let class_map = Raster::new(classes, nd.georef.clone()).with_nodata(Some(0.0));
    let class_path = out.join("classes.tif");
    write_geotiff(&class_path, &class_map, &WriteOptions::default())?;
    let mut counts = [0usize; 4];
    for &c in class_map.data.iter() {
        counts[usize::from(c.min(3))] += 1;
    }
    println!(
        "4. NDVI-like index -> {} and a 3-class map -> {} in {:.2} s (pixels per class: nodata {}, low {}, medium {}, high {})",
        nd_path.display(),
        class_path.display(),
        t.elapsed().as_secs_f64(),
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );

    // 5. learn the class map from the bands with canopy-train
    crate::demo_train::step(out, &scene.data, &class_map.data)?;

    // 6. time series: does a model need cloud preprocessing?
    crate::demo_series::step()?;

    // 7. the class map as polygons: exact outlines, GeoJSON in WGS 84
    let t = Instant::now();
    let geojson_path = out.join("high.geojson");
    let summary = crate::polygonize::execute(&crate::polygonize::demo_args(
        &class_path,
        &geojson_path,
        3.0,
    ))?;
    ensure!(
        summary.pixels == counts[3],
        "the polygons cover {} pixels but the class map has {} high pixels",
        summary.pixels,
        counts[3]
    );
    let back = canopy_vector::read_geojson(&geojson_path)?;
    ensure!(
        back.features.len() == summary.regions,
        "GeoJSON read-back lost features"
    );
    println!(
        "7. polygonized the high class: {} regions with exact pixel outlines (covering all {} pixels), written as RFC 7946 GeoJSON (UTM 33N -> WGS 84) to {} in {:.2} s",
        summary.regions,
        summary.pixels,
        geojson_path.display(),
        t.elapsed().as_secs_f64()
    );

    // 8. the built-in building model over a generated aerial scene
    crate::demo_segment::step(out, size.clamp(256, 768))?;

    println!(
        "done in {:.1} s; inspect the outputs with `canopy info {}`",
        t_all.elapsed().as_secs_f64(),
        class_path.display()
    );
    Ok(())
}

//! Cross-crate end to end: a GeoTIFF written by canopy-raster is read window by window, each
//! window becomes a candle tensor, a small convolutional "model" from canopy-nn runs on it, and
//! the stitched prediction is streamed back to a georeferenced GeoTIFF.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use canopy::raster::tensor::{tensor_to_array, to_tensor};
use canopy::raster::{
    predict_geotiff, write_geotiff, Blend, Dims, GeoTiff, GeoTransform, Georef, Raster,
    StreamOptions, WriteOptions,
};
use canopy_nn::ops::{conv2d, Conv2dConfig};
use ndarray::Array3;

#[test]
fn geotiff_to_tensor_model_to_georeferenced_prediction() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("scene.tif");
    let data = Array3::from_shape_fn((2, 130, 170), |(b, r, c)| {
        ((b + 1) * (r * 3 + c * 5) % 1000) as u16
    });
    let georef = Georef::new(
        GeoTransform::north_up(600_000.0, 4_800_000.0, 10.0, 10.0),
        Some(32632),
    );
    write_geotiff(
        &input,
        &Raster::new(data.clone(), georef.clone()),
        &WriteOptions::default(),
    )
    .unwrap();

    // a 3x3 box filter on band 0 minus band 1: a linear "model" with a known answer
    let dev = Device::Cpu;
    let mut k = vec![0f32; 2 * 9];
    k[..9].fill(1.0 / 9.0);
    k[9 + 4] = -1.0;
    let weight = Tensor::from_vec(k, (1, 2, 3, 3), &dev).unwrap();
    let cfg = Conv2dConfig::square(1, 1, 1, 1);
    let model = |w: &Raster<u16>| -> canopy::raster::Result<Array3<f32>> {
        let x = to_tensor(w, DType::F32, &dev)?.unsqueeze(0)?;
        let y = conv2d(&x, &weight, None, cfg)
            .map_err(|e| canopy::raster::Error::InvalidArgument(e.to_string()))?;
        tensor_to_array(&y)
    };
    let output = dir.path().join("prediction.tif");
    let opts = StreamOptions {
        tile: Dims::square(64),
        overlap: Dims::square(16),
        blend: Blend::CenterCrop { margin: 8 },
        ..Default::default()
    };
    let report = predict_geotiff(
        &GeoTiff::open(&input).unwrap(),
        &output,
        1,
        &opts,
        model,
        |_, _| {},
    )
    .unwrap();
    assert!(report.windows > 6);

    let pred = GeoTiff::open(&output).unwrap().read::<f32>().unwrap();
    assert_eq!(pred.georef.transform, georef.transform);
    assert_eq!(pred.georef.crs.epsg, Some(32632));
    // away from tile borders (>= the 8-pixel margin inside each window), every pixel equals the
    // filter applied to the whole scene
    let f = |b: usize, r: isize, c: isize| -> f32 {
        if r < 0 || c < 0 || r >= 130 || c >= 170 {
            0.0
        } else {
            f32::from(data[[b, r as usize, c as usize]])
        }
    };
    let mut checked = 0;
    for r in 1..129isize {
        for c in 1..169isize {
            let mut want = -f(1, r, c);
            for dr in -1..=1 {
                for dc in -1..=1 {
                    want += f(0, r + dr, c + dc) / 9.0;
                }
            }
            let got = pred.data[[0, r as usize, c as usize]];
            assert!(
                (got - want).abs() < 1e-2,
                "pixel ({r}, {c}): {got} vs {want}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20_000);
}

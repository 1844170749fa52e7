//! Times `polygonize` on a mask GeoTIFF (band 1, foreground = non-zero), the work
//! `rasterio.features.shapes(mask, mask=mask)` does in ../shared/peers/bench_polygonize.py.
//!
//! ```text
//! cargo run --release -p canopy-vector --example polygonize_bench -- MASK.tif [--runs 15]
//! ```
//! Prints one JSON line per connectivity: polygons, vertices, holes, median and min ms; then
//! one line per simplification of the 4-connected polygons at tolerance 1 pixel (the peer's
//! `shapely.simplify(geoms, 1.0, preserve_topology=True)`).
//! `tools/bench_vector_vs_gdal.py` runs it next to GDAL on the same mask and prints ratios.

use std::time::Instant;

use anyhow::Context;
use canopy_raster::GeoTiff;
use canopy_vector::polygonize::{polygonize, Connectivity, PolygonizeOptions};
use canopy_vector::simplify::{simplify_coverage, simplify_polygons, SimplifyMethod};
use geo_types::Polygon;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .context("usage: polygonize_bench MASK.tif [--runs N]")?;
    let runs: usize = match args.iter().position(|a| a == "--runs") {
        Some(i) => args.get(i + 1).context("--runs needs a number")?.parse()?,
        None => 15,
    };
    let raster = GeoTiff::open(path)?.read_as::<u8>()?;
    let labels = raster.data.index_axis(ndarray::Axis(0), 0);
    for (name, connectivity) in [("4", Connectivity::Four), ("8", Connectivity::Eight)] {
        let opts = PolygonizeOptions {
            connectivity,
            min_pixels: 0,
        };
        let mut times = Vec::with_capacity(runs);
        let mut out = Vec::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            // The mask is built inside the timed region, as rasterio's `mask=` argument is.
            let valid = labels.mapv(|v| v != 0);
            out = polygonize(labels, Some(valid.view()), &opts)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let polys = out.iter().flat_map(|r| &r.geometry.0);
        let (mut vertices, mut holes) = (0usize, 0usize);
        for p in polys {
            holes += p.interiors().len();
            vertices +=
                p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>();
        }
        println!(
            "{{\"connectivity\": {name}, \"regions\": {}, \"vertices\": {vertices}, \"holes\": {holes}, \"median_ms\": {:.3}, \"min_ms\": {:.3}, \"runs\": {}}}",
            out.len(),
            times[times.len() / 2],
            times[0],
            times.len()
        );
    }
    let opts = PolygonizeOptions::default();
    let valid = labels.mapv(|v| v != 0);
    let polygons: Vec<Polygon<f64>> = polygonize(labels, Some(valid.view()), &opts)?
        .into_iter()
        .flat_map(|r| r.geometry.0)
        .collect();
    let count = |ps: &[Polygon<f64>]| -> usize {
        ps.iter()
            .map(|p| p.exterior().0.len() + p.interiors().iter().map(|r| r.0.len()).sum::<usize>())
            .sum()
    };
    for (name, coverage) in [("simplify", false), ("simplify_coverage", true)] {
        let mut times = Vec::with_capacity(runs);
        let mut out = Vec::new();
        for _ in 0..runs.max(1) {
            let t = Instant::now();
            out = if coverage {
                simplify_coverage(&polygons, SimplifyMethod::DouglasPeucker, 1.0)?
            } else {
                simplify_polygons(&polygons, SimplifyMethod::DouglasPeucker, 1.0)?
            };
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{{\"op\": \"{name}\", \"polygons\": {}, \"vertices_in\": {}, \"vertices_out\": {}, \"median_ms\": {:.3}, \"min_ms\": {:.3}, \"runs\": {}}}",
            polygons.len(),
            count(&polygons),
            count(&out),
            times[times.len() / 2],
            times[0],
            times.len()
        );
    }
    Ok(())
}

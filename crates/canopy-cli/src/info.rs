//! `canopy info`: what a GeoTIFF holds, as text or JSON.

use std::path::Path;

use anyhow::Context;
use canopy_raster::{to_hex, AreaOrPoint, GeoTiff, ImageInfo, Interleave};
use serde_json::{json, Value};

fn nodata_json(v: Option<f64>) -> Value {
    match v {
        None => Value::Null,
        Some(x) if x.is_nan() => json!("nan"),
        Some(x) if x.is_infinite() => json!(if x > 0.0 { "inf" } else { "-inf" }),
        Some(x) => json!(x),
    }
}

/// The JSON description of a file (`checksum` = hex SHA-256 of the decoded samples).
pub fn describe(tif: &GeoTiff, checksum: Option<String>) -> Value {
    let i: &ImageInfo = tif.info();
    let mut v = json!({
        "path": tif.path().display().to_string(),
        "width": i.width,
        "height": i.height,
        "bands": i.bands,
        "dtype": i.dtype.name(),
        "epsg": i.georef.crs.epsg,
        "geotransform": i.georef.transform.map(|t| t.0.to_vec()),
        "nodata": nodata_json(i.nodata),
        "compression": i.compression.name(),
        "predictor": i.predictor,
        "tiled": i.tiled,
        "block_size": [i.block_shape.0, i.block_shape.1],
        "interleave": match i.interleave { Interleave::Pixel => "pixel", Interleave::Band => "band" },
        "area_or_point": match i.georef.area_or_point { AreaOrPoint::Area => "Area", AreaOrPoint::Point => "Point" },
        "bigtiff": i.bigtiff,
        "big_endian": i.big_endian,
        "overviews": tif.overviews().iter().map(|o| json!([o.width, o.height])).collect::<Vec<_>>(),
        "gcps": i.georef.gcps.len(),
        "scale_offset": i.scale_offset.iter().map(|s| json!([s.scale, s.offset])).collect::<Vec<_>>(),
    });
    if let (Some(c), Some(obj)) = (checksum, v.as_object_mut()) {
        obj.insert("sha256".into(), json!(c));
    }
    v
}

pub fn run(file: &Path, as_json: bool, checksum: bool) -> anyhow::Result<()> {
    let tif = GeoTiff::open(file)?;
    let sum = if checksum {
        let data = tif
            .read_any()
            .with_context(|| format!("decoding {} for --checksum", file.display()))?;
        Some(to_hex(&data.sha256()))
    } else {
        None
    };
    let v = describe(&tif, sum);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let i = tif.info();
    println!("{}", file.display());
    println!(
        "  size        {} x {} pixels, {} band(s) of {}",
        i.width, i.height, i.bands, i.dtype
    );
    match i.georef.crs.epsg {
        Some(e) => println!("  crs         EPSG:{e}"),
        None if i.georef.crs.geokeys.is_some() => {
            println!("  crs         user-defined (GeoKeys kept)")
        }
        None => println!("  crs         none"),
    }
    match i.georef.transform {
        Some(t) => {
            let g = t.0;
            println!(
                "  transform   origin ({}, {}), pixel ({}, {}), rotation ({}, {})",
                g[0], g[3], g[1], g[5], g[2], g[4]
            );
            let (x0, y0, x1, y1) = t.bounds(i.width, i.height);
            println!("  bounds      x {x0} .. {x1}, y {y0} .. {y1}");
        }
        None if !i.georef.gcps.is_empty() => println!(
            "  transform   none ({} ground control points)",
            i.georef.gcps.len()
        ),
        None => println!("  transform   none"),
    }
    println!("  nodata      {}", nodata_json(i.nodata));
    println!(
        "  layout      {} {}x{} ({} x {} blocks), {} interleave, {} compression, predictor {}{}",
        if i.tiled { "tiles" } else { "strips" },
        i.block_shape.0,
        i.block_shape.1,
        i.block_grid().0,
        i.block_grid().1,
        if i.interleave == Interleave::Pixel {
            "pixel"
        } else {
            "band"
        },
        i.compression,
        i.predictor,
        if i.bigtiff { ", BigTIFF" } else { "" }
    );
    if !tif.overviews().is_empty() {
        let o: Vec<String> = tif
            .overviews()
            .iter()
            .map(|o| format!("{}x{}", o.width, o.height))
            .collect();
        println!("  overviews   {}", o.join(", "));
    }
    if !i.scale_offset.is_empty() {
        let so: Vec<String> = i
            .scale_offset
            .iter()
            .map(|s| format!("x{} + {}", s.scale, s.offset))
            .collect();
        println!("  scale/offset {}", so.join(", "));
    }
    if let Some(Value::String(s)) = v.get("sha256") {
        println!("  sha256      {s}");
    }
    Ok(())
}

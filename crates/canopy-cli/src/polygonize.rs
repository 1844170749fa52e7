//! `canopy polygonize`: a class raster to GeoJSON polygons.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use std::io::IsTerminal;

use canopy_raster::{DataType, GeoTiff, GeoTransform, Sample};
use canopy_vector::geojson_io::{write_geojson, OutputCrs, VectorFeature};
use canopy_vector::polygonize::{to_map, Connectivity, PolygonizeOptions, Region};
use canopy_vector::regularize::{regularize, RegularizeOptions};
use canopy_vector::simplify::{simplify_coverage, simplify_polygons, SimplifyMethod};
use canopy_vector::stream::polygonize_geotiff;
use geo::Area;
use geo_types::{Geometry, MultiPolygon, Polygon};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Pixel neighbourhood on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConnectivityArg {
    /// Edge neighbours only (GDAL's default).
    #[value(name = "4")]
    Four,
    /// Edge and corner neighbours.
    #[value(name = "8")]
    Eight,
}

/// Output coordinates on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrsArg {
    /// RFC 7946: WGS 84 longitude/latitude.
    Wgs84,
    /// The raster's CRS, named in a `crs` member.
    Native,
}

/// Arguments of `canopy polygonize`.
#[derive(Debug, Clone, clap::Args)]
pub struct PolygonizeArgs {
    /// The class raster (GeoTIFF; any integer or float sample type).
    #[arg(long)]
    pub input: PathBuf,
    /// The GeoJSON file to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Polygonize only pixels of this value (e.g. 1 = building); default: every value.
    #[arg(long)]
    pub class: Option<f64>,
    /// The band to polygonize (1-based, as in GDAL).
    #[arg(long, default_value_t = 1)]
    pub band: usize,
    /// Pixel neighbourhood of a region.
    #[arg(long, value_enum, default_value = "4")]
    pub connectivity: ConnectivityArg,
    /// Output coordinates: RFC 7946 WGS 84 (default) or the raster's own CRS.
    #[arg(long, value_enum, default_value = "wgs84")]
    pub crs: CrsArg,
    /// Drop regions smaller than this many pixels.
    #[arg(long, default_value_t = 0)]
    pub min_area: usize,
    /// Simplify outlines (Douglas-Peucker) with this tolerance in pixels; with several classes
    /// the shared borders are simplified once, so neighbours stay adjacent.
    #[arg(long)]
    pub simplify: Option<f64>,
    /// Square up building outlines: snap edges to each footprint's dominant orientation or its
    /// perpendicular (outlines that would change area by more than 10 % are kept as they are).
    #[arg(long)]
    pub regularize: bool,
    /// Rows read and polygonized per strip (memory: one strip plus the open outlines).
    #[arg(long, default_value_t = 512)]
    pub strip_rows: usize,
}

/// What one polygonize run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Regions written.
    pub regions: usize,
    /// Pixels inside them.
    pub pixels: usize,
    /// Seconds spent reading, polygonizing and writing.
    pub seconds: [f64; 3],
}

/// Runs `canopy polygonize`.
pub fn run(args: &PolygonizeArgs) -> anyhow::Result<()> {
    let s = execute(args)?;
    eprintln!(
        "polygonized {} region(s) covering {} pixels of {} (read {:.2} s, polygonize {:.2} s, write {:.2} s) -> {}",
        s.regions,
        s.pixels,
        args.input.display(),
        s.seconds[0],
        s.seconds[1],
        s.seconds[2],
        args.out.display()
    );
    Ok(())
}

/// Polygonizes `args.input` into `args.out`.
pub fn execute(args: &PolygonizeArgs) -> anyhow::Result<Summary> {
    let t = Instant::now();
    let tif =
        GeoTiff::open(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let (features, epsg, pixels, regions_s) = match tif.info().dtype {
        DataType::U8 => features_of::<u8>(&tif, args)?,
        DataType::I8 => features_of::<i8>(&tif, args)?,
        DataType::U16 => features_of::<u16>(&tif, args)?,
        DataType::I16 => features_of::<i16>(&tif, args)?,
        DataType::U32 => features_of::<u32>(&tif, args)?,
        DataType::I32 => features_of::<i32>(&tif, args)?,
        DataType::F32 => features_of::<f32>(&tif, args)?,
        DataType::F64 => features_of::<f64>(&tif, args)?,
    };
    let read_s = t.elapsed().as_secs_f64() - regions_s;
    let output = match args.crs {
        CrsArg::Wgs84 => OutputCrs::Wgs84,
        CrsArg::Native => OutputCrs::Native,
    };
    if epsg.is_none() && output == OutputCrs::Wgs84 {
        bail!(
            "{} has no EPSG code, so its polygons cannot be reprojected to WGS 84; use --crs native",
            args.input.display()
        );
    }
    let t_write = Instant::now();
    write_geojson(&args.out, &features, epsg, output)
        .with_context(|| format!("writing {}", args.out.display()))?;
    Ok(Summary {
        regions: features.len(),
        pixels,
        seconds: [read_s, regions_s, t_write.elapsed().as_secs_f64()],
    })
}

type Features = (Vec<VectorFeature>, Option<u32>, usize, f64);

fn progress_bar(rows: usize) -> ProgressBar {
    // A bar on a terminal for rasters worth waiting for; silent otherwise.
    if std::io::stderr().is_terminal() && rows >= 4096 {
        let bar = ProgressBar::new(rows as u64);
        let style =
            ProgressStyle::with_template("polygonize {bar:40} {pos}/{len} rows {per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    } else {
        ProgressBar::hidden()
    }
}

fn features_of<T: Sample>(tif: &GeoTiff, args: &PolygonizeArgs) -> anyhow::Result<Features> {
    let info = tif.info();
    if args.band == 0 || args.band > info.bands {
        bail!(
            "--band {} is out of range: {} has {} band(s), numbered from 1",
            args.band,
            args.input.display(),
            info.bands
        );
    }
    let class = match args.class {
        Some(c) => {
            let v = T::from_f64(c);
            if v.to_f64() != c {
                bail!(
                    "--class {c} is not a value of {}'s sample type {:?}",
                    args.input.display(),
                    T::DTYPE
                );
            }
            Some(v)
        }
        None => None,
    };
    if let Some(tol) = args.simplify {
        if !(tol.is_finite() && tol >= 0.0) {
            bail!("--simplify {tol}: the tolerance must be a finite number of pixels >= 0");
        }
    }
    let options = PolygonizeOptions {
        connectivity: match args.connectivity {
            ConnectivityArg::Four => Connectivity::Four,
            ConnectivityArg::Eight => Connectivity::Eight,
        },
        min_pixels: args.min_area,
    };
    let t = Instant::now();
    let bar = progress_bar(info.height);
    let mut regions = Vec::new();
    polygonize_geotiff::<T>(
        tif,
        args.band - 1,
        class,
        &options,
        args.strip_rows,
        |r| {
            regions.push(r);
            Ok(())
        },
        |done, _| bar.set_position(done as u64),
    )
    .with_context(|| format!("polygonizing {}", args.input.display()))?;
    bar.finish_and_clear();
    let pixels = regions.iter().map(|r| r.pixels).sum();
    let geometries = refine(&regions, args)?;
    let elapsed = t.elapsed().as_secs_f64();
    // Without a transform, map coordinates are pixel coordinates (as in GDAL).
    let transform = info.georef.transform.unwrap_or(GeoTransform::IDENTITY);
    let features = regions
        .iter()
        .zip(geometries)
        .map(|(r, g)| {
            let geometry = to_map(&g, &transform);
            let mut f = VectorFeature::new(Geometry::MultiPolygon(geometry.clone()));
            // A single part is written as a Polygon, as GDAL does.
            if geometry.0.len() == 1 {
                if let Some(p) = geometry.0.into_iter().next() {
                    f.geometry = Geometry::Polygon(p);
                }
            }
            f.properties
                .insert("value".into(), number(r.value.to_f64()));
            f.properties.insert("pixels".into(), Value::from(r.pixels));
            f.properties
                .insert("area".into(), number(f.geometry.unsigned_area()));
            f
        })
        .collect();
    Ok((features, info.georef.crs.epsg, pixels, elapsed))
}

/// The regions' outlines after `--simplify` and `--regularize` (pixel coordinates).
fn refine<T>(
    regions: &[Region<T>],
    args: &PolygonizeArgs,
) -> anyhow::Result<Vec<MultiPolygon<f64>>> {
    let mut parts: Vec<Polygon<f64>> = regions
        .iter()
        .flat_map(|r| r.geometry.0.iter().cloned())
        .collect();
    if let Some(tol) = args.simplify.filter(|&t| t > 0.0) {
        parts = if args.class.is_some() {
            simplify_polygons(&parts, SimplifyMethod::DouglasPeucker, tol)?
        } else {
            // Every class: the polygons tile the raster, keep shared borders shared.
            simplify_coverage(&parts, SimplifyMethod::DouglasPeucker, tol)?
        };
    }
    if args.regularize {
        let opts = RegularizeOptions::default();
        parts = parts
            .iter()
            .map(|p| regularize(p, &opts).map(|r| r.polygon))
            .collect::<canopy_vector::Result<_>>()?;
    }
    let mut it = parts.into_iter();
    Ok(regions
        .iter()
        .map(|r| MultiPolygon::new(it.by_ref().take(r.geometry.0.len()).collect()))
        .collect())
}

/// An integral value as a JSON integer, anything else as a float.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The arguments the demo uses: class `class` of `input`, 4-connectivity, RFC 7946 output.
pub fn demo_args(input: &Path, out: &Path, class: f64) -> PolygonizeArgs {
    PolygonizeArgs {
        input: input.to_path_buf(),
        out: out.to_path_buf(),
        class: Some(class),
        band: 1,
        connectivity: ConnectivityArg::Four,
        crs: CrsArg::Wgs84,
        min_area: 0,
        simplify: None,
        regularize: false,
        strip_rows: 512,
    }
}

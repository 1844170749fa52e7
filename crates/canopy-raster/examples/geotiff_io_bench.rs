//! GeoTIFF I/O timings of canopy-raster on given files, printed as one JSON object per line;
//! driven by `tools/bench_raster_vs_rasterio.py`, which runs rasterio on the same files and
//! samples and interleaves the two tools' runs.
//!
//! ```text
//! cargo run --release -p canopy-raster --example geotiff_io_bench -- read-full FILE --repeat 3
//! cargo run --release -p canopy-raster --example geotiff_io_bench -- read-windows FILE --windows WINS.txt
//! cargo run --release -p canopy-raster --example geotiff_io_bench -- write OUT.tif --from SAMPLES.bin \
//!     --bands 4 --height 8192 --width 8192 --layout tiled256 --compress deflate
//! ```
//!
//! `read-full` prints `{"op":"read-full","seconds":[...],"sha256":"..."}` (the SHA-256 of the
//! decoded samples, little-endian, band-major, as `Raster::sha256`); `read-windows` reads the
//! 512 x 512 (or any size) windows listed in a text file, one `col_off row_off width height`
//! per line, and prints each window's seconds and the SHA-256 of all windows' samples in order;
//! `write` reads raw little-endian `u16` samples `(bands, height, width)` (untimed) and times
//! `write_geotiff` (including its fsync), printing seconds and the file size.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use canopy_raster::write::{write_geotiff, WriteOptions};
use canopy_raster::{Compression, GeoTiff, GeoTransform, Georef, Raster, Window};
use clap::{Parser, Subcommand, ValueEnum};
use ndarray::Array3;
use sha2::{Digest, Sha256};

#[derive(Parser)]
#[command(about = "canopy-raster GeoTIFF I/O timings as JSON")]
struct Args {
    #[command(subcommand)]
    op: Op,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// 256 x 256 tiles.
    Tiled256,
    /// One row per strip (GDAL's choice for an uncompressed 8192-wide 4 x u16 image).
    Striped,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressArg {
    None,
    Deflate,
}

#[derive(Subcommand)]
enum Op {
    /// Open the file and read every band, `repeat` times (re-opened each time).
    ReadFull {
        file: PathBuf,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Also print the SHA-256 of the decoded samples (of the last run; untimed).
        #[arg(long)]
        checksum: bool,
    },
    /// Open the file once and read the windows listed in `windows`, timing each.
    ReadWindows {
        file: PathBuf,
        /// Text file: one `col_off row_off width height` per line.
        #[arg(long)]
        windows: PathBuf,
        /// Also print the SHA-256 of all windows' samples in order (untimed).
        #[arg(long)]
        checksum: bool,
    },
    /// Write raw samples as a GeoTIFF `repeat` times.
    Write {
        out: PathBuf,
        /// Raw little-endian u16 samples, (bands, height, width) C order.
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        bands: usize,
        #[arg(long)]
        height: usize,
        #[arg(long)]
        width: usize,
        #[arg(long, value_enum)]
        layout: LayoutArg,
        #[arg(long, value_enum)]
        compress: CompressArg,
        #[arg(long, default_value_t = 6)]
        level: u32,
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
}

fn hash_samples(h: &mut Sha256, data: &Array3<u16>) {
    match data.as_slice() {
        Some(s) if cfg!(target_endian = "little") => h.update(bytemuck::cast_slice::<u16, u8>(s)),
        _ => data.iter().for_each(|v| h.update(v.to_le_bytes())),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let threads = rayon::current_num_threads();
    match args.op {
        Op::ReadFull {
            file,
            repeat,
            checksum,
        } => {
            let mut secs = Vec::new();
            let mut last = None;
            for _ in 0..repeat.max(1) {
                let t = Instant::now();
                let r = GeoTiff::open(&file)?.read::<u16>()?;
                secs.push(t.elapsed().as_secs_f64());
                last = Some(r);
            }
            let sha = match (&last, checksum) {
                (Some(r), true) => {
                    let mut h = Sha256::new();
                    hash_samples(&mut h, &r.data);
                    Some(canopy_raster::to_hex(&h.finalize()))
                }
                _ => None,
            };
            let shape = last.map(|r| r.data.dim());
            println!(
                "{}",
                serde_json::json!({"op": "read-full", "file": file, "seconds": secs,
                    "shape": shape, "sha256": sha, "threads": threads})
            );
        }
        Op::ReadWindows {
            file,
            windows,
            checksum,
        } => {
            let text = std::fs::read_to_string(&windows)
                .with_context(|| format!("reading {}", windows.display()))?;
            let mut wins = Vec::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let v: Vec<usize> = line
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("bad window line {line:?}"))?;
                let [c, r, w, h] = v[..] else {
                    bail!("window line {line:?}: expected col_off row_off width height");
                };
                wins.push(Window::new(c, r, w, h));
            }
            let tif = GeoTiff::open(&file)?;
            let mut secs = Vec::with_capacity(wins.len());
            let mut h = Sha256::new();
            for w in &wins {
                let t = Instant::now();
                let r = tif.read_window::<u16>(*w)?;
                secs.push(t.elapsed().as_secs_f64());
                if checksum {
                    hash_samples(&mut h, &r.data);
                }
            }
            let sha = checksum.then(|| canopy_raster::to_hex(&h.finalize()));
            println!(
                "{}",
                serde_json::json!({"op": "read-windows", "file": file, "seconds": secs,
                    "sha256": sha, "threads": threads})
            );
        }
        Op::Write {
            out,
            from,
            bands,
            height,
            width,
            layout,
            compress,
            level,
            repeat,
        } => {
            let bytes =
                std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            let n = bands * height * width;
            if bytes.len() != n * 2 {
                bail!(
                    "{}: {} bytes, expected {} for ({bands}, {height}, {width}) u16",
                    from.display(),
                    bytes.len(),
                    n * 2
                );
            }
            let samples: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            drop(bytes);
            let data = Array3::from_shape_vec((bands, height, width), samples)?;
            let georef = Georef::new(
                GeoTransform::north_up(300_000.0, 5_400_000.0, 10.0, 10.0),
                Some(32630),
            );
            let raster = Raster::new(data, georef);
            let mut opts = match layout {
                LayoutArg::Tiled256 => WriteOptions::default().tiled(256, 256),
                LayoutArg::Striped => WriteOptions::default().striped(1),
            };
            opts = match compress {
                CompressArg::None => opts.with_compression(Compression::None),
                CompressArg::Deflate => opts
                    .with_compression(Compression::Deflate)
                    .with_deflate_level(level),
            };
            let mut secs = Vec::new();
            for _ in 0..repeat.max(1) {
                let t = Instant::now();
                write_geotiff(&out, &raster, &opts)?;
                secs.push(t.elapsed().as_secs_f64());
            }
            let size = std::fs::metadata(&out)?.len();
            println!(
                "{}",
                serde_json::json!({"op": "write", "file": out, "seconds": secs,
                    "file_bytes": size, "threads": threads})
            );
        }
    }
    Ok(())
}

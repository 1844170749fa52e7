//! Writing GeoTIFF files: tiled or striped, pixel- or band-interleaved, uncompressed, LZW or
//! Deflate, with the horizontal or floating-point predictor, classic TIFF or BigTIFF, and the
//! georeferencing, nodata and scale/offset tags GDAL reads.
//!
//! # Why our own encoder
//! The `tiff` crate's encoder writes strips only (no tiles), and its horizontal predictor
//! corrupts multiband data (it differences each sample with the previous *sample* instead of
//! the same band of the previous pixel). This module writes TIFF itself; the `tiff` crate's
//! decoder and GDAL are used to check the result.
//!
//! # Format choices
//! - **Little-endian** (`II`) always (TIFF 6.0, section 2).
//! - **Blocks**: tiles (TIFF 6.0, section 15; tile sizes must be multiples of 16) or strips
//!   (section 3). Edge tiles are stored full size, padded with zeros; the last strip holds only
//!   the remaining rows, as libtiff writes it.
//! - **Interleave**: `PlanarConfiguration` 1 (pixel: one chunk holds every band) or 2 (band:
//!   one chunk per band and block, band 0's chunks first).
//! - **Predictors** (TIFF 6.0, section 14; Adobe TIFF Technical Note 3): predictor 2 differences
//!   every sample with the same band's sample in the previous pixel, modulo 2^bits; predictor 3
//!   regroups each row's bytes into planes (most significant first) and differences bytes,
//!   exactly as libtiff's `fpDiff`.
//! - **Compression**: 1 (none), 5 (LZW, with the TIFF "early change" code size switch, via
//!   `weezl`) and 8 (Deflate as a zlib stream, via libdeflate). Blocks are compressed in
//!   parallel with rayon and appended to the file in order, so a file does not depend on the
//!   number of threads. Each thread keeps one sample buffer and one output buffer of the
//!   largest block it encoded, reused from block to block.
//! - **Photometric**: RGB for three `u8` bands (as GDAL does), otherwise MinIsBlack with
//!   `ExtraSamples` = 0 (unspecified) for every band beyond the first.
//! - **BigTIFF** (<https://www.awaresystems.be/imaging/tiff/bigtiff.html>): the IFD is written
//!   after the data, so the first 16 bytes of the file are reserved and the header is written
//!   last: classic TIFF (magic 42) when every offset fits in 32 bits, BigTIFF (magic 43,
//!   64-bit offsets) otherwise ([`BigTiff::Auto`]), or as forced by [`BigTiff::Always`] /
//!   [`BigTiff::Never`].
//! - **Georeferencing** (OGC GeoTIFF 1.1): `ModelPixelScale` + `ModelTiepoint` or
//!   `ModelTransformation` (DOUBLE), `GeoKeyDirectory` (SHORT), `GeoDoubleParams` (DOUBLE),
//!   `GeoAsciiParams` (ASCII), from [`Georef::to_tags`](crate::Georef::to_tags). GDAL's private tags: `GDAL_NODATA`
//!   (42113, ASCII, see [`format_nodata`]) and `GDAL_METADATA` (42112) for band scale/offset.
//! - **Atomic**: data goes to a hidden temporary file in the destination directory
//!   (`.<name>.<pid>.<n>.tmp`), which is fsynced and renamed over the destination by
//!   [`GeoTiffWriter::finish`]; a writer dropped before `finish` removes it. A crash leaves
//!   at most a stray temporary file, never a truncated file under the final name.
//!
//! # Example
//! ```
//! use canopy_raster::{GeoTransform, Georef, Raster};
//! use canopy_raster::write::{write_geotiff, Predictor, WriteOptions};
//! # fn main() -> canopy_raster::Result<()> {
//! let dir = std::env::temp_dir();
//! let data = ndarray::Array3::<u16>::from_shape_fn((4, 300, 500), |(b, r, c)| (b * 1000 + r + c) as u16);
//! let georef = Georef::new(GeoTransform::north_up(500_000.0, 4_600_000.0, 10.0, 10.0), Some(32633));
//! let raster = Raster::new(data, georef).with_nodata(Some(0.0));
//! let opts = WriteOptions::default().with_predictor(Predictor::Horizontal);
//! write_geotiff(dir.join("canopy_write_doc.tif"), &raster, &opts)?;
//! # std::fs::remove_file(dir.join("canopy_write_doc.tif")).ok();
//! # Ok(())
//! # }
//! ```
//!
//! # References
//! - TIFF Revision 6.0 (Adobe, 1992).
//! - OGC GeoTIFF Standard 1.1 (OGC 19-008r4).
//! - BigTIFF file format proposal (Aware Systems / libtiff).
//! - Adobe Photoshop TIFF Technical Note 3 (floating-point predictor).

mod encode;
mod ifd;
mod writer;

use std::path::Path;

use crate::{Compression, Error, Raster, Result, Sample};

pub use writer::GeoTiffWriter;

/// How the image is cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Tiles of `width x height` pixels; both must be positive multiples of 16 (TIFF 6.0).
    Tiled {
        /// Tile width in pixels.
        width: usize,
        /// Tile height in pixels.
        height: usize,
    },
    /// Strips of whole rows.
    Striped {
        /// Rows per strip (clamped to the image height).
        rows_per_strip: usize,
    },
}

impl Default for Layout {
    /// 256 x 256 tiles, GDAL's default tile size.
    fn default() -> Self {
        Layout::Tiled {
            width: 256,
            height: 256,
        }
    }
}

pub use crate::read::Interleave;

/// The TIFF `Predictor` applied before compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Predictor {
    /// 1: none.
    #[default]
    None,
    /// 2: horizontal differencing, for integer samples.
    Horizontal,
    /// 3: floating-point predictor, for float samples.
    FloatingPoint,
}

impl Predictor {
    /// The TIFF code.
    pub fn code(self) -> u16 {
        match self {
            Predictor::None => 1,
            Predictor::Horizontal => 2,
            Predictor::FloatingPoint => 3,
        }
    }
}

/// Whether to write classic TIFF or BigTIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BigTiff {
    /// Classic TIFF when every offset fits in 32 bits, BigTIFF otherwise (decided at the end).
    #[default]
    Auto,
    /// Always BigTIFF.
    Always,
    /// Always classic TIFF; files over 4 GiB are an error.
    Never,
}

/// Options of [`write_geotiff`] and [`GeoTiffWriter`].
///
/// The default is 256 x 256 tiles, Deflate level 6, no predictor, pixel interleave,
/// [`BigTiff::Auto`].
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOptions {
    /// Tiles or strips.
    pub layout: Layout,
    /// [`Compression::None`], [`Compression::Lzw`] or [`Compression::Deflate`].
    pub compression: Compression,
    /// Deflate level, 0 (store) to 12 (libdeflate's slowest); 6 by default.
    pub deflate_level: u32,
    /// The predictor; must suit the sample type.
    pub predictor: Predictor,
    /// Pixel or band interleave.
    pub interleave: Interleave,
    /// Classic TIFF or BigTIFF.
    pub bigtiff: BigTiff,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            layout: Layout::default(),
            compression: Compression::Deflate,
            deflate_level: 6,
            predictor: Predictor::None,
            interleave: Interleave::Pixel,
            bigtiff: BigTiff::Auto,
        }
    }
}

impl WriteOptions {
    /// Tiles of `width x height` pixels (multiples of 16).
    pub fn tiled(mut self, width: usize, height: usize) -> Self {
        self.layout = Layout::Tiled { width, height };
        self
    }

    /// Strips of `rows_per_strip` rows.
    pub fn striped(mut self, rows_per_strip: usize) -> Self {
        self.layout = Layout::Striped { rows_per_strip };
        self
    }

    /// The compression scheme.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The Deflate level (0..=12).
    pub fn with_deflate_level(mut self, level: u32) -> Self {
        self.deflate_level = level;
        self
    }

    /// The predictor.
    pub fn with_predictor(mut self, predictor: Predictor) -> Self {
        self.predictor = predictor;
        self
    }

    /// Pixel or band interleave.
    pub fn with_interleave(mut self, interleave: Interleave) -> Self {
        self.interleave = interleave;
        self
    }

    /// Classic TIFF / BigTIFF choice.
    pub fn with_bigtiff(mut self, bigtiff: BigTiff) -> Self {
        self.bigtiff = bigtiff;
        self
    }

    /// Checks the options for samples of type `T` written to `path`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a compression other than none/LZW/Deflate;
    /// [`Error::InvalidArgument`] for tile sizes that are not positive multiples of 16,
    /// zero rows per strip, a Deflate level above 12, or a predictor that does not suit `T`.
    pub fn validate<T: Sample>(&self, path: &Path) -> Result<()> {
        let p = path.display();
        match self.layout {
            Layout::Tiled { width, height } => {
                if width == 0 || height == 0 || width % 16 != 0 || height % 16 != 0 {
                    return Err(Error::invalid(format!(
                        "{p}: tile size {width}x{height} (width x height) is invalid: TIFF 6.0 requires tile width and height to be positive multiples of 16; use e.g. 256x256 or 512x512"
                    )));
                }
            }
            Layout::Striped { rows_per_strip } => {
                if rows_per_strip == 0 {
                    return Err(Error::invalid(format!(
                        "{p}: rows_per_strip must be at least 1"
                    )));
                }
            }
        }
        match self.compression {
            Compression::None | Compression::Lzw | Compression::Deflate => {}
            other => {
                return Err(Error::unsupported(
                    path,
                    format!(
                        "writing {other} compression; the writer supports none, lzw and deflate"
                    ),
                ))
            }
        }
        if self.compression == Compression::Deflate && self.deflate_level > 12 {
            return Err(Error::invalid(format!(
                "{p}: deflate level {} is outside 0..=12",
                self.deflate_level
            )));
        }
        let float = T::DTYPE.is_float();
        match (self.predictor, float) {
            (Predictor::Horizontal, true) => {
                return Err(Error::invalid(format!(
                    "{p}: the horizontal predictor (2) is for integer samples, the raster holds {}; use Predictor::FloatingPoint",
                    T::DTYPE
                )))
            }
            (Predictor::FloatingPoint, false) => {
                return Err(Error::invalid(format!(
                    "{p}: the floating-point predictor (3) is for float samples, the raster holds {}; use Predictor::Horizontal",
                    T::DTYPE
                )))
            }
            _ => {}
        }
        Ok(())
    }
}

/// The `GDAL_NODATA` text for a nodata value, exactly as GDAL writes it (`%.17g`, `nan`):
/// `0`, `-9999`, `0.10000000000000001`, `-3.4028234663852886e+38`, `nan`, `inf`, `-inf`.
/// GDAL parses this text back to the same `f64`.
pub fn format_nodata(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    printf_g17(v)
}

/// C's `printf("%.17g", v)` for a finite `v` (Rust's float formatting rounds exactly, as
/// glibc does).
fn printf_g17(v: f64) -> String {
    fn strip_zeros(s: &str) -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    }
    let sci = format!("{v:.16e}");
    let Some((mant, exp)) = sci.split_once('e') else {
        return sci;
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return sci;
    };
    if !(-4..17).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip_zeros(mant), exp.abs())
    } else {
        let prec = (16 - exp) as usize;
        strip_zeros(&format!("{v:.prec$}"))
    }
}

/// Writes a whole raster to `path` as a GeoTIFF (atomically: see the module docs).
///
/// Every rayon thread takes the next few blocks, compresses them and hands them to a writer
/// thread that appends them in row-major order; a third thread asks the kernel to write the
/// file back every 16 MiB, so the final fsync has little left to do.
///
/// # Errors
/// Invalid options (see [`WriteOptions::validate`]), a scale/offset list whose length is
/// neither 0 nor the band count, an empty raster, and I/O errors, all naming `path`.
pub fn write_geotiff<T: Sample>(
    path: impl AsRef<Path>,
    raster: &Raster<T>,
    opts: &WriteOptions,
) -> Result<()> {
    let (bands, height, width) = raster.data.dim();
    let mut w = GeoTiffWriter::<T>::create(
        path,
        width,
        height,
        bands,
        &raster.georef,
        raster.nodata,
        opts,
    )?;
    if !raster.scale_offset.is_empty() {
        w = w.with_scale_offset(&raster.scale_offset)?;
    }
    w.write_all(raster.data.view())?;
    w.finish()
}

#[cfg(test)]
mod tests;

//! Reading GeoTIFFs: [`GeoTiff::open`] parses the header and every image file directory;
//! `read*` methods decode whole images, windows, band subsets and overviews.
//!
//! # What is read
//! - Sample types u8, i8, u16, i16, u32, i32, f32, f64; any number of bands; pixel- and
//!   band-interleaved layouts; strips and tiles; little- and big-endian; classic and BigTIFF.
//! - Compression none, LZW, Deflate, PackBits, ZSTD, JPEG (YCbCr converted to RGB, as GDAL
//!   does), WebP, LERC (also wrapped in Deflate or ZSTD, GDAL's `LERC_DEFLATE` / `LERC_ZSTD`;
//!   decoded by the pure-Rust `lerc-reader` crate); predictors 2 (horizontal) and 3 (floating
//!   point). Other codecs (old-style JPEG, ...) are a typed [`Error::Unsupported`].
//! - Georeferencing with GDAL's conventions (see [`crate::geo`]), `GDAL_NODATA` (NaN too),
//!   band scale/offset from `GDAL_METADATA`, and reduced-resolution images (overviews).
//!
//! # Performance
//! Windowed reads decode only the strips/tiles that intersect the window. Chunks are fetched
//! with positioned reads (no shared file cursor) and decoded on the rayon thread pool, one
//! block-row per task.
//!
//! # Limits
//! [`Limits`] are on by default: a file that declares more pixels than a read may allocate is an
//! [`Error::Limit`] naming the limit, never an allocation attempt.
//!
//! # References
//! TIFF 6.0 (Adobe, 1992); BigTIFF (libtiff.org); OGC GeoTIFF 1.1 (19-008r4); GDAL's GTiff
//! driver for the conventions (PixelIsPoint, `GDAL_NODATA`, `GDAL_METADATA`).

mod decode;
mod ifd;
mod positioned;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{Array3, ArrayViewMut3, Axis};
use rayon::prelude::*;
use tiff::decoder::Decoder;

use crate::{Compression, DataType, Error, Georef, Raster, Result, Sample, ScaleOffset, Window};
use decode::{decode_chunk, ChunkCodec};
use ifd::{parse_image, tiff_err_with};

/// Resource limits applied while reading. The defaults accept any real-world GeoTIFF that
/// fits in memory; raise them for trusted files that need more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest decoded result of one `read*` call, in bytes (default 16 GiB).
    pub max_read_bytes: u64,
    /// Largest decoded strip or tile, in bytes (default 1 GiB).
    pub max_chunk_bytes: u64,
    /// Largest number of image file directories followed (default 4096).
    pub max_images: usize,
    /// Largest tag value the TIFF parser loads, in bytes (default 64 MiB: chunk offset
    /// tables of huge files).
    pub max_tag_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_read_bytes: 16 << 30,
            max_chunk_bytes: 1 << 30,
            max_images: 4096,
            max_tag_bytes: 64 << 20,
        }
    }
}

/// How samples of different bands are interleaved (`PlanarConfiguration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interleave {
    /// All bands of a pixel together (`PlanarConfiguration` 1, GDAL `INTERLEAVE=PIXEL`).
    #[default]
    Pixel,
    /// One band after the other (`PlanarConfiguration` 2, GDAL `INTERLEAVE=BAND`).
    Band,
}

/// Everything known about one image (the full-resolution image or an overview) of a file.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Samples per pixel.
    pub bands: usize,
    /// Sample type.
    pub dtype: DataType,
    /// Compression scheme.
    pub compression: Compression,
    /// TIFF predictor (1 none, 2 horizontal, 3 floating point).
    pub predictor: u16,
    /// Band interleaving.
    pub interleave: Interleave,
    /// TIFF `PhotometricInterpretation` (1 grey, 2 RGB, 6 YCbCr, ...).
    pub photometric: u16,
    /// Tiled (`true`) or striped.
    pub tiled: bool,
    /// Block (tile or strip) size as `(rows, cols)`.
    pub block_shape: (usize, usize),
    /// Georeferencing (overviews: scaled from the full-resolution image).
    pub georef: Georef,
    /// `GDAL_NODATA`.
    pub nodata: Option<f64>,
    /// Band scale/offset from `GDAL_METADATA`, empty when absent.
    pub scale_offset: Vec<ScaleOffset>,
    /// Whether the file is BigTIFF.
    pub bigtiff: bool,
    /// Whether the file is big-endian.
    pub big_endian: bool,
    chunk_offsets: Vec<u64>,
    chunk_bytes: Vec<u64>,
    codec: ChunkCodec,
    ifd_index: usize,
}

impl ImageInfo {
    /// Number of block rows and block columns.
    pub fn block_grid(&self) -> (usize, usize) {
        let (bh, bw) = self.block_shape;
        (self.height.div_ceil(bh), self.width.div_ceil(bw))
    }

    /// Bytes of decoded samples in the whole image.
    pub fn decoded_bytes(&self) -> u64 {
        (self.width as u64)
            .saturating_mul(self.height as u64)
            .saturating_mul(self.bands as u64)
            .saturating_mul(self.dtype.size() as u64)
    }
}

/// An open GeoTIFF file.
///
/// ```no_run
/// use canopy_raster::{GeoTiff, Window};
/// # fn main() -> canopy_raster::Result<()> {
/// let tif = GeoTiff::open("scene.tif")?;
/// let info = tif.info();
/// println!("{} x {} x {} {}", info.width, info.height, info.bands, info.dtype);
/// let window = tif.read_window::<u16>(Window::new(0, 0, 512, 512))?;
/// println!("top-left centre: {:?}", window.pixel_center(0, 0));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GeoTiff {
    path: PathBuf,
    file: File,
    file_len: u64,
    images: Vec<ImageInfo>,
    limits: Limits,
    /// Fallback decoder for codecs decoded by the `tiff` crate (WebP).
    fallback: Mutex<Option<Decoder<std::io::BufReader<File>>>>,
}

impl GeoTiff {
    /// Opens a GeoTIFF with the default [`Limits`].
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened, [`Error::Format`] when it is not a valid
    /// TIFF, [`Error::Unsupported`] when its first image uses a sample layout this crate does
    /// not read (1-bit, 12-bit, complex, 64-bit integer, ...).
    pub fn open(path: impl AsRef<Path>) -> Result<GeoTiff> {
        GeoTiff::open_with_limits(path, Limits::default())
    }

    /// Opens a GeoTIFF with explicit [`Limits`].
    ///
    /// # Errors
    /// As [`GeoTiff::open`].
    pub fn open_with_limits(path: impl AsRef<Path>, limits: Limits) -> Result<GeoTiff> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let reader = std::io::BufReader::new(file.try_clone().map_err(|e| Error::io(&path, e))?);
        let tlimits = {
            let mut l = tiff::decoder::Limits::default();
            l.ifd_value_size = limits.max_tag_bytes;
            l.decoding_buffer_size = usize::try_from(limits.max_chunk_bytes).unwrap_or(usize::MAX);
            l.intermediate_buffer_size = l.decoding_buffer_size;
            l
        };
        let mut dec = Decoder::new(reader)
            .map_err(|e| tiff_err_with(&path, e, limits.max_tag_bytes))?
            .with_limits(tlimits);
        let big_endian = matches!(dec.byte_order(), tiff::tags::ByteOrder::BigEndian);
        let bigtiff = {
            let mut head = [0u8; 4];
            positioned::read_exact_at(&file, &mut head, 0).map_err(|e| Error::io(&path, e))?;
            head[2..4] == [0, 43] || head[2..4] == [43, 0]
        };
        let mut images = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut ptr = dec.ifd_pointer();
        let mut index = 0usize;
        while let Some(p) = ptr {
            if p.0 == 0 || !seen.insert(p.0) {
                break;
            }
            if index >= limits.max_images {
                return Err(Error::Limit {
                    path: path.clone(),
                    what: format!("more than {} image directories", limits.max_images),
                    needed: index as u64 + 1,
                    limit: limits.max_images as u64,
                    field: "max_images",
                });
            }
            let dir = dec
                .read_directory(p)
                .map_err(|e| tiff_err_with(&path, e, limits.max_tag_bytes))?;
            ptr = dir.next();
            let parsed = parse_image(
                &mut dec,
                &dir,
                &path,
                index,
                big_endian,
                bigtiff,
                limits.max_tag_bytes,
            );
            match parsed {
                Ok(Some(img)) => images.push(img),
                Ok(None) => {}
                // The first image must be readable; a broken later one (overview, mask) ends the list.
                Err(e) if index == 0 => return Err(e),
                Err(_) => break,
            }
            index += 1;
        }
        let first = images
            .first()
            .cloned()
            .ok_or_else(|| Error::format(&path, "no image directory"))?;
        // Overviews inherit georeferencing from the full-resolution image, scaled.
        for img in images.iter_mut().skip(1) {
            if let Some(t) = first.georef.transform {
                img.georef.transform = Some(t.scaled(
                    first.width as f64 / img.width as f64,
                    first.height as f64 / img.height as f64,
                ));
            }
            img.georef.crs = first.georef.crs.clone();
            img.georef.area_or_point = first.georef.area_or_point;
            if img.nodata.is_none() {
                img.nodata = first.nodata;
            }
        }
        // Keep the full-resolution image first, then overviews by decreasing size.
        let mut overviews: Vec<ImageInfo> = images
            .into_iter()
            .skip(1)
            .filter(|i| i.bands == first.bands && i.dtype == first.dtype && i.width < first.width)
            .collect();
        overviews.sort_by_key(|i| std::cmp::Reverse(i.width));
        let mut images = vec![first];
        images.extend(overviews);
        Ok(GeoTiff {
            path,
            file,
            file_len,
            images,
            limits,
            fallback: Mutex::new(None),
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The full-resolution image.
    pub fn info(&self) -> &ImageInfo {
        &self.images[0]
    }

    /// Reduced-resolution images (overviews), largest first.
    pub fn overviews(&self) -> &[ImageInfo] {
        &self.images[1..]
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Reads every band of the whole image.
    ///
    /// # Errors
    /// [`Error::DataType`] when `T` is not the file's sample type (see [`GeoTiff::read_as`]),
    /// [`Error::Limit`] when the result would exceed [`Limits::max_read_bytes`], decoding errors.
    pub fn read<T: Sample>(&self) -> Result<Raster<T>> {
        let i = self.info();
        self.read_image(0, &all_bands(i.bands), Window::full(i.width, i.height))
    }

    /// Reads every band of a window; only the intersecting strips/tiles are decoded.
    ///
    /// # Errors
    /// As [`GeoTiff::read`], and [`Error::InvalidArgument`] when the window is empty or
    /// reaches outside the image.
    pub fn read_window<T: Sample>(&self, window: Window) -> Result<Raster<T>> {
        self.read_image(0, &all_bands(self.info().bands), window)
    }

    /// Reads some bands (0-based, any order, repeats allowed) of a window.
    ///
    /// # Errors
    /// As [`GeoTiff::read_window`], and [`Error::InvalidArgument`] for a band index out of range.
    pub fn read_bands_window<T: Sample>(
        &self,
        bands: &[usize],
        window: Window,
    ) -> Result<Raster<T>> {
        self.read_image(0, bands, window)
    }

    /// Reads a whole overview (`level` 0 is the largest overview).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when there is no such overview; otherwise as [`GeoTiff::read`].
    pub fn read_overview<T: Sample>(&self, level: usize) -> Result<Raster<T>> {
        let img = self.images.get(level + 1).ok_or_else(|| {
            Error::invalid(format!(
                "{}: overview {level} requested, the file has {}",
                self.path.display(),
                self.images.len() - 1
            ))
        })?;
        self.read_image(
            level + 1,
            &all_bands(img.bands),
            Window::full(img.width, img.height),
        )
    }

    /// Reads the whole image converting samples to `T` (rounding and saturating into integer
    /// types; nodata is kept as a number).
    ///
    /// # Errors
    /// As [`GeoTiff::read`], without the type check.
    pub fn read_as<T: Sample>(&self) -> Result<Raster<T>> {
        let i = self.info();
        self.read_window_as(Window::full(i.width, i.height))
    }

    /// Reads a window converting samples to `T`.
    ///
    /// # Errors
    /// As [`GeoTiff::read_window`], without the type check.
    pub fn read_window_as<T: Sample>(&self, window: Window) -> Result<Raster<T>> {
        macro_rules! conv {
            ($t:ty) => {{
                let r: Raster<$t> = self.read_window(window)?;
                if T::DTYPE == <$t as Sample>::DTYPE {
                    // Same type: reinterpret without rounding through f64.
                    let data = r.data.mapv(|v| bytemuck::cast::<$t, T>(v));
                    Ok(Raster {
                        data,
                        georef: r.georef,
                        nodata: r.nodata,
                        scale_offset: r.scale_offset,
                    })
                } else {
                    Ok(r.to_dtype::<T>())
                }
            }};
        }
        match self.info().dtype {
            DataType::U8 => conv!(u8),
            DataType::I8 => conv!(i8),
            DataType::U16 => conv!(u16),
            DataType::I16 => conv!(i16),
            DataType::U32 => conv!(u32),
            DataType::I32 => conv!(i32),
            DataType::F32 => conv!(f32),
            DataType::F64 => conv!(f64),
        }
    }

    /// Reads the whole image in its own sample type.
    ///
    /// # Errors
    /// As [`GeoTiff::read`].
    pub fn read_any(&self) -> Result<AnyRaster> {
        Ok(match self.info().dtype {
            DataType::U8 => AnyRaster::U8(self.read()?),
            DataType::I8 => AnyRaster::I8(self.read()?),
            DataType::U16 => AnyRaster::U16(self.read()?),
            DataType::I16 => AnyRaster::I16(self.read()?),
            DataType::U32 => AnyRaster::U32(self.read()?),
            DataType::I32 => AnyRaster::I32(self.read()?),
            DataType::F32 => AnyRaster::F32(self.read()?),
            DataType::F64 => AnyRaster::F64(self.read()?),
        })
    }

    fn read_image<T: Sample>(
        &self,
        image: usize,
        bands: &[usize],
        window: Window,
    ) -> Result<Raster<T>> {
        let img = self
            .images
            .get(image)
            .ok_or_else(|| Error::invalid(format!("image {image} does not exist")))?;
        if T::DTYPE != img.dtype {
            return Err(Error::DataType {
                path: self.path.clone(),
                expected: T::DTYPE.name(),
                actual: img.dtype.name(),
            });
        }
        if !matches!(
            img.compression,
            Compression::None
                | Compression::Lzw
                | Compression::Deflate
                | Compression::PackBits
                | Compression::Zstd
                | Compression::Jpeg
                | Compression::WebP
                | Compression::Lerc
        ) {
            return Err(Error::unsupported(
                &self.path,
                format!(
                    "{} compression; readable: none, LZW, Deflate, PackBits, ZSTD, JPEG, WebP, LERC (convert with `gdal_translate -co COMPRESS=DEFLATE`)",
                    img.compression
                ),
            ));
        }
        window.check_inside(img.width, img.height)?;
        if bands.is_empty() {
            return Err(Error::invalid("no bands requested"));
        }
        if let Some(&b) = bands.iter().find(|&&b| b >= img.bands) {
            return Err(Error::invalid(format!(
                "{}: band {b} requested (0-based), the file has {} bands",
                self.path.display(),
                img.bands
            )));
        }
        // Saturating: a file may declare up to 2^64 pixels; the limit check must not overflow.
        let needed = (bands.len() as u64)
            .saturating_mul(window.width as u64)
            .saturating_mul(window.height as u64)
            .saturating_mul(img.dtype.size() as u64);
        if needed > self.limits.max_read_bytes {
            return Err(Error::Limit {
                path: self.path.clone(),
                what: format!(
                    "reading {} band(s) of a {}x{} window",
                    bands.len(),
                    window.width,
                    window.height
                ),
                needed,
                limit: self.limits.max_read_bytes,
                field: "max_read_bytes",
            });
        }
        let mut out =
            Array3::<T>::from_elem((bands.len(), window.height, window.width), T::default());
        let (bh, bw) = img.block_shape;
        // Split the output into one part per chunk position (block-row x block-column), so
        // that even a window one block-row high is decoded on every core; each part is
        // decoded on its own task into disjoint views of `out`.
        let mut parts: Vec<(usize, usize, ArrayViewMut3<T>)> = Vec::new();
        let mut rest = out.view_mut();
        let mut row = window.row_off;
        while row < window.row_end() {
            let next = ((row / bh) + 1) * bh;
            let n = next.min(window.row_end()) - row;
            let (head, tail) = rest.split_at(Axis(1), n);
            rest = tail;
            let mut rest_cols = head;
            let mut col = window.col_off;
            while col < window.col_end() {
                let next = ((col / bw) + 1) * bw;
                let m = next.min(window.col_end()) - col;
                let (left, right) = rest_cols.split_at(Axis(2), m);
                parts.push((row / bh, col / bw, left));
                rest_cols = right;
                col += m;
            }
            row += n;
        }
        let result: Result<()> = parts.into_par_iter().try_for_each_init(
            || (Vec::new(), Vec::new()),
            |(buf, raw), (brow, bcol, view)| {
                self.fill_chunk(img, brow, bcol, bands, &window, view, buf, raw)
            },
        );
        result?;
        let georef = img.georef.for_window(&window);
        Ok(Raster {
            data: out,
            georef,
            nodata: img.nodata,
            scale_offset: img.scale_offset.clone(),
        })
    }

    /// Decodes the chunk(s) at block (`brow`, `bcol`) (one per plane for band-interleaved
    /// files) and copies their intersection with `window` into `view`
    /// (`(bands, rows of this block inside the window, cols of this block inside the window)`).
    /// `buf` and `raw` are scratch buffers reused across calls on one thread.
    #[allow(clippy::too_many_arguments)]
    fn fill_chunk<T: Sample>(
        &self,
        img: &ImageInfo,
        brow: usize,
        bcol: usize,
        bands: &[usize],
        window: &Window,
        mut view: ArrayViewMut3<T>,
        buf: &mut Vec<T>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        let (bh, bw) = img.block_shape;
        let (grid_rows, grid_cols) = img.block_grid();
        let per_plane = grid_rows * grid_cols;
        let row0 = brow * bh;
        let col0 = bcol * bw;
        let rows_here = bh.min(img.height - row0);
        let spp = img.codec.chunk_spp;
        let ss = img.dtype.size();
        // Tiles are always full-size; the last strip holds only the remaining rows.
        let (chunk_rows, chunk_cols) = if img.tiled {
            (bh, bw)
        } else {
            (rows_here, img.width)
        };
        // Checked: tile sizes come from the file (up to 2^32 x 2^32); overflow reads as too big.
        let n = chunk_rows
            .checked_mul(chunk_cols)
            .and_then(|v| v.checked_mul(spp));
        let chunk_bytes = n
            .and_then(|n| n.checked_mul(ss))
            .map_or(u64::MAX, |b| b as u64);
        let n = match n {
            Some(n) if chunk_bytes <= self.limits.max_chunk_bytes => n,
            _ => {
                return Err(Error::Limit {
                    path: self.path.clone(),
                    what: format!("a {chunk_rows}x{chunk_cols}x{spp} block"),
                    needed: chunk_bytes,
                    limit: self.limits.max_chunk_bytes,
                    field: "max_chunk_bytes",
                })
            }
        };
        let win_r0 = window.row_off.max(row0);
        let win_r1 = window.row_end().min(row0 + rows_here);
        let win_c0 = window.col_off.max(col0);
        let win_c1 = window.col_end().min(col0 + bw).min(img.width);
        if win_r1 <= win_r0 || win_c1 <= win_c0 {
            return Ok(());
        }
        let row_len = chunk_cols * spp;
        // Samples of the chunk that the window needs: [first, end).
        let first = (win_r0 - row0) * row_len + (win_c0 - col0) * spp;
        let end = (win_r1 - 1 - row0) * row_len + (win_c1 - col0) * spp;
        let n_planes = match img.interleave {
            Interleave::Pixel => 1,
            Interleave::Band => img.bands,
        };
        for plane in 0..n_planes {
            if img.interleave == Interleave::Band && !bands.contains(&plane) {
                continue;
            }
            let idx = plane * per_plane + brow * grid_cols + bcol;
            // `data` holds the chunk's samples from index `base` on.
            // `resize` keeps the old contents (no memset of the reused buffer): every codec
            // below either fills the whole chunk or fails, except JPEG and WebP, whose
            // streams may be shorter than the block: those start from zeros.
            let base = if self.is_raw_span_readable(img, idx) {
                buf.resize(end - first, T::default());
                self.read_raw_span(img, idx, first * ss, bytemuck::cast_slice_mut(buf))?;
                first
            } else {
                buf.resize(n, T::default());
                if matches!(img.compression, Compression::Jpeg | Compression::WebP) {
                    buf.fill(T::default());
                }
                self.decode_one(
                    img,
                    idx,
                    raw,
                    bytemuck::cast_slice_mut(buf),
                    chunk_rows,
                    chunk_cols,
                )?;
                0
            };
            let data: &[T] = buf;
            for (ob, &band) in bands.iter().enumerate() {
                let stride_off = match img.interleave {
                    Interleave::Pixel => band,
                    Interleave::Band if band == plane => 0,
                    Interleave::Band => continue,
                };
                // Rows are taken with `axis_iter_mut`, not `slice_mut` per row: slicing costs
                // about as much as copying a 256-pixel row (8 % of a one-thread full read).
                let mut band_view = view.index_axis_mut(Axis(0), ob);
                for (r, mut dst) in (win_r0..win_r1).zip(band_view.axis_iter_mut(Axis(0))) {
                    // The row's pixels inside the window, all samples of each pixel.
                    let s0 = (r - row0) * row_len + (win_c0 - col0) * spp - base;
                    let s1 = s0 + (win_c1 - win_c0) * spp;
                    let src = data.get(s0..s1).ok_or_else(|| {
                        Error::format(&self.path, format!("chunk {idx}: short decoded data"))
                    })?;
                    match dst.as_slice_mut() {
                        Some(d) => gather(d, src, spp, stride_off),
                        None => dst
                            .iter_mut()
                            .zip(src.iter().skip(stride_off).step_by(spp))
                            .for_each(|(d, s)| *d = *s),
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether chunk `idx` is stored uncompressed, without predictor and present, so that any
    /// byte range of it can be read straight from the file.
    fn is_raw_span_readable(&self, img: &ImageInfo, idx: usize) -> bool {
        img.compression == Compression::None
            && img.predictor == 1
            && img.chunk_offsets.get(idx).is_some_and(|&o| o != 0)
            && img.chunk_bytes.get(idx).is_some_and(|&c| c != 0)
    }

    /// Reads `out.len()` bytes of uncompressed chunk `idx` starting `skip` bytes into the
    /// chunk, as native little-endian samples.
    fn read_raw_span(
        &self,
        img: &ImageInfo,
        idx: usize,
        skip: usize,
        out: &mut [u8],
    ) -> Result<()> {
        let (Some(&off), Some(&len)) = (img.chunk_offsets.get(idx), img.chunk_bytes.get(idx))
        else {
            return Err(Error::format(
                &self.path,
                format!("chunk {idx} has no offset/byte count"),
            ));
        };
        let need = (skip + out.len()) as u64;
        if len < need {
            return Err(Error::format(
                &self.path,
                format!("chunk {idx}: holds {len} bytes, {need} expected"),
            ));
        }
        if off.checked_add(need).is_none_or(|end| end > self.file_len) {
            return Err(Error::format(
                &self.path,
                format!("chunk {idx} at byte {off} (+{len}) extends past the end of the file ({} bytes)", self.file_len),
            ));
        }
        positioned::read_exact_at(&self.file, out, off + skip as u64)
            .map_err(|e| Error::io(&self.path, e))?;
        if img.big_endian && img.codec.sample_size > 1 {
            for s in out.chunks_exact_mut(img.codec.sample_size) {
                s.reverse();
            }
        }
        Ok(())
    }

    /// Reads chunk `idx` and decodes it into `out`.
    fn decode_one(
        &self,
        img: &ImageInfo,
        idx: usize,
        raw: &mut Vec<u8>,
        out: &mut [u8],
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let (Some(&off), Some(&len)) = (img.chunk_offsets.get(idx), img.chunk_bytes.get(idx))
        else {
            return Err(Error::format(
                &self.path,
                format!(
                    "chunk {idx} has no offset/byte count (the tables hold {})",
                    img.chunk_offsets.len()
                ),
            ));
        };
        if len == 0 || off == 0 {
            // Sparse file (GDAL SPARSE_OK): missing blocks read as nodata, or 0.
            let fill = T_fill(img);
            fill_bytes(out, img.dtype, fill);
            return Ok(());
        }
        if off.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(Error::format(
                &self.path,
                format!("chunk {idx} at byte {off} (+{len}) extends past the end of the file ({} bytes)", self.file_len),
            ));
        }
        if len > self.limits.max_chunk_bytes {
            return Err(Error::Limit {
                path: self.path.clone(),
                what: format!("compressed chunk {idx}"),
                needed: len,
                limit: self.limits.max_chunk_bytes,
                field: "max_chunk_bytes",
            });
        }
        if matches!(img.compression, Compression::WebP) {
            return self.decode_fallback(img, idx, out);
        }
        raw.resize(len as usize, 0);
        positioned::read_exact_at(&self.file, raw, off).map_err(|e| Error::io(&self.path, e))?;
        decode_chunk(&img.codec, raw, out, rows, cols, &self.path, idx)
    }

    /// Decodes a chunk through the `tiff` crate (codecs we do not decode ourselves).
    fn decode_fallback(&self, img: &ImageInfo, idx: usize, out: &mut [u8]) -> Result<()> {
        let mut guard = self.fallback.lock().map_err(|_| {
            Error::format(&self.path, "fallback decoder poisoned by an earlier panic")
        })?;
        if guard.is_none() {
            let f = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
            let d = Decoder::new(std::io::BufReader::new(f))
                .map_err(|e| tiff_err_with(&self.path, e, self.limits.max_tag_bytes))?;
            *guard = Some(d);
        }
        let Some(dec) = guard.as_mut() else {
            return Err(Error::format(&self.path, "fallback decoder unavailable"));
        };
        dec.seek_to_image(img.ifd_index)
            .map_err(|e| tiff_err_with(&self.path, e, self.limits.max_tag_bytes))?;
        let chunk =
            u32::try_from(idx).map_err(|_| Error::format(&self.path, "chunk index overflow"))?;
        let res = dec
            .read_chunk(chunk)
            .map_err(|e| tiff_err_with(&self.path, e, self.limits.max_tag_bytes))?;
        let bytes: &[u8] = match &res {
            tiff::decoder::DecodingResult::U8(v) => v,
            _ => {
                return Err(Error::unsupported(
                    &self.path,
                    format!("{} chunks with {} samples", img.compression, img.dtype),
                ))
            }
        };
        // The tiff crate returns the chunk's data extent; copy row by row into the full block.
        let (bh, bw) = img.block_shape;
        let spp = img.codec.chunk_spp;
        let data_cols = if img.tiled {
            bw.min(img.width - (idx % img.block_grid().1) * bw)
        } else {
            img.width
        };
        let data_rows = bytes.len() / (data_cols * spp).max(1);
        let cols = if img.tiled { bw } else { img.width };
        for r in 0..data_rows.min(bh) {
            let src = bytes.get(r * data_cols * spp..(r + 1) * data_cols * spp);
            let dst = out.get_mut(r * cols * spp..(r * cols + data_cols) * spp);
            if let (Some(s), Some(d)) = (src, dst) {
                d.copy_from_slice(s);
            }
        }
        Ok(())
    }
}

/// `dst[i] = src[i * spp + band]`: one band of a row of pixel-interleaved samples.
fn gather<T: Copy>(dst: &mut [T], src: &[T], spp: usize, band: usize) {
    /// The same with the pixel size known at compile time (vectorisable, no bounds checks).
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T], band: usize) {
        if band < N {
            for (d, px) in dst.iter_mut().zip(src.chunks_exact(N)) {
                *d = px[band];
            }
        }
    }
    match spp {
        1 => dst.iter_mut().zip(src).for_each(|(d, s)| *d = *s),
        2 => fixed::<T, 2>(dst, src, band),
        3 => fixed::<T, 3>(dst, src, band),
        4 => fixed::<T, 4>(dst, src, band),
        _ => dst
            .iter_mut()
            .zip(src.iter().skip(band).step_by(spp))
            .for_each(|(d, s)| *d = *s),
    }
}

#[allow(non_snake_case)]
fn T_fill(img: &ImageInfo) -> f64 {
    img.nodata.unwrap_or(0.0)
}

fn fill_bytes(out: &mut [u8], dtype: DataType, v: f64) {
    macro_rules! f {
        ($t:ty) => {{
            let val = <$t as Sample>::from_f64(v);
            for c in out.chunks_exact_mut(std::mem::size_of::<$t>()) {
                c.copy_from_slice(bytemuck::bytes_of(&val));
            }
        }};
    }
    match dtype {
        DataType::U8 => f!(u8),
        DataType::I8 => f!(i8),
        DataType::U16 => f!(u16),
        DataType::I16 => f!(i16),
        DataType::U32 => f!(u32),
        DataType::I32 => f!(i32),
        DataType::F32 => f!(f32),
        DataType::F64 => f!(f64),
    }
}

fn all_bands(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// A raster of whichever sample type the file holds.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum AnyRaster {
    U8(Raster<u8>),
    I8(Raster<i8>),
    U16(Raster<u16>),
    I16(Raster<i16>),
    U32(Raster<u32>),
    I32(Raster<i32>),
    F32(Raster<f32>),
    F64(Raster<f64>),
}

impl AnyRaster {
    /// SHA-256 of the samples (little-endian, band-major, row-major).
    pub fn sha256(&self) -> [u8; 32] {
        match self {
            AnyRaster::U8(r) => r.sha256(),
            AnyRaster::I8(r) => r.sha256(),
            AnyRaster::U16(r) => r.sha256(),
            AnyRaster::I16(r) => r.sha256(),
            AnyRaster::U32(r) => r.sha256(),
            AnyRaster::I32(r) => r.sha256(),
            AnyRaster::F32(r) => r.sha256(),
            AnyRaster::F64(r) => r.sha256(),
        }
    }

    /// The samples converted to f64.
    pub fn to_f64(&self) -> Array3<f64> {
        match self {
            AnyRaster::U8(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::I8(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::U16(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::I16(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::U32(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::I32(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::F32(r) => r.data.mapv(Sample::to_f64),
            AnyRaster::F64(r) => r.data.clone(),
        }
    }
}

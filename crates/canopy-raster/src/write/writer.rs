//! [`GeoTiffWriter`]: the streaming writer behind [`super::write_geotiff`].

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{s, Array3, ArrayView3};
use rayon::prelude::*;

use super::encode::{encode_block, Chunk, Codec};
use super::ifd::{self, Value};
use super::{format_nodata, BigTiff, Interleave, Layout, Predictor, WriteOptions};
use crate::compression::tag;
use crate::geo::GeoTags;
use crate::geokeys::{TAG_GEO_ASCII_PARAMS, TAG_GEO_DOUBLE_PARAMS, TAG_GEO_KEY_DIRECTORY};
use crate::{gdal_metadata, Compression, Error, Georef, Result, Sample, ScaleOffset};

/// Bytes reserved at the start of the file for the header (BigTIFF's is 16).
const HEADER_RESERVE: u64 = 16;

/// [`GeoTiffWriter::write_all`] asks the kernel to write dirty pages back every this many bytes
/// (on a thread of its own, while the next blocks compress and are written), so that the
/// final fsync of the atomic write has at most about this much left to flush.
const SYNC_EVERY: u64 = 16 << 20;

/// Distinguishes temporary files of several writers in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A GeoTIFF writer that streams blocks to disk: memory stays bounded by one row of blocks
/// (a few rows of strips) however large the image.
///
/// Feed it either rows in order ([`write_rows`](Self::write_rows)) or blocks in any order
/// ([`write_block`](Self::write_block)), then call [`finish`](Self::finish), which writes the
/// IFD and moves the file into place atomically. Dropping the writer without `finish` removes
/// the temporary file and leaves nothing under the destination name.
///
/// # Shapes
/// Samples are `(bands, rows, cols)` as everywhere in canopy.
///
/// # Example
/// ```
/// use canopy_raster::{GeoTransform, Georef};
/// use canopy_raster::write::{GeoTiffWriter, WriteOptions};
/// # fn main() -> canopy_raster::Result<()> {
/// let path = std::env::temp_dir().join("canopy_writer_doc.tif");
/// let georef = Georef::new(GeoTransform::north_up(0.0, 100.0, 1.0, 1.0), Some(4326));
/// let mut w = GeoTiffWriter::<f32>::create(&path, 100, 100, 2, &georef, Some(f64::NAN), &WriteOptions::default())?;
/// for _ in 0..10 {
///     w.write_rows(ndarray::Array3::<f32>::zeros((2, 10, 100)).view())?;
/// }
/// w.finish()?;
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct GeoTiffWriter<T: Sample> {
    path: PathBuf,
    tmp_path: PathBuf,
    file: Option<BufWriter<File>>,
    pos: u64,
    width: usize,
    height: usize,
    bands: usize,
    tiled: bool,
    block_h: usize,
    block_w: usize,
    blocks_across: usize,
    blocks_down: usize,
    codec: Codec,
    bigtiff: BigTiff,
    geo_tags: GeoTags,
    nodata: Option<f64>,
    scale_offset: Vec<ScaleOffset>,
    /// File offset and byte count of every chunk (TIFF chunk order).
    offsets: Vec<u64>,
    counts: Vec<u64>,
    /// Per block (row-major): written or queued.
    written: Vec<bool>,
    /// Rows buffered by `write_rows`: `(bands, capacity, width)`, allocated on first use.
    row_buf: Option<Array3<T>>,
    /// Rows that fill the buffer before it is flushed (whole block rows).
    buf_capacity: usize,
    /// Image row of the buffer's first row.
    buf_row0: usize,
    /// Rows currently in the buffer.
    buffered: usize,
    /// Blocks passed to `write_block`, compressed in parallel batches.
    pending: Vec<(usize, usize, Array3<T>)>,
    batch: usize,
    finished: bool,
    _sample: PhantomData<T>,
}

impl<T: Sample> GeoTiffWriter<T> {
    /// Starts writing a `width x height` raster of `bands` bands to `path`.
    ///
    /// The data goes to a temporary file next to `path` until [`finish`](Self::finish).
    ///
    /// # Errors
    /// Invalid options (see [`WriteOptions::validate`]), zero or too large dimensions
    /// (width and height must fit in 32 bits, bands in 16), a path without a file name, and
    /// I/O errors creating the temporary file.
    pub fn create(
        path: impl AsRef<Path>,
        width: usize,
        height: usize,
        bands: usize,
        georef: &Georef,
        nodata: Option<f64>,
        opts: &WriteOptions,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        opts.validate::<T>(&path)?;
        if width == 0 || height == 0 || bands == 0 {
            return Err(Error::Shape {
                context: format!("GeoTIFF writer for {}", path.display()),
                expected: "at least one band, row and column".into(),
                actual: format!("({bands}, {height}, {width})"),
            });
        }
        if u32::try_from(width).is_err()
            || u32::try_from(height).is_err()
            || u16::try_from(bands).is_err()
        {
            return Err(Error::invalid(format!(
                "{}: a TIFF holds at most 2^32-1 rows and columns and 65535 bands, got ({bands}, {height}, {width})",
                path.display()
            )));
        }
        let (tiled, block_h, block_w) = match opts.layout {
            Layout::Tiled {
                width: tw,
                height: th,
            } => (true, th, tw),
            Layout::Striped { rows_per_strip } => (false, rows_per_strip.min(height), width),
        };
        let blocks_across = width.div_ceil(block_w);
        let blocks_down = height.div_ceil(block_h);
        let n_blocks = blocks_across * blocks_down;
        let n_chunks = match opts.interleave {
            Interleave::Pixel => n_blocks,
            Interleave::Band => n_blocks * bands,
        };
        let threads = rayon::current_num_threads().max(1);
        // Whole block rows; strips are grouped so that several compress in parallel.
        let buf_capacity = if tiled {
            block_h
        } else {
            block_h * (2 * threads).max(1)
        }
        .min(height.div_ceil(block_h) * block_h);

        let file_name = path.file_name().ok_or_else(|| {
            Error::invalid(format!(
                "{}: the destination has no file name",
                path.display()
            ))
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp_path = dir.join(format!(
            ".{}.{}.{}.tmp",
            file_name.to_string_lossy(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, f);
        file.write_all(&[0u8; HEADER_RESERVE as usize])
            .map_err(|e| Error::io(&tmp_path, e))?;

        Ok(GeoTiffWriter {
            path,
            tmp_path,
            file: Some(file),
            pos: HEADER_RESERVE,
            width,
            height,
            bands,
            tiled,
            block_h,
            block_w,
            blocks_across,
            blocks_down,
            codec: Codec {
                compression: opts.compression,
                level: opts.deflate_level,
                predictor: opts.predictor,
                interleave: opts.interleave,
            },
            bigtiff: opts.bigtiff,
            geo_tags: georef.to_tags(),
            nodata,
            scale_offset: Vec::new(),
            offsets: vec![0; n_chunks],
            counts: vec![0; n_chunks],
            written: vec![false; n_blocks],
            row_buf: None,
            buf_capacity,
            buf_row0: 0,
            buffered: 0,
            pending: Vec::new(),
            batch: 4 * threads,
            finished: false,
            _sample: PhantomData,
        })
    }

    /// Sets per-band scale/offset, written to the `GDAL_METADATA` tag.
    ///
    /// # Errors
    /// [`Error::Shape`] when `so` does not have one entry per band.
    pub fn with_scale_offset(mut self, so: &[ScaleOffset]) -> Result<Self> {
        if so.len() != self.bands {
            return Err(Error::Shape {
                context: format!("scale/offset for {}", self.path.display()),
                expected: format!("{} entries (one per band)", self.bands),
                actual: format!("{} entries", so.len()),
            });
        }
        self.scale_offset = so.to_vec();
        Ok(self)
    }

    /// `(block height, block width)`: the tile size, or `(rows per strip, width)` for strips.
    pub fn block_shape(&self) -> (usize, usize) {
        (self.block_h, self.block_w)
    }

    /// `(block rows, block columns)`: how many blocks cover the image vertically and
    /// horizontally (`block_col` is always 0 for strips).
    pub fn block_grid(&self) -> (usize, usize) {
        (self.blocks_down, self.blocks_across)
    }

    /// The valid extent `(height, width)` of block (`block_row`, `block_col`): the block
    /// shape, clipped at the right and bottom edges of the image.
    pub fn block_extent(&self, block_row: usize, block_col: usize) -> (usize, usize) {
        let r0 = block_row * self.block_h;
        let c0 = block_col * self.block_w;
        (
            self.block_h.min(self.height.saturating_sub(r0)),
            self.block_w.min(self.width.saturating_sub(c0)),
        )
    }

    /// Appends the next `n` rows, `data` of shape `(bands, n, width)`; `n` may be anything
    /// from 0 to the rows left. Rows are buffered until whole block rows are complete, which
    /// are then compressed in parallel and written.
    ///
    /// # Errors
    /// [`Error::Shape`] when bands or width differ from the writer's, or the rows run past
    /// the image height; [`Error::InvalidArgument`] when a block of these rows was already
    /// written with [`write_block`](Self::write_block); I/O errors.
    pub fn write_rows(&mut self, data: ArrayView3<T>) -> Result<()> {
        let (bands, n, width) = data.dim();
        let next_row = self.buf_row0 + self.buffered;
        if bands != self.bands || width != self.width || next_row + n > self.height {
            return Err(Error::Shape {
                context: format!(
                    "write_rows to {} (rows {next_row}..{} of {} are next)",
                    self.path.display(),
                    next_row + n,
                    self.height
                ),
                expected: format!(
                    "({}, 1..={}, {})",
                    self.bands,
                    self.height - next_row,
                    self.width
                ),
                actual: format!("({bands}, {n}, {width})"),
            });
        }
        let mut done = 0;
        while done < n {
            let mut buf = match self.row_buf.take() {
                Some(b) => b,
                None => Array3::<T>::default((self.bands, self.buf_capacity, self.width)),
            };
            let k = (n - done).min(self.buf_capacity - self.buffered);
            buf.slice_mut(s![.., self.buffered..self.buffered + k, ..])
                .assign(&data.slice(s![.., done..done + k, ..]));
            self.buffered += k;
            done += k;
            let full =
                self.buffered == self.buf_capacity || self.buf_row0 + self.buffered == self.height;
            let result = if full { self.flush_rows(&buf) } else { Ok(()) };
            self.row_buf = Some(buf);
            result?;
        }
        Ok(())
    }

    /// Compresses and writes the block rows held in `buf`.
    fn flush_rows(&mut self, buf: &Array3<T>) -> Result<()> {
        let br0 = self.buf_row0 / self.block_h;
        let br1 = (self.buf_row0 + self.buffered).div_ceil(self.block_h);
        let mut jobs = Vec::with_capacity((br1 - br0) * self.blocks_across);
        for br in br0..br1 {
            for bc in 0..self.blocks_across {
                let idx = br * self.blocks_across + bc;
                if self.written.get(idx).copied().unwrap_or(true) {
                    return Err(Error::invalid(format!(
                        "{}: block (row {br}, col {bc}) was already written with write_block; write each block once, either as rows or as a block",
                        self.path.display()
                    )));
                }
                let (h, w) = self.block_extent(br, bc);
                let r = br * self.block_h - self.buf_row0;
                let c = bc * self.block_w;
                jobs.push((br, bc, buf.slice(s![.., r..r + h, c..c + w])));
            }
        }
        self.encode_and_write(jobs)?;
        self.buf_row0 += self.buffered;
        self.buffered = 0;
        Ok(())
    }

    /// Writes one block, in any order; `data` is the block's valid extent
    /// ([`block_extent`](Self::block_extent)): `(bands, h, w)`, smaller than the block shape at
    /// the right and bottom edges. Blocks are queued and compressed in parallel batches.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a block index outside the grid or a block written
    /// twice; [`Error::Shape`] when `data` is not the block's extent; I/O errors.
    pub fn write_block(
        &mut self,
        block_row: usize,
        block_col: usize,
        data: ArrayView3<T>,
    ) -> Result<()> {
        if block_row >= self.blocks_down || block_col >= self.blocks_across {
            return Err(Error::invalid(format!(
                "{}: block (row {block_row}, col {block_col}) is outside the {}x{} block grid (rows x cols)",
                self.path.display(),
                self.blocks_down,
                self.blocks_across
            )));
        }
        let (h, w) = self.block_extent(block_row, block_col);
        if data.dim() != (self.bands, h, w) {
            return Err(Error::Shape {
                context: format!(
                    "write_block (row {block_row}, col {block_col}) to {}",
                    self.path.display()
                ),
                expected: format!("({}, {h}, {w})", self.bands),
                actual: format!("{:?}", data.shape()),
            });
        }
        let idx = block_row * self.blocks_across + block_col;
        let first_buffered_row = self.buf_row0 / self.block_h;
        let in_rows = self.buffered > 0
            && block_row >= first_buffered_row
            && block_row * self.block_h < self.buf_row0 + self.buffered;
        if self.written.get(idx).copied().unwrap_or(true) || in_rows {
            return Err(Error::invalid(format!(
                "{}: block (row {block_row}, col {block_col}) was already written; write each block once",
                self.path.display()
            )));
        }
        if let Some(flag) = self.written.get_mut(idx) {
            *flag = true;
        }
        self.pending.push((block_row, block_col, data.to_owned()));
        if self.pending.len() >= self.batch {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let jobs = pending
            .iter()
            .map(|(br, bc, a)| (*br, *bc, a.view()))
            .collect();
        self.encode_and_write(jobs)
    }

    /// Writes a whole image `(bands, height, width)` in batches of blocks (used by
    /// [`super::write_geotiff`]); no copy of the samples is made.
    pub(crate) fn write_all(&mut self, data: ArrayView3<T>) -> Result<()> {
        if data.dim() != (self.bands, self.height, self.width) {
            return Err(Error::Shape {
                context: format!("writing {}", self.path.display()),
                expected: format!("({}, {}, {})", self.bands, self.height, self.width),
                actual: format!("{:?}", data.shape()),
            });
        }
        let all: Vec<(usize, usize)> = (0..self.blocks_down)
            .flat_map(|br| (0..self.blocks_across).map(move |bc| (br, bc)))
            .collect();
        let codec = self.codec;
        let (tiled, bh, bw) = (self.tiled, self.block_h, self.block_w);
        let (height, width, blocks_across) = (self.height, self.width, self.blocks_across);
        let n_blocks = self.written.len();
        let path = &self.path;
        let tmp_path = &self.tmp_path;
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| Error::invalid(format!("{}: writer already closed", path.display())))?;
        let (offsets, counts, written, pos) = (
            &mut self.offsets,
            &mut self.counts,
            &mut self.written,
            &mut self.pos,
        );
        // Every rayon thread takes the next few blocks from a shared counter, encodes them and
        // hands them to the sink (a scoped thread), which writes the blocks in file order
        // (holding the few that arrive early). Every SYNC_EVERY bytes it wakes a third thread
        // that asks the kernel to write the file back (`fdatasync` on a second handle), so the
        // final fsync in `finish` has little left to do and the sink never waits for the disk.
        // Unlike batches encoded by a parallel map, no thread waits for the slowest block of a
        // batch. Blocks held early are those encoded while an earlier claim was still being
        // encoded (a few claims, unless a thread is descheduled for long), and never more
        // than the compressed raster, which is in memory in full anyway.
        let raw = codec.compression == Compression::None && codec.predictor == Predictor::None;
        // Blocks per claim: about 256 KiB of samples to compress, 1 MiB to copy (one message
        // per 32 KiB strip cost more in wake-ups than the copies).
        let block_bytes = (bh * bw * self.bands * T::DTYPE.size()).max(1);
        let claim = (if raw { 1 << 20 } else { 256 << 10 } / block_bytes).max(1);
        type Encoded<T> = Vec<(usize, std::result::Result<Vec<Chunk<T>>, String>)>;
        std::thread::scope(|scope| -> Result<()> {
            let threads = rayon::current_num_threads().max(1);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Encoded<T>>(4 * threads);
            let all = &all;
            let io = |e| Error::io(tmp_path, e);
            let handle = file.get_ref().try_clone().map_err(io)?;
            let (sync_tx, sync_rx) = std::sync::mpsc::sync_channel::<()>(1);
            let syncer = scope.spawn(move || -> Result<()> {
                for () in sync_rx {
                    handle.sync_data().map_err(io)?;
                }
                Ok(())
            });
            let sink = scope.spawn(move || -> Result<()> {
                let mut unsynced = 0u64;
                let mut early = std::collections::BTreeMap::new();
                let mut next = 0;
                for encoded in rx {
                    early.extend(encoded);
                    while let Some(chunks) = early.remove(&next) {
                        let (br, bc) = all[next];
                        next += 1;
                        let chunks = chunks.map_err(|m| {
                            Error::io(
                                path,
                                std::io::Error::other(format!("block (row {br}, col {bc}): {m}")),
                            )
                        })?;
                        let block = br * blocks_across + bc;
                        for (plane, chunk) in chunks.iter().enumerate() {
                            let chunk = chunk.as_bytes();
                            let idx = plane * n_blocks + block;
                            file.write_all(chunk).map_err(io)?;
                            if let (Some(o), Some(c)) = (offsets.get_mut(idx), counts.get_mut(idx))
                            {
                                *o = *pos;
                                *c = chunk.len() as u64;
                            }
                            *pos += chunk.len() as u64;
                            unsynced += chunk.len() as u64;
                        }
                        if let Some(flag) = written.get_mut(block) {
                            *flag = true;
                        }
                        if unsynced >= SYNC_EVERY {
                            file.flush().map_err(io)?;
                            // A sync still running covers most of these bytes: skip, not wait.
                            let _ = sync_tx.try_send(());
                            unsynced = 0;
                        }
                    }
                }
                Ok(())
            });
            let encode = |i: usize| {
                let (br, bc) = all[i];
                let (r, c) = (br * bh, bc * bw);
                let (h, w) = (bh.min(height - r), bw.min(width - c));
                let view = data.slice(s![.., r..r + h, c..c + w]);
                // Tiles are stored full size; the last strip holds only its rows.
                let (sh, sw) = if tiled { (bh, bw) } else { (h, bw) };
                (i, encode_block(view, sh, sw, &codec))
            };
            let encode_claim = |first: usize| -> Encoded<T> {
                (first..(first + claim).min(all.len()))
                    .map(encode)
                    .collect()
            };
            if raw {
                // Uncompressed blocks are a copy: this thread makes them while the sink
                // writes; handing such small jobs to rayon cost more in wake-ups than the
                // copies (a 134 MB striped write: 0.7 s of futex and sched_yield under load).
                for first in (0..all.len()).step_by(claim) {
                    if tx.send(encode_claim(first)).is_err() {
                        break; // the sink stopped on an error, returned by join below
                    }
                }
            } else {
                let counter = std::sync::atomic::AtomicUsize::new(0);
                rayon::broadcast(|_| loop {
                    let first = counter.fetch_add(claim, Ordering::Relaxed);
                    if first >= all.len() || tx.send(encode_claim(first)).is_err() {
                        break;
                    }
                });
            }
            drop(tx);
            let panicked = |what: &str| {
                Error::io(
                    path,
                    std::io::Error::other(format!("the {what} thread panicked")),
                )
            };
            // The sink's result first: its error is the cause when the syncer also failed.
            let written = sink.join().map_err(|_| panicked("file writer"));
            let synced = syncer.join().map_err(|_| panicked("write-back"));
            written??;
            synced?
        })
    }

    /// Compresses blocks in parallel, then appends them to the file in the given order.
    fn encode_and_write(&mut self, jobs: Vec<(usize, usize, ArrayView3<'_, T>)>) -> Result<()> {
        let codec = self.codec;
        let (tiled, bh, bw) = (self.tiled, self.block_h, self.block_w);
        let encoded: Vec<_> = jobs
            .par_iter()
            .map(|(_, _, view)| {
                let (_, h, _) = view.dim();
                // Tiles are stored full size; the last strip holds only its rows.
                let (sh, sw) = if tiled { (bh, bw) } else { (h, bw) };
                encode_block(view.view(), sh, sw, &codec)
            })
            .collect();
        let n_blocks = self.written.len();
        for ((br, bc, _), chunks) in jobs.iter().zip(encoded) {
            let chunks = chunks.map_err(|m| {
                Error::io(
                    &self.path,
                    std::io::Error::other(format!("block (row {br}, col {bc}): {m}")),
                )
            })?;
            let block = br * self.blocks_across + bc;
            for (plane, chunk) in chunks.iter().enumerate() {
                let chunk = chunk.as_bytes();
                let idx = plane * n_blocks + block;
                let file = self.file.as_mut().ok_or_else(|| {
                    Error::invalid(format!("{}: writer already closed", self.path.display()))
                })?;
                file.write_all(chunk)
                    .map_err(|e| Error::io(&self.tmp_path, e))?;
                if let (Some(o), Some(c)) = (self.offsets.get_mut(idx), self.counts.get_mut(idx)) {
                    *o = self.pos;
                    *c = chunk.len() as u64;
                }
                self.pos += chunk.len() as u64;
            }
            if let Some(flag) = self.written.get_mut(block) {
                *flag = true;
            }
        }
        Ok(())
    }

    /// The IFD entries, sorted by tag.
    fn entries(&self) -> Vec<(u16, Value)> {
        let dt = T::DTYPE;
        let rgb = self.bands == 3 && dt == crate::DataType::U8;
        let mut e: Vec<(u16, Value)> = vec![
            (256, Value::Long(vec![self.width as u32])),
            (257, Value::Long(vec![self.height as u32])),
            (258, Value::Short(vec![dt.bits(); self.bands])),
            (259, Value::Short(vec![self.codec.compression.code()])),
            (262, Value::Short(vec![if rgb { 2 } else { 1 }])),
            (277, Value::Short(vec![self.bands as u16])),
            (
                284,
                Value::Short(vec![match self.codec.interleave {
                    Interleave::Pixel => 1,
                    Interleave::Band => 2,
                }]),
            ),
            (339, Value::Short(vec![dt.sample_format(); self.bands])),
        ];
        if self.tiled {
            e.push((322, Value::Long(vec![self.block_w as u32])));
            e.push((323, Value::Long(vec![self.block_h as u32])));
            e.push((324, Value::Offsets(self.offsets.clone())));
            e.push((325, Value::Offsets(self.counts.clone())));
        } else {
            e.push((273, Value::Offsets(self.offsets.clone())));
            e.push((278, Value::Long(vec![self.block_h as u32])));
            e.push((279, Value::Offsets(self.counts.clone())));
        }
        if self.codec.predictor != super::Predictor::None {
            e.push((317, Value::Short(vec![self.codec.predictor.code()])));
        }
        let extra = self.bands - if rgb { 3 } else { 1 };
        if extra > 0 {
            e.push((338, Value::Short(vec![0; extra])));
        }
        let g = &self.geo_tags;
        if let Some(v) = &g.pixel_scale {
            e.push((tag::MODEL_PIXEL_SCALE, Value::Double(v.clone())));
        }
        if let Some(v) = &g.tiepoints {
            e.push((tag::MODEL_TIEPOINT, Value::Double(v.clone())));
        }
        if let Some(v) = &g.transformation {
            e.push((tag::MODEL_TRANSFORMATION, Value::Double(v.clone())));
        }
        if let Some(dir) = &g.geokeys {
            let t = dir.to_tags();
            e.push((TAG_GEO_KEY_DIRECTORY, Value::Short(t.directory)));
            if !t.doubles.is_empty() {
                e.push((TAG_GEO_DOUBLE_PARAMS, Value::Double(t.doubles)));
            }
            if !t.ascii.is_empty() {
                e.push((TAG_GEO_ASCII_PARAMS, Value::Ascii(t.ascii)));
            }
        }
        if let Some(xml) = gdal_metadata::format_scale_offset(&self.scale_offset) {
            e.push((tag::GDAL_METADATA, Value::Ascii(xml)));
        }
        if let Some(nd) = self.nodata {
            e.push((tag::GDAL_NODATA, Value::Ascii(format_nodata(nd))));
        }
        e.sort_by_key(|(t, _)| *t);
        e
    }

    /// Lists blocks never written, `None` when all are.
    fn missing_blocks(&self) -> Option<String> {
        let missing: Vec<usize> = self
            .written
            .iter()
            .enumerate()
            .filter(|(_, w)| !**w)
            .map(|(i, _)| i)
            .collect();
        if missing.is_empty() {
            return None;
        }
        let list: Vec<String> = missing
            .iter()
            .take(8)
            .map(|i| {
                format!(
                    "(row {}, col {})",
                    i / self.blocks_across,
                    i % self.blocks_across
                )
            })
            .collect();
        Some(format!(
            "{} of {} blocks were never written: {}{}; {} of {} rows came through write_rows",
            missing.len(),
            self.written.len(),
            list.join(", "),
            if missing.len() > 8 { ", ..." } else { "" },
            self.buf_row0 + self.buffered,
            self.height
        ))
    }

    /// Writes the IFD and header, flushes and fsyncs the temporary file and renames it to the
    /// destination.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the missing blocks when some were never written, or
    /// when [`BigTiff::Never`] was asked for a file beyond 4 GiB; I/O errors. On error the
    /// temporary file is removed and the destination is left untouched.
    pub fn finish(mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.flush_pending()?;
        }
        if let Some(m) = self.missing_blocks() {
            return Err(Error::invalid(format!(
                "{}: cannot finish: {m}",
                self.path.display()
            )));
        }
        let entries = self.entries();
        let ifd_at = self.pos + (self.pos % 2);
        let classic = match self.bigtiff {
            BigTiff::Always => None,
            _ => ifd::serialize(&entries, ifd_at, false),
        };
        let (ifd_bytes, big) = match (classic, self.bigtiff) {
            (Some(b), _) => (b, false),
            (None, BigTiff::Never) => {
                return Err(Error::invalid(format!(
                    "{}: the file needs more than the 4 GiB classic TIFF can address ({} bytes of data); use BigTiff::Auto or BigTiff::Always",
                    self.path.display(),
                    self.pos
                )))
            }
            (None, _) => {
                let b = ifd::serialize(&entries, ifd_at, true).ok_or_else(|| {
                    Error::format(&self.path, "the IFD cannot be serialised as BigTIFF")
                })?;
                (b, true)
            }
        };
        let header = ifd::header(ifd_at, big).ok_or_else(|| {
            Error::invalid(format!("{}: IFD offset out of range", self.path.display()))
        })?;
        let tmp = self.tmp_path.clone();
        let io = |e| Error::io(&tmp, e);
        let mut file = self.file.take().ok_or_else(|| {
            Error::invalid(format!("{}: writer already closed", self.path.display()))
        })?;
        if ifd_at > self.pos {
            file.write_all(&[0]).map_err(io)?;
        }
        file.write_all(&ifd_bytes).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        let f = file.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&self.tmp_path, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.finished = true;
        // Make the rename durable; not every platform can open a directory, so best effort.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl<T: Sample> Drop for GeoTiffWriter<T> {
    fn drop(&mut self) {
        if !self.finished {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

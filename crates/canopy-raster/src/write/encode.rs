//! Encoding one block (a tile or a strip): zero padding to the stored block size,
//! little-endian bytes, the TIFF predictor, and compression.

use std::cell::RefCell;

use libdeflater::{CompressionLvl, Compressor};
use ndarray::{ArrayView2, ArrayView3, Axis};

use super::{Interleave, Predictor};
use crate::{Compression, Sample};

/// How every block of a file is encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    pub compression: Compression,
    pub level: u32,
    pub predictor: Predictor,
    pub interleave: Interleave,
}

thread_local! {
    /// One libdeflate compressor per thread (creating one allocates its match finder).
    static DEFLATER: RefCell<Option<(u32, Compressor)>> = const { RefCell::new(None) };
    /// Per-thread buffer of gathered samples, reused from block to block (as `u64` words, so
    /// that any sample type can be viewed in it aligned). A fresh half-megabyte buffer per
    /// tile cost a zero-fill and its page faults each time.
    static SAMPLES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// Per-thread buffer the compressor writes into, reused likewise.
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One encoded chunk, ready to be appended to the file.
#[derive(Debug)]
pub(crate) enum Chunk<T: Sample> {
    /// Compressed (or, on big-endian hosts, converted) bytes.
    Bytes(Vec<u8>),
    /// Uncompressed samples without a predictor, already little-endian (little-endian hosts):
    /// written as they are, without another copy.
    Samples(Vec<T>),
}

impl<T: Sample> Chunk<T> {
    /// The bytes to write.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Chunk::Bytes(b) => b,
            Chunk::Samples(s) => bytemuck::cast_slice(s),
        }
    }
}

/// Encodes a block whose valid extent is `data` `(bands, h, w)` into the stored block size
/// `stored_h x stored_w` (`>= h x w`, padded with zeros). Returns one chunk for pixel
/// interleave, one chunk per band for band interleave.
///
/// The samples are gathered row by row into a buffer of the stored size whose padding is
/// zero; on little-endian hosts that buffer's bytes are the little-endian bytes the file
/// needs, with no per-sample conversion. Blocks that are compressed or predicted are gathered
/// into a per-thread buffer reused from block to block; plain copies get a buffer of their
/// own, which is written to the file as it is.
pub(crate) fn encode_block<T: Sample>(
    data: ArrayView3<T>,
    stored_h: usize,
    stored_w: usize,
    codec: &Codec,
) -> Result<Vec<Chunk<T>>, String> {
    let (bands, h, w) = data.dim();
    if h > stored_h || w > stored_w {
        return Err(format!(
            "block extent {h}x{w} exceeds the stored block size {stored_h}x{stored_w}"
        ));
    }
    let copy_only = codec.compression == Compression::None
        && codec.predictor == Predictor::None
        && cfg!(target_endian = "little");
    let partial = h < stored_h || w < stored_w;
    let n = T::DTYPE.size();
    match codec.interleave {
        Interleave::Pixel => {
            let (row_samples, len) = (stored_w * bands, stored_w * bands * stored_h);
            if copy_only {
                let mut buf = vec![T::default(); len];
                gather_pixels(data, &mut buf, row_samples)?;
                return Ok(vec![Chunk::Samples(buf)]);
            }
            with_scratch::<T, _>(len, partial, |buf| {
                gather_pixels(data, buf, row_samples)?;
                Ok(vec![finish_chunk(buf, row_samples * n, bands, n, codec)?])
            })
        }
        Interleave::Band => {
            let len = stored_w * stored_h;
            let mut chunks = Vec::with_capacity(bands);
            for band in data.axis_iter(Axis(0)) {
                if copy_only {
                    let mut buf = vec![T::default(); len];
                    gather_band(band, &mut buf, stored_w);
                    chunks.push(Chunk::Samples(buf));
                } else {
                    chunks.push(with_scratch::<T, _>(len, partial, |buf| {
                        gather_band(band, buf, stored_w);
                        finish_chunk(buf, stored_w * n, 1, n, codec)
                    })?);
                }
            }
            Ok(chunks)
        }
    }
}

/// Runs `f` on this thread's sample buffer viewed as `len` values of `T`; the buffer is
/// zeroed first when `zero` (a block with padding), otherwise it holds the previous block's
/// samples, all of which `f` overwrites.
fn with_scratch<T: Sample, R>(
    len: usize,
    zero: bool,
    f: impl FnOnce(&mut [T]) -> Result<R, String>,
) -> Result<R, String> {
    SAMPLES.with(|cell| {
        let mut scratch = cell.borrow_mut();
        let words = (len * std::mem::size_of::<T>()).div_ceil(8);
        if scratch.len() < words {
            scratch.resize(words, 0);
        }
        // `u64` is 8-aligned and every sample type is at most 8 bytes, so the cast holds.
        let typed: &mut [T] = bytemuck::try_cast_slice_mut(&mut scratch[..words])
            .map_err(|e| format!("sample buffer cast failed: {e}"))?;
        let buf = &mut typed[..len];
        if zero {
            buf.fill(T::default());
        }
        f(buf)
    })
}

/// Gathers a block's bands into pixel-interleaved rows of `row_samples` samples (the stored
/// block width times the band count); samples outside `data` are left as they are.
fn gather_pixels<T: Sample>(
    data: ArrayView3<T>,
    buf: &mut [T],
    row_samples: usize,
) -> Result<(), String> {
    let (bands, h, w) = data.dim();
    // Rows come from one row iterator per band: a `slice` per row and band cost about as much
    // as the copy of a 256-pixel row.
    let planes: Vec<_> = data.outer_iter().collect();
    let mut band_rows: Vec<_> = planes.iter().map(|p| p.rows().into_iter()).collect();
    let mut rows = Vec::with_capacity(bands);
    for dst in buf.chunks_exact_mut(row_samples).take(h) {
        rows.clear();
        for (b, it) in band_rows.iter_mut().enumerate() {
            let Some(src) = it.next() else {
                return Err(format!("band {b} holds fewer than {h} rows"));
            };
            rows.push(src);
        }
        let dst = &mut dst[..w * bands];
        let slices: Option<Vec<&[T]>> = rows.iter().map(|r| r.as_slice()).collect();
        match slices {
            Some(src) => interleave(dst, &src),
            None => {
                for (b, src) in rows.iter().enumerate() {
                    scatter_band(dst, src.iter(), b, bands);
                }
            }
        }
    }
    Ok(())
}

/// Copies one band into rows of `stored_w` samples; samples outside `band` are left as they are.
fn gather_band<T: Sample>(band: ArrayView2<T>, buf: &mut [T], stored_w: usize) {
    let w = band.ncols();
    for (dst, src) in buf.chunks_exact_mut(stored_w).zip(band.rows()) {
        let dst = dst.iter_mut().take(w);
        match src.as_slice() {
            Some(src) => dst.zip(src).for_each(|(d, s)| *d = *s),
            None => dst.zip(src.iter()).for_each(|(d, s)| *d = *s),
        }
    }
}

/// `dst[i * bands + b] = src[b][i]` for every band `b` at once: one pass over the output row.
fn interleave<T: Copy>(dst: &mut [T], src: &[&[T]]) {
    /// The same with the band count known at compile time: no bounds checks in the loop, and
    /// each output pixel is written whole.
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[&[T]]) {
        let w = dst.len() / N;
        let src: [&[T]; N] = std::array::from_fn(|b| &src[b][..w]);
        for (i, px) in dst.chunks_exact_mut(N).enumerate() {
            for (d, s) in px.iter_mut().zip(src) {
                *d = s[i];
            }
        }
    }
    match src.len() {
        1 => dst.copy_from_slice(&src[0][..dst.len()]),
        2 => fixed::<T, 2>(dst, src),
        3 => fixed::<T, 3>(dst, src),
        4 => fixed::<T, 4>(dst, src),
        bands => {
            for (b, s) in src.iter().enumerate() {
                scatter_band(dst, s.iter(), b, bands);
            }
        }
    }
}

/// `dst[i * bands + b] = src[i]`: one band into pixel-interleaved samples.
fn scatter_band<'a, T: Copy + 'a>(
    dst: &mut [T],
    src: impl Iterator<Item = &'a T>,
    b: usize,
    bands: usize,
) {
    for (d, s) in dst.iter_mut().skip(b).step_by(bands).zip(src) {
        *d = *s;
    }
}

/// Little-endian bytes of `samples`, the predictor applied row by row, then compressed.
fn finish_chunk<T: Sample>(
    samples: &mut [T],
    row_bytes: usize,
    spp: usize,
    n: usize,
    codec: &Codec,
) -> Result<Chunk<T>, String> {
    let mut converted;
    let raw: &mut [u8] = if cfg!(target_endian = "little") {
        bytemuck::cast_slice_mut(samples)
    } else {
        converted = Vec::with_capacity(samples.len() * n);
        samples.iter().for_each(|v| v.extend_le(&mut converted));
        &mut converted
    };
    if row_bytes > 0 {
        match codec.predictor {
            Predictor::None => {}
            Predictor::Horizontal => {
                for row in raw.chunks_exact_mut(row_bytes) {
                    horizontal_diff(row, n, spp);
                }
            }
            Predictor::FloatingPoint => {
                let mut tmp = Vec::with_capacity(row_bytes);
                for row in raw.chunks_exact_mut(row_bytes) {
                    floating_point_diff(row, &mut tmp, n, spp);
                }
            }
        }
    }
    compress(raw, codec).map(Chunk::Bytes)
}

fn compress(raw: &[u8], codec: &Codec) -> Result<Vec<u8>, String> {
    match codec.compression {
        Compression::None => Ok(raw.to_vec()),
        Compression::Lzw => weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(raw)
            .map_err(|e| format!("LZW encoding failed: {e}")),
        Compression::Deflate => DEFLATER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let compressor = match &mut *slot {
                Some((lvl, c)) if *lvl == codec.level => c,
                other => {
                    let lvl = i32::try_from(codec.level)
                        .ok()
                        .and_then(|l| CompressionLvl::new(l).ok())
                        .ok_or_else(|| {
                            format!("deflate level {} is outside 0..=12", codec.level)
                        })?;
                    &mut other.insert((codec.level, Compressor::new(lvl))).1
                }
            };
            // Compressed into this thread's reused output buffer, then copied out at its
            // exact size (a fresh buffer of the worst-case size per block cost a zero-fill
            // and page faults, and kept the worst case allocated until the block was written).
            COMPRESSED.with(|cell| {
                let out = &mut *cell.borrow_mut();
                let bound = compressor.zlib_compress_bound(raw.len());
                if out.len() < bound {
                    out.resize(bound, 0);
                }
                let len = compressor
                    .zlib_compress(raw, &mut out[..bound])
                    .map_err(|e| format!("deflate compression failed: {e:?}"))?;
                Ok(out[..len].to_vec())
            })
        }),
        other => Err(format!(
            "compression {other} is not supported by the writer"
        )),
    }
}

/// Reads `N` bytes at `at`.
#[inline(always)]
fn get<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[at..at + N]);
    a
}

macro_rules! hdiff {
    ($name:ident, $t:ty, $n:expr) => {
        /// Horizontal differencing of one row of little-endian samples, stride `spp` samples.
        fn $name(row: &mut [u8], spp: usize) {
            let count = row.len() / $n;
            for i in (spp..count).rev() {
                let (a, b) = (i * $n, (i - spp) * $n);
                let cur = <$t>::from_le_bytes(get::<$n>(row, a));
                let prev = <$t>::from_le_bytes(get::<$n>(row, b));
                row[a..a + $n].copy_from_slice(&cur.wrapping_sub(prev).to_le_bytes());
            }
        }
    };
}
hdiff!(hdiff16, u16, 2);
hdiff!(hdiff32, u32, 4);
hdiff!(hdiff64, u64, 8);

/// TIFF predictor 2 (TIFF 6.0, section 14): each sample minus the same band's sample in the
/// previous pixel of the row (`spp` samples back), in integer arithmetic modulo 2^bits.
pub(crate) fn horizontal_diff(row: &mut [u8], n: usize, spp: usize) {
    match n {
        1 => {
            for i in (spp..row.len()).rev() {
                row[i] = row[i].wrapping_sub(row[i - spp]);
            }
        }
        2 => hdiff16(row, spp),
        4 => hdiff32(row, spp),
        _ => hdiff64(row, spp),
    }
}

/// TIFF predictor 3 (Adobe Photoshop TIFF Technical Note 3, as libtiff's `fpDiff`): the row's
/// bytes are regrouped into byte planes, most significant byte first, then each byte is
/// differenced with the byte `spp` positions earlier.
pub(crate) fn floating_point_diff(row: &mut [u8], tmp: &mut Vec<u8>, n: usize, spp: usize) {
    let wc = row.len() / n;
    tmp.clear();
    tmp.extend_from_slice(row);
    for (byte, plane) in row.chunks_exact_mut(wc).enumerate() {
        // Plane `byte` holds byte `n - 1 - byte` (little-endian index) of every sample.
        let src = n - 1 - byte;
        for (count, out) in plane.iter_mut().enumerate() {
            *out = tmp[n * count + src];
        }
    }
    for i in (spp..row.len()).rev() {
        row[i] = row[i].wrapping_sub(row[i - spp]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decompresses a zlib chunk.
    fn inflate(chunk: &Chunk<u16>) -> Vec<u16> {
        let mut out = Vec::new();
        let mut d = flate2::read::ZlibDecoder::new(chunk.as_bytes());
        std::io::Read::read_to_end(&mut d, &mut out).unwrap();
        out.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn reused_buffers_pad_edge_blocks_with_zeros_and_interleave_any_band_count() {
        for bands in 1..=6 {
            let codec = Codec {
                compression: Compression::Deflate,
                level: 6,
                predictor: Predictor::None,
                interleave: Interleave::Pixel,
            };
            let full = ndarray::Array3::from_shape_fn((bands, 8, 8), |(b, r, c)| {
                1 + (b * 100 + r * 10 + c) as u16
            });
            // A full block first leaves non-zero samples in this thread's buffer ...
            let chunks = encode_block(full.view(), 8, 8, &codec).unwrap();
            let got = inflate(&chunks[0]);
            for (i, v) in got.iter().enumerate() {
                let (px, b) = (i / bands, i % bands);
                assert_eq!(*v, full[[b, px / 8, px % 8]], "{bands} bands, sample {i}");
            }
            // ... which an edge block (3 x 5 of 8 x 8), taken from a non-contiguous view,
            // must not leak into its padding.
            let edge = full.slice(ndarray::s![.., 1..4, 2..7;1]);
            let strided = full.slice(ndarray::s![.., 0..6;2, 0..8;2]);
            for (view, h, w) in [(edge, 3, 5), (strided, 3, 4)] {
                let chunks = encode_block(view, 8, 8, &codec).unwrap();
                let got = inflate(&chunks[0]);
                assert_eq!(got.len(), 8 * 8 * bands);
                for (i, v) in got.iter().enumerate() {
                    let (px, b) = (i / bands, i % bands);
                    let (r, c) = (px / 8, px % 8);
                    let want = if r < h && c < w { view[[b, r, c]] } else { 0 };
                    assert_eq!(*v, want, "{bands} bands, {h}x{w} block, row {r} col {c}");
                }
            }
            // Band interleave through the same buffer.
            let codec = Codec {
                interleave: Interleave::Band,
                ..codec
            };
            let chunks = encode_block(edge, 4, 8, &codec).unwrap();
            assert_eq!(chunks.len(), bands);
            for (b, chunk) in chunks.iter().enumerate() {
                let got = inflate(chunk);
                for (i, v) in got.iter().enumerate() {
                    let (r, c) = (i / 8, i % 8);
                    let want = if r < 3 && c < 5 { edge[[b, r, c]] } else { 0 };
                    assert_eq!(*v, want, "band {b} of {bands}, row {r} col {c}");
                }
            }
        }
    }

    #[test]
    fn horizontal_diff_uses_same_band_previous_pixel() {
        // Two pixels of three u16 bands: (1, 2, 3), (11, 12, 10).
        let vals: [u16; 6] = [1, 2, 3, 11, 12, 10];
        let mut row: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        horizontal_diff(&mut row, 2, 3);
        let out: Vec<u16> = row
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(out, vec![1, 2, 3, 10, 10, 7]);
    }

    #[test]
    fn floating_point_diff_matches_libtiff_layout() {
        // One band, two f32 samples: planes are MSB first, then bytes differenced.
        let vals = [1.0f32, 2.0];
        let mut row: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut tmp = Vec::new();
        floating_point_diff(&mut row, &mut tmp, 4, 1);
        // 1.0 = 3f800000, 2.0 = 40000000 -> planes [3f 40][80 00][00 00][00 00]
        let planes = [0x3fu8, 0x40, 0x80, 0x00, 0, 0, 0, 0];
        let mut expect = planes;
        for i in (1..expect.len()).rev() {
            expect[i] = expect[i].wrapping_sub(expect[i - 1]);
        }
        assert_eq!(row, expect.to_vec());
    }
}

//! Encoding one block (a tile or a strip): zero padding to the stored block size,
//! little-endian bytes, the TIFF predictor, and compression.

use std::cell::RefCell;

use libdeflater::{CompressionLvl, Compressor};
use ndarray::{ArrayView3, Axis};

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
/// The samples are gathered into a zero-initialised buffer of the stored size (so the padding
/// costs nothing), row slice by row slice; on little-endian hosts that buffer's bytes are the
/// little-endian bytes the file needs, with no per-sample conversion.
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
    let n = T::DTYPE.size();
    let mut chunks = Vec::new();
    match codec.interleave {
        Interleave::Pixel => {
            let row_samples = stored_w * bands;
            let mut buf = vec![T::default(); row_samples * stored_h];
            // Rows come from one row iterator per band: a `slice` per row and band cost about
            // as much as the copy of a 256-pixel row.
            let planes: Vec<_> = data.outer_iter().collect();
            let mut band_rows: Vec<_> = planes.iter().map(|p| p.rows().into_iter()).collect();
            for dst in buf.chunks_exact_mut(row_samples).take(h) {
                for (b, rows) in band_rows.iter_mut().enumerate() {
                    let Some(src) = rows.next() else {
                        return Err(format!("band {b} holds fewer than {h} rows"));
                    };
                    match src.as_slice() {
                        Some(src) => scatter(dst, src, bands, b),
                        None => dst
                            .iter_mut()
                            .skip(b)
                            .step_by(bands)
                            .zip(src.iter())
                            .for_each(|(d, s)| *d = *s),
                    }
                }
            }
            chunks.push(finish_chunk(buf, row_samples * n, bands, n, codec)?);
        }
        Interleave::Band => {
            for band in data.axis_iter(Axis(0)) {
                let mut buf = vec![T::default(); stored_w * stored_h];
                for (dst, src) in buf.chunks_exact_mut(stored_w).zip(band.rows()) {
                    let dst = dst.iter_mut().take(w);
                    match src.as_slice() {
                        Some(src) => dst.zip(src).for_each(|(d, s)| *d = *s),
                        None => dst.zip(src.iter()).for_each(|(d, s)| *d = *s),
                    }
                }
                chunks.push(finish_chunk(buf, stored_w * n, 1, n, codec)?);
            }
        }
    }
    Ok(chunks)
}

/// `dst[i * spp + band] = src[i]`: one band of a row into pixel-interleaved samples.
fn scatter<T: Copy>(dst: &mut [T], src: &[T], spp: usize, band: usize) {
    /// The same with the pixel size known at compile time (vectorisable, no bounds checks).
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T], band: usize) {
        if band < N {
            for (px, s) in dst.chunks_exact_mut(N).zip(src) {
                px[band] = *s;
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
            .skip(band)
            .step_by(spp)
            .zip(src)
            .for_each(|(d, s)| *d = *s),
    }
}

/// Little-endian bytes of `samples`, applies the predictor row by row, then compresses.
fn finish_chunk<T: Sample>(
    mut samples: Vec<T>,
    row_bytes: usize,
    spp: usize,
    n: usize,
    codec: &Codec,
) -> Result<Chunk<T>, String> {
    let mut converted;
    let raw: &mut [u8] = if cfg!(target_endian = "little") {
        if codec.compression == Compression::None && codec.predictor == Predictor::None {
            return Ok(Chunk::Samples(samples));
        }
        bytemuck::cast_slice_mut(&mut samples)
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
            let mut out = vec![0u8; compressor.zlib_compress_bound(raw.len())];
            let len = compressor
                .zlib_compress(raw, &mut out)
                .map_err(|e| format!("deflate compression failed: {e:?}"))?;
            out.truncate(len);
            Ok(out)
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

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

/// Encodes a block whose valid extent is `data` `(bands, h, w)` into the stored block size
/// `stored_h x stored_w` (`>= h x w`, padded with zeros). Returns one chunk for pixel
/// interleave, one chunk per band for band interleave.
pub(crate) fn encode_block<T: Sample>(
    data: ArrayView3<T>,
    stored_h: usize,
    stored_w: usize,
    codec: &Codec,
) -> Result<Vec<Vec<u8>>, String> {
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
            let row_bytes = stored_w * bands * n;
            let mut raw = Vec::with_capacity(row_bytes * stored_h);
            for r in 0..h {
                let row = data.index_axis(Axis(1), r); // (bands, w)
                if bands == 1 {
                    for &v in row.iter() {
                        v.extend_le(&mut raw);
                    }
                } else {
                    for px in row.columns() {
                        for &v in px.iter() {
                            v.extend_le(&mut raw);
                        }
                    }
                }
                raw.resize((r + 1) * row_bytes, 0);
            }
            raw.resize(stored_h * row_bytes, 0);
            chunks.push(finish_chunk(raw, row_bytes, bands, n, codec)?);
        }
        Interleave::Band => {
            let row_bytes = stored_w * n;
            for band in data.axis_iter(Axis(0)) {
                let mut raw = Vec::with_capacity(row_bytes * stored_h);
                for (r, row) in band.rows().into_iter().enumerate() {
                    match row.as_slice() {
                        Some(s) => s.iter().for_each(|&v| v.extend_le(&mut raw)),
                        None => row.iter().for_each(|&v| v.extend_le(&mut raw)),
                    }
                    raw.resize((r + 1) * row_bytes, 0);
                }
                raw.resize(stored_h * row_bytes, 0);
                chunks.push(finish_chunk(raw, row_bytes, 1, n, codec)?);
            }
        }
    }
    Ok(chunks)
}

/// Applies the predictor row by row, then compresses.
fn finish_chunk(
    mut raw: Vec<u8>,
    row_bytes: usize,
    spp: usize,
    n: usize,
    codec: &Codec,
) -> Result<Vec<u8>, String> {
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
    compress(raw, codec)
}

fn compress(raw: Vec<u8>, codec: &Codec) -> Result<Vec<u8>, String> {
    match codec.compression {
        Compression::None => Ok(raw),
        Compression::Lzw => weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
            .encode(&raw)
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
                .zlib_compress(&raw, &mut out)
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

//! Decoding one chunk (strip or tile): decompression, byte order, predictors, JPEG colour.
//!
//! We decompress chunks ourselves instead of through `tiff::decoder::Decoder::read_chunk`
//! because that decoder is `&mut` (one chunk at a time per open file) and inflates through a
//! streaming zlib reader; here chunks are read with positioned reads and decoded on all cores,
//! Deflate through libdeflate (whole-buffer, about twice as fast as zlib). The `tiff` crate
//! still parses the IFDs, and decodes the rare codecs we do not handle ourselves (WebP).

use crate::{Compression, Error, Result};

/// What the decoder needs to know about the chunks of one image.
#[derive(Debug, Clone)]
pub(crate) struct ChunkCodec {
    pub compression: Compression,
    pub predictor: u16,
    pub big_endian: bool,
    /// Bytes per sample.
    pub sample_size: usize,
    /// The image's sample type (LERC blobs carry their own, which must agree).
    pub dtype: crate::DataType,
    /// Samples per pixel stored in one chunk (1 for band-interleaved files).
    pub chunk_spp: usize,
    /// TIFF Photometric: 6 = YCbCr.
    pub photometric: u16,
    /// JPEGTables, for abbreviated JPEG streams.
    pub jpeg_tables: Option<Vec<u8>>,
    /// LERC chunks: the compression around each blob (LercParameters' second value: 0 none,
    /// 1 Deflate, 2 ZSTD).
    pub lerc_wrap: u64,
}

/// Decodes `raw` (the chunk's bytes as stored) into `out`: `rows x cols x chunk_spp` samples
/// as native little-endian bytes. `out` must be aligned for the sample type.
pub(crate) fn decode_chunk(
    codec: &ChunkCodec,
    raw: &[u8],
    out: &mut [u8],
    rows: usize,
    cols: usize,
    path: &std::path::Path,
    chunk: usize,
) -> Result<()> {
    let fmt = |m: String| Error::format(path, format!("chunk {chunk}: {m}"));
    match codec.compression {
        Compression::None => {
            let n = out.len().min(raw.len());
            if n < out.len() {
                return Err(fmt(format!(
                    "holds {} bytes, {} expected",
                    raw.len(),
                    out.len()
                )));
            }
            out.copy_from_slice(&raw[..n]);
        }
        Compression::Deflate => inflate(raw, out).map_err(fmt)?,
        Compression::Lzw => unlzw(raw, out).map_err(fmt)?,
        Compression::PackBits => unpackbits(raw, out).map_err(fmt)?,
        Compression::Zstd => {
            let n = zstd::bulk::decompress_to_buffer(raw, out)
                .map_err(|e| fmt(format!("zstd: {e}")))?;
            if n < out.len() {
                return Err(fmt(format!("zstd gave {n} bytes, {} expected", out.len())));
            }
        }
        Compression::Jpeg => {
            decode_jpeg(codec, raw, out, rows, cols).map_err(fmt)?;
            return Ok(());
        }
        Compression::Lerc => {
            // (LERC stores samples in native order and has no predictor)
            decode_lerc(codec, raw, out, rows, cols).map_err(fmt)?;
            return Ok(());
        }
        other => {
            return Err(Error::unsupported(
                path,
                format!("compression {other} is decoded through another path"),
            ))
        }
    }
    match codec.predictor {
        1 => swap_if_big_endian(codec, out),
        2 => {
            swap_if_big_endian(codec, out);
            undo_horizontal(
                out,
                codec.sample_size,
                cols * codec.chunk_spp,
                codec.chunk_spp,
            )
            .map_err(fmt)?;
        }
        3 => undo_floating_point(
            out,
            codec.sample_size,
            rows,
            cols * codec.chunk_spp,
            codec.chunk_spp,
        )
        .map_err(fmt)?,
        p => {
            return Err(Error::unsupported(
                path,
                format!("predictor {p} (only 1 none, 2 horizontal, 3 floating point exist)"),
            ))
        }
    }
    Ok(())
}

/// LERC (Esri's Limited Error Raster Compression; TIFF compression 34887 as GDAL writes it):
/// each chunk is one LERC blob, optionally wrapped in Deflate or ZSTD; a pixel-interleaved
/// chunk is one blob of depth `chunk_spp`, so the decoded values are already in the chunk's
/// sample order. Blobs are decoded by the pure-Rust `lerc-reader` crate. Pixels the blob's
/// validity mask marks invalid are NaN in float images (GDAL stores NaN samples that way and
/// reads them back as NaN); in integer images they keep the value the decoder gives them (the
/// nodata value is what marks them there).
fn decode_lerc(
    codec: &ChunkCodec,
    raw: &[u8],
    out: &mut [u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<(), String> {
    use std::io::Read;
    // the unwrapped blob may not be much larger than the pixels it holds (header, mask and
    // raw-mode overhead): a bound against decompression bombs
    let limit = (2 * out.len() + (1 << 16)) as u64;
    let unwrapped: Vec<u8>;
    let blob: &[u8] = match codec.lerc_wrap {
        0 => raw,
        1 => {
            let mut v = Vec::new();
            flate2::read::ZlibDecoder::new(raw)
                .take(limit)
                .read_to_end(&mut v)
                .map_err(|e| format!("LERC Deflate wrapper: {e}"))?;
            unwrapped = v;
            &unwrapped
        }
        2 => {
            let mut v = Vec::new();
            zstd::stream::read::Decoder::new(raw)
                .map_err(|e| format!("LERC ZSTD wrapper: {e}"))?
                .take(limit)
                .read_to_end(&mut v)
                .map_err(|e| format!("LERC ZSTD wrapper: {e}"))?;
            unwrapped = v;
            &unwrapped
        }
        w => {
            return Err(format!(
                "LERC additional compression {w} (0 none, 1 Deflate, 2 ZSTD exist)"
            ))
        }
    };
    let d = lerc_reader::decode_first(blob).map_err(|e| format!("LERC: {e}"))?;
    let (w, h, depth) = (
        d.info.width as usize,
        d.info.height as usize,
        d.info.depth as usize,
    );
    if w != cols || h != rows || depth != codec.chunk_spp {
        return Err(format!(
            "LERC blob is {w} x {h} x {depth}, the chunk {cols} x {rows} x {}",
            codec.chunk_spp
        ));
    }
    use crate::DataType as D;
    use lerc_core::PixelData as P;
    let (bytes, dtype): (&[u8], D) = match &d.pixels {
        P::I8(v) => (bytemuck::cast_slice(v), D::I8),
        P::U8(v) => (v, D::U8),
        P::I16(v) => (bytemuck::cast_slice(v), D::I16),
        P::U16(v) => (bytemuck::cast_slice(v), D::U16),
        P::I32(v) => (bytemuck::cast_slice(v), D::I32),
        P::U32(v) => (bytemuck::cast_slice(v), D::U32),
        P::F32(v) => (bytemuck::cast_slice(v), D::F32),
        P::F64(v) => (bytemuck::cast_slice(v), D::F64),
    };
    if dtype != codec.dtype || bytes.len() != out.len() {
        return Err(format!(
            "LERC blob holds {} {} samples, the chunk {} {}",
            d.pixels.len(),
            dtype.name(),
            out.len() / codec.sample_size.max(1),
            codec.dtype.name()
        ));
    }
    let sample = codec.sample_size;
    // samples are native-endian in memory; the output is little-endian
    out.copy_from_slice(bytes);
    if cfg!(target_endian = "big") && sample > 1 {
        for s in out.chunks_exact_mut(sample) {
            s.reverse();
        }
    }
    // floats the mask marks invalid are NaN, as GDAL returns them (it writes NaN samples as
    // invalid pixels, LERC having no NaN)
    let nan: Option<&[u8]> = match &d.pixels {
        P::F32(_) => Some(&[0x00, 0x00, 0xc0, 0x7f]),
        P::F64(_) => Some(&[0, 0, 0, 0, 0, 0, 0xf8, 0x7f]),
        _ => None,
    };
    if let (Some(mask), Some(nan)) = (&d.mask, nan) {
        for (px, valid) in out.chunks_exact_mut(depth * sample).zip(mask) {
            if *valid == 0 {
                for s in px.chunks_exact_mut(sample) {
                    s.copy_from_slice(nan);
                }
            }
        }
    }
    Ok(())
}

fn swap_if_big_endian(codec: &ChunkCodec, out: &mut [u8]) {
    if codec.big_endian && codec.sample_size > 1 {
        for s in out.chunks_exact_mut(codec.sample_size) {
            s.reverse();
        }
    }
}

/// zlib (TIFF Deflate) into an exactly-sized buffer; libdeflate first, then a tolerant
/// streaming decoder for streams libdeflate rejects (trailing garbage, bad checksum), as GDAL
/// accepts those too.
fn inflate(raw: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    thread_local! {
        /// One libdeflate decompressor per thread, reused across chunks.
        static INFLATER: std::cell::RefCell<libdeflater::Decompressor> =
            std::cell::RefCell::new(libdeflater::Decompressor::new());
    }
    let res = INFLATER.with(|d| d.borrow_mut().zlib_decompress(raw, out));
    match res {
        Ok(n) if n == out.len() => return Ok(()),
        Ok(n) => return Err(format!("deflate gave {n} bytes, {} expected", out.len())),
        Err(_) => {}
    }
    use std::io::Read;
    let mut z = flate2::read::ZlibDecoder::new(raw);
    let mut filled = 0;
    while filled < out.len() {
        match z.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(format!("deflate: {e}")),
        }
    }
    if filled < out.len() {
        return Err(format!(
            "deflate stream ends after {filled} of {} bytes",
            out.len()
        ));
    }
    Ok(())
}

fn unlzw(raw: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    // libtiff's test for pre-6.0 ("old-style", LSB-first) LZW streams.
    let old_style = raw.len() >= 2 && raw[0] == 0 && raw[1] & 1 == 1;
    let config = if old_style {
        weezl::decode::Configuration::new(weezl::BitOrder::Lsb, 8)
    } else {
        weezl::decode::Configuration::with_tiff_size_switch(weezl::BitOrder::Msb, 8)
    };
    let mut dec = config.with_yield_on_full_buffer(true).build();
    let (mut inp, mut filled) = (raw, 0usize);
    while filled < out.len() {
        let r = dec.decode_bytes(inp, &mut out[filled..]);
        inp = &inp[r.consumed_in..];
        filled += r.consumed_out;
        match r.status {
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::Done) | Ok(weezl::LzwStatus::NoProgress) => break,
            Err(e) => return Err(format!("LZW: {e}")),
        }
    }
    if filled < out.len() {
        return Err(format!(
            "LZW stream ends after {filled} of {} bytes",
            out.len()
        ));
    }
    Ok(())
}

/// PackBits (TIFF 6.0 section 9).
fn unpackbits(raw: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    let (mut i, mut o) = (0usize, 0usize);
    while o < out.len() && i < raw.len() {
        let n = raw[i] as i8;
        i += 1;
        if n >= 0 {
            let len = n as usize + 1;
            let src = raw
                .get(i..i + len)
                .ok_or("PackBits literal run past end of data")?;
            let dst = out
                .get_mut(o..o + len)
                .ok_or("PackBits literal run past end of chunk")?;
            dst.copy_from_slice(src);
            i += len;
            o += len;
        } else if n != -128 {
            let len = 1 - n as isize;
            let len = len as usize;
            let v = *raw.get(i).ok_or("PackBits repeat run past end of data")?;
            i += 1;
            let dst = out
                .get_mut(o..o + len)
                .ok_or("PackBits repeat run past end of chunk")?;
            dst.fill(v);
            o += len;
        }
    }
    if o < out.len() {
        return Err(format!(
            "PackBits data ends after {o} of {} bytes",
            out.len()
        ));
    }
    Ok(())
}

/// Undoes TIFF predictor 2 on native-order samples: each sample plus the same band's previous
/// pixel, row by row.
fn undo_horizontal(
    buf: &mut [u8],
    sample_size: usize,
    row_samples: usize,
    spp: usize,
) -> std::result::Result<(), String> {
    macro_rules! acc {
        ($t:ty) => {{
            let v: &mut [$t] = bytemuck::try_cast_slice_mut(buf)
                .map_err(|e| format!("predictor buffer: {e:?}"))?;
            for row in v.chunks_exact_mut(row_samples) {
                for i in spp..row.len() {
                    row[i] = row[i].wrapping_add(row[i - spp]);
                }
            }
        }};
    }
    match sample_size {
        1 => acc!(u8),
        2 => acc!(u16),
        4 => acc!(u32),
        8 => acc!(u64),
        s => return Err(format!("horizontal predictor with {s}-byte samples")),
    }
    Ok(())
}

/// Undoes TIFF predictor 3 (Adobe floating-point predictor): byte-wise differencing across a
/// row whose bytes are stored most-significant plane first; output is little-endian.
fn undo_floating_point(
    buf: &mut [u8],
    sample_size: usize,
    rows: usize,
    row_samples: usize,
    spp: usize,
) -> std::result::Result<(), String> {
    let row_bytes = row_samples * sample_size;
    if buf.len() < rows * row_bytes {
        return Err("floating-point predictor: short buffer".into());
    }
    let mut tmp = vec![0u8; row_bytes];
    for row in buf.chunks_exact_mut(row_bytes).take(rows) {
        for i in spp..row_bytes {
            row[i] = row[i].wrapping_add(row[i - spp]);
        }
        tmp.copy_from_slice(row);
        for k in 0..row_samples {
            for b in 0..sample_size {
                row[k * sample_size + b] = tmp[(sample_size - 1 - b) * row_samples + k];
            }
        }
    }
    Ok(())
}

/// Decodes a JPEG chunk (with the image's JPEGTables spliced in), without colour conversion
/// by the JPEG decoder; YCbCr files are then converted to RGB with the JFIF equations, as
/// GDAL does (it asks libjpeg for RGB).
fn decode_jpeg(
    codec: &ChunkCodec,
    raw: &[u8],
    out: &mut [u8],
    rows: usize,
    cols: usize,
) -> std::result::Result<(), String> {
    let stream: Vec<u8> = match &codec.jpeg_tables {
        Some(t) if t.len() >= 4 && raw.len() >= 2 => {
            let mut s = Vec::with_capacity(t.len() + raw.len());
            s.extend_from_slice(&t[..t.len() - 2]); // drop the tables' EOI
            s.extend_from_slice(&raw[2..]); // drop the chunk's SOI
            s
        }
        _ => raw.to_vec(),
    };
    let mut dec = zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(stream));
    dec.decode_headers().map_err(|e| format!("JPEG: {e:?}"))?;
    let mut options = zune_core::options::DecoderOptions::default()
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    if let Some(cs) = dec.input_colorspace() {
        options = options.jpeg_set_out_colorspace(cs);
    }
    dec.set_options(options);
    let pixels = dec.decode().map_err(|e| format!("JPEG: {e:?}"))?;
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| "JPEG: no dimensions".to_string())?;
    let spp = codec.chunk_spp;
    if pixels.len() < w * h * spp || w < cols || h < rows.min(h) {
        return Err(format!(
            "JPEG decodes to {w}x{h}x{} samples, the chunk needs {cols}x{rows}x{spp}",
            pixels.len() / (w * h).max(1)
        ));
    }
    let rows_avail = rows.min(h);
    for r in 0..rows_avail {
        let src = &pixels[r * w * spp..(r * w + cols) * spp];
        out[r * cols * spp..(r + 1) * cols * spp].copy_from_slice(src);
    }
    if codec.photometric == 6 && spp >= 3 {
        for px in out.chunks_exact_mut(spp) {
            let (y, cb, cr) = (
                f32::from(px[0]),
                f32::from(px[1]) - 128.0,
                f32::from(px[2]) - 128.0,
            );
            let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            px[0] = clamp(y + 1.402 * cr);
            px[1] = clamp(y - 0.344_136 * cb - 0.714_136 * cr);
            px[2] = clamp(y + 1.772 * cb);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A LERC chunk whose blob disagrees with the image's sample type, or with an unknown
    /// wrapper, is an error that says so (the first strip of a GDAL-written u8 fixture).
    #[test]
    fn lerc_chunks_that_do_not_fit_the_image_are_errors() {
        use tiff::tags::Tag;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lerc/u8_lerc_strip_band.tif");
        let bytes = std::fs::read(&path).unwrap();
        let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(&bytes)).unwrap();
        let off = dec.get_tag_u64_vec(Tag::StripOffsets).unwrap()[0] as usize;
        let len = dec.get_tag_u64_vec(Tag::StripByteCounts).unwrap()[0] as usize;
        let raw = &bytes[off..off + len];
        let codec = |dtype: crate::DataType, lerc_wrap: u64| ChunkCodec {
            compression: Compression::Lerc,
            predictor: 1,
            big_endian: false,
            sample_size: dtype.size(),
            dtype,
            chunk_spp: 1,
            photometric: 1,
            jpeg_tables: None,
            lerc_wrap,
        };
        // 8 rows of 45 (GDAL's strips of the fixture)
        let mut out = vec![0u8; 8 * 45];
        decode_chunk(
            &codec(crate::DataType::U8, 0),
            raw,
            &mut out,
            8,
            45,
            &path,
            0,
        )
        .unwrap();
        assert!(out.iter().any(|&v| v != 0));
        for (c, cols, want) in [
            (
                codec(crate::DataType::I8, 0),
                45,
                "uint8 samples, the chunk 360 int8",
            ),
            (
                codec(crate::DataType::U8, 3),
                45,
                "additional compression 3",
            ),
            (
                codec(crate::DataType::U8, 0),
                44,
                "45 x 8 x 1, the chunk 44 x 8",
            ),
        ] {
            let e = decode_chunk(&c, raw, &mut out[..8 * cols], 8, cols, &path, 0)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn packbits_matches_the_spec_example() {
        // TIFF 6.0, section 9.
        let raw = [
            0xFEu8, 0xAA, 0x02, 0x80, 0x00, 0x2A, 0xFD, 0xAA, 0x03, 0x80, 0x00, 0x2A, 0x22, 0xF7,
            0xAA,
        ];
        let want = [
            0xAAu8, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0xAA, 0xAA, 0xAA, 0xAA, 0x80, 0x00, 0x2A, 0x22,
            0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA,
        ];
        let mut out = [0u8; 24];
        unpackbits(&raw, &mut out).unwrap();
        assert_eq!(out, want);
        let mut long = [0u8; 25];
        assert!(unpackbits(&raw, &mut long).is_err());
    }

    #[test]
    fn horizontal_predictor_is_per_band() {
        // two pixels of two bands: (10, 100), (+1, +2)
        let mut v: Vec<u16> = vec![10, 100, 1, 2];
        undo_horizontal(bytemuck::cast_slice_mut(&mut v), 2, 4, 2).unwrap();
        assert_eq!(v, vec![10, 100, 11, 102]);
    }

    #[test]
    fn floating_point_predictor_inverts_its_encoding() {
        let vals = [1.5f32, -2.25, 1e-3, 7.0];
        // encode: shuffle bytes MSB plane first, then difference bytes
        let n = vals.len();
        let mut enc = vec![0u8; n * 4];
        for (k, v) in vals.iter().enumerate() {
            let be = v.to_be_bytes();
            for b in 0..4 {
                enc[b * n + k] = be[b];
            }
        }
        for i in (1..enc.len()).rev() {
            enc[i] = enc[i].wrapping_sub(enc[i - 1]);
        }
        let mut buf = vec![0f32; n];
        bytemuck::cast_slice_mut(&mut buf).copy_from_slice(&enc);
        undo_floating_point(bytemuck::cast_slice_mut(&mut buf), 4, 1, n, 1).unwrap();
        assert_eq!(buf, vals);
    }
}

//! Parsing one image file directory into an [`ImageInfo`]: sample layout, chunk tables,
//! georeferencing tags, nodata and scale/offset.

use std::fs::File;
use std::path::Path;

use tiff::decoder::Decoder;
use tiff::tags::Tag;

use super::{ImageInfo, Interleave};
use crate::compression::tag;
use crate::geo::GeoTags;
use crate::geokeys::{
    GeoKeyDirectory, TAG_GEO_ASCII_PARAMS, TAG_GEO_DOUBLE_PARAMS, TAG_GEO_KEY_DIRECTORY,
};
use crate::read::decode::ChunkCodec;
use crate::{gdal_metadata, Compression, DataType, Error, Georef, Result};

/// Maps a `tiff` error, naming `tag_limit` (the limit in force) when a tag was too large.
pub(super) fn tiff_err_with(path: &Path, e: tiff::TiffError, tag_limit: usize) -> Error {
    match e {
        tiff::TiffError::IoError(io) => Error::io(path, io),
        tiff::TiffError::UnsupportedError(u) => Error::unsupported(path, u.to_string()),
        tiff::TiffError::LimitsExceeded => Error::Limit {
            path: path.to_path_buf(),
            what: "a TIFF tag value".into(),
            needed: 0,
            limit: tag_limit as u64,
            field: "max_tag_bytes",
        },
        other => Error::format(path, other.to_string()),
    }
}

fn find_u64_vec(
    dec: &mut Decoder<std::io::BufReader<File>>,
    dir: &tiff::Directory,
    t: u16,
) -> std::result::Result<Option<Vec<u64>>, tiff::TiffError> {
    dec.read_directory_tags(dir)
        .find_tag(Tag::Unknown(t))?
        .map(|v| v.into_u64_vec())
        .transpose()
}

/// Parses one IFD. `Ok(None)` for directories that are not images of ours (transparency masks).
pub(super) fn parse_image(
    dec: &mut Decoder<std::io::BufReader<File>>,
    dir: &tiff::Directory,
    path: &Path,
    ifd_index: usize,
    big_endian: bool,
    bigtiff: bool,
    tag_limit: usize,
) -> Result<Option<ImageInfo>> {
    let te = |e| tiff_err_with(path, e, tag_limit);
    let mut tags = dec.read_directory_tags(dir);
    let u = |v: Option<tiff::decoder::ifd::Value>| -> std::result::Result<Option<u64>, tiff::TiffError> { v.map(|v| v.into_u64()).transpose() };
    let subfile = u(tags.find_tag(Tag::NewSubfileType).map_err(te)?)
        .map_err(te)?
        .unwrap_or(0);
    if ifd_index > 0 && subfile & 4 != 0 {
        return Ok(None); // transparency mask
    }
    let width = u(tags.find_tag(Tag::ImageWidth).map_err(te)?).map_err(te)?;
    let height = u(tags.find_tag(Tag::ImageLength).map_err(te)?).map_err(te)?;
    let (Some(width), Some(height)) = (width, height) else {
        return Err(Error::format(
            path,
            format!("image {ifd_index} has no ImageWidth/ImageLength"),
        ));
    };
    if width == 0 || height == 0 {
        return Err(Error::format(
            path,
            format!("image {ifd_index} is {width}x{height}"),
        ));
    }
    let spp = u(tags.find_tag(Tag::SamplesPerPixel).map_err(te)?)
        .map_err(te)?
        .unwrap_or(1);
    if spp == 0 || spp > 65535 {
        return Err(Error::format(path, format!("SamplesPerPixel = {spp}")));
    }
    let bits: Vec<u64> = tags
        .find_tag(Tag::BitsPerSample)
        .map_err(te)?
        .map(|v| v.into_u64_vec())
        .transpose()
        .map_err(te)?
        .unwrap_or_else(|| vec![1]);
    let formats: Vec<u64> = tags
        .find_tag(Tag::SampleFormat)
        .map_err(te)?
        .map(|v| v.into_u64_vec())
        .transpose()
        .map_err(te)?
        .unwrap_or_else(|| vec![1]);
    let b0 = bits.first().copied().unwrap_or(1);
    let f0 = formats.first().copied().unwrap_or(1);
    if bits.iter().any(|&b| b != b0) || formats.iter().any(|&f| f != f0) {
        return Err(Error::unsupported(path, format!("bands with different sample types (BitsPerSample {bits:?}, SampleFormat {formats:?})")));
    }
    let dtype = u16::try_from(f0)
        .ok()
        .zip(u16::try_from(b0).ok())
        .and_then(|(f, b)| DataType::from_tiff(f, b))
        .ok_or_else(|| {
            let kind = match f0 { 1 => "unsigned", 2 => "signed", 3 => "float", 5 | 6 => "complex", _ => "unknown" };
            Error::unsupported(path, format!("{b0}-bit {kind} samples (SampleFormat {f0}); readable types are 8/16/32-bit integers and 32/64-bit floats"))
        })?;
    let compression = Compression::from_code(
        u(tags.find_tag(Tag::Compression).map_err(te)?)
            .map_err(te)?
            .unwrap_or(1) as u16,
    );
    let photometric = u(tags.find_tag(Tag::PhotometricInterpretation).map_err(te)?)
        .map_err(te)?
        .unwrap_or(1) as u16;
    if photometric == 3 {
        return Err(Error::unsupported(
            path,
            "palette (colour-mapped) images; expand them with `gdal_translate -expand rgb`",
        ));
    }
    if photometric == 6 && !matches!(compression, Compression::Jpeg | Compression::OldJpeg) {
        return Err(Error::unsupported(
            path,
            "YCbCr samples without JPEG compression",
        ));
    }
    let planar = u(tags.find_tag(Tag::PlanarConfiguration).map_err(te)?)
        .map_err(te)?
        .unwrap_or(1);
    let interleave = match planar {
        1 => Interleave::Pixel,
        2 => Interleave::Band,
        p => return Err(Error::format(path, format!("PlanarConfiguration = {p}"))),
    };
    let interleave = if spp == 1 {
        Interleave::Pixel
    } else {
        interleave
    };
    let predictor = u(tags.find_tag(Tag::Predictor).map_err(te)?)
        .map_err(te)?
        .unwrap_or(1) as u16;
    let tile_w = u(tags.find_tag(Tag::TileWidth).map_err(te)?).map_err(te)?;
    let tile_h = u(tags.find_tag(Tag::TileLength).map_err(te)?).map_err(te)?;
    let (tiled, block_shape, offsets, counts) = match (tile_w, tile_h) {
        (Some(tw), Some(th)) => {
            if tw == 0 || th == 0 {
                return Err(Error::format(path, format!("tile size {tw}x{th}")));
            }
            let o = find_u64_vec(dec, dir, 324).map_err(te)?;
            let c = find_u64_vec(dec, dir, 325).map_err(te)?;
            (true, (th as usize, tw as usize), o, c)
        }
        _ => {
            let rps = u(tags.find_tag(Tag::RowsPerStrip).map_err(te)?)
                .map_err(te)?
                .unwrap_or(height)
                .clamp(1, height);
            let o = find_u64_vec(dec, dir, 273).map_err(te)?;
            let c = find_u64_vec(dec, dir, 279).map_err(te)?;
            (false, (rps as usize, width as usize), o, c)
        }
    };
    let (Some(offsets), Some(counts)) = (offsets, counts) else {
        return Err(Error::format(
            path,
            format!("image {ifd_index} lacks chunk offsets or byte counts"),
        ));
    };
    let (width, height, spp) = (width as usize, height as usize, spp as usize);
    let planes = if interleave == Interleave::Band {
        spp
    } else {
        1
    };
    // Checked: width, height and block size come from the file.
    let chunks = height
        .div_ceil(block_shape.0)
        .checked_mul(width.div_ceil(block_shape.1))
        .and_then(|g| g.checked_mul(planes))
        .ok_or_else(|| {
            Error::format(
                path,
                format!(
                    "image {ifd_index}: {width}x{height} pixels in {}x{} blocks is too many chunks",
                    block_shape.1, block_shape.0
                ),
            )
        })?;
    if offsets.len() < chunks || counts.len() < chunks {
        return Err(Error::format(
            path,
            format!(
                "image {ifd_index}: {} chunk offsets and {} byte counts for {} chunks",
                offsets.len(),
                counts.len(),
                chunks
            ),
        ));
    }
    let mut tags = dec.read_directory_tags(dir);
    let jpeg_tables = tags
        .find_tag(Tag::JPEGTables)
        .map_err(te)?
        .map(|v| v.into_u8_vec())
        .transpose()
        .map_err(te)?;
    // LercParameters (GDAL): [LERC version, additional compression]
    let lerc_wrap = tags
        .find_tag(Tag::Unknown(tag::LERC_PARAMETERS))
        .map_err(te)?
        .map(|v| v.into_u64_vec())
        .transpose()
        .map_err(te)?
        .and_then(|v| v.get(1).copied())
        .unwrap_or(0);
    let f64v = |v: Option<tiff::decoder::ifd::Value>| v.map(|v| v.into_f64_vec()).transpose();
    let geotags = GeoTags {
        pixel_scale: f64v(
            tags.find_tag(Tag::Unknown(tag::MODEL_PIXEL_SCALE))
                .map_err(te)?,
        )
        .map_err(te)?,
        tiepoints: f64v(
            tags.find_tag(Tag::Unknown(tag::MODEL_TIEPOINT))
                .map_err(te)?,
        )
        .map_err(te)?,
        transformation: f64v(
            tags.find_tag(Tag::Unknown(tag::MODEL_TRANSFORMATION))
                .map_err(te)?,
        )
        .map_err(te)?,
        geokeys: None,
    };
    let key_dir = tags
        .find_tag(Tag::Unknown(TAG_GEO_KEY_DIRECTORY))
        .map_err(te)?
        .map(|v| v.into_u16_vec())
        .transpose()
        .map_err(te)?;
    let doubles = f64v(
        tags.find_tag(Tag::Unknown(TAG_GEO_DOUBLE_PARAMS))
            .map_err(te)?,
    )
    .map_err(te)?
    .unwrap_or_default();
    let ascii = tags
        .find_tag(Tag::Unknown(TAG_GEO_ASCII_PARAMS))
        .map_err(te)?
        .and_then(|v| v.into_string().ok())
        .unwrap_or_default();
    let nodata = tags
        .find_tag(Tag::Unknown(tag::GDAL_NODATA))
        .map_err(te)?
        .and_then(|v| v.into_string().ok())
        .and_then(|s| parse_nodata(&s));
    let metadata = tags
        .find_tag(Tag::Unknown(tag::GDAL_METADATA))
        .map_err(te)?
        .and_then(|v| v.into_string().ok());
    let geokeys = match key_dir {
        Some(d) => Some(
            GeoKeyDirectory::parse(&d, &doubles, &ascii)
                .map_err(|e| Error::format(path, e.to_string()))?,
        ),
        None => None,
    };
    let georef = Georef::from_tags(&GeoTags { geokeys, ..geotags });
    let scale_offset = metadata
        .map(|m| gdal_metadata::parse_scale_offset(&m, spp))
        .unwrap_or_default();
    let chunk_spp = if interleave == Interleave::Band {
        1
    } else {
        spp
    };
    if predictor == 2 && dtype.is_float() {
        // Valid per the spec only for integers; GDAL refuses to write it. Decode bit patterns.
    }
    Ok(Some(ImageInfo {
        width,
        height,
        bands: spp,
        dtype,
        compression,
        predictor,
        interleave,
        photometric,
        tiled,
        block_shape,
        georef,
        nodata,
        scale_offset,
        bigtiff,
        big_endian,
        chunk_offsets: offsets,
        chunk_bytes: counts,
        codec: ChunkCodec {
            compression,
            predictor,
            big_endian,
            sample_size: dtype.size(),
            dtype,
            chunk_spp,
            photometric,
            jpeg_tables,
            lerc_wrap,
        },
        ifd_index,
    }))
}

/// Parses a `GDAL_NODATA` string ("0", "-9999", "nan", "-inf", "1e+20").
fn parse_nodata(s: &str) -> Option<f64> {
    let t = s.trim().trim_end_matches('\0').trim().to_ascii_lowercase();
    match t.as_str() {
        "nan" | "-nan" => Some(f64::NAN),
        "inf" | "+inf" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        _ => t.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodata_strings() {
        assert_eq!(parse_nodata("0"), Some(0.0));
        assert_eq!(parse_nodata("-9999\0"), Some(-9999.0));
        assert!(parse_nodata("nan").is_some_and(f64::is_nan));
        assert_eq!(parse_nodata("-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_nodata("abc"), None);
    }
}

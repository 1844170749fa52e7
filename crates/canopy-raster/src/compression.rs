//! TIFF compression schemes and the tag numbers shared by the reader and the writer.

use std::fmt;

/// A TIFF `Compression` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// 1: no compression.
    None,
    /// 5: LZW.
    Lzw,
    /// 8 (or the obsolete 32946): Deflate / zlib.
    Deflate,
    /// 32773: PackBits run-length encoding.
    PackBits,
    /// 50000: Zstandard.
    Zstd,
    /// 7: JPEG ("new-style", TIFF Technical Note 2).
    Jpeg,
    /// 6: old-style JPEG (TIFF 6.0 section 22), obsolete and not decoded.
    OldJpeg,
    /// 50001: WebP.
    WebP,
    /// 34887: LERC.
    Lerc,
    /// Any other code.
    Other(u16),
}

impl Compression {
    /// The scheme for a TIFF compression code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => Compression::None,
            5 => Compression::Lzw,
            8 | 32946 => Compression::Deflate,
            32773 => Compression::PackBits,
            50000 => Compression::Zstd,
            7 => Compression::Jpeg,
            6 => Compression::OldJpeg,
            50001 => Compression::WebP,
            34887 => Compression::Lerc,
            c => Compression::Other(c),
        }
    }

    /// The TIFF code written for this scheme.
    pub fn code(self) -> u16 {
        match self {
            Compression::None => 1,
            Compression::Lzw => 5,
            Compression::Deflate => 8,
            Compression::PackBits => 32773,
            Compression::Zstd => 50000,
            Compression::Jpeg => 7,
            Compression::OldJpeg => 6,
            Compression::WebP => 50001,
            Compression::Lerc => 34887,
            Compression::Other(c) => c,
        }
    }

    /// Lower-case name as in rasterio's profile (`none`, `lzw`, `deflate`, ...).
    pub fn name(self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Lzw => "lzw".into(),
            Compression::Deflate => "deflate".into(),
            Compression::PackBits => "packbits".into(),
            Compression::Zstd => "zstd".into(),
            Compression::Jpeg => "jpeg".into(),
            Compression::OldJpeg => "old-style jpeg".into(),
            Compression::WebP => "webp".into(),
            Compression::Lerc => "lerc".into(),
            Compression::Other(c) => format!("code {c}"),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

pub mod tag {
    //! TIFF tag numbers used by canopy beyond the baseline ones the `tiff` crate names.
    #![allow(missing_docs)]
    pub const MODEL_PIXEL_SCALE: u16 = 33550;
    pub const MODEL_TIEPOINT: u16 = 33922;
    pub const MODEL_TRANSFORMATION: u16 = 34264;
    pub const GDAL_METADATA: u16 = 42112;
    pub const GDAL_NODATA: u16 = 42113;
    /// GDAL's LercParameters: LERC version, additional compression (0 none, 1 Deflate, 2 ZSTD).
    pub const LERC_PARAMETERS: u16 = 50674;
}

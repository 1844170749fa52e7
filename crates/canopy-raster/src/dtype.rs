//! Sample types: the closed set of numeric types a GeoTIFF band can hold here.

use std::fmt;

/// The numeric type of a band's samples.
///
/// Names follow rasterio/numpy (`uint8`, `int16`, `float32`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// 32-bit IEEE float.
    F32,
    /// 64-bit IEEE float.
    F64,
}

impl DataType {
    /// Bytes per sample.
    pub fn size(self) -> usize {
        match self {
            DataType::U8 | DataType::I8 => 1,
            DataType::U16 | DataType::I16 => 2,
            DataType::U32 | DataType::I32 | DataType::F32 => 4,
            DataType::F64 => 8,
        }
    }

    /// rasterio/numpy name: `uint8`, `int8`, `uint16`, `int16`, `uint32`, `int32`, `float32`, `float64`.
    pub fn name(self) -> &'static str {
        match self {
            DataType::U8 => "uint8",
            DataType::I8 => "int8",
            DataType::U16 => "uint16",
            DataType::I16 => "int16",
            DataType::U32 => "uint32",
            DataType::I32 => "int32",
            DataType::F32 => "float32",
            DataType::F64 => "float64",
        }
    }

    /// Whether samples are IEEE floats.
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }

    /// TIFF `SampleFormat` code: 1 unsigned, 2 signed, 3 float.
    pub fn sample_format(self) -> u16 {
        match self {
            DataType::U8 | DataType::U16 | DataType::U32 => 1,
            DataType::I8 | DataType::I16 | DataType::I32 => 2,
            DataType::F32 | DataType::F64 => 3,
        }
    }

    /// TIFF `BitsPerSample`.
    pub fn bits(self) -> u16 {
        (self.size() * 8) as u16
    }

    /// The type for a TIFF `(SampleFormat, BitsPerSample)` pair, if it is one of ours.
    pub fn from_tiff(sample_format: u16, bits: u16) -> Option<DataType> {
        Some(match (sample_format, bits) {
            (1, 8) => DataType::U8,
            (2, 8) => DataType::I8,
            (1, 16) => DataType::U16,
            (2, 16) => DataType::I16,
            (1, 32) => DataType::U32,
            (2, 32) => DataType::I32,
            (3, 32) => DataType::F32,
            (3, 64) => DataType::F64,
            _ => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can hold raster samples: `u8`, `i8`, `u16`, `i16`, `u32`, `i32`, `f32`, `f64`.
///
/// Sealed: the set matches [`DataType`].
pub trait Sample:
    sealed::Sealed
    + bytemuck::Pod
    + Copy
    + Default
    + PartialEq
    + PartialOrd
    + Send
    + Sync
    + fmt::Debug
    + 'static
{
    /// The matching [`DataType`].
    const DTYPE: DataType;
    /// Lossless for every type but `u32`/`i32` beyond 2^53 (impossible) and `f64` itself.
    fn to_f64(self) -> f64;
    /// Converts with rounding to nearest and saturation for integer types (NaN becomes 0);
    /// float types convert as `as` does.
    fn from_f64(v: f64) -> Self;
    /// Decodes one sample from little-endian bytes (`b.len() == size`).
    fn from_le_slice(b: &[u8]) -> Self;
    /// Appends the little-endian bytes of this sample.
    fn extend_le(self, out: &mut Vec<u8>);
    /// Reverses the byte order (big-endian <-> little-endian).
    fn swap_bytes(self) -> Self;
}

macro_rules! impl_sample {
    ($t:ty, $dt:expr, $n:expr, int) => {
        impl sealed::Sealed for $t {}
        impl Sample for $t {
            const DTYPE: DataType = $dt;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                // `as` saturates and maps NaN to 0.
                v.round() as $t
            }
            fn from_le_slice(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                <$t>::from_le_bytes(a)
            }
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn swap_bytes(self) -> Self {
                <$t>::swap_bytes(self)
            }
        }
    };
    ($t:ty, $dt:expr, $n:expr, float) => {
        impl sealed::Sealed for $t {}
        impl Sample for $t {
            const DTYPE: DataType = $dt;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn from_le_slice(b: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(&b[..$n]);
                <$t>::from_le_bytes(a)
            }
            fn extend_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn swap_bytes(self) -> Self {
                <$t>::from_bits(self.to_bits().swap_bytes())
            }
        }
    };
}

impl_sample!(u8, DataType::U8, 1, int);
impl_sample!(i8, DataType::I8, 1, int);
impl_sample!(u16, DataType::U16, 2, int);
impl_sample!(i16, DataType::I16, 2, int);
impl_sample!(u32, DataType::U32, 4, int);
impl_sample!(i32, DataType::I32, 4, int);
impl_sample!(f32, DataType::F32, 4, float);
impl_sample!(f64, DataType::F64, 8, float);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_tiff_round_trips_every_type() {
        for dt in [
            DataType::U8,
            DataType::I8,
            DataType::U16,
            DataType::I16,
            DataType::U32,
            DataType::I32,
            DataType::F32,
            DataType::F64,
        ] {
            assert_eq!(DataType::from_tiff(dt.sample_format(), dt.bits()), Some(dt));
        }
        assert_eq!(DataType::from_tiff(1, 64), None);
        assert_eq!(DataType::from_tiff(3, 16), None);
    }

    #[test]
    fn from_f64_rounds_and_saturates() {
        assert_eq!(u8::from_f64(300.0), 255);
        assert_eq!(u8::from_f64(-3.0), 0);
        assert_eq!(i16::from_f64(2.5), 3);
        assert_eq!(u16::from_f64(f64::NAN), 0);
        assert!(f32::from_f64(f64::NAN).is_nan());
    }
}

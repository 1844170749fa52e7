//! A small reader for NumPy `.npy` files (format versions 1, 2 and 3), enough for eo-learn
//! EOPatch folders without pulling in candle.
//!
//! Supported: C-order (row-major) arrays of little-endian or single-byte dtypes
//! `f2 f4 f8 i1 u1 b1 i2 u2 i4 u4 i8 u8`. Every value is converted to `f64`
//! ([`NpyArray::to_f32`] gives `f32`); bools become 0/1. Fortran-order arrays, big-endian
//! data, structured dtypes and object arrays are rejected with an error naming the file and
//! what to do (re-save with `np.save(path, np.ascontiguousarray(a, dtype="<f4"))`).
//!
//! # References
//! The format is specified in NumPy's `numpy/lib/format.py` (NEP 1).

use std::path::Path;

use ndarray::{ArrayD, IxDyn};

use crate::{Error, Result};

/// The element type of a `.npy` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpyDtype {
    /// `bool` (`|b1`).
    Bool,
    /// `uint8`.
    U8,
    /// `int8`.
    I8,
    /// `uint16`.
    U16,
    /// `int16`.
    I16,
    /// `uint32`.
    U32,
    /// `int32`.
    I32,
    /// `uint64`.
    U64,
    /// `int64`.
    I64,
    /// `float16`.
    F16,
    /// `float32`.
    F32,
    /// `float64`.
    F64,
}

impl NpyDtype {
    fn parse(descr: &str) -> Option<NpyDtype> {
        let (order, code) = descr.split_at(1.min(descr.len()));
        let one_byte = matches!(code, "b1" | "u1" | "i1");
        if !(order == "<" || (order == "|" && one_byte) || (order == "=" && one_byte)) {
            return None;
        }
        Some(match code {
            "b1" => NpyDtype::Bool,
            "u1" => NpyDtype::U8,
            "i1" => NpyDtype::I8,
            "u2" => NpyDtype::U16,
            "i2" => NpyDtype::I16,
            "u4" => NpyDtype::U32,
            "i4" => NpyDtype::I32,
            "u8" => NpyDtype::U64,
            "i8" => NpyDtype::I64,
            "f2" => NpyDtype::F16,
            "f4" => NpyDtype::F32,
            "f8" => NpyDtype::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            NpyDtype::Bool | NpyDtype::U8 | NpyDtype::I8 => 1,
            NpyDtype::U16 | NpyDtype::I16 | NpyDtype::F16 => 2,
            NpyDtype::U32 | NpyDtype::I32 | NpyDtype::F32 => 4,
            NpyDtype::U64 | NpyDtype::I64 | NpyDtype::F64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> f64 {
        let a2 = || [b[0], b[1]];
        let a4 = || [b[0], b[1], b[2], b[3]];
        let a8 = || [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        match self {
            NpyDtype::Bool => f64::from(u8::from(b[0] != 0)),
            NpyDtype::U8 => f64::from(b[0]),
            NpyDtype::I8 => f64::from(b[0] as i8),
            NpyDtype::U16 => f64::from(u16::from_le_bytes(a2())),
            NpyDtype::I16 => f64::from(i16::from_le_bytes(a2())),
            NpyDtype::U32 => f64::from(u32::from_le_bytes(a4())),
            NpyDtype::I32 => f64::from(i32::from_le_bytes(a4())),
            NpyDtype::U64 => u64::from_le_bytes(a8()) as f64,
            NpyDtype::I64 => i64::from_le_bytes(a8()) as f64,
            NpyDtype::F16 => f16_to_f64(u16::from_le_bytes(a2())),
            NpyDtype::F32 => f64::from(f32::from_le_bytes(a4())),
            NpyDtype::F64 => f64::from_le_bytes(a8()),
        }
    }
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f64::from(h & 0x3ff);
    sign * match exp {
        0 => frac * 2f64.powi(-24),
        31 if frac == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// A decoded `.npy` array: its dtype and its values as `f64`.
///
/// # Shapes
/// `data` has the file's shape, C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The dtype in the file.
    pub dtype: NpyDtype,
    /// The values.
    pub data: ArrayD<f64>,
}

impl NpyArray {
    /// The file's shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The values as `f32`.
    pub fn to_f32(&self) -> ArrayD<f32> {
        self.data.mapv(|v| v as f32)
    }
}

/// Largest array [`read_npy`] accepts, in bytes of file data (4 GiB).
pub const MAX_NPY_BYTES: u64 = 1 << 32;

/// Reads a `.npy` file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::Format`] for a bad magic string,
/// header, unsupported dtype, Fortran order, a size above [`MAX_NPY_BYTES`] or a truncated
/// data section.
pub fn read_npy(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_npy(&bytes).map_err(|message| Error::Format {
        path: path.to_path_buf(),
        message,
    })
}

/// Decodes the bytes of a `.npy` file; the error is a message for [`Error::Format`].
pub(crate) fn parse_npy(bytes: &[u8]) -> std::result::Result<NpyArray, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (missing the \\x93NUMPY magic string)".into());
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => {
            return Err(format!(
                ".npy format version {v} is not supported (1, 2, 3 are)"
            ))
        }
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let descr = dict_value(header, "descr").ok_or("the .npy header has no 'descr'")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let fortran =
        dict_value(header, "fortran_order").ok_or("the .npy header has no 'fortran_order'")?;
    if fortran.trim().starts_with("True") {
        return Err("Fortran-order arrays are not supported; re-save with \
                    np.save(path, np.ascontiguousarray(a))"
            .into());
    }
    let dtype = NpyDtype::parse(descr).ok_or_else(|| {
        format!(
            "dtype {descr:?} is not supported (little-endian f2/f4/f8, i1/u1/b1, i2/u2, i4/u4, \
             i8/u8 are); convert with a.astype('<f4')"
        )
    })?;
    let shape_text = dict_value(header, "shape").ok_or("the .npy header has no 'shape'")?;
    let shape_text = shape_text
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy 'shape' is not a tuple")?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dimension {s:?} in 'shape'"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("the .npy shape overflows")?;
    let nbytes = count
        .checked_mul(dtype.size())
        .filter(|&n| n as u64 <= MAX_NPY_BYTES)
        .ok_or_else(|| format!("the array {shape:?} exceeds the {MAX_NPY_BYTES}-byte limit"))?;
    let data = bytes
        .get(start + header_len..start + header_len + nbytes)
        .ok_or_else(|| {
            format!(
                "truncated data: shape {shape:?} of {descr} needs {nbytes} bytes, the file has {}",
                bytes.len().saturating_sub(start + header_len)
            )
        })?;
    let values: Vec<f64> = data
        .chunks_exact(dtype.size())
        .map(|c| dtype.decode(c))
        .collect();
    let data = ArrayD::from_shape_vec(IxDyn(&shape), values).map_err(|e| e.to_string())?;
    Ok(NpyArray { dtype, data })
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}':");
    let pat2 = format!("\"{key}\":");
    let at = header
        .find(&pat1)
        .map(|i| i + pat1.len())
        .or_else(|| header.find(&pat2).map(|i| i + pat2.len()))?;
    let rest = &header[at..];
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(&rest[..i]),
            _ => {}
        }
    }
    Some(rest)
}

/// Encodes a little-endian `f32` array as `.npy` (version 1) bytes: for tests and fixtures.
pub fn encode_npy_f32(shape: &[usize], values: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(h: &str, data: &[u8]) -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn round_trip_f32() -> std::result::Result<(), String> {
        let b = encode_npy_f32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]);
        let a = parse_npy(&b)?;
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.data[[1, 2]], 6.5);
        Ok(())
    }

    #[test]
    fn dtypes_and_errors() -> std::result::Result<(), String> {
        let h = "{'descr': '<u2', 'fortran_order': False, 'shape': (3,), }\n";
        let a = parse_npy(&with_header(h, &[1, 0, 0, 1, 255, 255]))?;
        assert_eq!(a.data.as_slice(), Some(&[1.0, 256.0, 65535.0][..]));
        let h = "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }\n";
        assert_eq!(parse_npy(&with_header(h, &[0, 7]))?.data[[1]], 1.0);
        let h = "{'descr': '<f2', 'fortran_order': False, 'shape': (2,), }\n";
        // 1.0 = 0x3c00, -2.5 = 0xc100
        let a = parse_npy(&with_header(h, &[0x00, 0x3c, 0x00, 0xc1]))?;
        assert_eq!(a.data.as_slice(), Some(&[1.0, -2.5][..]));
        let h = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n";
        let e = parse_npy(&with_header(h, &[0; 4]))
            .err()
            .unwrap_or_default();
        assert!(e.contains("Fortran"), "{e}");
        let h = "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n";
        assert!(parse_npy(&with_header(h, &[0; 4])).is_err());
        let h = "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n";
        assert!(parse_npy(&with_header(h, &[0; 8])).is_err());
        let h = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n";
        let e = parse_npy(&with_header(h, &[0; 8]))
            .err()
            .unwrap_or_default();
        assert!(e.contains("truncated"), "{e}");
        let h = "{'descr': '<f8', 'fortran_order': False, 'shape': (), }\n";
        assert_eq!(
            parse_npy(&with_header(h, &2.5f64.to_le_bytes()))?
                .data
                .len(),
            1
        );
        Ok(())
    }
}

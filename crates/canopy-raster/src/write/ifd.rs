//! Serialising the image file directory (IFD) in classic TIFF or BigTIFF form, little-endian.

/// A tag value with its TIFF field type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// SHORT (3).
    Short(Vec<u16>),
    /// LONG (4).
    Long(Vec<u32>),
    /// Offsets and byte counts: LONG (4) in classic TIFF, LONG8 (16) in BigTIFF.
    Offsets(Vec<u64>),
    /// DOUBLE (12).
    Double(Vec<f64>),
    /// ASCII (2); a NUL terminator is added.
    Ascii(String),
}

impl Value {
    fn type_code(&self, big: bool) -> u16 {
        match self {
            Value::Short(_) => 3,
            Value::Long(_) => 4,
            Value::Offsets(_) if big => 16,
            Value::Offsets(_) => 4,
            Value::Double(_) => 12,
            Value::Ascii(_) => 2,
        }
    }

    fn count(&self) -> usize {
        match self {
            Value::Short(v) => v.len(),
            Value::Long(v) => v.len(),
            Value::Offsets(v) => v.len(),
            Value::Double(v) => v.len(),
            Value::Ascii(s) => s.len() + 1,
        }
    }

    /// The value's bytes; `None` when an offset does not fit in classic TIFF's 32 bits.
    fn bytes(&self, big: bool) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            Value::Short(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Long(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Offsets(v) if big => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Offsets(v) => {
                for &x in v {
                    out.extend_from_slice(&u32::try_from(x).ok()?.to_le_bytes());
                }
            }
            Value::Double(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Value::Ascii(s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
        Some(out)
    }
}

/// Serialises one IFD (with `next IFD = 0`) placed at file offset `at`; the values that do
/// not fit in an entry follow the IFD, each starting on an even offset (TIFF 6.0, section 2).
/// `entries` must be sorted by tag. Returns `None` when classic TIFF cannot address the data.
pub(crate) fn serialize(entries: &[(u16, Value)], at: u64, big: bool) -> Option<Vec<u8>> {
    let (count_size, entry_size, inline, next_size) = if big {
        (8usize, 20usize, 8usize, 8usize)
    } else {
        (2, 12, 4, 4)
    };
    let ifd_len = count_size + entries.len() * entry_size + next_size;
    let mut head = Vec::with_capacity(ifd_len);
    let mut extra: Vec<u8> = Vec::new();
    if big {
        head.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    } else {
        head.extend_from_slice(&u16::try_from(entries.len()).ok()?.to_le_bytes());
    }
    for (tag, value) in entries {
        let bytes = value.bytes(big)?;
        head.extend_from_slice(&tag.to_le_bytes());
        head.extend_from_slice(&value.type_code(big).to_le_bytes());
        if big {
            head.extend_from_slice(&(value.count() as u64).to_le_bytes());
        } else {
            head.extend_from_slice(&u32::try_from(value.count()).ok()?.to_le_bytes());
        }
        if bytes.len() <= inline {
            let mut field = bytes;
            field.resize(inline, 0);
            head.extend_from_slice(&field);
        } else {
            if extra.len() % 2 == 1 {
                extra.push(0);
            }
            let off = at + ifd_len as u64 + extra.len() as u64;
            if big {
                head.extend_from_slice(&off.to_le_bytes());
            } else {
                head.extend_from_slice(&u32::try_from(off).ok()?.to_le_bytes());
            }
            extra.extend_from_slice(&bytes);
        }
    }
    head.extend_from_slice(&vec![0u8; next_size]);
    head.extend_from_slice(&extra);
    if !big {
        u32::try_from(at + head.len() as u64).ok()?;
    }
    Some(head)
}

/// The file header pointing at the IFD at `ifd_offset`: `II*\0` + u32 (classic, TIFF 6.0
/// section 2) or `II+\0` + 8 + 0 + u64 (BigTIFF).
pub(crate) fn header(ifd_offset: u64, big: bool) -> Option<Vec<u8>> {
    let mut h = b"II".to_vec();
    if big {
        h.extend_from_slice(&43u16.to_le_bytes());
        h.extend_from_slice(&8u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&ifd_offset.to_le_bytes());
    } else {
        h.extend_from_slice(&42u16.to_le_bytes());
        h.extend_from_slice(&u32::try_from(ifd_offset).ok()?.to_le_bytes());
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_entry_inlines_small_values_and_points_to_large_ones() {
        let entries = vec![
            (256u16, Value::Long(vec![7])),
            (258, Value::Short(vec![8, 8, 8])),
        ];
        let b = serialize(&entries, 100, false).unwrap();
        assert_eq!(&b[0..2], &2u16.to_le_bytes());
        // First entry: tag 256, type 4, count 1, value 7.
        assert_eq!(&b[2..14], &[0, 1, 4, 0, 1, 0, 0, 0, 7, 0, 0, 0]);
        // Second entry points right after the IFD (2 + 24 + 4 = 30 bytes).
        assert_eq!(&b[22..26], &(130u32).to_le_bytes());
        assert_eq!(&b[30..36], &[8, 0, 8, 0, 8, 0]);
        assert!(serialize(&[(273, Value::Offsets(vec![1 << 33]))], 8, false).is_none());
        assert!(serialize(&[(273, Value::Offsets(vec![1 << 33]))], 8, true).is_some());
    }
}

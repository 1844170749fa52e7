//! The decoded-sample checksum shared by `canopy info --checksum` and the conformance tests.

use ndarray::Array3;
use sha2::{Digest, Sha256};

use crate::Sample;

/// SHA-256 of samples as little-endian bytes in `(band, row, col)` order.
pub fn sha256_le<T: Sample>(data: &Array3<T>) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    for &v in data.iter() {
        v.extend_le(&mut buf);
        if buf.len() >= 64 * 1024 - 8 {
            h.update(&buf);
            buf.clear();
        }
    }
    h.update(&buf);
    h.finalize().into()
}

/// Lower-case hexadecimal of a digest.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

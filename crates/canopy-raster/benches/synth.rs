//! Deterministic synthetic imagery shared by the GeoTIFF benches and the I/O bench example:
//! the field of `tools/bench_raster_vs_rasterio.py` / the rasterio peer script (smooth
//! sinusoids, reflectance-like 0..10000 range) plus about 6 bits of noise from splitmix64,
//! so Deflate sees realistic data (neither random nor constant).

use ndarray::Array3;

/// `(bands, height, width)` `u16` samples; the same `seed` gives the same samples.
pub fn sensor_like_u16(bands: usize, height: usize, width: usize, seed: u64) -> Array3<u16> {
    let mut state = seed;
    let mut next = move || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut out = Array3::<u16>::zeros((bands, height, width));
    for (b, mut band) in out.outer_iter_mut().enumerate() {
        let bf = b as f32;
        for (r, mut row) in band.outer_iter_mut().enumerate() {
            let y = r as f32;
            let cy = (y / (230.0 + 25.0 * bf)).cos();
            for (c, v) in row.iter_mut().enumerate() {
                let x = c as f32;
                let f = (x / (180.0 + 40.0 * bf)).sin() * cy
                    + 0.5 * ((x + y) / (57.0 + 11.0 * bf)).sin();
                let noise = (next() >> 58) as f32; // 0..63
                let s = 3000.0 + 1500.0 * bf + 1200.0 * f + noise;
                *v = s.clamp(0.0, 65535.0) as u16;
            }
        }
    }
    out
}

//! Decoding PNG / JPEG files into `(C, H, W)` arrays, the alpha channel split off.

use std::path::Path;

use image::DynamicImage;
use ndarray::{Array2, Array3, Axis};

use crate::{Error, Result};

/// A decoded picture: the colour bands `(C, H, W)` and, when the file has an alpha channel,
/// the pixels whose alpha is not 0.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub(crate) bands: Array3<f32>,
    pub(crate) valid: Option<Array2<bool>>,
}

/// Reads a PNG or JPEG (8 or 16 bits per sample, grey or colour, with or without alpha).
pub(crate) fn read_picture(path: &Path) -> Result<Decoded> {
    let file_err = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    let reader = image::io::Reader::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = reader.with_guessed_format().map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let img = reader
        .decode()
        .map_err(|e| file_err(format!("cannot decode the image: {e}")))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let has_alpha = img.color().has_alpha();
    let channels = usize::from(img.color().channel_count());
    let samples: Vec<f32> = match img {
        DynamicImage::ImageLuma8(b) => to_f32(b.into_raw()),
        DynamicImage::ImageLumaA8(b) => to_f32(b.into_raw()),
        DynamicImage::ImageRgb8(b) => to_f32(b.into_raw()),
        DynamicImage::ImageRgba8(b) => to_f32(b.into_raw()),
        DynamicImage::ImageLuma16(b) => to_f32(b.into_raw()),
        DynamicImage::ImageLumaA16(b) => to_f32(b.into_raw()),
        DynamicImage::ImageRgb16(b) => to_f32(b.into_raw()),
        DynamicImage::ImageRgba16(b) => to_f32(b.into_raw()),
        DynamicImage::ImageRgb32F(b) => b.into_raw(),
        DynamicImage::ImageRgba32F(b) => b.into_raw(),
        other => {
            return Err(file_err(format!(
                "unsupported pixel type {:?}",
                other.color()
            )))
        }
    };
    // Interleaved (H, W, C) -> planar (C, H, W).
    let hwc = Array3::from_shape_vec((h, w, channels), samples)
        .map_err(|e| file_err(format!("decoded size does not match {w} x {h}: {e}")))?;
    let chw = hwc.permuted_axes([2, 0, 1]);
    let colour = if has_alpha { channels - 1 } else { channels };
    let valid = has_alpha.then(|| chw.index_axis(Axis(0), colour).mapv(|a| a != 0.0));
    let bands = chw
        .slice_axis(Axis(0), ndarray::Slice::from(0..colour))
        .as_standard_layout()
        .into_owned();
    Ok(Decoded { bands, valid })
}

fn to_f32<T: Into<f32> + Copy>(v: Vec<T>) -> Vec<f32> {
    v.into_iter().map(Into::into).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgba_png_drops_alpha_and_reports_transparent_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        let mut img = image::RgbaImage::new(3, 2);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let a = if x == 1 && y == 0 { 0 } else { 255 };
            *p = image::Rgba([x as u8 * 10, y as u8 * 20, 7, a]);
        }
        img.save(&path).unwrap();
        let d = read_picture(&path).unwrap();
        assert_eq!(d.bands.dim(), (3, 2, 3));
        assert_eq!(d.bands[[0, 1, 2]], 20.0);
        assert_eq!(d.bands[[1, 1, 2]], 20.0);
        assert_eq!(d.bands[[2, 0, 0]], 7.0);
        let valid = d.valid.unwrap();
        assert_eq!(valid.iter().filter(|&&v| !v).count(), 1);
        assert!(!valid[[0, 1]]);
    }

    #[test]
    fn rgb_png_has_no_alpha() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        image::RgbImage::new(4, 4).save(&path).unwrap();
        let d = read_picture(&path).unwrap();
        assert_eq!(d.bands.dim(), (3, 4, 4));
        assert!(d.valid.is_none());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = read_picture(&path).unwrap_err();
        assert!(err.to_string().contains("broken.png"), "{err}");
    }
}

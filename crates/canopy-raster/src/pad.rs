//! Padding `(C, H, W)` arrays, for models that need fixed sizes or sizes that are multiples of
//! their total downsampling (16 or 32 for a U-Net), and cropping the padding off again.
//!
//! ```
//! use canopy_raster::pad::{pad_to_multiple, PadMode};
//! use ndarray::Array3;
//! # fn main() -> canopy_raster::Result<()> {
//! let image = Array3::from_shape_fn((3, 50, 70), |(c, y, x)| (c + y + x) as f32);
//! let (padded, padding) = pad_to_multiple(image.view(), 32, PadMode::Reflect)?;
//! assert_eq!(padded.shape(), [3, 64, 96]);
//! // ... run the model on `padded` ...
//! assert_eq!(padding.crop(padded.view())?, image);
//! # Ok(())
//! # }
//! ```

use ndarray::{s, Array3, ArrayView3};

use crate::{Error, Result};

/// How padded pixels are filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PadMode {
    /// Mirror without repeating the edge pixel: `[a b c | b a]` (numpy/PyTorch `reflect`).
    /// Pads longer than the axis keep reflecting back and forth (the periodic mirror extension
    /// numpy produces); an axis of length 1 is repeated. PyTorch instead refuses pads that are
    /// not smaller than the axis.
    Reflect,
    /// Repeat the edge pixel: `[a b c | c c]` (numpy `edge`, PyTorch `replicate`).
    Replicate,
    /// Fill with `T::default()`, zero for numbers.
    Zero,
}

/// Pixels added on each side of the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// The padding on the bottom and right that brings `height x width` up to multiples of
    /// `multiple`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `multiple` is 0.
    pub fn to_multiple(height: usize, width: usize, multiple: usize) -> Result<Self> {
        if multiple == 0 {
            return Err(Error::invalid(
                "cannot pad to a multiple of 0; use 1 for no padding",
            ));
        }
        Ok(Padding {
            top: 0,
            bottom: height.div_ceil(multiple) * multiple - height,
            left: 0,
            right: width.div_ceil(multiple) * multiple - width,
        })
    }

    /// Whether nothing is added.
    pub fn is_zero(&self) -> bool {
        *self == Padding::default()
    }

    /// The shape `(C, H, W)` becomes once padded.
    pub fn padded_shape(&self, shape: (usize, usize, usize)) -> (usize, usize, usize) {
        let (c, h, w) = shape;
        (c, self.top + h + self.bottom, self.left + w + self.right)
    }

    /// Removes this padding from a padded array (or from a prediction made on it).
    ///
    /// # Shapes
    /// `(C, top + H + bottom, left + W + right)` -> `(C, H, W)`.
    ///
    /// # Errors
    /// [`Error::Shape`] when the array is not larger than the padding along an axis.
    pub fn crop<'a, T>(&self, padded: ArrayView3<'a, T>) -> Result<ArrayView3<'a, T>> {
        let (_, h, w) = padded.dim();
        if h < self.top + self.bottom || w < self.left + self.right {
            return Err(Error::Shape {
                context: "Padding::crop".into(),
                expected: format!(
                    "(C, at least {}, at least {})",
                    self.top + self.bottom,
                    self.left + self.right
                ),
                actual: format!(
                    "{:?}; crop the array this padding was made for",
                    padded.shape()
                ),
            });
        }
        Ok(padded.slice_move(s![.., self.top..h - self.bottom, self.left..w - self.right]))
    }
}

/// Where output index `i` (relative to the array start, may be negative or past `n`) reads
/// from, for a non-empty axis of length `n`.
fn source(i: isize, n: usize, mode: PadMode) -> usize {
    let last = n.saturating_sub(1) as isize;
    match mode {
        PadMode::Replicate | PadMode::Zero => i.clamp(0, last) as usize,
        PadMode::Reflect => {
            if n <= 1 {
                return 0;
            }
            let period = 2 * last;
            let m = i.rem_euclid(period);
            (if m <= last { m } else { period - m }) as usize
        }
    }
}

/// Pads the spatial axes of a `(C, H, W)` array.
///
/// # Shapes
/// `(C, H, W)` -> `(C, top + H + bottom, left + W + right)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when an axis of length 0 would need [`PadMode::Reflect`] or
/// [`PadMode::Replicate`] padding (there is nothing to copy).
pub fn pad<T: Copy + Default>(
    data: ArrayView3<T>,
    padding: Padding,
    mode: PadMode,
) -> Result<Array3<T>> {
    let (c, h, w) = data.dim();
    if mode != PadMode::Zero
        && ((h == 0 && padding.top + padding.bottom > 0)
            || (w == 0 && padding.left + padding.right > 0))
    {
        return Err(Error::invalid(format!(
            "cannot pad an empty {h}x{w} array with {mode:?}; use PadMode::Zero"
        )));
    }
    let (_, ph, pw) = padding.padded_shape((c, h, w));
    let mut out = Array3::from_elem((c, ph, pw), T::default());
    if h == 0 || w == 0 {
        return Ok(out);
    }
    // Source column of every output column, computed once.
    let cols: Vec<usize> = (0..pw)
        .map(|x| source(x as isize - padding.left as isize, w, mode))
        .collect();
    for (mut plane_out, plane_in) in out.outer_iter_mut().zip(data.outer_iter()) {
        for (y, mut row_out) in plane_out.outer_iter_mut().enumerate() {
            let yi = y as isize - padding.top as isize;
            if mode == PadMode::Zero && (yi < 0 || yi >= h as isize) {
                continue;
            }
            let row_in = plane_in.row(source(yi, h, mode));
            for (x, (o, &sx)) in row_out.iter_mut().zip(&cols).enumerate() {
                let xi = x as isize - padding.left as isize;
                if mode == PadMode::Zero && (xi < 0 || xi >= w as isize) {
                    continue;
                }
                if let Some(&v) = row_in.get(sx) {
                    *o = v;
                }
            }
        }
    }
    Ok(out)
}

/// Pads the bottom and right of a `(C, H, W)` array so that `H` and `W` become multiples of
/// `multiple`; returns the padding to [crop](Padding::crop) off the model's output.
///
/// # Shapes
/// `(C, H, W)` -> `(C, ceil(H / m) m, ceil(W / m) m)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when `multiple` is 0, or as [`pad`].
pub fn pad_to_multiple<T: Copy + Default>(
    data: ArrayView3<T>,
    multiple: usize,
    mode: PadMode,
) -> Result<(Array3<T>, Padding)> {
    let (_, h, w) = data.dim();
    let padding = Padding::to_multiple(h, w, multiple)?;
    Ok((pad(data, padding, mode)?, padding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    fn pad1(v: &[i32], before: usize, after: usize, mode: PadMode) -> Result<Vec<i32>> {
        let a = Array1::from(v.to_vec()).into_shape_with_order((1, 1, v.len()));
        let a = a.map_err(|e| Error::invalid(e.to_string()))?;
        let p = Padding {
            left: before,
            right: after,
            ..Padding::default()
        };
        Ok(pad(a.view(), p, mode)?.iter().copied().collect())
    }

    #[test]
    fn one_dimensional_cases_match_numpy() -> Result<()> {
        // np.pad([1, 2, 3, 4, 5], (2, 3), 'reflect') from the numpy docs.
        assert_eq!(
            pad1(&[1, 2, 3, 4, 5], 2, 3, PadMode::Reflect)?,
            [3, 2, 1, 2, 3, 4, 5, 4, 3, 2]
        );
        // np.pad([1, 2, 3, 4, 5], (2, 3), 'edge').
        assert_eq!(
            pad1(&[1, 2, 3, 4, 5], 2, 3, PadMode::Replicate)?,
            [1, 1, 1, 2, 3, 4, 5, 5, 5, 5]
        );
        assert_eq!(pad1(&[1, 2, 3], 1, 2, PadMode::Zero)?, [0, 1, 2, 3, 0, 0]);
        // Pads longer than the axis reflect back and forth.
        assert_eq!(
            pad1(&[1, 2, 3], 5, 5, PadMode::Reflect)?,
            [2, 1, 2, 3, 2, 1, 2, 3, 2, 1, 2, 3, 2]
        );
        assert_eq!(pad1(&[7], 2, 3, PadMode::Reflect)?, [7; 6]);
        assert_eq!(
            pad1(&[1, 2], 3, 3, PadMode::Reflect)?,
            [2, 1, 2, 1, 2, 1, 2, 1]
        );
        Ok(())
    }

    #[test]
    fn two_dimensional_reflect_and_crop() -> Result<()> {
        let a = Array3::from_shape_fn((2, 2, 3), |(c, y, x)| (c * 100 + y * 10 + x) as i32);
        let p = Padding {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        };
        let out = pad(a.view(), p, PadMode::Reflect)?;
        assert_eq!(out.shape(), [2, 3, 5]);
        // Row -1 reflects to row 1; columns 3, 4 reflect to 1, 0.
        assert_eq!(out.slice(s![0, 0, ..]).to_vec(), [10, 11, 12, 11, 10]);
        assert_eq!(out.slice(s![1, 2, ..]).to_vec(), [110, 111, 112, 111, 110]);
        assert_eq!(p.crop(out.view())?, a);
        assert!(p.crop(a.slice(s![.., 0..0, ..])).is_err());
        Ok(())
    }

    #[test]
    fn multiples_and_errors() -> Result<()> {
        let a = Array3::<f32>::ones((1, 33, 64));
        let (out, p) = pad_to_multiple(a.view(), 32, PadMode::Zero)?;
        assert_eq!(out.shape(), [1, 64, 64]);
        assert_eq!(
            p,
            Padding {
                top: 0,
                bottom: 31,
                left: 0,
                right: 0
            }
        );
        assert_eq!(out[[0, 40, 3]], 0.0);
        assert!(pad_to_multiple(a.view(), 0, PadMode::Zero).is_err());
        let empty = Array3::<f32>::zeros((1, 0, 4));
        assert!(pad_to_multiple(empty.view(), 3, PadMode::Reflect).is_ok()); // 0 is a multiple
        let p = Padding {
            top: 1,
            ..Padding::default()
        };
        assert!(pad(empty.view(), p, PadMode::Reflect).is_err());
        assert_eq!(pad(empty.view(), p, PadMode::Zero)?.shape(), [1, 1, 4]);
        Ok(())
    }
}

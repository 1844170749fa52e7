//! Rectangular pixel windows.

use crate::{Error, Result};

/// A rectangle of pixels: `width x height` starting at column `col_off`, row `row_off`
/// (rasterio's `Window`, with unsigned offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First column (x).
    pub col_off: usize,
    /// First row (y).
    pub row_off: usize,
    /// Number of columns.
    pub width: usize,
    /// Number of rows.
    pub height: usize,
}

impl Window {
    /// A window of `width x height` pixels at (`col_off`, `row_off`).
    pub fn new(col_off: usize, row_off: usize, width: usize, height: usize) -> Self {
        Window {
            col_off,
            row_off,
            width,
            height,
        }
    }

    /// The window covering a whole `width x height` raster.
    pub fn full(width: usize, height: usize) -> Self {
        Window::new(0, 0, width, height)
    }

    /// One past the last column (saturating: a window reaching past `usize::MAX` ends there).
    pub fn col_end(&self) -> usize {
        self.col_off.saturating_add(self.width)
    }

    /// One past the last row (saturating).
    pub fn row_end(&self) -> usize {
        self.row_off.saturating_add(self.height)
    }

    /// Number of pixels (saturating).
    pub fn area(&self) -> usize {
        self.width.saturating_mul(self.height)
    }

    /// Whether the window has no pixels.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0
    }

    /// The overlap of two windows, `None` when they do not overlap.
    pub fn intersection(&self, other: &Window) -> Option<Window> {
        let c0 = self.col_off.max(other.col_off);
        let r0 = self.row_off.max(other.row_off);
        let c1 = self.col_end().min(other.col_end());
        let r1 = self.row_end().min(other.row_end());
        (c1 > c0 && r1 > r0).then(|| Window::new(c0, r0, c1 - c0, r1 - r0))
    }

    /// Whether `other` lies entirely inside this window.
    pub fn contains(&self, other: &Window) -> bool {
        other.col_off >= self.col_off
            && other.row_off >= self.row_off
            && other.col_end() <= self.col_end()
            && other.row_end() <= self.row_end()
    }

    /// Checks that the window is non-empty and inside a `width x height` raster.
    pub fn check_inside(&self, width: usize, height: usize) -> Result<()> {
        if self.is_empty() {
            return Err(Error::invalid(format!("window {self:?} is empty")));
        }
        if !Window::full(width, height).contains(self) {
            return Err(Error::invalid(format!(
                "window {self:?} reaches outside the {width}x{height} raster (columns {}..{}, rows {}..{}); clip it with `Window::intersection`",
                self.col_off,
                self.col_end(),
                self.row_off,
                self.row_end()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_and_containment() {
        let a = Window::new(0, 0, 10, 10);
        let b = Window::new(5, 8, 10, 10);
        assert_eq!(a.intersection(&b), Some(Window::new(5, 8, 5, 2)));
        assert_eq!(a.intersection(&Window::new(10, 0, 3, 3)), None);
        assert!(a.contains(&Window::new(2, 2, 8, 8)));
        assert!(!a.contains(&b));
        assert!(b.check_inside(15, 18).is_ok());
        assert!(b.check_inside(14, 18).is_err());
        assert!(Window::new(0, 0, 0, 3).check_inside(5, 5).is_err());
        // offsets near usize::MAX must not overflow
        assert!(Window::new(usize::MAX, 0, 2, 2).check_inside(5, 5).is_err());
    }
}

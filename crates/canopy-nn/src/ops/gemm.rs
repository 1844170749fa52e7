//! A bounds-checked, safe entry point to the `gemm` crate's matrix product, for the CPU kernels
//! of this crate.
//!
//! `gemm::gemm` takes raw pointers and strides; this wrapper takes slices, checks that every
//! element the strides can reach lies inside them (and that the destination does not overlap
//! the operands, which `&mut` already guarantees), and only then calls it. canopy-nn has
//! `unsafe` code in three modules only: here; in `cpu` (`par_zeroed`, `par_appended` and its
//! `Appender`: output vectors built from chunks that are zero-filled or written front to back,
//! without a separate zeroing pass); and in `allocator` (glibc's `mallopt`).
//!
//! canopy-nn depends on `gemm` 0.19 with the `x86-v4` feature: it adds AVX-512 micro-kernels,
//! chosen at run time when the CPU has them (safe on CPUs without). Because candle-core uses the
//! same `gemm` version, the feature also speeds up candle's own `matmul` in every canopy build.

use gemm::Parallelism;

/// A dense matrix view: a slice with a row stride and a column stride (in elements).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// Largest linear index a `rows x cols` view with these strides touches, plus one.
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Scalars the kernels multiply.
pub(crate) trait GemmScalar: bytemuck::Pod + Send + Sync + 'static {
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
}

impl GemmScalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

impl GemmScalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}

/// `dst (m x n, row-major with row stride dst_rs) = [dst +] lhs (m x k) · rhs (k x n)`.
///
/// With `accumulate` the product is added to what `dst` holds; otherwise `dst` is overwritten.
/// `threads` > 1 lets gemm split the product over the rayon pool.
///
/// # Errors
/// A message naming the operand whose strides reach outside its slice, or a size mismatch.
pub(crate) fn matmul<T: GemmScalar>(
    dst: &mut [T],
    dst_rs: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    threads: usize,
) -> Result<(), String> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        return Err(format!(
            "gemm: inner sizes differ ({m}x{k} times {}x{n})",
            rhs.rows
        ));
    }
    if extent(m, k, lhs.rs, lhs.cs) > lhs.data.len() {
        return Err(format!("gemm: lhs {m}x{k} reaches outside its buffer"));
    }
    if extent(k, n, rhs.rs, rhs.cs) > rhs.data.len() {
        return Err(format!("gemm: rhs {k}x{n} reaches outside its buffer"));
    }
    if (m > 1 && dst_rs < n) || extent(m, n, dst_rs, 1) > dst.len() {
        return Err(format!("gemm: dst {m}x{n} reaches outside its buffer"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every index the three views can reach was checked above to lie inside its slice;
    // `dst` is a unique borrow, so it cannot alias `lhs` or `rhs`; strides fit in isize because
    // the extents fit in slice lengths.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_plain_transposed_and_accumulated() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut c = vec![0.0; m * n];
        matmul(
            &mut c,
            n,
            Mat::row_major(&a, m, k),
            Mat::row_major(&b, k, n),
            false,
            1,
        )
        .unwrap();
        let err = c
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "{err}");
        // b stored transposed (n x k), read through a transposed view; accumulate twice
        let bt: Vec<f64> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        matmul(
            &mut c,
            n,
            Mat::row_major(&a, m, k),
            Mat::row_major(&bt, n, k).t(),
            true,
            2,
        )
        .unwrap();
        let err = c
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - 2.0 * y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-12, "{err}");
    }

    #[test]
    fn rejects_views_outside_their_buffers() {
        let a = vec![1.0f32; 6];
        let mut c = vec![0.0f32; 4];
        let e = matmul(
            &mut c,
            2,
            Mat::row_major(&a, 2, 4),
            Mat::row_major(&a, 4, 2),
            false,
            1,
        );
        assert!(e.unwrap_err().contains("lhs"));
    }
}

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
    let (m, n) = check(dst.len(), dst_rs, lhs, rhs)?;
    if lhs.cols == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::ZERO);
            }
        }
        return Ok(());
    }
    // SAFETY: `check` verified that every index the views can reach lies inside its slice;
    // `dst` is a unique borrow of initialised values, so it cannot alias `lhs` or `rhs`.
    #[allow(unsafe_code)]
    unsafe {
        product(dst.as_mut_ptr(), dst_rs, lhs, rhs, accumulate, threads)
    };
    Ok(())
}

/// [`matmul`] without `accumulate`, into memory that may be uninitialised: `dst` (m x n,
/// row-major with row stride `dst_rs`) `= lhs · rhs`. Every value of the `m x n` view is
/// written; values between rows (when `dst_rs > n`) are left as they are.
///
/// gemm never reads the destination when it is told not to accumulate (its micro-kernels then
/// store `beta · acc` only, and later depth blocks add to values the first one stored), so a
/// product can fill a fresh buffer without a zero-fill before it.
///
/// # Errors
/// As [`matmul`].
pub(crate) fn matmul_uninit<T: GemmScalar>(
    dst: &mut [std::mem::MaybeUninit<T>],
    dst_rs: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    threads: usize,
) -> Result<(), String> {
    let (m, n) = check(dst.len(), dst_rs, lhs, rhs)?;
    if lhs.cols == 0 {
        for r in 0..m {
            for v in &mut dst[r * dst_rs..r * dst_rs + n] {
                v.write(T::ZERO);
            }
        }
        return Ok(());
    }
    // SAFETY: as in `matmul`; `MaybeUninit<T>` has the layout of `T`, and without
    // `accumulate` gemm only writes the destination (see above).
    #[allow(unsafe_code)]
    unsafe {
        product(
            dst.as_mut_ptr().cast::<T>(),
            dst_rs,
            lhs,
            rhs,
            false,
            threads,
        )
    };
    Ok(())
}

/// Checks the sizes and that every index the three views can reach lies inside its slice
/// (`dst_len` values for the destination); returns `(m, n)`.
fn check<T>(
    dst_len: usize,
    dst_rs: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
) -> Result<(usize, usize), String> {
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
    if (m > 1 && dst_rs < n) || extent(m, n, dst_rs, 1) > dst_len {
        return Err(format!("gemm: dst {m}x{n} reaches outside its buffer"));
    }
    Ok((m, n))
}

/// The call into gemm.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads of initialised values) at every
/// index of the `m x n` view with row stride `dst_rs`, must not overlap the operands, and the
/// views must have passed [`check`].
#[allow(unsafe_code)]
unsafe fn product<T: GemmScalar>(
    dst: *mut T,
    dst_rs: usize,
    lhs: Mat<'_, T>,
    rhs: Mat<'_, T>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the caller's contract; strides fit in isize because the extents fit in slice
    // lengths.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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
    fn uninit_product_writes_every_value_of_its_view_and_nothing_between_rows() {
        let (m, k, n, rs) = (5, 9, 70, 73);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        for (inner, lhs) in [(k, Mat::row_major(&a, m, k)), (0, Mat::row_major(&a, m, 0))] {
            let mut dst = vec![std::mem::MaybeUninit::new(-7.0f64); (m - 1) * rs + n];
            let rhs = Mat::row_major(&b[..inner * n], inner, n);
            matmul_uninit(&mut dst, rs, lhs, rhs, 2).unwrap();
            for r in 0..m {
                for j in 0..rs.min(dst.len() - r * rs) {
                    // SAFETY (test): every value was initialised to -7 above
                    #[allow(unsafe_code)]
                    let got = unsafe { dst[r * rs + j].assume_init() };
                    let expect = match (j < n, inner) {
                        (false, _) => -7.0,
                        (true, 0) => 0.0,
                        (true, _) => want[r * n + j],
                    };
                    assert!(
                        (got - expect).abs() < 1e-12,
                        "row {r} col {j}: {got} vs {expect}"
                    );
                }
            }
        }
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
        // the uninitialised destination is checked the same way: 2 x 2 needs 4 values
        let mut short = vec![std::mem::MaybeUninit::new(0.0f32); 3];
        let e = matmul_uninit(
            &mut short,
            2,
            Mat::row_major(&a, 2, 3),
            Mat::row_major(&a, 3, 2),
            1,
        );
        assert!(e.unwrap_err().contains("dst"));
    }
}

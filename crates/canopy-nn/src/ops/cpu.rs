//! Helpers shared by the CPU custom ops: contiguous slices of candle storage, the values a
//! forward pass keeps for its backward pass, and the float arithmetic of the fused kernels
//! (a vectorisable f32 `exp`).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::gemm::GemmScalar;

/// The elements of a contiguous operand, or an error naming the op.
pub(crate) fn slice<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: operands must be contiguous")))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

/// A CPU kernel of an input `x` and a weight `w` (the direct convolutions) in f32 and f64. The
/// candle plumbing around it — dtype dispatch, contiguous slices, building the output and the
/// two gradient tensors — is [`xw_forward`] and [`xw_backward`], and the `CustomOp2` impl is
/// written by `xw_custom_op!`.
pub(crate) trait XwKernel {
    /// The op's name in error messages.
    const NAME: &'static str;
    /// The sizes of one call.
    type Dims: Copy;
    /// The sizes for these operands, or an error naming the shapes and settings.
    fn dims(&self, lx: &Layout, lw: &Layout) -> candle_core::Result<Self::Dims>;
    /// The output shape.
    fn out_shape(d: &Self::Dims) -> Shape;
    /// The output values.
    fn forward<T: Float>(&self, x: &[T], w: &[T], d: Self::Dims) -> Result<Vec<T>, String>;
    /// `(dx, dw)` for the output gradient `dy`. With `need_dx` false (`x` is data that
    /// carries no gradient, e.g. a model's input) the kernel may skip the input gradient and
    /// return `None` for it.
    fn backward<T: Float>(
        &self,
        x: &[T],
        w: &[T],
        dy: &[T],
        d: Self::Dims,
        need_dx: bool,
    ) -> Result<(Option<Vec<T>>, Vec<T>), String>;
}

/// `impl CustomOp2` for an [`XwKernel`] type, with the op name candle shows.
macro_rules! xw_custom_op {
    ($ty:ty, $name:literal) => {
        impl candle_core::CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                sx: &candle_core::CpuStorage,
                lx: &candle_core::Layout,
                sw: &candle_core::CpuStorage,
                lw: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                $crate::ops::cpu::xw_forward(self, (sx, lx), (sw, lw))
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                _res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                $crate::ops::cpu::xw_backward(self, x, w, grad)
            }
        }
    };
}
pub(crate) use xw_custom_op;

/// `CustomOp2::cpu_fwd` of an [`XwKernel`].
pub(crate) fn xw_forward<K: XwKernel>(
    k: &K,
    (sx, lx): (&CpuStorage, &Layout),
    (sw, lw): (&CpuStorage, &Layout),
) -> candle_core::Result<(CpuStorage, Shape)> {
    let d = k.dims(lx, lw)?;
    let err = |m: String| candle_core::Error::Msg(format!("{}: {m}", K::NAME));
    let out = match (sx, sw) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(
            k.forward(slice(sx, lx, K::NAME)?, slice(sw, lw, K::NAME)?, d)
                .map_err(err)?,
        ),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(
            k.forward(slice(sx, lx, K::NAME)?, slice(sw, lw, K::NAME)?, d)
                .map_err(err)?,
        ),
        _ => return Err(err("x and w must both be f32 or both f64".into())),
    };
    Ok((out, K::out_shape(&d)))
}

/// `CustomOp2::bwd` of an [`XwKernel`]: the gradients of both operands.
pub(crate) fn xw_backward<K: XwKernel>(
    k: &K,
    x: &Tensor,
    w: &Tensor,
    grad: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let grad = grad.contiguous()?;
    let err = |m: &str| candle_core::Error::Msg(format!("{} backward: {m}", K::NAME));
    let (sx, lx) = x.storage_and_layout();
    let (sw, lw) = w.storage_and_layout();
    let (sg, lg) = grad.storage_and_layout();
    let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(sg)) = (&*sx, &*sw, &*sg) else {
        return Err(err("CPU tensors only"));
    };
    let d = k.dims(lx, lw)?;
    // an input that tracks no operation (data, not a variable or a result of one) gets no
    // gradient: candle would compute nothing from it, but would still add it to a zero tensor
    let need_dx = x.track_op();
    macro_rules! run {
        ($t:ty) => {{
            let (dx, dw) = k
                .backward::<$t>(
                    slice(sx, lx, K::NAME)?,
                    slice(sw, lw, K::NAME)?,
                    slice(sg, lg, K::NAME)?,
                    d,
                    need_dx,
                )
                .map_err(|m| err(&m))?;
            let dx = match dx {
                Some(dx) if need_dx => Some(Tensor::from_vec(dx, x.shape(), x.device())?),
                _ => None,
            };
            (dx, Tensor::from_vec(dw, w.shape(), w.device())?)
        }};
    }
    let (dx, dw) = match (sx, sw, sg) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => run!(f32),
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => run!(f64),
        _ => return Err(err("x, w and the gradient must all be f32 or all f64")),
    };
    // plain weights (frozen, or a saliency map's model) get none either
    Ok((dx, w.track_op().then_some(dw)))
}

/// Values computed by a forward pass and kept for its backward pass (gate activations,
/// attention probabilities), in the operands' float type.
#[derive(Clone, Default)]
pub(crate) enum Saved {
    /// Nothing computed yet.
    #[default]
    None,
    /// f32 values.
    F32(Arc<Vec<f32>>),
    /// f64 values.
    F64(Arc<Vec<f64>>),
}

/// Where a custom op keeps its [`Saved`] values between its forward and backward passes (shared
/// by the clones candle makes of the op). Debug-prints without the values.
#[derive(Clone, Default)]
pub(crate) struct SavedCell(Arc<Mutex<Saved>>);

impl std::fmt::Debug for SavedCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SavedCell(..)")
    }
}

impl SavedCell {
    /// Keeps `v`, replacing what was kept.
    pub fn store(&self, v: Saved) -> candle_core::Result<()> {
        *self.0.lock().map_err(|_| poisoned())? = v;
        Ok(())
    }

    /// What was kept (cheap: the values are shared).
    pub fn load(&self) -> candle_core::Result<Saved> {
        Ok(self.0.lock().map_err(|_| poisoned())?.clone())
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("canopy custom op: saved-values lock poisoned by a panic".into())
}

/// Two per-thread scratch buffers of at least `n1` and `n2` elements for `f` (their contents are
/// whatever the last user left), kept between calls so that kernels called many times per
/// training step neither allocate nor zero their work space each time. A nested call on the same
/// thread gets fresh buffers.
pub(crate) fn with_scratch<T: Float, R>(
    n1: usize,
    n2: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    T::with_scratch_impl(n1, n2, f)
}

thread_local! {
    static SCRATCH_F32: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static SCRATCH_F64: RefCell<(Vec<f64>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn scratch_from<T: Copy + Default, R>(
    cell: &RefCell<(Vec<T>, Vec<T>)>,
    n1: usize,
    n2: usize,
    f: impl FnOnce(&mut [T], &mut [T]) -> R,
) -> R {
    match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            if a.len() < n1 {
                a.resize(n1, T::default());
            }
            if b.len() < n2 {
                b.resize(n2, T::default());
            }
            f(&mut a[..n1], &mut b[..n2])
        }
        Err(_) => f(&mut vec![T::default(); n1], &mut vec![T::default(); n2]),
    }
}

/// `n` zeros, written by all threads for large `n` (a `vec![0; n]` of tens of MB on a reused
/// allocation is a serial memset that keeps the other threads idle).
pub(crate) fn zeros_par<T: GemmScalar>(n: usize) -> Vec<T> {
    if n < ZERO_SERIAL_BELOW {
        return vec![T::ZERO; n];
    }
    let mut v = Vec::with_capacity(n);
    v.par_extend(rayon::iter::repeat_n(T::ZERO, n));
    v
}

/// A new vector of `n` values built in parallel chunks of `chunk` values (the last one
/// shorter): the task that runs `f(i, chunk_i)` first zero-fills chunk `i`, so `f` receives
/// zeros and the result holds zeros wherever `f` writes nothing.
///
/// Why not [`zeros_par`] and then a parallel loop over the chunks: an op's output is up to tens
/// of MB, and a separate zero-fill is a whole extra pass over memory after which the kernel's
/// stores miss the cache again. Here each chunk is zeroed right before its kernel writes it,
/// so the kernel's stores hit the cache. Measured on the AVX-512 Xeon (inference, batch 256):
/// Transformer 62 -> 55 ms, MS-ResNet 59 -> 55 ms, InceptionTime unchanged (its zero-fill,
/// now per chunk, is still ~7 % of the samples: the fresh lines come from memory either way).
/// An output left uninitialised until the kernel writes it measured 49 / 54 / 111 ms, but
/// handing uninitialised `f32`s to a kernel is undefined behaviour (clippy's `uninit_vec`), so
/// it was not kept.
///
/// # Errors
/// The first error `f` returns (the vector is then dropped).
pub(crate) fn par_zeroed<T: GemmScalar, E: Send>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<(), E> + Sync,
) -> Result<Vec<T>, E> {
    Ok(par_zeroed_map(n, chunk, f)?.0)
}

/// [`par_zeroed`] whose `f` also returns a value per chunk (partial sums, say), given back in
/// chunk order.
///
/// # Errors
/// The first error `f` returns.
pub(crate) fn par_zeroed_map<T: GemmScalar, R: Send, E: Send>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> Result<R, E> + Sync,
) -> Result<(Vec<T>, Vec<R>), E> {
    let mut v: Box<[std::mem::MaybeUninit<T>]> = Box::new_uninit_slice(n);
    let per_chunk = v
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| {
            for e in c.iter_mut() {
                e.write(T::ZERO);
            }
            // SAFETY: every element of `c` was written just above; `MaybeUninit<T>` has the
            // layout of `T`.
            #[allow(unsafe_code)]
            let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
            f(i, c)
        })
        .collect::<Result<Vec<R>, E>>()?;
    // SAFETY: the chunks cover all `n` values and every one of them was written above (on an
    // error we returned instead).
    #[allow(unsafe_code)]
    let v = unsafe { v.assume_init() };
    Ok((v.into_vec(), per_chunk))
}

/// One chunk of a vector under construction by [`par_appended`], written front to back.
pub(crate) struct Appender<'a, T> {
    buf: &'a mut [std::mem::MaybeUninit<T>],
    len: usize,
}

impl<T: Copy> Appender<'_, T> {
    /// The chunk's length (written or not).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends the values of `values` (as many as there is room for).
    #[inline]
    pub(crate) fn extend(&mut self, values: impl IntoIterator<Item = T>) {
        let room = &mut self.buf[self.len..];
        let mut n = 0;
        for (d, v) in room.iter_mut().zip(values) {
            d.write(v);
            n += 1;
        }
        self.len += n;
    }

    /// The values appended so far, to be updated in place (a product accumulated onto rows
    /// appended as its initial value, say).
    pub(crate) fn written(&mut self) -> &mut [T] {
        let done = &mut self.buf[..self.len];
        // SAFETY: the first `len` values were written by `extend` / `extend_map`;
        // `MaybeUninit<T>` has the layout of `T`.
        #[allow(unsafe_code)]
        unsafe {
            &mut *(done as *mut [std::mem::MaybeUninit<T>] as *mut [T])
        }
    }

    /// Appends the product `lhs · rhs` (`lhs.rows x rhs.cols`, row-major), computed by gemm
    /// straight into the chunk (no zero-fill or copy first); `threads` as for
    /// [`matmul`](crate::ops::gemm::matmul).
    ///
    /// # Errors
    /// When the product does not fit in the room left, or gemm's checks fail.
    pub(crate) fn extend_product(
        &mut self,
        lhs: crate::ops::gemm::Mat<'_, T>,
        rhs: crate::ops::gemm::Mat<'_, T>,
        threads: usize,
    ) -> Result<(), String>
    where
        T: GemmScalar,
    {
        let n = lhs.rows * rhs.cols;
        let room = self.buf.len() - self.len;
        if n > room {
            return Err(format!(
                "a {}x{} product does not fit in the {room} values left of the chunk",
                lhs.rows, rhs.cols
            ));
        }
        let dst = &mut self.buf[self.len..self.len + n];
        crate::ops::gemm::matmul_uninit(dst, rhs.cols, lhs, rhs, threads)?;
        self.len += n;
        Ok(())
    }

    /// Appends `f(v)` for each `v` of `src` (as many as there is room for).
    #[inline]
    pub(crate) fn extend_map(&mut self, src: &[T], f: impl Fn(T) -> T) {
        let room = &mut self.buf[self.len..];
        debug_assert!(src.len() <= room.len(), "appending past the chunk");
        let n = src.len().min(room.len());
        for (d, &v) in room[..n].iter_mut().zip(src) {
            d.write(f(v));
        }
        self.len += n;
    }
}

/// A new vector of `n` values built in parallel chunks of `chunk` values (the last one
/// shorter), each written front to back by `f(i, appender_i)`; values `f` does not append are
/// zeros.
///
/// Why not [`par_zeroed`]: where the kernel writes every value anyway (the convolutions that
/// store their outputs through [`super::conv1d_cpu::Epilogue::store_block`]), the zero-fill
/// before it is a pass over memory for nothing: `memset` was 5-6 % of MS-ResNet's inference
/// samples. The appender gives `f` only ways to write, and the values after the last one it
/// wrote are zero-filled, so every value is initialised whatever `f` does.
///
/// # Errors
/// The first error `f` returns (the vector is then dropped).
pub(crate) fn par_appended<T: GemmScalar, E: Send>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut Appender<'_, T>) -> Result<(), E> + Sync,
) -> Result<Vec<T>, E> {
    let mut v: Box<[std::mem::MaybeUninit<T>]> = Box::new_uninit_slice(n);
    v.par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, c)| {
            let mut app = Appender { buf: c, len: 0 };
            let done = f(i, &mut app);
            let written = app.len;
            for e in &mut c[written..] {
                e.write(T::ZERO);
            }
            done
        })
        .collect::<Result<Vec<()>, E>>()?;
    // SAFETY: every chunk of `v` was processed (on an error we returned above): its first
    // `written` values by the appender's `write`s, the others by the zero-fill after `f`;
    // `MaybeUninit<T>` has the layout of `T`.
    #[allow(unsafe_code)]
    let v = unsafe { v.assume_init() };
    Ok(v.into_vec())
}

/// [`par_appended`] for an `f` that cannot fail.
pub(crate) fn par_build_appended<T: GemmScalar>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut Appender<'_, T>) + Sync,
) -> Vec<T> {
    infallible(par_appended(n, chunk, |i, app| {
        f(i, app);
        Ok(())
    }))
}

/// Asks the CPU to bring the cache lines of `values` into its level-2 cache (a hint: it changes
/// no value and never faults). For kernels whose access pattern the hardware prefetchers do not
/// follow, such as the fused LSTM recurrence reading a few short slices from each of many rows
/// a long stride apart. One hint per 64-byte line; nothing off x86-64.
#[inline]
pub(crate) fn prefetch_l2<T>(values: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let bytes = std::mem::size_of_val(values);
        let base = values.as_ptr().cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: `base + off` lies inside `values` (off < its size in bytes); a prefetch
            // reads nothing architecturally and cannot fault, and SSE is part of x86-64's
            // baseline.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T1>(base.add(off));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

/// The value of a result that cannot be an error.
fn infallible<T>(r: Result<T, std::convert::Infallible>) -> T {
    match r {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// [`par_zeroed`] for an `f` that cannot fail.
pub(crate) fn par_build<T: GemmScalar>(
    n: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    infallible(par_zeroed(n, chunk, |i, c| {
        f(i, c);
        Ok(())
    }))
}

/// Chunk `i` of `x` in chunks of `len` values (the last one shorter), as `x.chunks(len)` would
/// give it.
pub(crate) fn chunk_at<T>(x: &[T], len: usize, i: usize) -> &[T] {
    let start = (i * len).min(x.len());
    &x[start..(start + len).min(x.len())]
}

/// Values below which [`zeros_par`] fills on the calling thread.
const ZERO_SERIAL_BELOW: usize = 1 << 18;

/// Float types the fused kernels run on.
pub(crate) trait Float:
    GemmScalar
    + Default
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
{
    /// `exp(x)`.
    fn exp(self) -> Self;
    /// Logistic sigmoid.
    fn sigmoid(self) -> Self {
        Self::ONE / (Self::ONE + (Self::ZERO - self).exp())
    }
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// From f64 (rounded to nearest for f32).
    fn from_f64(v: f64) -> Self;
    /// To f64 (exact).
    fn to_f64(self) -> f64;
    #[doc(hidden)]
    fn with_scratch_impl<R>(
        n1: usize,
        n2: usize,
        f: impl FnOnce(&mut [Self], &mut [Self]) -> R,
    ) -> R;
}

impl Float for f32 {
    #[inline(always)]
    fn exp(self) -> Self {
        exp_approx(self)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        // tanh x = 1 - 2 / (exp(2x) + 1): no cancellation for large |x|, absolute error ~1e-7
        1.0 - 2.0 / (exp_approx(2.0 * self) + 1.0)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn with_scratch_impl<R>(
        n1: usize,
        n2: usize,
        f: impl FnOnce(&mut [Self], &mut [Self]) -> R,
    ) -> R {
        SCRATCH_F32.with(|c| scratch_from(c, n1, n2, f))
    }
}

impl Float for f64 {
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    fn with_scratch_impl<R>(
        n1: usize,
        n2: usize,
        f: impl FnOnce(&mut [Self], &mut [Self]) -> R,
    ) -> R {
        SCRATCH_F64.with(|c| scratch_from(c, n1, n2, f))
    }
}

/// Sum of `f` over a slice with eight independent accumulators (vectorises; for f32 planes of up
/// to a few hundred thousand values the rounding error stays near 1e-7 relative).
#[inline]
pub(crate) fn sum8<T: Float>(v: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::ZERO; 8];
    let mut chunks = v.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &u) in acc.iter_mut().zip(ch) {
            *a += f(u);
        }
    }
    let mut s = T::ZERO;
    for &u in chunks.remainder() {
        s += f(u);
    }
    acc.iter().fold(s, |a, &b| a + b)
}

/// Element-wise sum of equally long partial results, added in their order (so the result does
/// not depend on how the parts were scheduled over threads); `len` zeros when there are none.
pub(crate) fn sum_in_order<T: Float>(
    parts: impl IntoIterator<Item = Vec<T>>,
    len: usize,
) -> Vec<T> {
    let mut it = parts.into_iter();
    let mut acc = it.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for p in it {
        for (a, b) in acc.iter_mut().zip(p) {
            *a += b;
        }
    }
    acc
}

/// `Σ a_i b_i` with eight independent accumulators (vectorises).
#[inline]
pub(crate) fn dot8<T: Float>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::ZERO; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &u), &v) in acc.iter_mut().zip(x).zip(y) {
            *s += u * v;
        }
    }
    let mut s = T::ZERO;
    for (&u, &v) in ra.iter().zip(rb) {
        s += u * v;
    }
    acc.iter().fold(s, |a, &b| a + b)
}

/// The largest value of a slice (`init` when empty; NaNs are skipped unless all are NaN), with
/// eight independent lanes (vectorises).
#[inline]
pub(crate) fn max8<T: Float>(v: &[T], init: T) -> T {
    let mut acc = [init; 8];
    let mut chunks = v.chunks_exact(8);
    for ch in &mut chunks {
        for (a, &u) in acc.iter_mut().zip(ch) {
            *a = if u > *a { u } else { *a };
        }
    }
    let mut m = init;
    for &u in chunks.remainder() {
        m = if u > m { u } else { m };
    }
    acc.iter().fold(m, |a, &b| if b > a { b } else { a })
}

/// `exp(x)` for f32 without branches or table lookups, so loops over it vectorise: Cody–Waite
/// reduction `x = n ln2 + r`, |r| ≤ ln2/2, Cephes' polynomial for `e^r`, and `2^n` built in
/// the exponent bits. Inputs are clamped to [-87.3, 88] (results stay normal floats).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    const ROUND_BITS: i32 = 0x4B40_0000; // ROUND's bit pattern: n sits in the low mantissa bits
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes' expf minimax coefficients
    let q = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let p = q * r * r + r + 1.0;
    // n as an integer from the bits of `shifted` (an `as i32` cast would be a saturating
    // conversion with compares and selects, which keeps the loop from vectorising cleanly)
    let ni = shifted.to_bits() as i32 - ROUND_BITS;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// Runs a pulp op compiled for the dispatched instruction set (`dispatch`) or for the baseline
/// (`pulp::Scalar`): the tests that check both builds give the same bits share this.
#[cfg(test)]
pub(crate) fn run_simd<Op: pulp::WithSimd>(op: Op, dispatch: bool) -> Op::Output {
    if dispatch {
        pulp::Arch::new().dispatch(op)
    } else {
        op.with_simd(pulp::Scalar::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks arrive with their index and length (the last one shorter), zeroed; values `f`
    /// leaves alone stay zero; per-chunk results come back in chunk order; an error from any
    /// chunk is returned.
    #[test]
    fn par_zeroed_chunks_are_zeroed_indexed_and_complete() {
        let (n, chunk) = (10_007, 1_000);
        let (v, lens) = par_zeroed_map::<f32, _, ()>(n, chunk, |i, c| {
            assert!(c.iter().all(|&x| x == 0.0), "chunk {i} not zeroed");
            // write every value but the first of each chunk
            for (j, x) in c.iter_mut().enumerate().skip(1) {
                *x = (i * chunk + j) as f32;
            }
            Ok((i, c.len()))
        })
        .unwrap();
        assert_eq!(v.len(), n);
        let want: Vec<(usize, usize)> = (0..11)
            .map(|i| (i, if i < 10 { 1000 } else { 7 }))
            .collect();
        assert_eq!(lens, want);
        for (k, &x) in v.iter().enumerate() {
            let expect = if k % chunk == 0 { 0.0 } else { k as f32 };
            assert_eq!(x, expect, "value {k}");
        }
        let failed = par_zeroed::<f64, String>(5_000, 64, |i, _| {
            if i == 40 {
                Err(format!("chunk {i}"))
            } else {
                Ok(())
            }
        });
        assert_eq!(failed.unwrap_err(), "chunk 40");
        assert!(par_build::<f32>(0, 16, |_, _| ()).is_empty());
    }

    /// Appended chunks hold what was appended, in order, then zeros; chunk indices and
    /// capacities are right; an error from any chunk is returned.
    #[test]
    fn par_appended_chunks_hold_the_appended_values_then_zeros() {
        let (n, chunk) = (10_007, 1_000);
        let src: Vec<f32> = (0..n).map(|k| k as f32 + 0.5).collect();
        let v = par_appended::<f32, ()>(n, chunk, |i, app| {
            assert_eq!(app.capacity(), if i < 10 { 1000 } else { 7 });
            // chunk i appends all but its last (i % 3) values, in two calls
            let len = app.capacity() - i % 3;
            let part = &src[i * chunk..i * chunk + len];
            app.extend_map(&part[..len / 2], |x| 2.0 * x);
            app.extend(part[len / 2..].iter().map(|x| 2.0 * x));
            // what was appended, read back and updated in place
            let w = app.written();
            assert_eq!(w.len(), len);
            if let Some(first) = w.first_mut() {
                assert_eq!(*first, 2.0 * part[0]);
                *first += 1.0;
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(v.len(), n);
        for (k, &x) in v.iter().enumerate() {
            let (i, j) = (k / chunk, k % chunk);
            let len = if i < 10 { 1000 } else { 7 } - i % 3;
            let expect = match j {
                0 if len > 0 => 2.0 * src[k] + 1.0,
                _ if j < len => 2.0 * src[k],
                _ => 0.0,
            };
            assert_eq!(x, expect, "value {k}");
        }
        let failed = par_appended::<f64, String>(5_000, 64, |i, _| {
            if i == 40 {
                Err(format!("chunk {i}"))
            } else {
                Ok(())
            }
        });
        assert_eq!(failed.unwrap_err(), "chunk 40");
        assert!(par_appended::<f32, ()>(0, 16, |_, _| Ok(()))
            .unwrap()
            .is_empty());
    }

    /// A product appended after other values lands right after them; one that does not fit
    /// in the room left is an error naming its size, and nothing is appended.
    #[test]
    fn appended_products_follow_earlier_values_and_must_fit() {
        use crate::ops::gemm::Mat;
        let (a, b) = ([1.0f64, 2.0, 3.0, 4.0], [1.0f64, 0.0, 0.0, 1.0]); // b = identity
        let v = par_appended::<f64, String>(7, 7, |_, app| {
            app.extend([9.0]);
            app.extend_product(Mat::row_major(&a, 2, 2), Mat::row_major(&b, 2, 2), 1)?;
            let e = app
                .extend_product(Mat::row_major(&a, 2, 2), Mat::row_major(&b, 2, 2), 1)
                .unwrap_err();
            assert!(e.contains("2x2") && e.contains("2 values left"), "{e}");
            Ok(())
        })
        .unwrap();
        assert_eq!(v, [9.0, 1.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn approximate_exp_sigmoid_and_tanh_are_accurate_in_f32() {
        let mut worst: f64 = 0.0;
        let mut x = -80.0f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            let (s, t) = (Float::sigmoid(x) as f64, Float::tanh(x) as f64);
            let (s0, t0) = (1.0 / (1.0 + (-(x as f64)).exp()), (x as f64).tanh());
            assert!((s - s0).abs() < 2e-7, "sigmoid({x}) = {s} vs {s0}");
            assert!((t - t0).abs() < 3e-7, "tanh({x}) = {t} vs {t0}");
            x += 0.013;
        }
        assert!(worst < 2e-7, "relative error {worst:e}");
        // saturation instead of inf/NaN far outside the range
        assert!(exp_approx(1e4).is_finite() && exp_approx(-1e4) >= 0.0);
        assert!(Float::sigmoid(-1e4f32) < 1e-37);
        assert_eq!(Float::tanh(1e4f32), 1.0);
    }
}

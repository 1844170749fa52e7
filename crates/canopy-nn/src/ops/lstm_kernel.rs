//! Fused LSTM kernels for the CPU: a whole LSTM layer (all directions) as one candle op (the time
//! loop, the recurrent matrix products and the gate arithmetic in one pass, backward through time in
//! one pass), and the gate update of a ConvLSTM cell as one op.
//!
//! Composed from candle ops, one LSTM step is a dozen tensors, and candle's backward of
//! `narrow` materialises a zero-padded copy of the whole `(B, T, 4H)` input projection for every
//! step: 45 steps cost ~45 full copies. Here the recurrence is
//!
//! ```text
//! gates_t = xw_t + h_{t-1} W_hhᵀ            (i, f, g, o order, PyTorch's)
//! c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t)
//! ```
//!
//! with `xw = x W_ihᵀ + b` computed first, one matrix product per direction, straight into the
//! buffer that then holds the gate activations `σ(i), σ(f), tanh(g), σ(o)` (overwritten in place
//! step by step and kept inside the op for its backward pass). The op returns all hidden states
//! and all cell states as one `(2, B, T, D·H)` tensor (so both halves are contiguous views);
//! every direction writes its states straight into its columns and the backward pass reads
//! them, and their gradients, in place: there is no per-direction copy. Padded steps (lengths)
//! keep the state and output zeros, as `pack_padded_sequence` does. The input gradient is one
//! matrix product over all steps after the loop, the weight and bias gradients one product per
//! fixed part of the rows, summed in order (see `weight_grads`).
//!
//! Sequences of a batch never interact, so the time loop runs as independent rayon tasks, one
//! per (direction, block of sequences), each single-threaded: with two threads a
//! one-direction layer runs two blocks of `B/2` sequences and a bidirectional one a task per
//! direction, and neither synchronises threads per step. (A single shared time loop with every
//! product and gate update split over the threads costs two fork-joins per step; on a loaded
//! machine every one of them waits for the slowest thread.)
//!
//! f32 and f64 on the CPU; exponentials go through
//! [`exp_approx`](crate::ops::cpu::exp_approx) in f32 (vectorisable, relative error below 2e-7)
//! and `f64::exp` in f64. On CPUs with AVX-512, or AVX2 with FMA, the f32 gate updates run the
//! kernels of [`super::gates_fast`] instead (FMA polynomial, reciprocal estimates refined by one
//! Newton step; the same values to rounding). With AVX-512, f32, a hidden size that is a multiple
//! of 16 and single-threaded tasks (two or more tasks, or one thread), each task's forward —
//! projection included — runs the kernel of [`super::lstm_fused`] instead of `gemm` and the gate
//! pass (8 % faster on one thread, 5 % on two, one layer 128 -> 128 on a Zen 4; turned off by
//! [`set_fused_lstm_enabled`] for comparisons). The backward pass is the same for both. No CUDA
//! implementation and no second derivatives; [`crate::rnn::Lstm`] falls back to composed candle
//! ops elsewhere.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use crate::ops::cpu::{par_appended, slice, sum_in_order, zeros_par, Float, Saved, SavedCell};
#[cfg(target_arch = "x86_64")]
use crate::ops::gates_fast::{Lanes, Narrow, Wide};
use crate::ops::gemm::{matmul, Mat};

static FUSED_DISABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the fused kernel may be used (the default); see [`set_fused_lstm_enabled`].
pub(crate) fn fused_enabled() -> bool {
    !FUSED_DISABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns the fused f32 LSTM kernel (x86-64 with AVX-512, see the module docs) off (`false`) or
/// back on, process-wide, so that benchmarks and tests can compare it with the portable path
/// (`gemm` products and a gate pass) on the same machine. On by default; without effect on CPUs
/// without AVX-512, which always take the portable path.
pub fn set_fused_lstm_enabled(on: bool) {
    FUSED_DISABLED.store(!on, std::sync::atomic::Ordering::Relaxed);
}

/// One direction of a [`LstmBiLayerOp`]: its hidden size, whether it runs in reverse and the
/// valid steps per sequence, for the per-direction forward and backward loops.
#[derive(Debug, Clone)]
pub(crate) struct LstmLayerOp {
    pub hidden: usize,
    pub reverse: bool,
    /// Valid steps per sequence (`None`: all `T`).
    pub lengths: Option<Vec<usize>>,
}

impl LstmLayerOp {
    pub fn new(hidden: usize, reverse: bool, lengths: Option<Vec<usize>>) -> Self {
        LstmLayerOp {
            hidden,
            reverse,
            lengths,
        }
    }

    pub(crate) fn len_of(&self, b: usize, t: usize) -> usize {
        self.lengths
            .as_ref()
            .and_then(|l| l.get(b).copied())
            .unwrap_or(t)
    }

    /// Steps in processing order.
    pub(crate) fn order(&self, t: usize) -> Vec<usize> {
        if self.reverse {
            (0..t).rev().collect()
        } else {
            (0..t).collect()
        }
    }

    /// The step processed before `s` for sequence `b` if it carried state (else the initial
    /// zero state).
    fn prev(&self, s: usize, len: usize, t: usize) -> Option<usize> {
        if self.reverse {
            (s + 1 < t && s + 1 < len).then_some(s + 1)
        } else {
            s.checked_sub(1)
        }
    }
}

/// The `W_ih` `(4H, C)` and `W_hh` `(4H, H)` views of `[W_ih | W_hh]`.
fn weight_views<T>(w: &[T], c: usize, h: usize) -> (Mat<'_, T>, Mat<'_, T>) {
    let rs = c + h;
    let w_ih = Mat {
        data: w,
        rows: 4 * h,
        cols: c,
        rs,
        cs: 1,
    };
    let w_hh = Mat {
        data: w.get(c..).unwrap_or(&[]),
        rows: 4 * h,
        cols: h,
        rs,
        cs: 1,
    };
    (w_ih, w_hh)
}

/// One direction's rows of a `(2, B, T, D·H)` state buffer (the op's output, or its gradient):
/// row `r = b·T + s` of half `k` (0 hidden, 1 cell) is the `H` values at
/// `k·B·T·D·H + r·D·H + d·H`. Reading through this view spares the backward pass a
/// per-direction copy of the states and their gradients.
#[derive(Debug, Clone, Copy)]
struct DirRows<'a, T> {
    data: &'a [T],
    /// Offset of row 0.
    off: usize,
    /// Distance between consecutive rows (`D·H`).
    stride: usize,
    hidden: usize,
}

impl<'a, T> DirRows<'a, T> {
    /// Half `half` of direction `d` in a buffer of `(2, bt, nd·h)` values; the caller has
    /// checked that the buffer holds `2·bt·nd·h` values.
    fn new(data: &'a [T], half: usize, d: usize, (bt, nd, h): (usize, usize, usize)) -> Self {
        DirRows {
            data,
            off: half * bt * nd * h + d * h,
            stride: nd * h,
            hidden: h,
        }
    }

    /// The same view starting at row `r0`.
    fn starting_at(self, r0: usize) -> Self {
        DirRows {
            off: self.off + r0 * self.stride,
            ..self
        }
    }

    #[inline]
    fn row(&self, r: usize) -> &'a [T] {
        let at = self.off + r * self.stride;
        &self.data[at..at + self.hidden]
    }
}

/// One step's gate update for one sequence (`H` values per slice): `gates` = the
/// pre-activations `i, f, g, o` (replaced by `σ(i), σ(f), tanh(g), σ(o)`), `state` = the running
/// `c, h` (updated), `out` = where the step's `c, h` are stored. A pulp [`WithSimd`] op, so its
/// loop is compiled inside the dispatched AVX2 / AVX-512 function and vectorises at that width
/// (the same arithmetic, bit for bit).
///
/// [`WithSimd`]: pulp::WithSimd
pub(crate) struct GatesForward<'a, T> {
    pub gates: [&'a mut [T]; 4],
    pub state: [&'a mut [T]; 2],
    pub out: [&'a mut [T]; 2],
}

impl<T: Float> pulp::WithSimd for GatesForward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [ai, af, ag, ao] = self.gates;
        let [cs, hs] = self.state;
        let [c_out, h_out] = self.out;
        let h = ai.len();
        let (af, ag, ao) = (&mut af[..h], &mut ag[..h], &mut ao[..h]);
        let (cs, hs, c_out, h_out) = (&mut cs[..h], &mut hs[..h], &mut c_out[..h], &mut h_out[..h]);
        for k in 0..h {
            let (i, f) = (ai[k].sigmoid(), af[k].sigmoid());
            let (g, o) = (ag[k].tanh(), ao[k].sigmoid());
            let c = f * cs[k] + i * g;
            let hv = o * c.tanh();
            (ai[k], af[k], ag[k], ao[k]) = (i, f, g, o);
            (c_out[k], h_out[k]) = (c, hv);
            (cs[k], hs[k]) = (c, hv);
        }
    }
}

/// A slice of `T` as f32: only called after checking that `T` is f32, so the cast only changes
/// the static type (it cannot fail).
#[cfg(target_arch = "x86_64")]
fn as_f32<T: bytemuck::Pod>(s: &[T]) -> &[f32] {
    bytemuck::cast_slice(s)
}

/// Mutable [`as_f32`].
#[cfg(target_arch = "x86_64")]
fn as_f32_mut<T: bytemuck::Pod>(s: &mut [T]) -> &mut [f32] {
    bytemuck::cast_slice_mut(s)
}

/// A portable gate kernel with f32 twins in [`super::gates_fast`] over the same slices, one per
/// vector width.
pub(crate) trait FastTwin: pulp::WithSimd<Output = ()> + Sized {
    /// The twin at the width of `L`.
    #[cfg(target_arch = "x86_64")]
    type Twin<L: Lanes>: pulp::WithSimd<Output = ()>;
    /// The element type of the portable kernel's slices.
    type Elem: 'static;
    /// Whether the slices hold f32 (the twin's type).
    #[cfg(target_arch = "x86_64")]
    fn is_f32() -> bool {
        std::any::TypeId::of::<Self::Elem>() == std::any::TypeId::of::<f32>()
    }
    /// The twin over the same slices; called only when [`Self::is_f32`].
    #[cfg(target_arch = "x86_64")]
    fn twin<L: Lanes>(self, lanes: L) -> Self::Twin<L>;
}

impl<'a, T: Float> FastTwin for GatesForward<'a, T> {
    #[cfg(target_arch = "x86_64")]
    type Twin<L: Lanes> = super::gates_fast::GatesForwardFast<'a, L>;
    type Elem = T;
    #[cfg(target_arch = "x86_64")]
    fn twin<L: Lanes>(self, lanes: L) -> Self::Twin<L> {
        super::gates_fast::GatesForwardFast {
            lanes,
            gates: self.gates.map(as_f32_mut),
            state: self.state.map(as_f32_mut),
            out: self.out.map(as_f32_mut),
        }
    }
}

impl<'a, T: Float> FastTwin for GatesBackward<'a, T> {
    #[cfg(target_arch = "x86_64")]
    type Twin<L: Lanes> = super::gates_fast::GatesBackwardFast<'a, L>;
    type Elem = T;
    #[cfg(target_arch = "x86_64")]
    fn twin<L: Lanes>(self, lanes: L) -> Self::Twin<L> {
        super::gates_fast::GatesBackwardFast {
            lanes,
            acts: self.acts.map(as_f32),
            cells: self.cells.map(as_f32),
            grads: self.grads.map(as_f32),
            dgates: self.dgates.map(as_f32_mut),
            carry: self.carry.map(as_f32_mut),
        }
    }
}

/// Runs a gate kernel: for f32 its twin at the widest vectors the CPU has (AVX-512, else AVX2
/// with FMA), else the portable loop compiled for the best instruction set.
#[inline]
fn run_gates<Op: FastTwin>(op: Op) {
    #[cfg(target_arch = "x86_64")]
    if Op::is_f32() {
        if let Some(simd) = pulp::x86::V4::try_new() {
            pulp::Simd::vectorize(simd, op.twin(Wide(simd)));
            return;
        }
        if let Some(simd) = pulp::x86::V3::try_new() {
            pulp::Simd::vectorize(simd, op.twin(Narrow(simd)));
            return;
        }
    }
    pulp::Arch::new().dispatch(op);
}

/// The gradients of one element of an LSTM cell `c = f·c_prev + i·g`, `h = o·tanh(c)`: from the
/// activations `[i, f, g, o]` (`σ, σ, tanh, σ` of the pre-activations), `tanh(c)`, `c_prev`, the
/// gradient `dh` of `h` and `dc` of `c` (from outside the `h` path), returns the gradients of the
/// four pre-activations and of `c_prev`. Shared by the layer op and the ConvLSTM cell op.
#[inline(always)]
fn cell_grads<T: Float>([i, f, g, o]: [T; 4], tc: T, cp: T, dh: T, dc: T) -> [T; 5] {
    let dct = dc + dh * o * (T::ONE - tc * tc);
    [
        dct * g * i * (T::ONE - i),
        dct * cp * f * (T::ONE - f),
        dct * i * (T::ONE - g * g),
        dh * tc * o * (T::ONE - o),
        dct * f,
    ]
}

/// One step's gate gradients for one sequence: from the activations `acts` (`σ(i), σ(f),
/// tanh(g), σ(o)`), the cell states `cells` (this step's and the previous one's) and the
/// gradients `grads` of the step's `h, c` outputs, plus the gradients `carry` (`dh, dc`) coming
/// back from the next step, computes the pre-activation gradients `dgates` and replaces
/// `carry`'s `dc` by the gradient of the previous cell state. Vectorised like [`GatesForward`].
pub(crate) struct GatesBackward<'a, T> {
    pub acts: [&'a [T]; 4],
    pub cells: [&'a [T]; 2],
    pub grads: [&'a [T]; 2],
    pub dgates: [&'a mut [T]; 4],
    pub carry: [&'a mut [T]; 2],
}

impl<T: Float> pulp::WithSimd for GatesBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [ai, af, ag, ao] = self.acts;
        let [c_s, cp] = self.cells;
        let [gh_s, gc_s] = self.grads;
        let [di, df, dgg, dout] = self.dgates;
        let [dhb, dcb] = self.carry;
        let h = ai.len();
        let (af, ag, ao, c_s, cp) = (&af[..h], &ag[..h], &ao[..h], &c_s[..h], &cp[..h]);
        let (gh_s, gc_s, dhb) = (&gh_s[..h], &gc_s[..h], &dhb[..h]);
        let (di, df, dgg, dout, dcb) = (
            &mut di[..h],
            &mut df[..h],
            &mut dgg[..h],
            &mut dout[..h],
            &mut dcb[..h],
        );
        for k in 0..h {
            let acts = [ai[k], af[k], ag[k], ao[k]];
            let dhk = gh_s[k] + dhb[k];
            let [d_i, d_f, d_g, d_o, d_c] =
                cell_grads(acts, c_s[k].tanh(), cp[k], dhk, gc_s[k] + dcb[k]);
            (di[k], df[k], dgg[k], dout[k], dcb[k]) = (d_i, d_f, d_g, d_o, d_c);
        }
    }
}

/// The recurrence of one direction, in place.
///
/// On entry `acts` `(B, T, 4H)` holds the input projection `x W_ihᵀ + b`; step `s` adds
/// `h_{s-1} W_hhᵀ` to its rows (one product straight into the strided rows, no gate buffer)
/// and overwrites them with the activations `σ(i), σ(f), tanh(g), σ(o)` the backward pass
/// needs (zeros at padded steps). Hidden and cell states are written straight into `h_rows` /
/// `c_rows`: one `H`-slice per `(b, s)` row of the layer's output, so the caller needs no
/// per-direction copy. `w_hh_t` is `W_hhᵀ` `(H, 4H)`. `threads` > 1 splits the products and
/// the gate arithmetic over the rayon pool, 1 runs the whole recurrence on the calling thread.
/// (For f32 on CPUs with AVX-512, [`bi_forward`] runs [`super::lstm_fused`] instead.)
#[allow(clippy::too_many_arguments)]
pub(crate) fn lstm_forward<T: Float>(
    op: &LstmLayerOp,
    acts: &mut [T],
    h_rows: &mut [&mut [T]],
    c_rows: &mut [&mut [T]],
    w_hh_t: Mat<'_, T>,
    b: usize,
    t: usize,
    threads: usize,
) -> Result<(), String> {
    let h = op.hidden;
    let g4 = 4 * h;
    if acts.len() != b * t * g4
        || h_rows.len() != b * t
        || c_rows.len() != b * t
        || h_rows.iter().chain(c_rows.iter()).any(|r| r.len() != h)
    {
        return Err(format!(
            "recurrence buffers do not fit B {b}, T {t}, H {h} ({} activations, {} + {} state rows)",
            acts.len(),
            h_rows.len(),
            c_rows.len()
        ));
    }
    let mut h_state = vec![T::ZERO; b * h];
    let mut c_state = vec![T::ZERO; b * h];
    for (n, s) in op.order(t).into_iter().enumerate() {
        if n > 0 {
            // gates_s += h W_hhᵀ (h = 0 before the first step), in the rows of step s
            matmul(
                &mut acts[s * g4..],
                t * g4,
                Mat::row_major(&h_state, b, h),
                w_hh_t,
                true,
                threads,
            )?;
        }
        #[allow(clippy::type_complexity)]
        let body = |(bi, ((((a_seq, h_seq), c_seq), hs), cs)): (
            usize,
            (
                (((&mut [T], &mut [&mut [T]]), &mut [&mut [T]]), &mut [T]),
                &mut [T],
            ),
        )| {
            let a = &mut a_seq[s * g4..(s + 1) * g4];
            if s >= op.len_of(bi, t) {
                a.fill(T::ZERO); // padded: state kept, outputs stay zero
                return;
            }
            let (ai, rest) = a.split_at_mut(h);
            let (af, rest) = rest.split_at_mut(h);
            let (ag, ao) = rest.split_at_mut(h);
            let (h_out, c_out) = (&mut *h_seq[s], &mut *c_seq[s]);
            let (ao, hs, cs) = (&mut ao[..h], &mut hs[..h], &mut cs[..h]);
            let (h_out, c_out) = (&mut h_out[..h], &mut c_out[..h]);
            run_gates(GatesForward {
                gates: [ai, af, ag, ao],
                state: [cs, hs],
                out: [c_out, h_out],
            });
        };
        if threads > 1 {
            acts.par_chunks_mut(t * g4)
                .zip(h_rows.par_chunks_mut(t))
                .zip(c_rows.par_chunks_mut(t))
                .zip(h_state.par_chunks_mut(h))
                .zip(c_state.par_chunks_mut(h))
                .enumerate()
                .with_min_len(8)
                .for_each(body);
        } else {
            acts.chunks_mut(t * g4)
                .zip(h_rows.chunks_mut(t))
                .zip(c_rows.chunks_mut(t))
                .zip(h_state.chunks_mut(h))
                .zip(c_state.chunks_mut(h))
                .enumerate()
                .for_each(body);
        }
    }
    Ok(())
}

/// Backward through time of one direction: fills `dxw` `(B, T, 4H)` (zeros on entry) with the
/// gradient of the gate pre-activations, from the forward states `hc`, the activations `acts`
/// `(B, T, 4H)` and the gradient `grad` of the states (both read in place in the op's
/// `(2, B, T, D·H)` layout).
#[allow(clippy::too_many_arguments)]
fn lstm_backward<T: Float>(
    op: &LstmLayerOp,
    c_all: DirRows<'_, T>,
    (gh, gc): (DirRows<'_, T>, DirRows<'_, T>),
    acts: &[T],
    dxw: &mut [T],
    w_hh: Mat<'_, T>,
    b: usize,
    t: usize,
    threads: usize,
) -> Result<(), String> {
    let h = op.hidden;
    let g4 = 4 * h;
    if acts.len() != b * t * g4 || dxw.len() != b * t * g4 {
        return Err(format!(
            "activations ({}) or their gradient ({}) do not hold B {b} x T {t} x 4H {g4} values",
            acts.len(),
            dxw.len()
        ));
    }
    let mut dh = vec![T::ZERO; b * h];
    let mut dc = vec![T::ZERO; b * h];
    let mut dh_new = vec![T::ZERO; b * h];
    let zero_row = vec![T::ZERO; h];
    for s in op.order(t).into_iter().rev() {
        #[allow(clippy::type_complexity)]
        let body = |(bi, ((dseq, dhb), dcb)): (usize, ((&mut [T], &mut [T]), &mut [T]))| {
            let len = op.len_of(bi, t);
            if s >= len {
                return; // padded: gradients pass through to the previous state
            }
            let r = bi * t + s;
            let (c_s, gh_s, gc_s) = (c_all.row(r), gh.row(r), gc.row(r));
            let a = &acts[r * g4..(r + 1) * g4];
            let prev_c = op.prev(s, len, t).map(|p| c_all.row(bi * t + p));
            let (di, rest) = dseq[s * g4..(s + 1) * g4].split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dgg, dout) = rest.split_at_mut(h);
            let (dout, dhb, dcb) = (&mut dout[..h], &mut dhb[..h], &mut dcb[..h]);
            let (ai, af, ag, ao) = (&a[..h], &a[h..2 * h], &a[2 * h..3 * h], &a[3 * h..4 * h]);
            // the previous cell state, zeros before the first step
            let cp_all = &prev_c.unwrap_or(&zero_row)[..h];
            let (c_s, gh_s, gc_s) = (&c_s[..h], &gh_s[..h], &gc_s[..h]);
            run_gates(GatesBackward {
                acts: [ai, af, ag, ao],
                cells: [c_s, cp_all],
                grads: [gh_s, gc_s],
                dgates: [di, df, dgg, dout],
                carry: [dhb, dcb],
            });
        };
        if threads > 1 {
            dxw.par_chunks_mut(t * g4)
                .zip(dh.par_chunks_mut(h))
                .zip(dc.par_chunks_mut(h))
                .enumerate()
                .with_min_len(8)
                .for_each(body);
        } else {
            dxw.chunks_mut(t * g4)
                .zip(dh.chunks_mut(h))
                .zip(dc.chunks_mut(h))
                .enumerate()
                .for_each(body);
        }
        // dh_prev = dgates_s W_hh for the sequences that were valid at s
        matmul(
            &mut dh_new,
            h,
            Mat {
                data: &dxw[s * g4..],
                rows: b,
                cols: g4,
                rs: t * g4,
                cs: 1,
            },
            w_hh,
            false,
            threads,
        )?;
        for (bi, (d, n)) in dh.chunks_mut(h).zip(dh_new.chunks(h)).enumerate() {
            if s < op.len_of(bi, t) {
                d.copy_from_slice(n);
            }
        }
    }
    Ok(())
}

/// Fewest rows per part of the weight-gradient product (see [`weight_grads`]).
const WGRAD_MIN_ROWS: usize = 256;
/// Most parts the weight-gradient product is split into.
const WGRAD_MAX_PARTS: usize = 16;

/// The weight and bias gradients of one direction from its `dxw` `(B·T, 4H)`:
/// `d[W_ih | W_hh | bias] = dxwᵀ [x | h_prev | 1]`, one product, split into `dw` `(4H, C + H)`
/// and `db` `(4H)` (one pass over `dxw` instead of three: one layer 128 -> 128 on (256, 45),
/// forward + backward at 1 thread 121.7 -> 114.7 ms).
///
/// The `B·T` rows (the product's inner dimension) are split into fixed parts of at least
/// [`WGRAD_MIN_ROWS`] rows (at most [`WGRAD_MAX_PARTS`]), each part's product runs on one
/// thread and the partial sums are added in order, so the result does not depend on the
/// thread count. `gemm`'s own threading splits the small `4H x (C + H + 1)` output instead and
/// barely gains from a second thread on this shape (512 x 257 x 11520 on the AMD EPYC: 46 ms
/// on one thread, 31-50 ms on two; split by rows, 25-30 ms).
#[allow(clippy::too_many_arguments)]
fn weight_grads<T: Float>(
    op: &LstmLayerOp,
    x: &[T],
    h_all: DirRows<'_, T>,
    dxw: &[T],
    (dw, db): (&mut [T], &mut [T]),
    (b, t, c): (usize, usize, usize),
    threads: usize,
) -> Result<(), String> {
    let h = op.hidden;
    let (g4, bt, ch1) = (4 * h, b * t, c + h + 1);
    // rows r0..r1 of [x | h_prev | 1]: each row's input, the state it started from (zero at
    // its first step) and a one, so that
    //   [d W_ih | d W_hh | d bias] = dxwᵀ [x | h_prev | 1]
    // is one product over the rows, one pass over dxw (three products read it three times)
    let partial = |r0: usize, r1: usize, threads: usize| -> Result<Vec<T>, String> {
        let mut rows = vec![T::ZERO; (r1 - r0) * ch1];
        for (r, row) in (r0..r1).zip(rows.chunks_exact_mut(ch1)) {
            let (bi, s) = (r / t, r % t);
            let len = op.len_of(bi, t);
            row[..c].copy_from_slice(&x[r * c..(r + 1) * c]);
            if let Some(p) = op.prev(s, len, t).filter(|_| s < len) {
                row[c..c + h].copy_from_slice(h_all.row(bi * t + p));
            }
            row[c + h] = T::ONE;
        }
        let mut g = vec![T::ZERO; g4 * ch1];
        let dxw_t = Mat::row_major(&dxw[r0 * g4..r1 * g4], r1 - r0, g4).t();
        matmul(
            &mut g,
            ch1,
            dxw_t,
            Mat::row_major(&rows, r1 - r0, ch1),
            false,
            threads,
        )?;
        Ok(g)
    };
    if dxw.len() != bt * g4 || x.len() != bt * c {
        return Err(format!(
            "weight gradients: dxw ({}) or x ({}) do not hold B·T {bt} rows of 4H {g4} / C {c}",
            dxw.len(),
            x.len()
        ));
    }
    let per = bt.div_ceil(WGRAD_MAX_PARTS).max(WGRAD_MIN_ROWS).min(bt);
    let parts = bt.div_ceil(per.max(1));
    let g = if parts > 1 {
        let sums = (0..parts)
            .into_par_iter()
            .map(|k| partial(k * per, ((k + 1) * per).min(bt), 1))
            .collect::<Result<Vec<_>, String>>()?;
        sum_in_order(sums, g4 * ch1)
    } else {
        partial(0, bt, threads)?
    };
    for ((dst, bias), src) in dw
        .chunks_exact_mut(c + h)
        .zip(db.iter_mut())
        .zip(g.chunks_exact(ch1))
    {
        dst.copy_from_slice(&src[..c + h]);
        *bias = src[c + h];
    }
    Ok(())
}
/// A whole LSTM layer, all directions in one op: `(x (B, T, C), w (D, 4H, C + H), bias (D, 4H))
/// -> (2, B, T, D·H)` = the hidden states of every direction side by side (forward half first,
/// the layer's output), then the cell states laid out alike. `w` stacks `[W_ih | W_hh]` per
/// direction, `bias` the summed biases; direction 1 runs in reverse.
///
/// The input projections use every thread; the recurrence and its backward run as
/// independent single-threaded tasks per (direction, block of sequences) (see the module
/// docs); the weight, bias and input gradients are again products with every thread.
#[derive(Debug, Clone)]
pub(crate) struct LstmBiLayerOp {
    pub hidden: usize,
    /// Valid steps per sequence (`None`: all `T`).
    pub lengths: Option<Vec<usize>>,
    acts: SavedCell,
}

impl LstmBiLayerOp {
    pub fn new(hidden: usize, lengths: Option<Vec<usize>>) -> Self {
        LstmBiLayerOp {
            hidden,
            lengths,
            acts: SavedCell::default(),
        }
    }

    /// The single-direction view of direction `d` for the `nb` sequences from `b0` on.
    fn direction(&self, d: usize, b0: usize, nb: usize) -> LstmLayerOp {
        let lengths = self
            .lengths
            .as_ref()
            .map(|l| l.iter().skip(b0).take(nb).copied().collect());
        LstmLayerOp::new(self.hidden, d == 1, lengths)
    }
}

/// How a layer's recurrence is split into independent rayon tasks: the sequences of a batch
/// never interact, so each (direction, block of sequences) runs its whole time loop on its
/// own, single-threaded, with no synchronisation per step. Returns the sequences per task and
/// the threads each task's own products may use (all of them when there is a single task).
fn task_split(b: usize, nd: usize, threads: usize) -> (usize, usize) {
    let blocks = threads.div_ceil(nd.max(1)).clamp(1, b.max(1));
    let per = b.div_ceil(blocks).max(1);
    let tasks = nd * b.div_ceil(per);
    (per, if tasks > 1 { 1 } else { threads })
}

/// `(B, T, C, D)` from the operands `x (B, T, C)`, `w (D, 4H, C + H)`, `bias (D, 4H)`.
fn bi_dims(
    x: &Layout,
    w: &Layout,
    bias: &Layout,
    hidden: usize,
) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (b, t, c) = x.shape().dims3()?;
    let (nd, wg, wc) = w.shape().dims3()?;
    if !(1..=2).contains(&nd)
        || wg != 4 * hidden
        || wc != c + hidden
        || bias.shape().dims() != [nd, 4 * hidden]
    {
        return Err(candle_core::Error::Msg(format!(
            "fused lstm layer: expected x (B, T, C), [W_ih | W_hh] (D, {}, C + {hidden}) with D in 1..=2 and bias (D, {}), got {:?}, {:?} and {:?}",
            4 * hidden,
            4 * hidden,
            x.shape(),
            w.shape(),
            bias.shape()
        )));
    }
    Ok((b, t, c, nd))
}

/// `[W_ih | W_hh]` `(4H, C + H)` of direction `d` in `w` `(D, 4H, C + H)`.
fn direction_weights<T>(w: &[T], d: usize, c: usize, h: usize) -> Result<&[T], String> {
    let n = 4 * h * (c + h);
    w.get(d * n..(d + 1) * n)
        .ok_or_else(|| format!("weights of direction {d} missing ({} values)", w.len()))
}

/// The input projections `x W_ihᵀ + b` of every direction, `(D, B·T, 4H)`, in blocks of
/// `PROJ_ROWS` rows (a block may end one direction and start the next): gemm writes each block's
/// product straight into the fresh buffer, and the bias rows are added to it while the block is
/// in cache (a separate pass adding the bias to the finished product cost ~13 % of a one-layer
/// forward; appending the bias rows first and accumulating the product onto them, ~3 %), or not
/// at all when the bias is zero (BreizhCrops' LSTM has none). `w_t` holds `[W_ih | W_hh]ᵀ` of
/// every direction.
fn project<T: Float>(
    x: &[T],
    w_t: &[T],
    bias: &[T],
    has_bias: bool,
    (bt, c, h, nd): (usize, usize, usize, usize),
    proj_threads: usize,
) -> Result<Vec<T>, String> {
    let g4 = 4 * h;
    let wn = (c + h) * g4;
    par_appended(nd * bt * g4, PROJ_ROWS * g4, |blk, ab| {
        let (r0, rows) = (blk * PROJ_ROWS, ab.capacity() / g4.max(1));
        let mut done = 0;
        while done < rows {
            let (d, local) = ((r0 + done) / bt, (r0 + done) % bt);
            let take = (bt - local).min(rows - done);
            let w_ih_t = Mat::row_major(&w_t[d * wn..d * wn + c * g4], c, g4);
            let xs = Mat::row_major(&x[local * c..(local + take) * c], take, c);
            ab.extend_product(xs, w_ih_t, proj_threads)?;
            if has_bias {
                let bias_row = &bias[d * g4..(d + 1) * g4];
                for row in ab.written()[done * g4..(done + take) * g4].chunks_mut(g4) {
                    for (v, &bv) in row.iter_mut().zip(bias_row) {
                        *v += bv;
                    }
                }
            }
            done += take;
        }
        Ok::<(), String>(())
    })
}

/// Forward of [`LstmBiLayerOp`]: `(hc (2, B, T, D·H), acts (D, B, T, 4H))`.
///
/// Each direction's input projection is computed straight into its slice of `acts` (which the
/// recurrence then turns into activations in place), and each direction writes its states
/// straight into its columns of the output: nothing is copied after the loop.
fn bi_forward<T: Float>(
    op: &LstmBiLayerOp,
    x: &[T],
    w: &[T],
    bias: &[T],
    (b, t, c, nd): (usize, usize, usize, usize),
) -> Result<(Vec<T>, Vec<T>), String> {
    let h = op.hidden;
    let (g4, bt, dh) = (4 * h, b * t, nd * h);
    let threads = rayon::current_num_threads();
    if x.len() != bt * c || bias.len() != nd * g4 {
        return Err(format!(
            "input ({}) or bias ({}) do not hold B {b} x T {t} x C {c} / D {nd} x 4H {g4} values",
            x.len(),
            bias.len()
        ));
    }
    // [W_ih | W_hh]ᵀ of each direction, row-major (C + H, 4H): its first C rows are W_ihᵀ and
    // its last H rows W_hhᵀ, which the products read as they are, where `W_ih` or `W_hh` inside
    // `[W_ih | W_hh]` would be packed again by `gemm` at every call: at every step for the
    // recurrent products (~5 % faster, 128 sequences x 128 -> 512, AVX2) and for every block of
    // `PROJ_ROWS` rows in the input projection (packing was 6.5 % of a one-layer forward,
    // 128 -> 128, AVX-512)
    let wn = (c + h) * g4;
    let mut w_t = vec![T::ZERO; nd * wn];
    for (d, wt) in w_t.chunks_mut(wn).enumerate() {
        crate::ops::transpose::transpose(direction_weights(w, d, c, h)?, (g4, c + h), wt);
    }
    let has_bias = bias.iter().any(|&v| v != T::ZERO);
    let (per, inner) = task_split(b, nd, threads);
    // f32 on AVX-512 with single-threaded tasks: each task computes its projections itself,
    // step by step inside the fused recurrence (every value of `acts` is written there)
    #[cfg(target_arch = "x86_64")]
    let fused = if inner == 1 {
        super::lstm_fused::available::<T>(h)
    } else {
        None
    };
    #[cfg(not(target_arch = "x86_64"))]
    let fused: Option<usize> = None;
    let proj_threads = if nd * bt <= PROJ_ROWS { threads } else { 1 };
    let mut acts = if fused.is_some() {
        zeros_par(nd * bt * g4)
    } else {
        project(x, &w_t, bias, has_bias, (bt, c, h, nd), proj_threads)?
    };
    // the output (2, B·T, D·H) as H-slices: slice j belongs to direction j mod D, and each
    // direction's slices come in (half, row) order
    let mut out = zeros_par(2 * bt * dh);
    let mut rows: Vec<Vec<&mut [T]>> = (0..nd).map(|_| Vec::with_capacity(2 * bt)).collect();
    for (j, r) in out.chunks_mut(h).enumerate() {
        if let Some(dst) = rows.get_mut(j % nd) {
            dst.push(r);
        }
    }
    // tasks: (direction, first sequence, activations, hidden rows, cell rows)
    let mut tasks = Vec::new();
    for (d, (a, r)) in acts.chunks_mut(bt * g4).zip(rows.iter_mut()).enumerate() {
        let half = bt.min(r.len());
        let (h_rows, c_rows) = r.split_at_mut(half);
        let blocks = a
            .chunks_mut(per * t * g4)
            .zip(h_rows.chunks_mut(per * t))
            .zip(c_rows.chunks_mut(per * t));
        for (k, ((a, hr), cr)) in blocks.enumerate() {
            tasks.push((d, k * per, a, hr, cr));
        }
    }
    #[allow(clippy::type_complexity)]
    let run = |(d, b0, a, hr, cr): (usize, usize, &mut [T], &mut [&mut [T]], &mut [&mut [T]])| {
        let nb = hr.len() / t.max(1);
        let dir = op.direction(d, b0, nb);
        #[cfg(target_arch = "x86_64")]
        if let Some(lanes) = fused {
            let w_dir = Mat::row_major(&w_t[d * wn..(d + 1) * wn], c + h, g4);
            let xs = &x[b0 * t * c..(b0 + nb) * t * c];
            let b_dir = has_bias.then(|| &bias[d * g4..(d + 1) * g4]);
            return super::lstm_fused::forward(lanes, &dir, xs, w_dir, b_dir, a, hr, cr, nb, t);
        }
        let w_hh_t = Mat::row_major(&w_t[d * wn + c * g4..(d + 1) * wn], h, g4);
        lstm_forward(&dir, a, hr, cr, w_hh_t, nb, t, inner)
    };
    if tasks.len() == 1 {
        tasks.into_iter().try_for_each(run)?;
    } else {
        tasks.into_par_iter().try_for_each(run)?;
    }
    drop(rows);
    Ok((out, acts))
}

/// Backward of [`LstmBiLayerOp`]: `(dx (B, T, C), dw (D, 4H, C + H), dbias (D, 4H))`.
///
/// The states and their gradients are read in place in the `(2, B, T, D·H)` layout; each
/// direction writes its gate gradients, weight and bias gradients into its own slices of
/// buffers shared by all directions; `dx` is one accumulating product per direction after.
#[allow(clippy::type_complexity)]
fn bi_backward<T: Float>(
    op: &LstmBiLayerOp,
    x: &[T],
    w: &[T],
    res: &[T],
    acts: &[T],
    grad: &[T],
    (b, t, c, nd): (usize, usize, usize, usize),
) -> Result<(Vec<T>, Vec<T>, Vec<T>), String> {
    let h = op.hidden;
    let (g4, bt, dh) = (4 * h, b * t, nd * h);
    let threads = rayon::current_num_threads();
    if res.len() != 2 * bt * dh
        || grad.len() != 2 * bt * dh
        || acts.len() != nd * bt * g4
        || x.len() != bt * c
    {
        return Err(format!(
            "saved states ({}), their gradient ({}), activations ({}) or input ({}) do not fit B {b}, T {t}, C {c}, D {nd}, H {h}",
            res.len(),
            grad.len(),
            acts.len(),
            x.len()
        ));
    }
    let mut dxw = zeros_par(nd * bt * g4);
    let mut dw = vec![T::ZERO; nd * g4 * (c + h)];
    let mut db = vec![T::ZERO; nd * g4];
    let dims = (bt, nd, h);
    // backward through time: the same (direction, block of sequences) tasks as the forward
    let (per, inner) = task_split(b, nd, threads);
    let mut tasks = Vec::new();
    for (d, dxw_d) in dxw.chunks_mut(bt * g4).enumerate() {
        for (k, blk) in dxw_d.chunks_mut(per * t * g4).enumerate() {
            tasks.push((d, k * per, blk));
        }
    }
    let run = |(d, b0, dxw_blk): (usize, usize, &mut [T])| {
        let (_, w_hh) = weight_views(direction_weights(w, d, c, h)?, c, h);
        let nb = dxw_blk.len() / (t * g4).max(1);
        let r0 = b0 * t;
        let a = acts
            .get(d * bt * g4 + r0 * g4..d * bt * g4 + (r0 + nb * t) * g4)
            .ok_or_else(|| "activations too short".to_string())?;
        let grads = (
            DirRows::new(grad, 0, d, dims).starting_at(r0),
            DirRows::new(grad, 1, d, dims).starting_at(r0),
        );
        let c_all = DirRows::new(res, 1, d, dims).starting_at(r0);
        let dir = op.direction(d, b0, nb);
        lstm_backward(&dir, c_all, grads, a, dxw_blk, w_hh, nb, t, inner)
    };
    if tasks.len() == 1 {
        tasks.into_iter().try_for_each(run)?;
    } else {
        tasks.into_par_iter().try_for_each(run)?;
    }
    // weight and bias gradients: products over all rows, every thread
    for (d, ((dxw_d, dw_d), db_d)) in dxw
        .chunks(bt * g4)
        .zip(dw.chunks_mut(g4 * (c + h)))
        .zip(db.chunks_mut(g4))
        .enumerate()
    {
        let h_all = DirRows::new(res, 0, d, dims);
        let dir = op.direction(d, 0, b);
        weight_grads(&dir, x, h_all, dxw_d, (dw_d, db_d), (b, t, c), threads)?;
    }
    // dx = Σ_d dxw_d W_ih_d
    let mut dx = zeros_par(bt * c);
    for (d, dxw_d) in dxw.chunks(bt * g4).enumerate() {
        let (w_ih, _) = weight_views(direction_weights(w, d, c, h)?, c, h);
        matmul(
            &mut dx,
            c,
            Mat::row_major(dxw_d, bt, g4),
            w_ih,
            d > 0,
            threads,
        )?;
    }
    Ok((dx, dw, db))
}

impl CustomOp3 for LstmBiLayerOp {
    fn name(&self) -> &'static str {
        "canopy-lstm-bilayer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = bi_dims(l1, l2, l3, self.hidden)?;
        let err = |m: String| candle_core::Error::Msg(format!("fused lstm layer: {m}"));
        let name = "fused lstm layer";
        macro_rules! run {
            ($t:ty) => {
                bi_forward::<$t>(
                    self,
                    slice(s1, l1, name)?,
                    slice(s2, l2, name)?,
                    slice(s3, l3, name)?,
                    dims,
                )
                .map_err(err)?
            };
        }
        let (out, acts) = match (s1, s2, s3) {
            (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let (hc, acts) = run!(f32);
                (CpuStorage::F32(hc), Saved::F32(Arc::new(acts)))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let (hc, acts) = run!(f64);
                (CpuStorage::F64(hc), Saved::F64(Arc::new(acts)))
            }
            _ => return Err(err("operands must all be f32 or all f64".into())),
        };
        self.acts.store(acts)?;
        Ok((out, Shape::from((2, dims.0, dims.1, dims.3 * self.hidden))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let err = |m: &str| candle_core::Error::Msg(format!("fused lstm layer backward: {m}"));
        let acts = self.acts.load()?;
        let (sx, lx) = x.storage_and_layout();
        let (sw, lw) = w.storage_and_layout();
        let (so, lo) = res.storage_and_layout();
        let (sg, lg) = grad.storage_and_layout();
        let (Storage::Cpu(sx), Storage::Cpu(sw), Storage::Cpu(so), Storage::Cpu(sg)) =
            (&*sx, &*sw, &*so, &*sg)
        else {
            return Err(err("CPU tensors only"));
        };
        let dims = bi_dims(lx, lw, bias.layout(), self.hidden)?;
        let dev = x.device();
        let name = "fused lstm layer";
        macro_rules! run {
            ($t:ty, $acts:expr) => {{
                let (dx, dw, db) = bi_backward::<$t>(
                    self,
                    slice(sx, lx, name)?,
                    slice(sw, lw, name)?,
                    slice(so, lo, name)?,
                    $acts,
                    slice(sg, lg, name)?,
                    dims,
                )
                .map_err(|m| err(&m))?;
                (
                    Tensor::from_vec(dx, x.shape(), dev)?,
                    Tensor::from_vec(dw, w.shape(), dev)?,
                    Tensor::from_vec(db, bias.shape(), dev)?,
                )
            }};
        }
        let (dx, dw, db) = match (so, &acts) {
            (CpuStorage::F32(_), Saved::F32(a)) => run!(f32, a.as_slice()),
            (CpuStorage::F64(_), Saved::F64(a)) => run!(f64, a.as_slice()),
            _ => return Err(err("no forward activations of the output's dtype")),
        };
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The gate update of a ConvLSTM cell (or any LSTM cell whose gates come as `4` blocks of `M`
/// values per sample): `(gates (B, 4·M), c (B, M)) -> [h' (B, M), c' (B, M)]` packed as
/// `(B, 2·M)` (for images, `M = hidden · H · W` and the packed output is `(B, 2·hidden, H, W)`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LstmGatesOp {
    /// Block index of the input, forget, cell-candidate and output gates.
    pub order: [usize; 4],
}

/// Values per block for a gates tensor `(B, 4·hidden, ..)` and state `(B, hidden, ..)`.
fn gate_dims(gates: &Layout, c: &Layout) -> candle_core::Result<(usize, usize)> {
    let (gd, cd) = (gates.shape().dims(), c.shape().dims());
    let b = gd.first().copied().unwrap_or(0);
    let m = c.shape().elem_count() / b.max(1);
    if cd.first() != Some(&b) || gates.shape().elem_count() != 4 * b * m {
        return Err(candle_core::Error::Msg(format!(
            "lstm gates: expected gates (B, 4 * hidden, ..) and state (B, hidden, ..), got {gd:?} and {cd:?}"
        )));
    }
    Ok((b, m))
}

/// Work unit of the gate kernels (values per task).
const GATE_CHUNK: usize = 4096;
/// Rows per block of a layer's input projection.
const PROJ_ROWS: usize = 256;

/// `c' = σ(f) c + σ(i) tanh(g)`, `h' = σ(o) tanh(c')` element by element (equal-length slices,
/// so the loop vectorises).
#[inline]
fn cell_update<T: Float>(
    h: &mut [T],
    c: &mut [T],
    cp: &[T],
    gi: &[T],
    gf: &[T],
    gg: &[T],
    go: &[T],
) {
    let n = h
        .len()
        .min(c.len())
        .min(cp.len())
        .min(gi.len())
        .min(gf.len())
        .min(gg.len())
        .min(go.len());
    let (h, c, cp, gi, gf, gg, go) = (
        &mut h[..n],
        &mut c[..n],
        &cp[..n],
        &gi[..n],
        &gf[..n],
        &gg[..n],
        &go[..n],
    );
    pulp::Arch::new().dispatch(CellUpdate {
        h,
        c,
        cp,
        gates: [gi, gf, gg, go],
    });
}

/// The body of [`cell_update`] (equal-length slices) as a pulp op, vectorised like
/// [`GatesForward`].
struct CellUpdate<'a, T> {
    h: &'a mut [T],
    c: &'a mut [T],
    cp: &'a [T],
    gates: [&'a [T]; 4],
}

impl<T: Float> pulp::WithSimd for CellUpdate<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [gi, gf, gg, go] = self.gates;
        let n = self.h.len();
        let (c, cp, h) = (&mut self.c[..n], &self.cp[..n], self.h);
        let (gi, gf, gg, go) = (&gi[..n], &gf[..n], &gg[..n], &go[..n]);
        for k in 0..n {
            let cn = gf[k].sigmoid() * cp[k] + gi[k].sigmoid() * gg[k].tanh();
            c[k] = cn;
            h[k] = go[k].sigmoid() * cn.tanh();
        }
    }
}

/// The gradient loop of [`gates_backward`] for one sample (equal-length slices): from the
/// pre-activations `gates` (`i, f, g, o`), the previous cell state `cp`, the new cell state
/// `c_new` and the gradients `dh`, `dcn` of the outputs, the pre-activation gradients `dgates`
/// and the previous cell state's gradient `dcp`. Vectorised like [`GatesForward`].
struct CellBackward<'a, T> {
    gates: [&'a [T]; 4],
    cp: &'a [T],
    c_new: &'a [T],
    grads: [&'a [T]; 2],
    dgates: [&'a mut [T]; 4],
    dcp: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for CellBackward<'_, T> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let [gi, gf, gg, go] = self.gates;
        let [dh, dcn] = self.grads;
        let [di, df, dgg, dout] = self.dgates;
        let m = gi.len();
        let (gf, gg, go, cp, c_new) = (
            &gf[..m],
            &gg[..m],
            &go[..m],
            &self.cp[..m],
            &self.c_new[..m],
        );
        let (dh, dcn) = (&dh[..m], &dcn[..m]);
        let (di, df, dgg, dout, dcp) = (
            &mut di[..m],
            &mut df[..m],
            &mut dgg[..m],
            &mut dout[..m],
            &mut self.dcp[..m],
        );
        for k in 0..m {
            let acts = [
                gi[k].sigmoid(),
                gf[k].sigmoid(),
                gg[k].tanh(),
                go[k].sigmoid(),
            ];
            let [d_i, d_f, d_g, d_o, d_c] = cell_grads(acts, c_new[k].tanh(), cp[k], dh[k], dcn[k]);
            (di[k], df[k], dgg[k], dout[k], dcp[k]) = (d_i, d_f, d_g, d_o, d_c);
        }
    }
}

fn gates_forward<T: Float>(order: [usize; 4], gates: &[T], c: &[T], b: usize, m: usize) -> Vec<T> {
    let [oi, of, og, oo] = order;
    let mut out = vec![T::ZERO; 2 * b * m];
    out.par_chunks_mut(2 * m).enumerate().for_each(|(bi, o)| {
        let (h_out, c_out) = o.split_at_mut(m);
        let g = &gates[bi * 4 * m..(bi + 1) * 4 * m];
        let cp = &c[bi * m..(bi + 1) * m];
        let blk = |o: usize| &g[o * m..(o + 1) * m];
        let (gi, gf, gg, go) = (blk(oi), blk(of), blk(og), blk(oo));
        h_out
            .par_chunks_mut(GATE_CHUNK)
            .zip(c_out.par_chunks_mut(GATE_CHUNK))
            .zip(cp.par_chunks(GATE_CHUNK))
            .zip(gi.par_chunks(GATE_CHUNK))
            .zip(gf.par_chunks(GATE_CHUNK))
            .zip(gg.par_chunks(GATE_CHUNK))
            .zip(go.par_chunks(GATE_CHUNK))
            .for_each(|((((((hs, cs), cp), gi), gf), gg), go)| {
                cell_update(hs, cs, cp, gi, gf, gg, go);
            });
    });
    out
}

/// `(d gates, d c)` from the inputs, the forward output and its gradient.
fn gates_backward<T: Float>(
    order: [usize; 4],
    gates: &[T],
    c: &[T],
    out: &[T],
    grad: &[T],
    b: usize,
    m: usize,
) -> (Vec<T>, Vec<T>) {
    let [oi, of, og, oo] = order;
    let mut dgates = zeros_par(4 * b * m);
    let mut dc = zeros_par(b * m);
    dgates
        .par_chunks_mut(4 * m)
        .zip(dc.par_chunks_mut(m))
        .enumerate()
        .for_each(|(bi, (dg, dcp))| {
            let g = &gates[bi * 4 * m..(bi + 1) * 4 * m];
            let cp = &c[bi * m..(bi + 1) * m];
            let (o_b, g_b) = (
                &out[bi * 2 * m..(bi + 1) * 2 * m],
                &grad[bi * 2 * m..(bi + 1) * 2 * m],
            );
            let blk = |o: usize| &g[o * m..(o + 1) * m];
            let (gi, gf, gg, go) = (blk(oi), blk(of), blk(og), blk(oo));
            // the four gradient blocks, in their storage order
            let mut parts: Vec<(usize, &mut [T])> = dg.chunks_mut(m).enumerate().collect();
            parts.sort_by_key(|(blk, _)| [oi, of, og, oo].iter().position(|o| o == blk));
            let mut it = parts.into_iter().map(|(_, p)| p);
            let (Some(di), Some(df), Some(dgg), Some(dout)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return;
            };
            let c_new = &o_b[m..2 * m];
            let (dh, dcn) = (&g_b[..m], &g_b[m..2 * m]);
            pulp::Arch::new().dispatch(CellBackward {
                gates: [gi, gf, gg, go],
                cp,
                c_new,
                grads: [dh, dcn],
                dgates: [di, df, dgg, dout],
                dcp,
            });
        });
    (dgates, dc)
}

impl CustomOp2 for LstmGatesOp {
    fn name(&self) -> &'static str {
        "canopy-lstm-gates"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, m) = gate_dims(l1, l2)?;
        let out = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(gates_forward(
                self.order,
                slice(s1, l1, "fused lstm")?,
                slice(s2, l2, "fused lstm")?,
                b,
                m,
            )),
            (CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(gates_forward(
                self.order,
                slice(s1, l1, "fused lstm")?,
                slice(s2, l2, "fused lstm")?,
                b,
                m,
            )),
            _ => {
                return Err(candle_core::Error::Msg(
                    "lstm gates: operands must both be f32 or both f64".into(),
                ))
            }
        };
        let mut dims = l2.shape().dims().to_vec();
        if let Some(ch) = dims.get_mut(1) {
            *ch *= 2;
        } else {
            dims.push(2 * m);
        }
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        gates: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let err = |m: &str| candle_core::Error::Msg(format!("lstm gates backward: {m}"));
        let (sg, lg) = gates.storage_and_layout();
        let (sc, lc) = c.storage_and_layout();
        let (so, lo) = res.storage_and_layout();
        let (sd, ld) = grad.storage_and_layout();
        let (Storage::Cpu(sg), Storage::Cpu(sc), Storage::Cpu(so), Storage::Cpu(sd)) =
            (&*sg, &*sc, &*so, &*sd)
        else {
            return Err(err("CPU tensors only"));
        };
        let (b, m) = gate_dims(lg, lc)?;
        let dev = gates.device();
        macro_rules! run {
            ($t:ty) => {{
                let (dg, dc) = gates_backward::<$t>(
                    self.order,
                    slice(sg, lg, "fused lstm")?,
                    slice(sc, lc, "fused lstm")?,
                    slice(so, lo, "fused lstm")?,
                    slice(sd, ld, "fused lstm")?,
                    b,
                    m,
                );
                (
                    Tensor::from_vec(dg, gates.shape(), dev)?,
                    Tensor::from_vec(dc, c.shape(), dev)?,
                )
            }};
        }
        let (dg, dc) = match sg {
            CpuStorage::F32(_) => run!(f32),
            CpuStorage::F64(_) => run!(f64),
            _ => return Err(err("operands must be f32 or f64")),
        };
        Ok((Some(dg), Some(dc)))
    }
}

/// Test support: runs `run` on a forward gate op over copies of the pre-activations `pre` (4
/// slices) and the state `state` (`c`, `h`); returns (activations, state, outputs `c`, `h`).
#[cfg(test)]
#[allow(clippy::type_complexity)]
pub(crate) fn gates_forward_case(
    pre: &[Vec<f32>],
    state: &[Vec<f32>],
    run: impl FnOnce(GatesForward<'_, f32>),
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let h = pre[0].len();
    let (mut g, mut s, mut out) = (pre.to_vec(), state.to_vec(), vec![vec![0f32; h]; 2]);
    let [a, b, c, d] = &mut g[..] else {
        panic!("four gate slices expected")
    };
    let [cs, hs] = &mut s[..] else {
        panic!("two state slices expected")
    };
    let [co, ho] = &mut out[..] else {
        unreachable!()
    };
    run(GatesForward {
        gates: [a, b, c, d],
        state: [cs, hs],
        out: [co, ho],
    });
    (g, s, out)
}

/// Test support: runs `run` on a backward gate step from `acts` (4 slices), `cells` (this
/// step's and the previous one's), `grads` (`dh`, `dc`) and a copy of `carry`; returns (gate
/// gradients, carry).
#[cfg(test)]
pub(crate) fn gates_backward_case(
    acts: &[Vec<f32>],
    cells: &[Vec<f32>],
    grads: &[Vec<f32>],
    carry: &[Vec<f32>],
    run: impl FnOnce(GatesBackward<'_, f32>),
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let h = acts[0].len();
    let (mut d, mut cy) = (vec![vec![0f32; h]; 4], carry.to_vec());
    let [a, b, c, e] = &mut d[..] else {
        unreachable!()
    };
    let [dh, dc] = &mut cy[..] else {
        panic!("two carry slices expected")
    };
    run(GatesBackward {
        acts: [&acts[0], &acts[1], &acts[2], &acts[3]],
        cells: [&cells[0], &cells[1]],
        grads: [&grads[0], &grads[1]],
        dgates: [a, b, c, e],
        carry: [dh, dc],
    });
    (d, cy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The gate kernels give the same bits compiled for the dispatched instruction set (AVX2 /
    /// AVX-512 here) and for the baseline, forward and backward, f32 and an odd length (vector
    /// tails).
    #[test]
    fn dispatched_gate_kernels_equal_the_baseline_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let h = 37;
        let mut rand_vec =
            |scale: f32| -> Vec<f32> { (0..h).map(|_| rng.random_range(-scale..scale)).collect() };
        let pre: Vec<Vec<f32>> = (0..4).map(|_| rand_vec(6.0)).collect();
        let state: Vec<Vec<f32>> = (0..2).map(|_| rand_vec(2.0)).collect();
        let forward = |dispatch: bool| {
            super::gates_forward_case(&pre, &state, |op| crate::ops::cpu::run_simd(op, dispatch))
        };
        let (fa, fb) = (forward(true), forward(false));
        assert_eq!(fa, fb);
        let (acts, cells, grads, carry) = (
            fa.0,
            [rand_vec(2.0), rand_vec(2.0)],
            [rand_vec(1.0), rand_vec(1.0)],
            [rand_vec(1.0), rand_vec(1.0)],
        );
        let backward = |dispatch: bool| {
            super::gates_backward_case(&acts, &cells, &grads, &carry, |op| {
                crate::ops::cpu::run_simd(op, dispatch)
            })
        };
        assert_eq!(backward(true), backward(false));
    }

    /// The weight gradients, computed in parts of rows (three here, the last one short),
    /// equal the sums written out, with padded steps in both directions, for any thread count.
    #[test]
    fn weight_gradients_in_parts_equal_the_sums() {
        let (b, t, c, h) = (13usize, 47usize, 5usize, 4usize);
        let (bt, g4) = (b * t, 4 * h);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut v =
            |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let (x, dxw, states) = (v(bt * c), v(bt * g4), v(2 * bt * h));
        let lengths: Vec<usize> = (0..b).map(|i| t - (i * 7) % t).collect();
        assert!(bt > 2 * WGRAD_MIN_ROWS, "the test must take the split path");
        for reverse in [false, true] {
            let op = LstmLayerOp::new(h, reverse, Some(lengths.clone()));
            let h_all = DirRows::new(&states, 0, 0, (bt, 1, h));
            let grads = |threads: usize| {
                let (mut dw, mut db) = (vec![0.0; g4 * (c + h)], vec![0.0; g4]);
                weight_grads(&op, &x, h_all, &dxw, (&mut dw, &mut db), (b, t, c), threads).unwrap();
                (dw, db)
            };
            let (dw, db) = grads(2);
            assert_eq!(
                (dw.clone(), db.clone()),
                grads(1),
                "thread count changed the sums"
            );
            // d[W_ih | W_hh][q][j] = Σ_rows dxw[row][q] [x | h_prev][row][j], db = Σ dxw
            for q in 0..g4 {
                for j in 0..=c + h {
                    let mut want = 0.0;
                    for bi in 0..b {
                        for s in 0..t {
                            let r = bi * t + s;
                            let input = if j < c {
                                x[r * c + j]
                            } else if j < c + h {
                                let prev = op.prev(s, lengths[bi], t).filter(|_| s < lengths[bi]);
                                prev.map_or(0.0, |p| states[(bi * t + p) * h + j - c])
                            } else {
                                1.0
                            };
                            want += dxw[r * g4 + q] * input;
                        }
                    }
                    let got = if j < c + h {
                        dw[q * (c + h) + j]
                    } else {
                        db[q]
                    };
                    assert!(
                        (got - want).abs() < 1e-11,
                        "reverse {reverse}, [{q}][{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// The ConvLSTM cell kernels likewise.
    #[test]
    fn dispatched_cell_kernels_equal_the_baseline_bit_for_bit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let m = 29;
        let mut v =
            |scale: f32| -> Vec<f32> { (0..m).map(|_| rng.random_range(-scale..scale)).collect() };
        let g: Vec<Vec<f32>> = (0..4).map(|_| v(6.0)).collect();
        let (cp, dh, dcn) = (v(2.0), v(1.0), v(1.0));
        let run = |dispatch: bool| {
            let (mut h, mut c) = (vec![0f32; m], vec![0f32; m]);
            let op = CellUpdate {
                h: &mut h,
                c: &mut c,
                cp: &cp,
                gates: [&g[0], &g[1], &g[2], &g[3]],
            };
            crate::ops::cpu::run_simd(op, dispatch);
            let mut d = vec![vec![0f32; m]; 4];
            let mut dcp = vec![0f32; m];
            let [a, b, e, f] = &mut d[..] else {
                unreachable!()
            };
            let op = CellBackward {
                gates: [&g[0], &g[1], &g[2], &g[3]],
                cp: &cp,
                c_new: &c,
                grads: [&dh, &dcn],
                dgates: [a, b, e, f],
                dcp: &mut dcp,
            };
            crate::ops::cpu::run_simd(op, dispatch);
            (h, c, d, dcp)
        };
        assert_eq!(run(true), run(false));
    }
}

//! A whole LSTM direction — input projection and recurrence — with matrix products of our own,
//! for f32 on x86-64 with AVX-512.
//!
//! The portable path of [`super::lstm_kernel`] first computes the input projection
//! `xw = x W_ihᵀ + b` of all steps (one large `gemm` product into a `(B, T, 4H)` buffer), then
//! runs each step as a `gemm` call accumulating `h_{t-1} W_hhᵀ` onto the step's rows and a pass of
//! gate updates over them. `gemm` packs its operands again at every call (`W_hhᵀ`, 256 KiB for
//! `H` = 128, at every step) and its products run at ~100 GFLOP/s on one Zen 4 core. Here:
//!
//! - `[W_ih | W_hh]ᵀ` is packed once per direction into panels of 16 hidden units: for each row
//!   `k` of `[W_ih | W_hh]ᵀ`, the four gates' 16 weights side by side (64 values, four vectors;
//!   [`pack_panels`]);
//! - each step runs tile by tile, 6 sequences per tile: for every panel, a 6 x 64 register tile
//!   (24 accumulators, four weight vectors and a broadcast: 29 of the 32 vector registers)
//!   accumulates `x_t[r, k] · W_ihᵀ[k, ..]` for the step's inputs, then `h_{t-1}[r, k] ·
//!   W_hhᵀ[k, ..]`, the inputs and previous hidden states broadcast straight from where they lie.
//!   The products go to a 6 x 4H scratch that stays in the L1 cache. This loop runs at ~113
//!   GFLOP/s on one Zen 4 core (98 % of one 512-bit FMA per cycle), and the projection never
//!   makes a round trip through memory;
//! - then the tile's gate update, sequence by sequence: pre-activation = products + bias,
//!   [`super::gates_fast::cell_update`] (the arithmetic of the two-pass update, bit for bit from
//!   the same pre-activations), the activations the backward pass needs stored in `acts`, the
//!   states straight into the layer's output rows;
//! - while a tile computes, the next tile's rows of `acts`, of the inputs and of the outputs are
//!   prefetched into L2: they lie `T` rows apart, a stride no hardware prefetcher follows (each of
//!   the two groups of hints saves ~4 % of a one-layer forward).
//!
//! The pre-activations equal the portable path's up to rounding (the products are summed in
//! another order). A padded step (beyond a sequence's length) keeps the state and leaves zeros,
//! as in the portable path.
//!
//! Measured (one layer 128 -> 128 on (256, 45, 128), Zen 4, `nn_bench --forward-only`, medians,
//! alternated with the previous build): 34.6 against 37.8 ms on one thread, 18.7 against 19.6
//! ms on two. A first version that kept the portable projection and finished each register tile's
//! gate update in registers was slower than the portable recurrence (23 against 19 ms): the
//! scattered loads of the projection and the spilled accumulators cost more than the packing
//! saved. On AVX2 a 2 x 32 tile of the same design was slower than `gemm`'s kernels, so CPUs
//! without AVX-512 keep the portable path.

use std::any::TypeId;

use pulp::x86::V4;

use super::cpu::{prefetch_l2, Float};
use super::gates_fast::{cell_update, Lanes, Wide};
use super::gemm::Mat;
use super::lstm_kernel::LstmLayerOp;

/// Sequences per register tile at AVX-512 (24 accumulators).
const ROWS_WIDE: usize = 6;

/// The vector width of the fused recurrence for hidden size `h` and element type `T` on this
/// CPU (16: AVX-512), or `None` when the caller must use the two-pass recurrence (not f32, no
/// AVX-512, `h` not a multiple of 16, or turned off by
/// [`set_fused_lstm_enabled`](super::lstm_kernel::set_fused_lstm_enabled)).
pub(crate) fn available<T: 'static>(h: usize) -> Option<usize> {
    let f32_ok = TypeId::of::<T>() == TypeId::of::<f32>();
    (f32_ok
        && h > 0
        && h % 16 == 0
        && super::lstm_kernel::fused_enabled()
        && V4::try_new().is_some())
    .then_some(16)
}

/// `[W_ih | W_hh]ᵀ` `(K, 4H)` (`K` = `C + H`) as panels of `n` hidden units: panel `u` holds, for
/// `k` = 0 .. K, the weights of the gates i, f, g, o for units `u·n .. u·n + n` (`4n` values per
/// `k`: the input weights of the panel first, then its recurrent ones).
fn pack_panels(w_t: Mat<'_, f32>, h: usize, n: usize) -> Vec<f32> {
    let mut panels = Vec::with_capacity(w_t.rows * 4 * h);
    for u in 0..h / n {
        for k in 0..w_t.rows {
            for g in 0..4 {
                let col0 = g * h + u * n;
                let at = k * w_t.rs + col0 * w_t.cs;
                match w_t.data.get(at..at + n) {
                    Some(run) if w_t.cs == 1 => panels.extend_from_slice(run),
                    _ => panels.extend((col0..col0 + n).map(|j| w_t.data[k * w_t.rs + j * w_t.cs])),
                }
            }
        }
    }
    panels
}

/// A whole LSTM direction, input projection included, with the fused kernel at `lanes` (a value
/// of [`available`]), on the calling thread: from `x` `(B, T, C)` (the task's sequences),
/// `w_t` = `[W_ih | W_hh]ᵀ` `(C + H, 4H)` and `bias` `(4H)` (`None` when it is zero), writes
/// every value of `acts` `(B, T, 4H)` (the activations `σ(i), σ(f), tanh(g), σ(o)` the backward
/// pass needs, zeros at padded steps) and the states into `h_rows` / `c_rows` (`B·T` rows of `H`
/// values each, left untouched at padded steps).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<T: Float>(
    lanes: usize,
    op: &LstmLayerOp,
    x: &[T],
    w_t: Mat<'_, T>,
    bias: Option<&[T]>,
    acts: &mut [T],
    h_rows: &mut [&mut [T]],
    c_rows: &mut [&mut [T]],
    b: usize,
    t: usize,
) -> Result<(), String> {
    let h = op.hidden;
    if available::<T>(h).is_none_or(|n| n < lanes) || h % lanes != 0 {
        return Err(format!(
            "fused lstm recurrence at {lanes} lanes is not available for hidden size {h} on this CPU"
        ));
    }
    let c = w_t.rows.saturating_sub(h);
    if c == 0
        || acts.len() != b * t * 4 * h
        || x.len() != b * t * c
        || h_rows.len() != b * t
        || c_rows.len() != b * t
        || h_rows.iter().chain(c_rows.iter()).any(|r| r.len() != h)
        || w_t.rows < h
        || w_t.cols != 4 * h
        || bias.is_some_and(|v| v.len() != 4 * h)
    {
        return Err(format!(
            "fused lstm buffers do not fit B {b}, T {t}, C {c}, H {h} ({} inputs, {} activations, {} + {} state rows, [W_ih | W_hh]ᵀ {} x {}, bias {:?})",
            x.len(),
            acts.len(),
            h_rows.len(),
            c_rows.len(),
            w_t.rows,
            w_t.cols,
            bias.map(<[T]>::len)
        ));
    }
    let w: Mat<'_, f32> = Mat {
        data: bytemuck::cast_slice(w_t.data),
        rows: w_t.rows,
        cols: w_t.cols,
        rs: w_t.rs,
        cs: w_t.cs,
    };
    let panels = pack_panels(w, h, lanes);
    let run = Recurrence {
        op,
        x: bytemuck::cast_slice(x),
        c,
        bias: bias.map(bytemuck::cast_slice),
        panels: &panels,
        acts: bytemuck::cast_slice_mut(acts),
        h_rows,
        c_rows,
        b,
        t,
    };
    match (lanes, V4::try_new()) {
        (16, Some(simd)) => run.run::<Wide, ROWS_WIDE>(Wide(simd)),
        _ => Err(format!("no fused lstm kernel at {lanes} lanes")),
    }
}

/// The operands of one direction's fused recurrence.
struct Recurrence<'a, 'b, 'c, T> {
    op: &'a LstmLayerOp,
    /// `(B, T, C)`.
    x: &'a [f32],
    c: usize,
    bias: Option<&'a [f32]>,
    panels: &'a [f32],
    acts: &'a mut [f32],
    h_rows: &'a mut [&'b mut [T]],
    c_rows: &'a mut [&'c mut [T]],
    b: usize,
    t: usize,
}

impl<T: Float> Recurrence<'_, '_, '_, T> {
    /// The time loop: per step, every tile of `R` sequences (the last one possibly smaller),
    /// each as one [`Tile`].
    fn run<L: Lanes, const R: usize>(self, l: L) -> Result<(), String> {
        let (op, t, b) = (self.op, self.t, self.b);
        let h = op.hidden;
        let g4 = 4 * h;
        let row_len = t * g4;
        let mut hp = vec![0f32; b * h];
        let mut hn = vec![0f32; b * h];
        let mut c = vec![0f32; b * h];
        let mut valid = vec![false; b];
        // a tile's products `h W_hhᵀ` (`R x 4H`)
        let mut prod = vec![0f32; R * g4];
        for (step, s) in op.order(t).into_iter().enumerate() {
            for (bi, v) in valid.iter_mut().enumerate() {
                *v = s < op.len_of(bi, t);
            }
            let tiles = self
                .acts
                .chunks_mut(R * row_len)
                .zip(self.x.chunks(R * t * self.c.max(1)))
                .zip(self.h_rows.chunks_mut(R * t))
                .zip(self.c_rows.chunks_mut(R * t))
                .zip(hp.chunks(R * h))
                .zip(hn.chunks_mut(R * h))
                .zip(c.chunks_mut(R * h))
                .zip(valid.chunks(R));
            let mut tiles = tiles.peekable();
            while let Some((((((((acts, xs), h_out), c_out), hp), hn), c), valid)) = tiles.next() {
                // the next tile's step rows and output rows on their way to the cache while
                // this one computes (they lie far apart, where no hardware prefetcher looks)
                if let Some((((((((next, x_next), h_next), c_next), _), _), _), _)) = tiles.peek() {
                    for row in next.chunks(row_len) {
                        prefetch_l2(row.get(s * g4..(s + 1) * g4).unwrap_or(&[]));
                    }
                    for row in x_next.chunks(t * self.c.max(1)) {
                        prefetch_l2(row.get(s * self.c..(s + 1) * self.c).unwrap_or(&[]));
                    }
                    for r in (s..h_next.len()).step_by(t.max(1)) {
                        prefetch_l2(&*h_next[r]);
                        prefetch_l2(&*c_next[r]);
                    }
                }
                let q = valid.len();
                let tile: Tile<'_, '_, '_, T, L, R> = Tile {
                    lanes: l,
                    panels: self.panels,
                    xs,
                    x_at: s * self.c,
                    x_stride: t * self.c,
                    inputs: self.c,
                    bias: self.bias,
                    hp: (step > 0).then_some(hp),
                    prod: &mut prod[..q * g4],
                    hn,
                    c,
                    acts,
                    at: s * g4,
                    row_len,
                    h,
                    h_out,
                    c_out,
                    s,
                    t,
                    valid,
                };
                match q {
                    q if q == R => l.run(tile),
                    1 => l.run(tile.sized::<1>()),
                    2 => l.run(tile.sized::<2>()),
                    3 => l.run(tile.sized::<3>()),
                    4 => l.run(tile.sized::<4>()),
                    5 => l.run(tile.sized::<5>()),
                    other => return Err(format!("no fused lstm tile of {other} sequences")),
                }
            }
            std::mem::swap(&mut hp, &mut hn);
        }
        Ok(())
    }
}

/// One step of `R` sequences: their products `h_{t-1} W_hhᵀ` one register tile (`R` sequences
/// x the four gates of `N` hidden units) at a time into `prod`, then the gate update of each
/// sequence from `prod` + the input projection.
struct Tile<'a, 'b, 'c, T, L, const R: usize> {
    lanes: L,
    /// The panels of `[W_ih | W_hh]ᵀ` (see [`pack_panels`]).
    panels: &'a [f32],
    /// The tile's input rows: sequence `r`'s step input at `r·x_stride + x_at`, `c` values.
    xs: &'a [f32],
    x_at: usize,
    x_stride: usize,
    /// `C`.
    inputs: usize,
    bias: Option<&'a [f32]>,
    /// The previous hidden states of the tile's sequences (`R·H`); `None` at the first step (zero).
    hp: Option<&'a [f32]>,
    /// Scratch for the products (`R x 4H`, the gate layout of a row of `acts`).
    prod: &'a mut [f32],
    /// Where the new hidden states go (`R·H`).
    hn: &'a mut [f32],
    /// The cell states (`R·H`), updated in place.
    c: &'a mut [f32],
    /// The tile's rows of the activations, `row_len` values per sequence.
    acts: &'a mut [f32],
    /// Offset of the step in a row of `acts`.
    at: usize,
    row_len: usize,
    h: usize,
    /// The hidden and cell output rows of the tile's sequences (`R·T` each, row `r·T + s`).
    h_out: &'a mut [&'b mut [T]],
    c_out: &'a mut [&'c mut [T]],
    s: usize,
    t: usize,
    /// Which of the tile's sequences have step `s` (the others are padded there).
    valid: &'a [bool],
}

impl<'a, 'b, 'c, T, L, const R: usize> Tile<'a, 'b, 'c, T, L, R> {
    /// The same tile typed for `Q` sequences (`Q` = the number of sequences it holds).
    fn sized<const Q: usize>(self) -> Tile<'a, 'b, 'c, T, L, Q> {
        Tile {
            lanes: self.lanes,
            panels: self.panels,
            xs: self.xs,
            x_at: self.x_at,
            x_stride: self.x_stride,
            inputs: self.inputs,
            bias: self.bias,
            hp: self.hp,
            prod: self.prod,
            hn: self.hn,
            c: self.c,
            acts: self.acts,
            at: self.at,
            row_len: self.row_len,
            h: self.h,
            h_out: self.h_out,
            c_out: self.c_out,
            s: self.s,
            t: self.t,
            valid: self.valid,
        }
    }
}

impl<T: Float, L: Lanes, const R: usize> pulp::WithSimd for Tile<'_, '_, '_, T, L, R> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        // (plain loops, no closures: a closure loses the target features, see `Lanes::exp_n`)
        let (l, h, n) = (self.lanes, self.h, L::N);
        let g4 = 4 * h;
        let (xs, x_at, x_stride) = (self.xs, self.x_at, self.x_stride);
        let kn = (self.inputs + h) * 4 * n;
        for (u, panel) in self.panels.chunks_exact(kn).enumerate() {
            let (w_in, w_rec) = panel.split_at(4 * n * self.inputs);
            let mut acc = [[l.splat(0.0); 4]; R];
            // the input projection x_t W_ihᵀ, plus h_{t-1} W_hhᵀ (zero before the first step)
            accumulate(l, &mut acc, w_in, xs, x_stride, x_at);
            if let Some(hp) = self.hp {
                accumulate(l, &mut acc, w_rec, &hp[..R * h], h, 0);
            }
            for (acc, row) in acc.iter().zip(self.prod.chunks_exact_mut(g4)) {
                for (g, &a) in acc.iter().enumerate() {
                    l.store(&mut row[g * h + u * n..], a);
                }
            }
        }
        // the gate update, sequence by sequence, two vectors of units at a time (their
        // exponentials interleaved), then one
        let rows = self
            .acts
            .chunks_mut(self.row_len)
            .zip(self.prod.chunks_exact(g4))
            .zip(self.hn.chunks_exact_mut(h))
            .zip(self.c.chunks_exact_mut(h))
            .zip(self.valid)
            .enumerate();
        for (r, ((((arow, prod), hn), c), &valid)) in rows {
            let a = &mut arow[self.at..self.at + g4];
            let at = r * self.t + self.s;
            if !valid {
                // padded: zero activations, the state kept, the outputs left zero
                a.fill(0.0);
                match self.hp {
                    Some(hp) => hn.copy_from_slice(&hp[r * h..(r + 1) * h]),
                    None => hn.fill(0.0),
                }
                continue;
            }
            let h_out: &mut [f32] = bytemuck::cast_slice_mut(&mut *self.h_out[at]);
            let c_out: &mut [f32] = bytemuck::cast_slice_mut(&mut *self.c_out[at]);
            let mut k = 0;
            while k + 2 * n <= h {
                update::<L, 2, 8>(l, k, h, a, prod, self.bias, [c, hn, h_out, c_out]);
                k += 2 * n;
            }
            while k + n <= h {
                update::<L, 1, 4>(l, k, h, a, prod, self.bias, [c, hn, h_out, c_out]);
                k += n;
            }
        }
    }
}

/// The register tile's inner loop: `acc[r][g] += src[r·stride + at + k] · w[k][g]` for every
/// `k` of the panel part `w` (`4N` weights per `k`, gates i, f, g, o), the value of sequence `r`
/// broadcast from `src`.
#[inline(always)]
fn accumulate<L: Lanes, const R: usize>(
    l: L,
    acc: &mut [[L::V; 4]; R],
    w: &[f32],
    src: &[f32],
    stride: usize,
    at: usize,
) {
    let n = L::N;
    for (k, wk) in w.chunks_exact(4 * n).enumerate() {
        let w = [
            l.load(wk),
            l.load(&wk[n..]),
            l.load(&wk[2 * n..]),
            l.load(&wk[3 * n..]),
        ];
        for (r, acc) in acc.iter_mut().enumerate() {
            let x = l.splat(src[r * stride + at + k]);
            for (a, &wg) in acc.iter_mut().zip(&w) {
                *a = l.fma(x, wg, *a);
            }
        }
    }
}

/// The gate update of `M` vectors of hidden units from `k` on (`G` = `4M`) of one sequence:
/// the pre-activations are `prod` (the products, `[i | f | g | o]`, `H` each) plus `bias` (same
/// layout) when there is one; the activations go to `a` (same layout), the new cell state to
/// `state[0]` and `state[3]`, the new hidden state to `state[1]` and `state[2]`.
#[inline(always)]
fn update<L: Lanes, const M: usize, const G: usize>(
    l: L,
    k: usize,
    h: usize,
    a: &mut [f32],
    prod: &[f32],
    bias: Option<&[f32]>,
    state: [&mut [f32]; 4],
) {
    let n = L::N;
    let mut pre = [l.splat(0.0); G];
    for (j, p) in pre.iter_mut().enumerate() {
        let at = (j % 4) * h + k + (j / 4) * n;
        *p = l.load(&prod[at..]);
        if let Some(bias) = bias {
            *p = l.add(*p, l.load(&bias[at..]));
        }
    }
    let [c, hn, h_out, c_out] = state;
    let mut c_prev = [l.splat(0.0); M];
    for (m, cp) in c_prev.iter_mut().enumerate() {
        *cp = l.load(&c[k + m * n..]);
    }
    let (act, cn, hv) = cell_update::<L, M, G>(l, pre, c_prev);
    for (j, &v) in act.iter().enumerate() {
        l.store(&mut a[(j % 4) * h + k + (j / 4) * n..], v);
    }
    for m in 0..M {
        let o = k + m * n;
        l.store(&mut c[o..], cn[m]);
        l.store(&mut c_out[o..], cn[m]);
        l.store(&mut hn[o..], hv[m]);
        l.store(&mut h_out[o..], hv[m]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lstm_kernel::lstm_forward;
    use rand::{Rng, SeedableRng};

    /// `(activations, states (hidden rows then cell rows))` after one direction: by the fused
    /// kernel from `x`, or by the two-pass recurrence from the projection `x W_ihᵀ + b` computed
    /// here in f64. `w_t` is `[W_ih | W_hh]ᵀ` `(C + H, 4H)`.
    fn direction(
        fused: bool,
        op: &LstmLayerOp,
        x: &[f32],
        w_t: &[f32],
        bias: Option<&[f32]>,
        (b, t, c): (usize, usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let h = op.hidden;
        let g4 = 4 * h;
        let mut acts = vec![f32::NAN; b * t * g4];
        let mut out = vec![0f32; 2 * b * t * h];
        let (hs, cs) = out.split_at_mut(b * t * h);
        let mut h_rows: Vec<&mut [f32]> = hs.chunks_mut(h).collect();
        let mut c_rows: Vec<&mut [f32]> = cs.chunks_mut(h).collect();
        if fused {
            let w = Mat::row_major(w_t, c + h, g4);
            forward(
                16,
                op,
                x,
                w,
                bias,
                &mut acts,
                &mut h_rows,
                &mut c_rows,
                b,
                t,
            )
            .unwrap();
        } else {
            for (row, xr) in acts.chunks_mut(g4).zip(x.chunks(c)) {
                for (j, v) in row.iter_mut().enumerate() {
                    let dot: f64 = (0..c)
                        .map(|k| f64::from(xr[k]) * f64::from(w_t[k * g4 + j]))
                        .sum();
                    *v = (dot + bias.map_or(0.0, |bv| f64::from(bv[j]))) as f32;
                }
            }
            let w = Mat::row_major(&w_t[c * g4..], h, g4);
            lstm_forward(op, &mut acts, &mut h_rows, &mut c_rows, w, b, t, 1).unwrap();
        }
        (acts, out)
    }

    /// The fused kernel gives the two-pass recurrence's activations and states (to rounding: the
    /// products are summed in another order), forward and in reverse, with and without bias, with
    /// full tiles of 6 sequences and a partial one, one input or many, and with padded steps
    /// (lengths, one sequence empty) left at exactly zero.
    #[test]
    fn fused_direction_equals_projection_plus_two_pass_recurrence() {
        if available::<f32>(16).is_none() {
            eprintln!("skipped: this CPU has no AVX-512 (the fused kernel is not used)");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for (b, t, c, h, reverse, with_bias, lengths) in [
            (13usize, 7usize, 5usize, 32usize, false, false, None),
            (13, 7, 1, 32, true, true, None),
            (6, 5, 24, 16, false, true, Some(vec![5, 2, 0, 5, 1, 4])),
            (8, 6, 3, 48, true, false, Some(vec![6, 3, 0, 1, 6, 2, 5, 4])),
        ] {
            let x: Vec<f32> = (0..b * t * c)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let w: Vec<f32> = (0..(c + h) * 4 * h)
                .map(|_| rng.random_range(-0.4..0.4))
                .collect();
            let bias: Vec<f32> = (0..4 * h).map(|_| rng.random_range(-0.5..0.5)).collect();
            let bias = with_bias.then_some(&bias[..]);
            let op = LstmLayerOp::new(h, reverse, lengths.clone());
            let fused = direction(true, &op, &x, &w, bias, (b, t, c));
            let two_pass = direction(false, &op, &x, &w, bias, (b, t, c));
            for (what, x, y) in [
                ("activations", &fused.0, &two_pass.0),
                ("states", &fused.1, &two_pass.1),
            ] {
                for (j, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                    let ok = if *q == 0.0 {
                        *p == 0.0
                    } else {
                        (p - q).abs() <= 3e-6 * (1.0 + q.abs())
                    };
                    assert!(
                        ok,
                        "B {b}, T {t}, C {c}, H {h}, reverse {reverse}, bias {with_bias}, lengths {lengths:?}: {what}[{j}] {p} vs {q}"
                    );
                }
            }
            if let Some(len) = &lengths {
                for (bi, &l) in len.iter().enumerate() {
                    for s in l..t {
                        let row = (bi * t + s) * h;
                        assert!(fused.1[row..row + h].iter().all(|&v| v == 0.0));
                    }
                }
            }
        }
    }

    /// A layer whose hidden size is not a multiple of 16, or f64, is left to the two-pass path;
    /// asked anyway, the kernel says why.
    #[test]
    fn fused_kernel_declines_what_it_cannot_run() {
        assert_eq!(available::<f32>(24), None);
        assert_eq!(available::<f64>(32), None);
        assert_eq!(available::<f32>(0), None);
        let op = LstmLayerOp::new(24, false, None);
        let mut acts = vec![0f32; 4 * 24];
        let mut row = [0f32; 24];
        let mut row2 = [0f32; 24];
        let w = vec![0f32; 4 * 24 * 25];
        let err = forward(
            16,
            &op,
            &[0.5f32],
            Mat::row_major(&w, 25, 96),
            None,
            &mut acts,
            &mut [&mut row[..]],
            &mut [&mut row2[..]],
            1,
            1,
        )
        .unwrap_err();
        assert!(err.contains("hidden size 24"), "{err}");
    }
}

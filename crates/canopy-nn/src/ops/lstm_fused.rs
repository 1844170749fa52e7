//! The forward recurrence of one LSTM direction with matrix products of our own, for f32 on
//! x86-64 with AVX-512.
//!
//! The portable recurrence of [`super::lstm_kernel`] runs each step as one `gemm` call that
//! accumulates `h_{t-1} W_hhᵀ` onto the step's rows of the input projection, then a pass of gate
//! updates over those rows. `gemm` packs its operands again at every call (`W_hhᵀ`, the same
//! 256 KiB for `H` = 128, at every step) and reaches ~100 GFLOP/s on one Zen 4 core. Here:
//!
//! - `W_hhᵀ` is packed once per direction into panels of 16 hidden units: for each `k`, the four
//!   gates' 16 weights side by side (64 values, four vectors; [`pack_panels`]);
//! - each step runs tile by tile, 6 sequences per tile: for every panel a 6 x 64 register tile
//!   (24 accumulators, four weight vectors and a broadcast: 29 of the 32 vector registers)
//!   `acc[r][g] += h_{t-1}[r, k] · W_hhᵀ[k, g·H + u ..]` for `k` = 0 .. H, the previous hidden
//!   states broadcast straight from where the last step wrote them; the tile's products go to a
//!   6 x 4H scratch that stays in the L1 cache. This loop runs at ~113 GFLOP/s on one Zen 4 core
//!   (~98 % of one 512-bit FMA per cycle);
//! - then the tile's gate update, sequence by sequence: pre-activation = input projection +
//!   products, [`super::gates_fast::cell_update`] (the arithmetic of the two-pass update, bit
//!   for bit from the same pre-activations), activations stored in place of the projection and
//!   the states straight into the layer's output rows;
//! - while a tile computes, the next tile's rows of the projection and of the outputs are
//!   prefetched into L2: they lie `T·4H` values apart, a stride no hardware prefetcher follows
//!   (without the hints the recurrence took ~25 % longer).
//!
//! The pre-activations equal the two-pass path's up to rounding (the products are summed in a
//! different order). A padded step (beyond a sequence's length) keeps the state and leaves zeros,
//! as in the two-pass path.
//!
//! Measured on one Zen 4 core (H = 128, 256 sequences, 45 steps): 18.5-19.4 ms per recurrence
//! against 18.8-19.8 ms for `gemm` + gate pass (medians of 30-40 runs, alternated; the products
//! take ~12 ms of it, the gate updates ~4 ms). On AVX2 a 2 x 32 tile of the same design was
//! slower than `gemm`'s kernels (26 ms), so AVX2 CPUs keep the two-pass recurrence.

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

/// `W_hhᵀ` `(H, 4H)` as panels of `n` hidden units: panel `u` holds, for `k` = 0 .. H, the
/// weights of the gates i, f, g, o for units `u·n .. u·n + n` (`4n` values per `k`).
fn pack_panels(w_hh_t: Mat<'_, f32>, h: usize, n: usize) -> Vec<f32> {
    let mut panels = Vec::with_capacity(4 * h * h);
    for u in 0..h / n {
        for k in 0..h {
            for g in 0..4 {
                let col0 = g * h + u * n;
                panels.extend((col0..col0 + n).map(|j| w_hh_t.data[k * w_hh_t.rs + j * w_hh_t.cs]));
            }
        }
    }
    panels
}

/// The forward recurrence of one direction with the fused kernel at `lanes` (a value of
/// [`available`]): the same contract as the two-pass recurrence in [`super::lstm_kernel`]
/// (`acts` `(B, T, 4H)` holds the input projection on entry and the activations on return,
/// `h_rows` / `c_rows` the `B·T` output rows of `H` values, `w_hh_t` = `W_hhᵀ` `(H, 4H)`).
/// Runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<'b, 'c, T: Float>(
    lanes: usize,
    op: &LstmLayerOp,
    acts: &mut [T],
    h_rows: &mut [&'b mut [T]],
    c_rows: &mut [&'c mut [T]],
    w_hh_t: Mat<'_, T>,
    b: usize,
    t: usize,
) -> Result<(), String> {
    let h = op.hidden;
    if available::<T>(h).is_none_or(|n| n < lanes) || h % lanes != 0 {
        return Err(format!(
            "fused lstm recurrence at {lanes} lanes is not available for hidden size {h} on this CPU"
        ));
    }
    if acts.len() != b * t * 4 * h
        || h_rows.len() != b * t
        || c_rows.len() != b * t
        || h_rows.iter().chain(c_rows.iter()).any(|r| r.len() != h)
        || w_hh_t.rows != h
        || w_hh_t.cols != 4 * h
    {
        return Err(format!(
            "recurrence buffers do not fit B {b}, T {t}, H {h} ({} activations, {} + {} state rows, W_hhᵀ {} x {})",
            acts.len(),
            h_rows.len(),
            c_rows.len(),
            w_hh_t.rows,
            w_hh_t.cols
        ));
    }
    let w: Mat<'_, f32> = Mat {
        data: bytemuck::cast_slice(w_hh_t.data),
        rows: w_hh_t.rows,
        cols: w_hh_t.cols,
        rs: w_hh_t.rs,
        cs: w_hh_t.cs,
    };
    let panels = pack_panels(w, h, lanes);
    let acts: &mut [f32] = bytemuck::cast_slice_mut(acts);
    let run = Recurrence {
        op,
        panels: &panels,
        acts,
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
                .zip(self.h_rows.chunks_mut(R * t))
                .zip(self.c_rows.chunks_mut(R * t))
                .zip(hp.chunks(R * h))
                .zip(hn.chunks_mut(R * h))
                .zip(c.chunks_mut(R * h))
                .zip(valid.chunks(R));
            let mut tiles = tiles.peekable();
            while let Some(((((((acts, h_out), c_out), hp), hn), c), valid)) = tiles.next() {
                // the next tile's step rows and output rows on their way to the cache while
                // this one computes (they lie far apart, where no hardware prefetcher looks)
                if let Some(((((((next, h_next), c_next), _), _), _), _)) = tiles.peek() {
                    for row in next.chunks(row_len) {
                        prefetch_l2(row.get(s * g4..(s + 1) * g4).unwrap_or(&[]));
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
    /// The panels of `W_hhᵀ` (see [`pack_panels`]).
    panels: &'a [f32],
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
        if let Some(hp) = self.hp {
            let hp = &hp[..R * h];
            for (u, panel) in self.panels.chunks_exact(4 * n * h).enumerate() {
                let mut acc = [[l.splat(0.0); 4]; R];
                for (k, wk) in panel.chunks_exact(4 * n).enumerate() {
                    let w = [
                        l.load(wk),
                        l.load(&wk[n..]),
                        l.load(&wk[2 * n..]),
                        l.load(&wk[3 * n..]),
                    ];
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = l.splat(hp[r * h + k]);
                        for (a, &wg) in acc.iter_mut().zip(&w) {
                            *a = l.fma(x, wg, *a);
                        }
                    }
                }
                for (acc, row) in acc.iter().zip(self.prod.chunks_exact_mut(g4)) {
                    for (g, &a) in acc.iter().enumerate() {
                        l.store(&mut row[g * h + u * n..], a);
                    }
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
            let with_prod = self.hp.is_some();
            let mut k = 0;
            while k + 2 * n <= h {
                update::<L, 2, 8>(l, k, h, a, prod, with_prod, [c, hn, h_out, c_out]);
                k += 2 * n;
            }
            while k + n <= h {
                update::<L, 1, 4>(l, k, h, a, prod, with_prod, [c, hn, h_out, c_out]);
                k += n;
            }
        }
    }
}

/// The gate update of `M` vectors of hidden units from `k` on (`G` = `4M`) of one sequence:
/// the pre-activations are `a` (the input projection, `[i | f | g | o]`, `H` each) plus `prod`
/// (the products, same layout) when `with_prod`; the activations replace `a`'s values, the new
/// cell state goes to `state[0]` and `state[3]`, the new hidden state to `state[1]` and
/// `state[2]`.
#[inline(always)]
fn update<L: Lanes, const M: usize, const G: usize>(
    l: L,
    k: usize,
    h: usize,
    a: &mut [f32],
    prod: &[f32],
    with_prod: bool,
    state: [&mut [f32]; 4],
) {
    let n = L::N;
    let mut pre = [l.splat(0.0); G];
    for (j, p) in pre.iter_mut().enumerate() {
        let at = (j % 4) * h + k + (j / 4) * n;
        *p = l.load(&a[at..]);
        if with_prod {
            *p = l.add(*p, l.load(&prod[at..]));
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
    use crate::ops::lstm_kernel::lstm_forward_two_pass;
    use rand::{Rng, SeedableRng};

    /// `(activations, hidden rows, cell rows)` after one direction's recurrence by `fused` or the
    /// two-pass path, from the same projection and weights.
    fn recurrence(
        fused: bool,
        op: &LstmLayerOp,
        xw: &[f32],
        w_hh_t: &[f32],
        (b, t): (usize, usize),
    ) -> (Vec<f32>, Vec<f32>) {
        let h = op.hidden;
        let mut acts = xw.to_vec();
        let mut out = vec![0f32; 2 * b * t * h];
        let (hs, cs) = out.split_at_mut(b * t * h);
        let mut h_rows: Vec<&mut [f32]> = hs.chunks_mut(h).collect();
        let mut c_rows: Vec<&mut [f32]> = cs.chunks_mut(h).collect();
        let w = Mat::row_major(w_hh_t, h, 4 * h);
        if fused {
            forward(16, op, &mut acts, &mut h_rows, &mut c_rows, w, b, t).unwrap();
        } else {
            lstm_forward_two_pass(op, &mut acts, &mut h_rows, &mut c_rows, w, b, t, 1).unwrap();
        }
        (acts, out)
    }

    /// The fused recurrence gives the two-pass recurrence's activations and states (to rounding:
    /// the products are summed in another order), forward and in reverse, with full tiles of 6
    /// sequences and a partial one, and with padded steps (lengths, one sequence empty) left at
    /// exactly zero.
    #[test]
    fn fused_recurrence_equals_the_two_pass_one() {
        if available::<f32>(16).is_none() {
            eprintln!("skipped: this CPU has no AVX-512 (the fused recurrence is not used)");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        for (b, t, h, reverse, lengths) in [
            (13usize, 7usize, 32usize, false, None),
            (13, 7, 32, true, None),
            (6, 5, 16, false, Some(vec![5, 2, 0, 5, 1, 4])),
            (8, 6, 48, true, Some(vec![6, 3, 0, 1, 6, 2, 5, 4])),
        ] {
            let xw: Vec<f32> = (0..b * t * 4 * h)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let w: Vec<f32> = (0..4 * h * h).map(|_| rng.random_range(-0.3..0.3)).collect();
            let op = LstmLayerOp::new(h, reverse, lengths.clone());
            let fused = recurrence(true, &op, &xw, &w, (b, t));
            let two_pass = recurrence(false, &op, &xw, &w, (b, t));
            for (what, x, y) in [
                ("activations", &fused.0, &two_pass.0),
                ("states", &fused.1, &two_pass.1),
            ] {
                for (j, (p, q)) in x.iter().zip(y.iter()).enumerate() {
                    let exact_zero = *q == 0.0;
                    assert!(
                        if exact_zero { *p == 0.0 } else { (p - q).abs() <= 2e-6 * (1.0 + q.abs()) },
                        "B {b}, T {t}, H {h}, reverse {reverse}, lengths {lengths:?}: {what}[{j}] {p} vs {q}"
                    );
                }
            }
            // padded steps are zeros in both
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

    /// A layer whose hidden size is not a multiple of 16, or f64, is left to the two-pass path.
    #[test]
    fn fused_recurrence_declines_what_it_cannot_run() {
        assert_eq!(available::<f32>(24), None);
        assert_eq!(available::<f64>(32), None);
        assert_eq!(available::<f32>(0), None);
        let op = LstmLayerOp::new(24, false, None);
        let mut acts = vec![0f32; 4 * 24];
        let mut row = vec![0f32; 24];
        let mut row2 = vec![0f32; 24];
        let w = vec![0f32; 4 * 24 * 24];
        let err = forward(
            16,
            &op,
            &mut acts,
            &mut [&mut row[..]],
            &mut [&mut row2[..]],
            Mat::row_major(&w, 24, 96),
            1,
            1,
        )
        .unwrap_err();
        assert!(err.contains("hidden size 24"), "{err}");
    }
}

//! The LSTM gate update written with x86 intrinsics for f32, at two widths: AVX-512 (16 lanes;
//! `2^n` by `vscalefps`, reciprocals from `vrcp14ps`) and AVX2 + FMA (8 lanes; `2^n` built in the
//! exponent bits, reciprocals from `vrcpps`), each followed by one Newton step. Exponentials are
//! the Cephes polynomial of [`super::cpu::exp_approx`] evaluated with FMAs. The portable loops in
//! [`super::lstm_kernel`] divide and round separately (Rust does not contract `a * b + c` into an
//! FMA), and that is what these kernels save. Each exponential is a long chain of dependent
//! operations, so the kernels evaluate those of several vectors interleaved ([`Lanes::exp_n`]:
//! the four gates of two vectors at once in the forward update), which lets the CPU overlap
//! the chains.
//!
//! The values differ from the portable loop's by rounding (both are within a few ulps of the
//! exact functions; checked in the tests, for every width the CPU has).

use core::arch::x86_64::{__m256, __m512};

use pulp::x86::{V3, V4};

/// The f32 vector arithmetic the gate kernels need, at one width. Implemented for
/// [`Wide`] (AVX-512) and [`Narrow`] (AVX2 + FMA).
pub(crate) trait Lanes: Copy {
    /// One vector of [`Self::N`] f32.
    type V: Copy;
    /// The lanes per vector.
    const N: usize;
    fn splat(self, x: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a·b + c`, one rounding.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `c - a·b`, one rounding.
    fn fnma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `x` clamped to `[lo, hi]`; NaN stays NaN.
    fn clamp(self, x: Self::V, lo: f32, hi: f32) -> Self::V;
    /// `x` rounded to the nearest integer (ties to even).
    fn round(self, x: Self::V) -> Self::V;
    /// `p·2^n` for integral `n` in `[-126, 127]`.
    fn scale2(self, p: Self::V, n: Self::V) -> Self::V;
    /// An approximation of `1 / d` good to at least 11 bits (one Newton step follows).
    fn recip_estimate(self, d: Self::V) -> Self::V;
    /// The first [`Self::N`] values of `s`.
    fn load(self, s: &[f32]) -> Self::V;
    /// Stores `v` into the first [`Self::N`] values of `d`.
    fn store(self, d: &mut [f32], v: Self::V);
    /// Runs `op` compiled for this width's instruction set.
    fn run<Op: pulp::WithSimd>(self, op: Op) -> Op::Output;

    /// `e^x`: `x = n ln2 + r`, Cephes' polynomial for `e^r` (the coefficients of
    /// [`super::cpu::exp_approx`]), then `2^n`.
    #[inline(always)]
    fn exp(self, x: Self::V) -> Self::V {
        let [e] = self.exp_n([x]);
        e
    }

    /// [`Self::exp`] of `M` vectors, each step applied to all of them before the next: the
    /// exponential is one long chain of dependent operations, and interleaving `M` independent
    /// chains lets the CPU overlap them where it could not across loop iterations (its
    /// reorder window holds about one iteration of the gate update). The same values as `M`
    /// calls of [`Self::exp`], bit for bit.
    #[inline(always)]
    fn exp_n<const M: usize>(self, x: [Self::V; M]) -> [Self::V; M] {
        // (plain loops: closures, as in `array::map`, lose the caller's target features and
        // turn every intrinsic into a call)
        let mut x = x;
        for x in &mut x {
            *x = self.clamp(*x, -87.3, 88.0);
        }
        let mut n = x;
        for n in &mut n {
            *n = self.round(self.mul(*n, self.splat(std::f32::consts::LOG2_E)));
        }
        let mut r = x;
        for (r, &n) in r.iter_mut().zip(&n) {
            *r = self.fma(n, self.splat(-0.693_359_4), *r);
        }
        for (r, &n) in r.iter_mut().zip(&n) {
            *r = self.fma(n, self.splat(2.121_944_4e-4), *r);
        }
        let mut q = [self.splat(1.987_569_1e-4); M];
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            for (q, &r) in q.iter_mut().zip(&r) {
                *q = self.fma(*q, r, self.splat(c));
            }
        }
        let mut p = q;
        for (p, &r) in p.iter_mut().zip(&r) {
            *p = self.fma(*p, self.mul(r, r), self.add(r, self.splat(1.0)));
        }
        for (p, &n) in p.iter_mut().zip(&n) {
            *p = self.scale2(*p, n);
        }
        p
    }

    /// `1 / d`: the estimate and one Newton step.
    #[inline(always)]
    fn recip(self, d: Self::V) -> Self::V {
        let [r] = self.recip_n([d]);
        r
    }

    /// [`Self::recip`] of `M` vectors, interleaved as in [`Self::exp_n`].
    #[inline(always)]
    fn recip_n<const M: usize>(self, d: [Self::V; M]) -> [Self::V; M] {
        let mut out = d;
        for o in &mut out {
            *o = self.recip_estimate(*o);
        }
        for (o, &d) in out.iter_mut().zip(&d) {
            let e = self.fnma(d, *o, self.splat(1.0));
            *o = self.fma(*o, e, *o);
        }
        out
    }

    /// [`Self::tanh`] of `M` vectors, interleaved as in [`Self::exp_n`] (bit for bit).
    #[inline(always)]
    fn tanh_n<const M: usize>(self, x: [Self::V; M]) -> [Self::V; M] {
        let mut x = x;
        for x in &mut x {
            *x = self.add(*x, *x);
        }
        let mut e = self.exp_n(x);
        for e in &mut e {
            *e = self.add(*e, self.splat(1.0));
        }
        let mut r = self.recip_n(e);
        for r in &mut r {
            *r = self.fnma(self.splat(2.0), *r, self.splat(1.0));
        }
        r
    }

    /// `σ'` from `σ`: `s (1 - s)`.
    #[inline(always)]
    fn dsigmoid(self, s: Self::V) -> Self::V {
        self.mul(s, self.sub(self.splat(1.0), s))
    }

    /// `1 - 2 / (e^{2x} + 1)`.
    #[inline(always)]
    fn tanh(self, x: Self::V) -> Self::V {
        let e = self.exp(self.add(x, x));
        let r = self.recip(self.add(e, self.splat(1.0)));
        self.fnma(self.splat(2.0), r, self.splat(1.0))
    }
}

/// 16 lanes of AVX-512.
#[derive(Clone, Copy)]
pub(crate) struct Wide(pub V4);

impl Lanes for Wide {
    type V = __m512;
    const N: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        self.0.avx512f._mm512_set1_ps(x)
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        self.0.avx512f._mm512_add_ps(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        self.0.avx512f._mm512_sub_ps(a, b)
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        self.0.avx512f._mm512_mul_ps(a, b)
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        self.0.avx512f._mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    fn fnma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        self.0.avx512f._mm512_fnmadd_ps(a, b, c)
    }
    #[inline(always)]
    fn clamp(self, x: __m512, lo: f32, hi: f32) -> __m512 {
        // (max / min return their second operand when either is NaN: NaN stays NaN)
        let f = self.0.avx512f;
        f._mm512_min_ps(self.splat(hi), f._mm512_max_ps(self.splat(lo), x))
    }
    #[inline(always)]
    fn round(self, x: __m512) -> __m512 {
        self.0.avx512f._mm512_roundscale_ps::<0x08>(x)
    }
    #[inline(always)]
    fn scale2(self, p: __m512, n: __m512) -> __m512 {
        self.0.avx512f._mm512_scalef_ps(p, n)
    }
    #[inline(always)]
    fn recip_estimate(self, d: __m512) -> __m512 {
        self.0.avx512f._mm512_rcp14_ps(d)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m512 {
        let mut a = [0.0f32; 16];
        a.copy_from_slice(&s[..16]);
        pulp::cast(a)
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: __m512) {
        d[..16].copy_from_slice(&pulp::cast::<__m512, [f32; 16]>(v));
    }
    #[inline(always)]
    fn run<Op: pulp::WithSimd>(self, op: Op) -> Op::Output {
        pulp::Simd::vectorize(self.0, op)
    }
}

/// 8 lanes of AVX2 + FMA.
#[derive(Clone, Copy)]
pub(crate) struct Narrow(pub V3);

impl Lanes for Narrow {
    type V = __m256;
    const N: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        self.0.avx._mm256_set1_ps(x)
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        self.0.avx._mm256_add_ps(a, b)
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        self.0.avx._mm256_sub_ps(a, b)
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        self.0.avx._mm256_mul_ps(a, b)
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        self.0.fma._mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    fn fnma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        self.0.fma._mm256_fnmadd_ps(a, b, c)
    }
    #[inline(always)]
    fn clamp(self, x: __m256, lo: f32, hi: f32) -> __m256 {
        // (max / min return their second operand when either is NaN: NaN stays NaN)
        let f = self.0.avx;
        f._mm256_min_ps(self.splat(hi), f._mm256_max_ps(self.splat(lo), x))
    }
    #[inline(always)]
    fn round(self, x: __m256) -> __m256 {
        self.0.avx._mm256_round_ps::<0x08>(x)
    }
    #[inline(always)]
    fn scale2(self, p: __m256, n: __m256) -> __m256 {
        // 2^n from its exponent bits: (n + 127) << 23 (n is integral and in range after the
        // clamp in `exp`; a NaN `n` gives some finite scale, and `p` is NaN then too)
        let (avx, avx2) = (self.0.avx, self.0.avx2);
        let bits = avx2._mm256_add_epi32(avx._mm256_cvtps_epi32(n), avx._mm256_set1_epi32(127));
        avx._mm256_mul_ps(
            p,
            avx._mm256_castsi256_ps(avx2._mm256_slli_epi32::<23>(bits)),
        )
    }
    #[inline(always)]
    fn recip_estimate(self, d: __m256) -> __m256 {
        self.0.avx._mm256_rcp_ps(d)
    }
    #[inline(always)]
    fn load(self, s: &[f32]) -> __m256 {
        let mut a = [0.0f32; 8];
        a.copy_from_slice(&s[..8]);
        pulp::cast(a)
    }
    #[inline(always)]
    fn store(self, d: &mut [f32], v: __m256) {
        d[..8].copy_from_slice(&pulp::cast::<__m256, [f32; 8]>(v));
    }
    #[inline(always)]
    fn run<Op: pulp::WithSimd>(self, op: Op) -> Op::Output {
        pulp::Simd::vectorize(self.0, op)
    }
}

/// One step's gate update for one sequence, as [`super::lstm_kernel::GatesForward`] (same slices,
/// same results up to rounding), [`Lanes::N`] values at a time.
pub(crate) struct GatesForwardFast<'a, L> {
    pub lanes: L,
    pub gates: [&'a mut [f32]; 4],
    pub state: [&'a mut [f32]; 2],
    pub out: [&'a mut [f32]; 2],
}

impl<L: Lanes> pulp::WithSimd for GatesForwardFast<'_, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = self.lanes;
        let [ai, af, ag, ao] = self.gates;
        let [cs, hs] = self.state;
        let [c_out, h_out] = self.out;
        let h = ai.len();
        let mut k = 0;
        {
            let mut gates = [&mut *ai, &mut *af, &mut *ag, &mut *ao];
            let mut state = [&mut *cs, &mut *hs, &mut *c_out, &mut *h_out];
            // two vectors of every gate at a time, then one
            while k + 2 * L::N <= h {
                forward_blocks::<L, 2, 8>(l, k, &mut gates, &mut state);
                k += 2 * L::N;
            }
            while k + L::N <= h {
                forward_blocks::<L, 1, 4>(l, k, &mut gates, &mut state);
                k += L::N;
            }
        }
        if k < h {
            // the tail through the portable loop
            super::lstm_kernel::GatesForward {
                gates: [&mut ai[k..], &mut af[k..h], &mut ag[k..h], &mut ao[k..h]],
                state: [&mut cs[k..h], &mut hs[k..h]],
                out: [&mut c_out[k..h], &mut h_out[k..h]],
            }
            .with_simd(pulp::Scalar::new());
        }
    }
}

/// The gate update of `M` vectors of hidden units from `k` on (`G` = `4M` gate vectors):
/// `gates` `[i, f, g, o]` (pre-activations in, activations out), `state` `[c, h, c_out, h_out]`.
/// Every exponential and reciprocal of the `G` gate vectors is evaluated interleaved
/// ([`Lanes::exp_n`]), then the `M` cell tanh's ([`cell_update`]); the values are those of the
/// one-vector functions, bit for bit.
#[inline(always)]
fn forward_blocks<L: Lanes, const M: usize, const G: usize>(
    l: L,
    k: usize,
    gates: &mut [&mut [f32]; 4],
    state: &mut [&mut [f32]; 4],
) {
    let mut pre = [l.splat(0.0); G];
    for (j, v) in pre.iter_mut().enumerate() {
        *v = l.load(&gates[j % 4][k + (j / 4) * L::N..]);
    }
    let mut c_prev = [l.splat(0.0); M];
    for (m, c) in c_prev.iter_mut().enumerate() {
        *c = l.load(&state[0][k + m * L::N..]);
    }
    let (act, c, hv) = cell_update::<L, M, G>(l, pre, c_prev);
    for (j, a) in act.iter().enumerate() {
        l.store(&mut gates[j % 4][k + (j / 4) * L::N..], *a);
    }
    for m in 0..M {
        let o = m * L::N + k;
        for (q, v) in [c[m], hv[m], c[m], hv[m]].into_iter().enumerate() {
            l.store(&mut state[q][o..], v);
        }
    }
}

/// What [`cell_update`] returns: the activations, the new cell states, the new hidden states.
pub(crate) type CellUpdate<L, const M: usize, const G: usize> = (
    [<L as Lanes>::V; G],
    [<L as Lanes>::V; M],
    [<L as Lanes>::V; M],
);

/// The gate update of `M` vectors of hidden units held in registers (`G` = `4M`): from the
/// pre-activations `pre` (`[i, f, g, o]` of vector 0, then of vector 1, ...) and the previous
/// cell states `c_prev`, returns the activations `σ(i), σ(f), tanh(g), σ(o)` (in `pre`'s order),
/// the new cell states and the new hidden states. Every exponential and reciprocal of the `G`
/// gate vectors is evaluated interleaved ([`Lanes::exp_n`]), then the `M` cell tanh's; the values
/// are those of the one-vector functions, bit for bit, whatever `M`. Shared by the in-memory
/// update above and the fused recurrence of [`super::lstm_fused`], so both give the same bits
/// from the same pre-activations.
#[inline(always)]
pub(crate) fn cell_update<L: Lanes, const M: usize, const G: usize>(
    l: L,
    pre: [L::V; G],
    c_prev: [L::V; M],
) -> CellUpdate<L, M, G> {
    // (plain loops, no closures: see `Lanes::exp_n`)
    // σ(x) = 1 / (1 + e^{-x}); tanh(x) = 1 - 2 / (e^{2x} + 1) for the g gate
    let mut v = pre;
    for (j, v) in v.iter_mut().enumerate() {
        let x = *v;
        *v = if j % 4 == 2 {
            l.add(x, x)
        } else {
            l.sub(l.splat(0.0), x)
        };
    }
    let mut v = l.exp_n(v);
    for v in &mut v {
        *v = l.add(*v, l.splat(1.0));
    }
    let mut act = l.recip_n(v);
    for (j, a) in act.iter_mut().enumerate() {
        if j % 4 == 2 {
            *a = l.fnma(l.splat(2.0), *a, l.splat(1.0));
        }
    }
    let mut c = c_prev;
    for (m, c) in c.iter_mut().enumerate() {
        let (i, f, g) = (act[4 * m], act[4 * m + 1], act[4 * m + 2]);
        *c = l.fma(f, *c, l.mul(i, g));
    }
    let tc = l.tanh_n(c);
    let mut hv = tc;
    for (m, hv) in hv.iter_mut().enumerate() {
        *hv = l.mul(act[4 * m + 3], *hv);
    }
    (act, c, hv)
}

/// One step's gate gradients for one sequence, as [`super::lstm_kernel::GatesBackward`] (same
/// slices, same results up to rounding), [`Lanes::N`] values at a time.
pub(crate) struct GatesBackwardFast<'a, L> {
    pub lanes: L,
    pub acts: [&'a [f32]; 4],
    pub cells: [&'a [f32]; 2],
    pub grads: [&'a [f32]; 2],
    pub dgates: [&'a mut [f32]; 4],
    pub carry: [&'a mut [f32]; 2],
}

impl<L: Lanes> pulp::WithSimd for GatesBackwardFast<'_, L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = self.lanes;
        let [ai, af, ag, ao] = self.acts;
        let [c_s, cp] = self.cells;
        let [gh, gc] = self.grads;
        let [di, df, dg, d_o] = self.dgates;
        let [dhb, dcb] = self.carry;
        let h = ai.len();
        let mut k = 0;
        {
            let acts = [ai, af, ag, ao];
            let grads = [gh, gc];
            let mut dgates = [&mut *di, &mut *df, &mut *dg, &mut *d_o];
            let mut carry = [&mut *dhb, &mut *dcb];
            // two vectors at a time (their tanh(c) interleaved, see `Lanes::exp_n`), then one
            while k + 2 * L::N <= h {
                let tc = l.tanh_n([l.load(&c_s[k..]), l.load(&c_s[k + L::N..])]);
                for (m, &tc) in tc.iter().enumerate() {
                    let at = k + m * L::N;
                    backward_vector(l, at, tc, &acts, cp, &grads, &mut dgates, &mut carry);
                }
                k += 2 * L::N;
            }
            while k + L::N <= h {
                let tc = l.tanh(l.load(&c_s[k..]));
                backward_vector(l, k, tc, &acts, cp, &grads, &mut dgates, &mut carry);
                k += L::N;
            }
        }
        if k < h {
            // the tail through the portable loop
            super::lstm_kernel::GatesBackward {
                acts: [&ai[k..], &af[k..h], &ag[k..h], &ao[k..h]],
                cells: [&c_s[k..h], &cp[k..h]],
                grads: [&gh[k..h], &gc[k..h]],
                dgates: [&mut di[k..], &mut df[k..h], &mut dg[k..h], &mut d_o[k..h]],
                carry: [&mut dhb[k..h], &mut dcb[k..h]],
            }
            .with_simd(pulp::Scalar::new());
        }
    }
}

/// The gate gradients of one vector of hidden units at `k`, given `tanh(c)` there; the slices
/// are [`GatesBackwardFast`]'s (`acts` `[i, f, g, o]`, `cp` the previous cell state, `grads`
/// `[dh, dc]`, `dgates` `[di, df, dg, do]`, `carry` `[dh, dc]` from the next step).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_vector<L: Lanes>(
    l: L,
    k: usize,
    tc: L::V,
    acts: &[&[f32]; 4],
    cp: &[f32],
    grads: &[&[f32]; 2],
    dgates: &mut [&mut [f32]; 4],
    carry: &mut [&mut [f32]; 2],
) {
    let one = l.splat(1.0);
    let (i, fg) = (l.load(&acts[0][k..]), l.load(&acts[1][k..]));
    let (g, o) = (l.load(&acts[2][k..]), l.load(&acts[3][k..]));
    let dh = l.add(l.load(&grads[0][k..]), l.load(&carry[0][k..]));
    let dc = l.add(l.load(&grads[1][k..]), l.load(&carry[1][k..]));
    // dc_total = dc + dh·o·(1 - tanh²c)
    let dho = l.mul(dh, o);
    let dct = l.fma(dho, l.fnma(tc, tc, one), dc);
    l.store(&mut dgates[0][k..], l.mul(l.mul(dct, g), l.dsigmoid(i)));
    l.store(
        &mut dgates[1][k..],
        l.mul(l.mul(dct, l.load(&cp[k..])), l.dsigmoid(fg)),
    );
    l.store(&mut dgates[2][k..], l.mul(l.mul(dct, i), l.fnma(g, g, one)));
    l.store(&mut dgates[3][k..], l.mul(l.mul(dh, tc), l.dsigmoid(o)));
    l.store(&mut carry[1][k..], l.mul(dct, fg));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lstm_kernel::{gates_backward_case, gates_forward_case, FastTwin};
    use pulp::WithSimd;
    use rand::{Rng, SeedableRng};

    /// The kernels of every width this CPU has agree with the portable loops.
    #[test]
    fn fast_gates_match_the_portable_loop() {
        let mut widths = 0;
        if let Some(simd) = V4::try_new() {
            matches_the_portable_loop(simd, Wide(simd));
            widths += 1;
        }
        if let Some(simd) = V3::try_new() {
            matches_the_portable_loop(simd, Narrow(simd));
            widths += 1;
        }
        if widths == 0 {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 with FMA");
        }
    }

    /// The kernels of one width agree with the portable loops to rounding, on full vectors and
    /// a tail, for ordinary and saturating pre-activations, and keep NaN.
    fn matches_the_portable_loop<S: pulp::Simd, L: Lanes>(simd: S, lanes: L) {
        let close = |what: &str, fast: &[Vec<f32>], portable: &[Vec<f32>]| {
            for (k, (x, y)) in fast.iter().zip(portable).enumerate() {
                for (j, (p, q)) in x.iter().zip(y).enumerate() {
                    assert!(
                        (p - q).abs() <= 4e-7 * (1.0 + q.abs()),
                        "{} lanes, {what}, slice {k}, element {j}: {p} vs {q}",
                        L::N
                    );
                }
            }
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for h in [16usize, 24, 37, 64] {
            let mut pre: Vec<Vec<f32>> = (0..4)
                .map(|_| (0..h).map(|_| rng.random_range(-12.0..12.0)).collect())
                .collect();
            // saturating and extreme inputs
            pre[0][0] = 100.0;
            pre[1][1] = -100.0;
            pre[2][2] = 40.0;
            pre[3][3] = -95.0;
            let state: Vec<Vec<f32>> = (0..2)
                .map(|_| (0..h).map(|_| rng.random_range(-3.0..3.0)).collect())
                .collect();
            let fast = gates_forward_case(&pre, &state, |op| simd.vectorize(op.twin(lanes)));
            let portable = gates_forward_case(&pre, &state, |op| op.with_simd(pulp::Scalar::new()));
            let what = format!("forward, h {h}");
            close(&what, &fast.0, &portable.0);
            close(&what, &fast.1, &portable.1);
            close(&what, &fast.2, &portable.2);
        }
        // the backward kernel: two vectors at a time, one, and a tail
        for h in [24usize, 37] {
            let mut v = |lo: f32, hi: f32| -> Vec<f32> {
                (0..h).map(|_| rng.random_range(lo..hi)).collect()
            };
            let acts = [v(0.0, 1.0), v(0.0, 1.0), v(-1.0, 1.0), v(0.0, 1.0)];
            let cells = [v(-3.0, 3.0), v(-3.0, 3.0)];
            let grads = [v(-1.0, 1.0), v(-1.0, 1.0)];
            let carry = [v(-1.0, 1.0), v(-1.0, 1.0)];
            let fast = gates_backward_case(&acts, &cells, &grads, &carry, |op| {
                simd.vectorize(op.twin(lanes))
            });
            let portable = gates_backward_case(&acts, &cells, &grads, &carry, |op| {
                op.with_simd(pulp::Scalar::new())
            });
            let what = format!("backward, h {h}");
            close(&what, &fast.0, &portable.0);
            close(&what, &fast.1, &portable.1);
        }
        // NaN in, NaN out (not a clamped finite value)
        let mut pre = vec![vec![0f32; 16]; 4];
        pre[0] = vec![f32::NAN; 16];
        let (_, _, out) = gates_forward_case(&pre, &[vec![0f32; 16], vec![0f32; 16]], |op| {
            simd.vectorize(op.twin(lanes))
        });
        assert!(out.iter().flatten().all(|v| v.is_nan()));
    }
}

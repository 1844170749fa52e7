//! The LSTM gate update written for AVX-512 (f32): exponentials from an FMA polynomial scaled
//! by `vscalefps`, reciprocals from `vrcp14ps` and one Newton step, instead of the portable
//! loop's divisions and integer bit tricks that LLVM vectorises less tightly.
//!
//! The values differ from the portable loop's by rounding (both are within a few ulps of the
//! exact functions; checked in the tests).

use core::arch::x86_64::__m512;

use pulp::x86::V4;

/// One step's gate update for one sequence, as [`super::lstm_kernel::GatesForward`] (same slices,
/// same results up to rounding).
pub(crate) struct GatesForwardV4<'a> {
    pub simd: V4,
    pub gates: [&'a mut [f32]; 4],
    pub state: [&'a mut [f32]; 2],
    pub out: [&'a mut [f32]; 2],
}

/// 16-lane helpers bound to a [`V4`] token.
#[derive(Clone, Copy)]
struct Lanes(V4);

impl Lanes {
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        self.0.avx512f._mm512_set1_ps(x)
    }

    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        self.0.avx512f._mm512_fmadd_ps(a, b, c)
    }

    /// `e^x`: `x = n ln2 + r`, Cephes' polynomial for `e^r` (the coefficients of
    /// [`super::cpu::exp_approx`]), `2^n` applied by `vscalefps`.
    #[inline(always)]
    fn exp(self, x: __m512) -> __m512 {
        let f = self.0.avx512f;
        // (max / min return their second operand when either is NaN: NaN stays NaN)
        let x = f._mm512_min_ps(self.splat(88.0), f._mm512_max_ps(self.splat(-87.3), x));
        let n = f
            ._mm512_roundscale_ps::<0x08>(f._mm512_mul_ps(x, self.splat(std::f32::consts::LOG2_E)));
        let r = self.fma(n, self.splat(-0.693_359_4), x);
        let r = self.fma(n, self.splat(2.121_944_4e-4), r);
        let mut q = self.splat(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ] {
            q = self.fma(q, r, self.splat(c));
        }
        let r2 = f._mm512_mul_ps(r, r);
        let p = self.fma(q, r2, f._mm512_add_ps(r, self.splat(1.0)));
        f._mm512_scalef_ps(p, n)
    }

    /// `1 / d`: `vrcp14ps` (14 bits) and one Newton step.
    #[inline(always)]
    fn recip(self, d: __m512) -> __m512 {
        let f = self.0.avx512f;
        let y = f._mm512_rcp14_ps(d);
        let e = f._mm512_fnmadd_ps(d, y, self.splat(1.0));
        self.fma(y, e, y)
    }

    /// `σ'` from `σ`: `s (1 - s)`.
    #[inline(always)]
    fn dsigmoid(self, s: __m512) -> __m512 {
        let f = self.0.avx512f;
        f._mm512_mul_ps(s, f._mm512_sub_ps(self.splat(1.0), s))
    }

    #[inline(always)]
    fn sigmoid(self, x: __m512) -> __m512 {
        let f = self.0.avx512f;
        let e = self.exp(f._mm512_sub_ps(self.splat(0.0), x));
        self.recip(f._mm512_add_ps(e, self.splat(1.0)))
    }

    /// `1 - 2 / (e^{2x} + 1)`.
    #[inline(always)]
    fn tanh(self, x: __m512) -> __m512 {
        let f = self.0.avx512f;
        let e = self.exp(f._mm512_add_ps(x, x));
        let r = self.recip(f._mm512_add_ps(e, self.splat(1.0)));
        f._mm512_fnmadd_ps(self.splat(2.0), r, self.splat(1.0))
    }
}

#[inline(always)]
fn load(s: &[f32]) -> __m512 {
    let mut a = [0.0f32; 16];
    a.copy_from_slice(&s[..16]);
    pulp::cast(a)
}

#[inline(always)]
fn store(d: &mut [f32], v: __m512) {
    d[..16].copy_from_slice(&pulp::cast::<__m512, [f32; 16]>(v));
}

impl pulp::WithSimd for GatesForwardV4<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = Lanes(self.simd);
        let f = self.simd.avx512f;
        let [ai, af, ag, ao] = self.gates;
        let [cs, hs] = self.state;
        let [c_out, h_out] = self.out;
        let h = ai.len();
        let full = h / 16 * 16;
        let mut k = 0;
        while k < full {
            let i = l.sigmoid(load(&ai[k..]));
            let fg = l.sigmoid(load(&af[k..]));
            let g = l.tanh(load(&ag[k..]));
            let o = l.sigmoid(load(&ao[k..]));
            let c = l.fma(fg, load(&cs[k..]), f._mm512_mul_ps(i, g));
            let hv = f._mm512_mul_ps(o, l.tanh(c));
            store(&mut ai[k..], i);
            store(&mut af[k..], fg);
            store(&mut ag[k..], g);
            store(&mut ao[k..], o);
            store(&mut c_out[k..], c);
            store(&mut h_out[k..], hv);
            store(&mut cs[k..], c);
            store(&mut hs[k..], hv);
            k += 16;
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

/// One step's gate gradients for one sequence, as [`super::lstm_kernel::GatesBackward`] (same
/// slices, same results up to rounding).
pub(crate) struct GatesBackwardV4<'a> {
    pub simd: V4,
    pub acts: [&'a [f32]; 4],
    pub cells: [&'a [f32]; 2],
    pub grads: [&'a [f32]; 2],
    pub dgates: [&'a mut [f32]; 4],
    pub carry: [&'a mut [f32]; 2],
}

impl pulp::WithSimd for GatesBackwardV4<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let l = Lanes(self.simd);
        let f = self.simd.avx512f;
        let [ai, af, ag, ao] = self.acts;
        let [c_s, cp] = self.cells;
        let [gh, gc] = self.grads;
        let [di, df, dg, d_o] = self.dgates;
        let [dhb, dcb] = self.carry;
        let h = ai.len();
        let full = h / 16 * 16;
        let one = l.splat(1.0);
        let mut k = 0;
        while k < full {
            let (i, fg) = (load(&ai[k..]), load(&af[k..]));
            let (g, o) = (load(&ag[k..]), load(&ao[k..]));
            let tc = l.tanh(load(&c_s[k..]));
            let dh = f._mm512_add_ps(load(&gh[k..]), load(&dhb[k..]));
            let dc = f._mm512_add_ps(load(&gc[k..]), load(&dcb[k..]));
            // dc_total = dc + dh·o·(1 - tanh²c)
            let dho = f._mm512_mul_ps(dh, o);
            let dct = l.fma(dho, f._mm512_fnmadd_ps(tc, tc, one), dc);
            store(
                &mut di[k..],
                f._mm512_mul_ps(f._mm512_mul_ps(dct, g), l.dsigmoid(i)),
            );
            store(
                &mut df[k..],
                f._mm512_mul_ps(f._mm512_mul_ps(dct, load(&cp[k..])), l.dsigmoid(fg)),
            );
            store(
                &mut dg[k..],
                f._mm512_mul_ps(f._mm512_mul_ps(dct, i), f._mm512_fnmadd_ps(g, g, one)),
            );
            store(
                &mut d_o[k..],
                f._mm512_mul_ps(f._mm512_mul_ps(dh, tc), l.dsigmoid(o)),
            );
            store(&mut dcb[k..], f._mm512_mul_ps(dct, fg));
            k += 16;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lstm_kernel::{gates_backward_case, gates_forward_case, Avx512Twin};
    use pulp::WithSimd;
    use rand::{Rng, SeedableRng};

    /// The AVX-512 kernels agree with the portable loops to rounding, on a full vector and a
    /// tail, for ordinary and saturating pre-activations, and keep NaN.
    #[test]
    fn avx512_gates_match_the_portable_loop() {
        let Some(simd) = V4::try_new() else {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        };
        let close = |what: &str, fast: &[Vec<f32>], portable: &[Vec<f32>]| {
            for (k, (x, y)) in fast.iter().zip(portable).enumerate() {
                for (j, (p, q)) in x.iter().zip(y).enumerate() {
                    assert!(
                        (p - q).abs() <= 4e-7 * (1.0 + q.abs()),
                        "{what}, slice {k}, element {j}: {p} vs {q}"
                    );
                }
            }
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for h in [16usize, 37, 64] {
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
            let fast = gates_forward_case(&pre, &state, |op| {
                pulp::Simd::vectorize(simd, op.twin(simd))
            });
            let portable = gates_forward_case(&pre, &state, |op| op.with_simd(pulp::Scalar::new()));
            let what = format!("forward, h {h}");
            close(&what, &fast.0, &portable.0);
            close(&what, &fast.1, &portable.1);
            close(&what, &fast.2, &portable.2);
        }
        // the backward kernel
        let h = 37;
        let mut v =
            |lo: f32, hi: f32| -> Vec<f32> { (0..h).map(|_| rng.random_range(lo..hi)).collect() };
        let acts = [v(0.0, 1.0), v(0.0, 1.0), v(-1.0, 1.0), v(0.0, 1.0)];
        let cells = [v(-3.0, 3.0), v(-3.0, 3.0)];
        let grads = [v(-1.0, 1.0), v(-1.0, 1.0)];
        let carry = [v(-1.0, 1.0), v(-1.0, 1.0)];
        let fast = gates_backward_case(&acts, &cells, &grads, &carry, |op| {
            pulp::Simd::vectorize(simd, op.twin(simd))
        });
        let portable = gates_backward_case(&acts, &cells, &grads, &carry, |op| {
            op.with_simd(pulp::Scalar::new())
        });
        close("backward", &fast.0, &portable.0);
        close("backward", &fast.1, &portable.1);
        // NaN in, NaN out (not a clamped finite value)
        let mut pre = vec![vec![0f32; 16]; 4];
        pre[0] = vec![f32::NAN; 16];
        let (_, _, out) = gates_forward_case(&pre, &[vec![0f32; 16], vec![0f32; 16]], |op| {
            pulp::Simd::vectorize(simd, op.twin(simd))
        });
        assert!(out.iter().flatten().all(|v| v.is_nan()));
    }
}

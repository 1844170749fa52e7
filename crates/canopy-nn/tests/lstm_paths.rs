//! The LSTM layer op takes one of two CPU paths for f32: the fused kernel (AVX-512, hidden size a
//! multiple of 16, projection computed inside the recurrence) or the portable one (`gemm` +
//! gate pass). Both must agree with the composed-candle reference, forward and backward, with
//! bias, both directions, stacked layers and padded steps. One test in its own binary, because
//! it switches the process-wide `set_fused_lstm_enabled`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use candle_core::{DType, Device, Tensor, Var};
use canopy_nn::ops::set_fused_lstm_enabled;
use rand::SeedableRng;

use common::max_abs_diff;

/// `t` in f64 (for `common::max_abs_diff`).
fn f64s(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F64).unwrap()
}

#[test]
fn fused_and_portable_lstm_paths_match_the_reference_forward_and_backward() {
    // bidirectional: a task per direction; one direction: tasks of different sequences (with
    // two or more threads)
    for bidirectional in [true, false] {
        check(bidirectional);
    }
}

fn check(bidirectional: bool) {
    let width = if bidirectional { 64 } else { 32 };
    let (store, lstm) = common::two_layer_lstm((5, 32), bidirectional, DType::F32, 3);
    let (b, t) = (9, 7);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, t, 5), &Device::Cpu).unwrap()).unwrap();
    let r = Tensor::randn(0f32, 1.0, (b, t, width), &Device::Cpu).unwrap();
    let rc = Tensor::randn(0f32, 1.0, (b, t, width), &Device::Cpu).unwrap();
    let lengths = vec![7usize, 3, 5, 1, 7, 2, 6, 4, 7];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vars = store.all_vars().unwrap();
    let var_refs: Vec<&Var> = vars.iter().collect();
    // (outputs, gradients of x and of every parameter)
    let mut run = |reference: bool| {
        let (out, g) = common::lstm_outputs_and_gradients(
            &lstm,
            &x,
            Some(&lengths),
            (&r, &rc),
            &var_refs,
            reference,
            &mut rng,
        );
        (vec![out.output, out.h_n, out.c_n.unwrap()], g)
    };
    let reference = run(true);
    for fused in [true, false] {
        set_fused_lstm_enabled(fused);
        let got = run(false);
        for (k, (a, e)) in got.0.iter().zip(&reference.0).enumerate() {
            let d = max_abs_diff(&f64s(a), &f64s(e));
            assert!(
                d < 2e-5,
                "bidirectional {bidirectional}, fused {fused}: output {k} differs by {d:e}"
            );
        }
        for (k, (a, e)) in got.1.iter().zip(&reference.1).enumerate() {
            let d = max_abs_diff(&f64s(a), &f64s(e));
            let scale = common::max_abs(&f64s(e));
            assert!(
                d <= 1e-4 * (1.0 + scale),
                "bidirectional {bidirectional}, fused {fused}: gradient {k} differs by {d:e} (largest value {scale})"
            );
        }
        // padded steps are zeros in the output
        let y = got.0[0].to_vec3::<f32>().unwrap();
        for (bi, &len) in lengths.iter().enumerate() {
            assert!(y[bi][len..].iter().flatten().all(|&v| v == 0.0));
        }
    }
    set_fused_lstm_enabled(true);
}

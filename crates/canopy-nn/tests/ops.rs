//! canopy-nn's operators against PyTorch (float64 fixtures from `tools/golden/nn_ops.py`:
//! forward outputs and the gradients of `sum(y * r)` for every input) and against finite
//! differences.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use canopy_nn::gradcheck::{check_gradients, random_f64, GradCheckConfig};
use canopy_nn::ops::*;
use canopy_nn::Result;

fn fixtures() -> HashMap<String, Tensor> {
    common::fixtures("nn_ops")
}

use common::max_abs_diff;

/// Runs `f` on the fixture inputs `names` of case `case`, compares output and gradients.
fn golden(case: &str, names: &[&str], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let fx = fixtures();
    let get = |k: &str| {
        fx.get(&format!("{case}.{k}"))
            .unwrap_or_else(|| panic!("fixture {case}.{k} missing"))
            .clone()
    };
    let vars: Vec<Var> = names
        .iter()
        .map(|n| Var::from_tensor(&get(n)).unwrap())
        .collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&xs).unwrap();
    let dy = max_abs_diff(&y, &get("y"));
    assert!(dy < 1e-10, "{case}: forward differs from PyTorch by {dy:e}");
    let grads = (&y * get("r"))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (n, x) in names.iter().zip(&xs) {
        let g = grads
            .get(x)
            .unwrap_or_else(|| panic!("{case}: no gradient for {n}"));
        let dg = max_abs_diff(g, &get(&format!("g{n}")));
        assert!(
            dg < 1e-10,
            "{case}: gradient of {n} differs from PyTorch by {dg:e}"
        );
    }
}

fn gradcheck(shapes: &[&[usize]], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let inputs: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| random_f64(s, 100 + i as u64, &Device::Cpu).unwrap())
        .collect();
    check_gradients(f, &inputs, GradCheckConfig::default()).unwrap();
}

fn c1(stride: usize, padding: usize, dilation: usize) -> Axis1 {
    Axis1 {
        stride,
        padding,
        dilation,
    }
}

#[test]
fn conv1d_matches_pytorch_and_finite_differences() {
    let cfg = Conv1dConfig {
        axis: c1(2, 1, 2),
        groups: 2,
    };
    golden("conv1d", &["x", "w", "b"], |t| {
        conv1d(&t[0], &t[1], Some(&t[2]), cfg)
    });
    gradcheck(&[&[2, 4, 11], &[6, 2, 3], &[6]], |t| {
        conv1d(&t[0], &t[1], Some(&t[2]), cfg)
    });
    // 16 channels, stride 1: the Winograd forward, input and weight gradients (k3 and k7,
    // odd output length)
    for (k, p) in [(3, 1), (7, 3)] {
        let cfg = Conv1dConfig {
            axis: c1(1, p, 1),
            groups: 1,
        };
        gradcheck(&[&[2, 16, 9], &[16, 16, k], &[16]], |t| {
            conv1d(&t[0], &t[1], Some(&t[2]), cfg)
        });
    }
}

#[test]
fn conv2d_matches_pytorch_where_candle_fails() {
    let s2 = Conv2dConfig::square(2, 1, 1, 1);
    golden("conv2d_s2", &["x", "w", "b"], |t| {
        conv2d(&t[0], &t[1], Some(&t[2]), s2)
    });
    let mixed = Conv2dConfig {
        h: c1(2, 1, 2),
        w: c1(3, 0, 1),
        groups: 2,
    };
    golden("conv2d_mixed", &["x", "w"], |t| {
        conv2d(&t[0], &t[1], None, mixed)
    });
    gradcheck(&[&[1, 4, 7, 10], &[4, 2, 3, 2]], |t| {
        conv2d(&t[0], &t[1], None, mixed)
    });
}

#[test]
fn winograd_convolution_matches_pytorch_and_finite_differences() {
    // 3x3, unit stride, 16 channels in, 17 out: the Winograd F(2x2, 3x3) path for the forward
    // pass, the input gradient (flipped convolution) and the weight gradient
    let cfg = Conv2dConfig {
        h: c1(1, 1, 1),
        w: c1(1, 0, 1),
        groups: 1,
    };
    golden("conv2d_3x3_winograd", &["x", "w", "b"], |t| {
        conv2d(&t[0], &t[1], Some(&t[2]), cfg)
    });
    gradcheck(&[&[1, 16, 5, 7], &[16, 16, 3, 3], &[16]], |t| {
        conv2d(&t[0], &t[1], Some(&t[2]), Conv2dConfig::square(1, 1, 1, 1))
    });
    // f32 stays within 1e-5 of the f64 result
    let x = random_f64(&[2, 16, 11, 10], 7, &Device::Cpu).unwrap();
    let w = random_f64(&[24, 16, 3, 3], 8, &Device::Cpu).unwrap();
    let sq = Conv2dConfig::square(1, 1, 1, 1);
    let y64 = conv2d(&x, &w, None, sq).unwrap();
    let f32_ = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    let y32 = conv2d(&f32_(&x), &f32_(&w), None, sq).unwrap();
    let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &y64);
    assert!(d < 1e-5, "f32 Winograd differs from f64 by {d:e}");
}

#[test]
fn pooling_matches_pytorch() {
    let a = PoolAxis {
        kernel: 3,
        stride: 2,
        padding: 1,
    };
    golden("max_pool1d", &["x"], |t| max_pool1d(&t[0], a, true));
    golden("avg_pool1d", &["x"], |t| avg_pool1d(&t[0], a, true));
    golden("max_pool2d", &["x"], |t| {
        max_pool2d(
            &t[0],
            a,
            PoolAxis {
                kernel: 2,
                stride: 1,
                padding: 1,
            },
            true,
        )
    });
    golden("avg_pool2d", &["x"], |t| avg_pool2d(&t[0], a, a, true));
    golden("max_pool2d_k2", &["x"], |t| {
        max_pool2d(&t[0], PoolAxis::new(2), PoolAxis::new(2), false)
    });
    gradcheck(&[&[1, 2, 7, 6]], |t| avg_pool2d(&t[0], a, a, true));
    gradcheck(&[&[1, 2, 7, 6]], |t| max_pool2d(&t[0], a, a, false));
}

#[test]
fn resizing_matches_pytorch() {
    golden("bilinear_up", &["x"], |t| {
        upsample_bilinear2d(&t[0], 8, 12, AlignCorners::No)
    });
    golden("bilinear_up_ac", &["x"], |t| {
        upsample_bilinear2d(&t[0], 8, 12, AlignCorners::Yes)
    });
    golden("bilinear_down", &["x"], |t| {
        upsample_bilinear2d(&t[0], 3, 4, AlignCorners::No)
    });
    golden("nearest_up", &["x"], |t| upsample_nearest2d(&t[0], 8, 11));
    golden("nearest_down", &["x"], |t| upsample_nearest2d(&t[0], 3, 4));
    golden("adaptive_avg", &["x"], |t| adaptive_avg_pool2d(&t[0], 3, 4));
    golden("linear1d", &["x"], |t| {
        interpolate_linear1d(&t[0], 17, AlignCorners::No)
    });
    gradcheck(&[&[1, 2, 5, 7]], |t| {
        upsample_bilinear2d(&t[0], 9, 4, AlignCorners::No)
    });
}

/// Integer upsampling factors take the block-copy kernel: equal to PyTorch's nearest rule
/// (`src = floor(dst · in / out)`) written as two `index_select`s, for values and gradients
/// (the backward pass sums each block), in f64 and f32, many planes per task and few.
#[test]
fn integer_nearest_upsampling_equals_the_index_rule() {
    let dev = Device::Cpu;
    for (i, &(b, c, h, w, fh, fw)) in [
        (2usize, 3usize, 5usize, 7usize, 2usize, 2usize),
        (1, 2, 4, 3, 3, 1),
        (2, 1, 3, 5, 1, 4),
        (1, 40, 9, 11, 2, 3),
        (1, 1, 70, 300, 2, 2),
    ]
    .iter()
    .enumerate()
    {
        let x =
            Var::from_tensor(&random_f64(&[b, c, h, w], 300 + i as u64, &dev).unwrap()).unwrap();
        let idx = |n: usize, f: usize| {
            Tensor::from_vec((0..n * f).map(|d| (d / f) as u32).collect(), n * f, &dev).unwrap()
        };
        let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
            let y = f(x.as_tensor()).unwrap();
            let r = random_f64(y.dims(), 310, &dev).unwrap();
            let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
            (y, g.get(x.as_tensor()).unwrap().clone())
        };
        let fast = run(&|x| upsample_nearest2d(x, h * fh, w * fw));
        let rule = run(&|x| {
            Ok(x.index_select(&idx(h, fh), 2)?
                .index_select(&idx(w, fw), 3)?)
        });
        assert_eq!(fast.0.dims(), &[b, c, h * fh, w * fw]);
        for (what, a, e) in [("y", &fast.0, &rule.0), ("dx", &fast.1, &rule.1)] {
            let d = max_abs_diff(a, e);
            assert!(d < 1e-12, "case {i}: {what} differs by {d:e}");
        }
        let y32 = upsample_nearest2d(
            &x.as_tensor().to_dtype(candle_core::DType::F32).unwrap(),
            h * fh,
            w * fw,
        )
        .unwrap();
        let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &rule.0);
        assert!(d < 1e-6, "case {i}: f32 differs by {d:e}");
    }
    gradcheck(&[&[2, 3, 4, 5]], |t| upsample_nearest2d(&t[0], 8, 15));
}

#[test]
fn softmax_and_layer_norm_match_pytorch_and_pass_gradient_checks() {
    golden("softmax", &["x"], |t| softmax(&t[0], 1));
    golden("log_softmax", &["x"], |t| {
        log_softmax(&t[0], candle_core::D::Minus1)
    });
    golden("layer_norm", &["x", "w", "b"], |t| {
        layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
    });
    gradcheck(&[&[3, 5, 4]], |t| softmax_last_dim(&t[0]));
    gradcheck(&[&[3, 4, 6], &[6], &[6]], |t| {
        layer_norm(&t[0], Some(&t[1]), Some(&t[2]), 1e-5)
    });
}

/// The traps this crate works around, demonstrated: the gradient check must catch them, or it
/// could not catch anything.
#[test]
fn gradient_check_catches_candles_silent_failures() {
    let x = random_f64(&[3, 5], 7, &Device::Cpu).unwrap();
    let err = check_gradients(
        |t| Ok(candle_nn::ops::softmax_last_dim(&t[0])?),
        &[x],
        GradCheckConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("NO gradient"), "{err}");

    let x = random_f64(&[2, 3, 11], 8, &Device::Cpu).unwrap();
    let w = random_f64(&[4, 3, 3], 9, &Device::Cpu).unwrap();
    let err = check_gradients(
        |t| Ok(t[0].conv1d(&t[1], 0, 1, 1, 1)?),
        &[x, w],
        GradCheckConfig::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("input 1"),
        "candle's conv1d kernel gradient should be wrong: {err}"
    );
}

#[test]
fn layer_norm_module_trains_every_parameter_where_candles_does_not() {
    use candle_nn::{VarBuilder, VarMap};
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, candle_core::DType::F64, &dev);
    let ln = LayerNorm::new(6, 1e-5, true, vb.pp("norm")).unwrap();
    let lin = candle_nn::linear(4, 6, vb.pp("lin")).unwrap();
    let x = random_f64(&[5, 4], 3, &dev).unwrap();
    let r = random_f64(&[5, 6], 4, &dev).unwrap();
    let y = ln
        .forward(&candle_core::Module::forward(&lin, &x).unwrap())
        .unwrap();
    let grads = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let vars: Vec<(String, Var)> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(vars.len(), 4);
    canopy_nn::check_all_parameters_have_gradients(&vars, &grads).unwrap();

    // candle's fused LayerNorm (f32, contiguous input) stops the gradient before the linear layer
    let vm32 = VarMap::new();
    let vb32 = VarBuilder::from_varmap(&vm32, candle_core::DType::F32, &dev);
    let lin32 = candle_nn::linear(4, 6, vb32.pp("lin")).unwrap();
    let cln = candle_nn::LayerNorm::new(
        Tensor::ones(6, candle_core::DType::F32, &dev).unwrap(),
        Tensor::zeros(6, candle_core::DType::F32, &dev).unwrap(),
        1e-5,
    );
    let x32 = x.to_dtype(candle_core::DType::F32).unwrap();
    let y =
        candle_core::Module::forward(&cln, &candle_core::Module::forward(&lin32, &x32).unwrap())
            .unwrap();
    let grads = (y * r.to_dtype(candle_core::DType::F32).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let lin_vars: Vec<(String, Var)> = vm32
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let err = canopy_nn::check_all_parameters_have_gradients(&lin_vars, &grads).unwrap_err();
    assert!(err.to_string().contains("no gradient"), "{err}");
}

#[test]
fn dropout_is_seeded_scaled_and_off_in_evaluation() {
    use rand::SeedableRng;
    let x = Tensor::ones((1000,), candle_core::DType::F32, &Device::Cpu).unwrap();
    let d = canopy_nn::Dropout::new(0.25).unwrap();
    let a = d
        .forward_t(&x, true, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap();
    let b = d
        .forward_t(&x, true, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap();
    let va: Vec<f32> = a.to_vec1().unwrap();
    assert_eq!(va, b.to_vec1::<f32>().unwrap(), "same seed, same mask");
    let kept = va.iter().filter(|&&v| v != 0.0).count();
    assert!(
        (700..800).contains(&kept),
        "kept {kept} of 1000 at p = 0.25"
    );
    assert!(va
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    let e = d
        .forward_t(&x, false, &mut rand::rngs::StdRng::seed_from_u64(1))
        .unwrap();
    assert_eq!(e.to_vec1::<f32>().unwrap(), vec![1.0; 1000]);
    assert!(canopy_nn::Dropout::new(1.0).is_err());
}

#[test]
fn shape_errors_name_the_problem() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 5, 5), candle_core::DType::F32, &dev).unwrap();
    let w = Tensor::zeros((2, 3, 3, 3), candle_core::DType::F32, &dev).unwrap();
    let e = conv2d(&x, &w, None, Conv2dConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("groups") || e.contains("input channels"), "{e}");
    let e = max_pool2d(
        &x,
        PoolAxis {
            kernel: 2,
            stride: 1,
            padding: 2,
        },
        PoolAxis::new(2),
        false,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("padding"), "{e}");
    assert!(upsample_bilinear2d(&x, 0, 3, AlignCorners::No).is_err());
}

#[test]
fn grid_sample_matches_pytorch_for_image_and_grid_gradients() {
    for (pad, p) in [
        ("zeros", GridPadding::Zeros),
        ("border", GridPadding::Border),
    ] {
        for (ac, a) in [(0, AlignCorners::No), (1, AlignCorners::Yes)] {
            golden(&format!("grid_sample_{pad}_{ac}"), &["x", "g"], |t| {
                grid_sample(&t[0], &t[1], p, a)
            });
        }
    }
    // finite differences, grid kept away from integer pixel positions (where bilinear
    // interpolation has a kink)
    let x = random_f64(&[1, 2, 5, 6], 11, &Device::Cpu).unwrap();
    let g = (random_f64(&[1, 3, 4, 2], 12, &Device::Cpu).unwrap() * 0.9).unwrap();
    check_gradients(
        |t| grid_sample(&t[0], &t[1], GridPadding::Zeros, AlignCorners::No),
        &[x, g],
        GradCheckConfig::default(),
    )
    .unwrap();
}

#[test]
fn transposed_convolutions_match_pytorch() {
    let t2 = TransposeAxis {
        stride: 2,
        padding: 1,
        output_padding: 1,
        dilation: 1,
    };
    golden("conv_transpose2d", &["x", "w", "b"], |t| {
        conv_transpose2d(&t[0], &t[1], Some(&t[2]), t2, t2, 2)
    });
    let th = TransposeAxis {
        stride: 1,
        padding: 2,
        output_padding: 0,
        dilation: 2,
    };
    let tw = TransposeAxis {
        stride: 3,
        padding: 0,
        output_padding: 2,
        dilation: 1,
    };
    golden("conv_transpose2d_mixed", &["x", "w"], |t| {
        conv_transpose2d(&t[0], &t[1], None, th, tw, 1)
    });
    let t1 = TransposeAxis {
        stride: 3,
        padding: 2,
        output_padding: 1,
        dilation: 2,
    };
    golden("conv_transpose1d", &["x", "w", "b"], |t| {
        conv_transpose1d(&t[0], &t[1], Some(&t[2]), t1, 1)
    });
    gradcheck(&[&[1, 4, 4, 3], &[4, 1, 3, 2]], |t| {
        conv_transpose2d(&t[0], &t[1], None, t2, TransposeAxis::new(2, 0), 4)
    });
}

#[test]
fn transposed_convolution_equals_the_scatter_definition_on_both_paths() {
    // (stride, padding, output padding, dilation) per axis: the CPU kernel path (output padding
    // below the stride) and the composed path (output padding >= stride, dilation 2)
    let dev = Device::Cpu;
    let (b, c, o, h, w, kh, kw) = (2, 3, 4, 4, 5, 3, 2);
    for (ah, aw) in [((2, 1, 1, 2), (3, 0, 2, 1)), ((1, 1, 1, 2), (1, 0, 0, 1))] {
        let axis = |(stride, padding, output_padding, dilation)| TransposeAxis {
            stride,
            padding,
            output_padding,
            dilation,
        };
        let x = random_f64(&[b, c, h, w], 61, &dev).unwrap();
        let wt = random_f64(&[c, o, kh, kw], 62, &dev).unwrap();
        let y = conv_transpose2d(&x, &wt, None, axis(ah), axis(aw), 1).unwrap();
        let out = |n: usize, (s, p, op, d): (usize, usize, usize, usize), k: usize| {
            (n - 1) * s + d * (k - 1) + op + 1 - 2 * p
        };
        let (ho, wo) = (out(h, ah, kh), out(w, aw, kw));
        assert_eq!(y.dims(), &[b, o, ho, wo]);
        let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let wv: Vec<f64> = wt.flatten_all().unwrap().to_vec1().unwrap();
        let mut want = vec![0.0; b * o * ho * wo];
        for bi in 0..b {
            for ci in 0..c {
                for i in 0..h {
                    for j in 0..w {
                        for oi in 0..o {
                            for di in 0..kh {
                                for dj in 0..kw {
                                    let r = (i * ah.0 + di * ah.3) as isize - ah.1 as isize;
                                    let q = (j * aw.0 + dj * aw.3) as isize - aw.1 as isize;
                                    if r < 0 || q < 0 || r >= ho as isize || q >= wo as isize {
                                        continue;
                                    }
                                    want[((bi * o + oi) * ho + r as usize) * wo + q as usize] += xv
                                        [((bi * c + ci) * h + i) * w + j]
                                        * wv[((ci * o + oi) * kh + di) * kw + dj];
                                }
                            }
                        }
                    }
                }
            }
        }
        let want = Tensor::from_vec(want, (b, o, ho, wo), &dev).unwrap();
        assert!(max_abs_diff(&y, &want) < 1e-12, "{ah:?} {aw:?}");
        gradcheck(&[&[1, c, h, w], &[c, o, kh, kw]], |t| {
            conv_transpose2d(&t[0], &t[1], None, axis(ah), axis(aw), 1)
        });
    }
}

#[test]
fn patch_transposed_convolution_equals_its_definition() {
    // stride == kernel, no padding: the matrix-product path (U-Net's 2x2 up-convolutions)
    let dev = Device::Cpu;
    let (b, c, o, h, w, kh, kw) = (2, 3, 5, 3, 4, 2, 3);
    let x = random_f64(&[b, c, h, w], 21, &dev).unwrap();
    let wt = random_f64(&[c, o, kh, kw], 22, &dev).unwrap();
    let bias = random_f64(&[o], 23, &dev).unwrap();
    let (sh, sw) = (TransposeAxis::new(kh, 0), TransposeAxis::new(kw, 0));
    let y = conv_transpose2d(&x, &wt, Some(&bias), sh, sw, 1).unwrap();
    assert_eq!(y.dims(), &[b, o, h * kh, w * kw]);
    let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
    let wv: Vec<f64> = wt.flatten_all().unwrap().to_vec1().unwrap();
    let bv: Vec<f64> = bias.to_vec1().unwrap();
    let yv: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
    for bi in 0..b {
        for oi in 0..o {
            for r in 0..h * kh {
                for q in 0..w * kw {
                    let (i, di, j, dj) = (r / kh, r % kh, q / kw, q % kw);
                    let mut want = bv[oi];
                    for ci in 0..c {
                        want += xv[((bi * c + ci) * h + i) * w + j]
                            * wv[((ci * o + oi) * kh + di) * kw + dj];
                    }
                    let got = yv[((bi * o + oi) * h * kh + r) * w * kw + q];
                    assert!(
                        (got - want).abs() < 1e-12,
                        "({bi},{oi},{r},{q}): {got} vs {want}"
                    );
                }
            }
        }
    }
    gradcheck(&[&[b, c, h, w], &[c, o, kh, kw], &[o]], |t| {
        conv_transpose2d(&t[0], &t[1], Some(&t[2]), sh, sw, 1)
    });
}

#[test]
fn batch_norm_train_equals_its_definition_with_exact_gradients_for_all_inputs() {
    let dev = Device::Cpu;
    // the last two span several parallel tasks of whole planes, the second task starting
    // mid-way through the channels
    for dims in [&[3usize, 4, 5, 6][..], &[5, 3, 7], &[2500, 7], &[80, 5, 45]] {
        let c = dims[1];
        let x = random_f64(dims, 51, &dev).unwrap();
        let w = random_f64(&[c], 52, &dev).unwrap();
        let b = random_f64(&[c], 53, &dev).unwrap();
        // the definition, composed from candle ops: statistics over every axis but 1
        let mut bs = vec![1usize; dims.len()];
        bs[1] = c;
        let flat = x.transpose(0, 1).unwrap().contiguous().unwrap();
        let flat = flat.reshape((c, ())).unwrap();
        let mean = flat.mean_keepdim(1).unwrap();
        let var = flat
            .broadcast_sub(&mean)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_keepdim(1)
            .unwrap();
        let norm = x
            .broadcast_sub(&mean.reshape(bs.clone()).unwrap())
            .unwrap()
            .broadcast_div(
                &(var.reshape(bs.clone()).unwrap() + 1e-3)
                    .unwrap()
                    .sqrt()
                    .unwrap(),
            )
            .unwrap()
            .broadcast_mul(&w.reshape(bs.clone()).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape(bs.clone()).unwrap())
            .unwrap();
        for relu in [false, true] {
            let (y, m, v) = batch_norm_train(&x, &w, &b, 1e-3, relu).unwrap();
            let want = if relu {
                norm.relu().unwrap()
            } else {
                norm.clone()
            };
            assert!(max_abs_diff(&y, &want) < 1e-13, "{dims:?} relu {relu}");
            assert!(max_abs_diff(&m, &mean.flatten_all().unwrap()) < 1e-14);
            assert!(max_abs_diff(&v, &var.flatten_all().unwrap()) < 1e-14);
            gradcheck(&[dims, &[c], &[c]], |t| {
                Ok(batch_norm_train(&t[0], &t[1], &t[2], 1e-3, relu)?.0)
            });
            // f32 agrees with f64
            let x32 = x.to_dtype(candle_core::DType::F32).unwrap();
            let (y32, _, _) = batch_norm_train(&x32, &w, &b, 1e-3, relu).unwrap();
            let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &want);
            assert!(d < 1e-5, "f32 differs by {d:e}");
        }
    }
    // typed errors: wrong parameter length, one value per channel
    let x = random_f64(&[1, 3, 1, 1], 1, &dev).unwrap();
    let p = random_f64(&[3], 2, &dev).unwrap();
    let e = batch_norm_train(&x, &p, &p, 1e-5, false).unwrap_err();
    assert!(e.to_string().contains("more than one value"), "{e}");
    let x = random_f64(&[2, 4, 3, 3], 1, &dev).unwrap();
    let e = batch_norm_train(&x, &p, &p, 1e-5, false).unwrap_err();
    assert!(e.to_string().contains("weight"), "{e}");
}

/// `scale_shift` and `add_channel_bias` over inputs of many small planes (time series `(N, C, L)`
/// and `(N, C)`), which run in parallel tasks of many planes: equal to the broadcast definition.
#[test]
fn channel_ops_over_many_small_planes_equal_their_definitions() {
    let dev = Device::Cpu;
    for dims in [&[2500usize, 7][..], &[80, 5, 45]] {
        let c = dims[1];
        let x = random_f64(dims, 61, &dev).unwrap();
        let s = random_f64(&[c], 62, &dev).unwrap();
        let b = random_f64(&[c], 63, &dev).unwrap();
        let mut bs = vec![1usize; dims.len()];
        bs[1] = c;
        let (sb, bb) = (s.reshape(bs.clone()).unwrap(), b.reshape(bs).unwrap());
        let want = x.broadcast_mul(&sb).unwrap().broadcast_add(&bb).unwrap();
        let y = scale_shift(&x, &s, &b, true).unwrap();
        assert_eq!(max_abs_diff(&y, &want.relu().unwrap()), 0.0, "{dims:?}");
        let y = add_channel_bias(&x, &b).unwrap();
        assert_eq!(
            max_abs_diff(&y, &x.broadcast_add(&bb).unwrap()),
            0.0,
            "{dims:?}"
        );
        gradcheck(&[dims, &[c], &[c]], |t| {
            scale_shift(&t[0], &t[1], &t[2], true)
        });
        gradcheck(&[dims, &[c]], |t| add_channel_bias(&t[0], &t[1]));
    }
}

#[test]
fn fused_channel_ops_equal_their_definitions_and_have_exact_gradients() {
    let dev = Device::Cpu;
    let x = random_f64(&[2, 3, 5, 4], 31, &dev).unwrap();
    let s = random_f64(&[3], 32, &dev).unwrap();
    let b = random_f64(&[3], 33, &dev).unwrap();
    for relu in [false, true] {
        let y = scale_shift(&x, &s, &b, relu).unwrap();
        let mut want = x
            .broadcast_mul(&s.reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        if relu {
            want = want.relu().unwrap();
        }
        let d = (y - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f64>().unwrap() < 1e-15);
        gradcheck(&[&[2, 3, 5, 4], &[3], &[3]], |t| {
            scale_shift(&t[0], &t[1], &t[2], relu)
        });
    }
    // max-pooling over 2x2 and 3x2 blocks (the fused path; sizes that are not multiples drop
    // the remainder) equals its definition and has exact gradients (`max_pool2d_k2` above also
    // checks it against PyTorch)
    for (kh, kw) in [(2, 2), (3, 2)] {
        let x = random_f64(&[2, 3, 7, 6], 34, &dev).unwrap();
        let y = max_pool2d(&x, PoolAxis::new(kh), PoolAxis::new(kw), false).unwrap();
        let (oh, ow) = (7 / kh, 6 / kw);
        assert_eq!(y.dims(), &[2, 3, oh, ow]);
        let xv: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        let yv: Vec<f64> = y.flatten_all().unwrap().to_vec1().unwrap();
        for p in 0..6 {
            for i in 0..oh {
                for j in 0..ow {
                    let mut m = f64::NEG_INFINITY;
                    for a in 0..kh {
                        for c in 0..kw {
                            m = m.max(xv[p * 42 + (i * kh + a) * 6 + j * kw + c]);
                        }
                    }
                    assert_eq!(yv[(p * oh + i) * ow + j], m);
                }
            }
        }
        gradcheck(&[&[2, 3, 7, 6]], |t| {
            max_pool2d(&t[0], PoolAxis::new(kh), PoolAxis::new(kw), false)
        });
    }
}

#[test]
fn gelu_gradient_is_exact_where_candles_is_not() {
    let dev = Device::Cpu;
    let xs: Vec<f64> = (0..401).map(|i| -6.0 + i as f64 * 0.03).collect();
    let x = Tensor::from_vec(xs.clone(), 401, &dev).unwrap();
    // d/dx [x Phi(x)] = Phi(x) + x phi(x), with candle's (accurate) erf forward for Phi
    let phi_cdf: Vec<f64> = ((&x / std::f64::consts::SQRT_2).unwrap().erf().unwrap() + 1.0)
        .unwrap()
        .affine(0.5, 0.0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let exact: Vec<f64> = xs
        .iter()
        .zip(&phi_cdf)
        .map(|(&x, &c)| c + x * (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt())
        .collect();
    let grad_err = |f: &dyn Fn(&Tensor) -> Tensor| {
        let v = Var::from_tensor(&x).unwrap();
        let g = f(v.as_tensor()).sum_all().unwrap().backward().unwrap();
        let g: Vec<f64> = g.get(v.as_tensor()).unwrap().to_vec1().unwrap();
        g.iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    };
    let ours = grad_err(&|t| gelu(t).unwrap());
    let candles = grad_err(&|t| t.gelu_erf().unwrap());
    assert!(ours < 1e-13, "our GELU gradient is off by {ours:e}");
    assert!(
        candles > 1e-9,
        "candle's gelu_erf backward became exact ({candles:e}): drop the workaround"
    );
    gradcheck(&[&[3, 7]], |t| gelu(&t[0]));
}

#[test]
fn fast_and_reference_convolutions_agree_with_gradients() {
    let dev = Device::Cpu;
    let configs = [
        ((2, 4, 9, 8), (6, 4, 3, 3), Conv2dConfig::square(2, 1, 1, 1)),
        (
            (1, 4, 7, 10),
            (4, 2, 3, 2),
            Conv2dConfig {
                h: c1(2, 1, 2),
                w: c1(3, 0, 1),
                groups: 2,
            },
        ),
        ((2, 3, 5, 5), (3, 1, 5, 5), Conv2dConfig::square(1, 2, 1, 3)),
        (
            (1, 2, 6, 11),
            (5, 2, 1, 4),
            Conv2dConfig {
                h: c1(1, 0, 1),
                w: c1(2, 3, 2),
                groups: 1,
            },
        ),
        ((3, 2, 4, 4), (2, 2, 4, 4), Conv2dConfig::default()),
        // pointwise with groups: the kernels multiply the image in place
        ((2, 6, 5, 7), (4, 3, 1, 1), Conv2dConfig::square(1, 0, 1, 2)),
        // padding beyond the kernel reach: the input gradient takes the scatter path at stride 1
        ((1, 3, 4, 5), (2, 3, 1, 1), Conv2dConfig::square(1, 2, 1, 1)),
        // dilated, unit stride: flipped-kernel input gradient with dilation
        (
            (2, 3, 9, 10),
            (4, 3, 3, 3),
            Conv2dConfig::square(1, 2, 2, 1),
        ),
        // many output blocks per image, blocks straddling rows
        (
            (2, 8, 40, 70),
            (5, 8, 3, 3),
            Conv2dConfig::square(1, 1, 1, 1),
        ),
        (
            (1, 8, 33, 47),
            (4, 4, 3, 3),
            Conv2dConfig::square(2, 0, 1, 2),
        ),
        // strided gathers in blocks that start inside an output row
        (
            (2, 8, 40, 70),
            (5, 8, 3, 3),
            Conv2dConfig {
                h: c1(2, 1, 1),
                w: c1(3, 2, 1),
                groups: 1,
            },
        ),
        // Winograd (3x3, unit stride, 16 channels), odd sizes: small images (all images'
        // tiles in one product per frequency) and a larger one (tasks of tile rows)
        (
            (2, 16, 9, 11),
            (16, 16, 3, 3),
            Conv2dConfig::square(1, 1, 1, 1),
        ),
        (
            (1, 16, 24, 27),
            (17, 16, 3, 3),
            Conv2dConfig::square(1, 1, 1, 1),
        ),
    ];
    for (seed, (xs, ws, cfg)) in configs.into_iter().enumerate() {
        let x =
            Var::from_tensor(&random_f64(&[xs.0, xs.1, xs.2, xs.3], seed as u64, &dev).unwrap())
                .unwrap();
        let w = Var::from_tensor(
            &random_f64(&[ws.0, ws.1, ws.2, ws.3], 50 + seed as u64, &dev).unwrap(),
        )
        .unwrap();
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
            let y = f(x.as_tensor(), w.as_tensor()).unwrap();
            let r = random_f64(y.dims(), 99, &dev).unwrap();
            let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
            (
                y,
                g.get(x.as_tensor()).unwrap().clone(),
                g.get(w.as_tensor()).unwrap().clone(),
            )
        };
        let fast = run(&|x, w| conv2d(x, w, None, cfg));
        let refr = run(&|x, w| conv2d_reference(x, w, None, cfg));
        for (what, a, b) in [
            ("y", &fast.0, &refr.0),
            ("dx", &fast.1, &refr.1),
            ("dw", &fast.2, &refr.2),
        ] {
            let d = max_abs_diff(a, b);
            assert!(d < 1e-12, "config {seed}: {what} differs by {d:e}");
        }
        // f32 takes the fast path too
        let y32 = conv2d(
            &x.as_tensor().to_dtype(candle_core::DType::F32).unwrap(),
            &w.as_tensor().to_dtype(candle_core::DType::F32).unwrap(),
            None,
            cfg,
        )
        .unwrap();
        let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &fast.0);
        assert!(d < 1e-5, "config {seed}: f32 differs by {d:e}");

        // the bias and the ReLU applied by the kernels as they store the outputs (im2col blocks,
        // folded small images, Winograd rows; kn2row shapes fall back to the composed ops)
        let b = Var::from_tensor(&random_f64(&[ws.0], 70 + seed as u64, &dev).unwrap()).unwrap();
        for relu_on in [false, true] {
            let run3 = |f: &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>| {
                let y = f(x.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
                let r = random_f64(y.dims(), 98, &dev).unwrap();
                let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
                let grad = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
                [y.clone(), grad(&x), grad(&w), grad(&b)]
            };
            let fused = run3(&|x, w, b| conv2d_act(x, w, Some(b), cfg, relu_on));
            let composed = run3(&|x, w, b| {
                let y = conv2d_reference(x, w, Some(b), cfg)?;
                if relu_on {
                    relu(&y)
                } else {
                    Ok(y)
                }
            });
            if relu_on {
                let (lo, hi) = (fused[0].min_all().unwrap(), fused[0].max_all().unwrap());
                assert_eq!(lo.to_scalar::<f64>().unwrap(), 0.0, "config {seed}");
                assert!(hi.to_scalar::<f64>().unwrap() > 0.0, "config {seed}");
            }
            for (what, a, c) in ["y", "dx", "dw", "db"]
                .iter()
                .zip(&fused)
                .zip(&composed)
                .map(|((n, a), c)| (n, a, c))
            {
                let d = max_abs_diff(a, c);
                assert!(
                    d < 1e-11,
                    "config {seed}, ReLU {relu_on}: conv2d_act {what} differs by {d:e}"
                );
            }
            // and in f32, the kernels' own path
            let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
            let y32 = conv2d_act(
                &f32(x.as_tensor()),
                &f32(w.as_tensor()),
                Some(&f32(b.as_tensor())),
                cfg,
                relu_on,
            )
            .unwrap();
            let d = max_abs_diff(
                &y32.to_dtype(candle_core::DType::F64).unwrap(),
                &composed[0],
            );
            assert!(
                d < 1e-5,
                "config {seed}, ReLU {relu_on}: f32 differs by {d:e}"
            );
        }
    }
    // a wrong bias is an error that names it
    let x = random_f64(&[1, 2, 5, 5], 1, &dev).unwrap();
    let w = random_f64(&[3, 2, 3, 3], 2, &dev).unwrap();
    let e = conv2d_act(
        &x,
        &w,
        Some(&random_f64(&[2], 3, &dev).unwrap()),
        Conv2dConfig::default(),
        true,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bias"), "{e}");
    gradcheck(&[&[2, 3, 6, 5], &[4, 3, 3, 3], &[4]], |t| {
        conv2d_act(
            &t[0],
            &t[1],
            Some(&t[2]),
            Conv2dConfig::square(2, 1, 1, 1),
            true,
        )
    });
}

#[test]
fn fused_softmax_equals_the_composed_reference_with_gradients() {
    use canopy_nn::ops::softmax_reference;
    let dev = Device::Cpu;
    // 130 rows: more than one parallel task, and a large logit to exercise the max shift
    let x = Var::from_tensor(&(random_f64(&[2, 65, 7], 3, &dev).unwrap() * 30.0).unwrap()).unwrap();
    let r = random_f64(&[2, 65, 7], 4, &dev).unwrap();
    let run = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let y = f(x.as_tensor()).unwrap();
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        (y, g.get(x.as_tensor()).unwrap().clone())
    };
    let (ya, ga) = run(&|t| softmax(t, 2));
    let (yb, gb) = run(&|t| softmax_reference(t, 2));
    assert!(
        max_abs_diff(&ya, &yb) < 1e-15,
        "{:e}",
        max_abs_diff(&ya, &yb)
    );
    assert!(
        max_abs_diff(&ga, &gb) < 1e-14,
        "{:e}",
        max_abs_diff(&ga, &gb)
    );
    gradcheck(&[&[3, 5]], |t| softmax(&t[0], 1));
    // f32 takes the fused path too
    let y32 = softmax(&x.as_tensor().to_dtype(candle_core::DType::F32).unwrap(), 2).unwrap();
    let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &ya);
    assert!(d < 1e-6, "f32 softmax differs by {d:e}");
}

/// The fused layer-norm op equals the composed reference (values and all gradients, with and
/// without affine parameters, over enough rows for several partial parameter-gradient blocks).
#[test]
fn fused_layer_norm_equals_the_composed_reference() {
    let dev = Device::Cpu;
    for (dims, affine) in [
        (vec![3usize, 5, 7], true),
        (vec![2100, 9], true),
        (vec![4, 6], false),
    ] {
        let n = *dims.last().unwrap();
        let x = Var::from_tensor(&(random_f64(&dims, 1, &dev).unwrap() * 3.0).unwrap()).unwrap();
        let w = Var::from_tensor(&random_f64(&[n], 2, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&random_f64(&[n], 3, &dev).unwrap()).unwrap();
        let r = random_f64(&dims, 4, &dev).unwrap();
        let (wp, bp) = if affine {
            (Some(w.as_tensor()), Some(b.as_tensor()))
        } else {
            (None, None)
        };
        let y1 = layer_norm(x.as_tensor(), wp, bp, 1e-5).unwrap();
        let y2 = layer_norm_composed(x.as_tensor(), wp, bp, 1e-5).unwrap();
        assert!(max_abs_diff(&y1, &y2) < 1e-12, "{dims:?}");
        let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let vars = if affine { vec![&x, &w, &b] } else { vec![&x] };
        for (i, v) in vars.into_iter().enumerate() {
            let d = max_abs_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-10, "{dims:?} gradient {i} differs by {d:e}");
        }
    }
    gradcheck(&[&[3, 4, 6]], |t| layer_norm(&t[0], None, None, 1e-5));
}

/// `add_layer_norm(x, r)` equals `layer_norm(x + r)`: values and the gradients of both inputs
/// and both parameters, over shapes spanning several row blocks, in f64 and f32; finite
/// differences; mismatched shapes are errors.
#[test]
fn add_layer_norm_equals_layer_norm_of_the_sum() {
    let dev = Device::Cpu;
    let f64_of = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
    for dims in [vec![3usize, 5, 7], vec![2100, 9], vec![130, 64]] {
        let n = *dims.last().unwrap();
        for dtype in [candle_core::DType::F64, candle_core::DType::F32] {
            let var = |seed: u64, shape: &[usize], scale: f64| {
                let t = (random_f64(shape, seed, &dev).unwrap() * scale).unwrap();
                Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
            };
            let (x, res) = (var(1, &dims, 3.0), var(5, &dims, 1.0));
            let (w, b) = (var(2, &[n], 1.0), var(3, &[n], 1.0));
            let y1 = add_layer_norm(
                x.as_tensor(),
                res.as_tensor(),
                w.as_tensor(),
                b.as_tensor(),
                1e-5,
            )
            .unwrap();
            let sum = (x.as_tensor() + res.as_tensor()).unwrap();
            let y2 = layer_norm(&sum, Some(w.as_tensor()), Some(b.as_tensor()), 1e-5).unwrap();
            let tol = if dtype == candle_core::DType::F64 {
                1e-12
            } else {
                1e-5
            };
            assert!(
                max_abs_diff(&f64_of(&y1), &f64_of(&y2)) < tol,
                "{dims:?} {dtype:?}"
            );
            let r = random_f64(&dims, 4, &dev).unwrap().to_dtype(dtype).unwrap();
            let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (i, v) in [&x, &res, &w, &b].into_iter().enumerate() {
                let d = max_abs_diff(
                    &f64_of(g1.get(v.as_tensor()).unwrap()),
                    &f64_of(g2.get(v.as_tensor()).unwrap()),
                );
                assert!(
                    d < tol * 100.0,
                    "{dims:?} {dtype:?} gradient {i} differs by {d:e}"
                );
            }
        }
    }
    gradcheck(&[&[3, 4, 6], &[3, 4, 6], &[6], &[6]], |t| {
        add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-5)
    });
    let x = random_f64(&[2, 3], 1, &dev).unwrap();
    let w = random_f64(&[3], 2, &dev).unwrap();
    assert!(add_layer_norm(&x, &random_f64(&[3, 2], 3, &dev).unwrap(), &w, &w, 1e-5).is_err());
    assert!(add_layer_norm(&x, &x, &random_f64(&[2], 3, &dev).unwrap(), &w, 1e-5).is_err());
}

/// `relu` passes the gradient where the output is positive (zero at 0, as PyTorch), in f32 and
/// f64, and passes the gradient check away from the kink.
#[test]
fn relu_op_matches_pytorch_semantics() {
    let dev = Device::Cpu;
    for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
        let x = Var::from_tensor(
            &Tensor::new(&[-2.0f64, -0.5, 0.0, 0.5, 3.0], &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        )
        .unwrap();
        let y = relu(x.as_tensor()).unwrap();
        let yv: Vec<f64> = y
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(yv, vec![0.0, 0.0, 0.0, 0.5, 3.0]);
        let g = (y * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
        let gv: Vec<f64> = g
            .get(x.as_tensor())
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gv, vec![0.0, 0.0, 0.0, 2.0, 2.0]);
    }
    // random inputs are almost surely away from 0 by more than the finite-difference step
    gradcheck(&[&[4, 7]], |t| relu(&t[0]));
}

/// `add_relu(a, b)` equals `relu(a + b)` for a contiguous `b`, a cropped `b` (a `narrow` on the
/// last axis, read in place) and a transposed `b` (copied first), in values and in the gradients
/// of both operands; mismatched shapes are an error.
#[test]
fn add_relu_equals_relu_of_the_sum() {
    let dev = Device::Cpu;
    let a = Var::from_tensor(&random_f64(&[3, 4, 6], 1, &dev).unwrap()).unwrap();
    let full = Var::from_tensor(&random_f64(&[3, 4, 9], 2, &dev).unwrap()).unwrap();
    let square = Var::from_tensor(&random_f64(&[3, 6, 4], 3, &dev).unwrap()).unwrap();
    let views = [
        full.as_tensor().narrow(2, 2, 6).unwrap(),
        full.as_tensor()
            .narrow(2, 0, 6)
            .unwrap()
            .contiguous()
            .unwrap(),
        square.as_tensor().transpose(1, 2).unwrap(),
    ];
    for b in &views {
        let y = add_relu(a.as_tensor(), b).unwrap();
        let want = relu(&(a.as_tensor() + b).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&y, &want), 0.0);
        let r = random_f64(y.dims(), 4, &dev).unwrap();
        let g1 = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&a, &full, &square] {
            match (g1.get(v.as_tensor()), g2.get(v.as_tensor())) {
                (Some(p), Some(q)) => assert_eq!(max_abs_diff(p, q), 0.0),
                (None, None) => {}
                _ => panic!("a gradient is missing on one side"),
            }
        }
    }
    gradcheck(&[&[2, 3, 5], &[2, 3, 8]], |t| {
        add_relu(&t[0], &t[1].narrow(2, 3, 5)?)
    });
    let f32_ = a.as_tensor().to_dtype(candle_core::DType::F32).unwrap();
    assert!(add_relu(a.as_tensor(), &views[0].narrow(2, 0, 5).unwrap()).is_err());
    assert!(add_relu(a.as_tensor(), &f32_).is_err());
}

/// The dropout mask depends on the seed only: the same with one thread and with several, kept
/// with probability 1 - p over a large tensor, and its gradient is the same mask and scale.
#[test]
fn dropout_mask_is_thread_count_independent_and_unbiased() {
    use rand::SeedableRng;
    let dev = Device::Cpu;
    let n = 200_000;
    let x = Var::from_tensor(&Tensor::ones(n, candle_core::DType::F32, &dev).unwrap()).unwrap();
    let d = canopy_nn::Dropout::new(0.3).unwrap();
    let run = |threads: usize| -> (Vec<f32>, Vec<f32>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = d
                .forward_t(
                    x.as_tensor(),
                    true,
                    &mut rand::rngs::StdRng::seed_from_u64(5),
                )
                .unwrap();
            let g = y.sum_all().unwrap().backward().unwrap();
            (
                y.to_vec1().unwrap(),
                g.get(x.as_tensor()).unwrap().to_vec1().unwrap(),
            )
        })
    };
    let (y1, g1) = run(1);
    let (y3, g3) = run(3);
    assert_eq!(y1, y3, "mask differs between 1 and 3 threads");
    assert_eq!(
        g1, y1,
        "gradient of a sum through dropout is the mask times the scale"
    );
    assert_eq!(g3, g1);
    let kept = y1.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
    // binomial standard deviation at n = 200k: 0.001
    assert!((kept - 0.7).abs() < 0.005, "kept fraction {kept}");
}

/// The one-pass nearest resampling into channels-first layout equals `index_select` over time
/// (PyTorch's nearest source steps `floor(d·T/L)`), a transpose and a copy, for stretching
/// (MS-ResNet's 45 -> 512), shrinking and equal lengths, in f32 and f64; its gradient passes
/// finite differences (several outputs copy the same input step when stretching).
#[test]
fn nearest_resample_to_channels_first_equals_the_composed_ops() {
    let dev = Device::Cpu;
    for (i, &(b, t, c, l)) in [
        (3usize, 45usize, 13usize, 512usize),
        (2, 10, 3, 4),
        (4, 7, 2, 7),
        (1, 1, 5, 6),
    ]
    .iter()
    .enumerate()
    {
        let x = random_f64(&[b, t, c], 300 + i as u64, &dev).unwrap();
        let idx: Vec<u32> = (0..l).map(|d| (d * t / l) as u32).collect();
        let idx = Tensor::from_vec(idx, l, &dev).unwrap();
        let composed = x
            .index_select(&idx, 1)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap();
        for x in [x.clone(), x.to_dtype(candle_core::DType::F32).unwrap()] {
            let y = nearest_resample_to_channels_first(&x, l).unwrap();
            assert_eq!(y.dims(), &[b, c, l]);
            let diff = max_abs_diff(&y.to_dtype(candle_core::DType::F64).unwrap(), &composed);
            assert!(diff < 1e-6, "case {i}: {diff}");
        }
        if b * t * c <= 64 {
            gradcheck(&[&[b, t, c]], |v| {
                nearest_resample_to_channels_first(&v[0], l)
            });
        }
    }
    assert!(nearest_resample_to_channels_first(
        &Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap(),
        4
    )
    .is_err());
    assert!(nearest_resample_to_channels_first(
        &Tensor::zeros((2, 3, 1), candle_core::DType::F32, &dev).unwrap(),
        0
    )
    .is_err());
}

/// A convolution whose input is plain data (a model's input: no variable behind it) skips the
/// input gradient and candle gets none for it; the weight and bias gradients are those computed
/// with the input as a variable. Covers the direct 1-D kernel (strided, dilated, gathered
/// windows), the Winograd 1-D kernel, `conv1d_act`, 2-D im2col / Winograd / strided, and a 2-D
/// convolution with plain weights (the input gradient alone, as for saliency maps).
#[test]
fn data_inputs_get_no_gradient_and_weights_the_same_one() {
    let dev = Device::Cpu;
    let c1d = |s, p, d| Conv1dConfig {
        axis: Axis1 {
            stride: s,
            padding: p,
            dilation: d,
        },
        groups: 1,
    };
    // (B, C_in, L, C_out, K, config, ReLU epilogue)
    let cases_1d = [
        (3usize, 2usize, 10usize, 3usize, 5usize, c1d(2, 2, 1), false),
        (2, 4, 17, 2, 3, c1d(3, 0, 2), false),
        (200, 3, 10, 4, 7, c1d(1, 1, 1), true),
        (30, 8, 45, 8, 41, c1d(1, 20, 1), false),
        (5, 64, 45, 64, 7, c1d(1, 3, 1), true),
        (70, 64, 12, 68, 3, c1d(1, 1, 1), false),
    ];
    for (i, &(b, ci, l, co, k, cfg, act)) in cases_1d.iter().enumerate() {
        let xt = random_f64(&[b, ci, l], 100 + i as u64, &dev).unwrap();
        let w = Var::from_tensor(&random_f64(&[co, ci, k], 110 + i as u64, &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&random_f64(&[co], 120 + i as u64, &dev).unwrap()).unwrap();
        let grads = |x: &Tensor| {
            let y = if act {
                conv1d_act(x, w.as_tensor(), Some(bias.as_tensor()), cfg, true).unwrap()
            } else {
                conv1d(x, w.as_tensor(), Some(bias.as_tensor()), cfg).unwrap()
            };
            let r = random_f64(y.dims(), 130, &dev).unwrap();
            (&y * &r).unwrap().sum_all().unwrap().backward().unwrap()
        };
        let xv = Var::from_tensor(&xt).unwrap();
        let (plain, tracked) = (grads(&xt), grads(xv.as_tensor()));
        assert!(
            plain.get(&xt).is_none(),
            "1-D case {i}: data got a gradient"
        );
        assert!(tracked.get(xv.as_tensor()).is_some(), "1-D case {i}");
        for v in [&w, &bias] {
            let (a, b) = (plain.get(v.as_tensor()), tracked.get(v.as_tensor()));
            let diff = max_abs_diff(a.unwrap(), b.unwrap());
            assert!(
                diff == 0.0,
                "1-D case {i}: parameter gradients differ by {diff}"
            );
        }
    }
    // (B, C, H, W, C_out, kernel, stride)
    let cases_2d = [
        (2usize, 3usize, 9usize, 8usize, 4usize, 3usize, 2usize),
        (2, 16, 8, 8, 16, 3, 1),
        (1, 2, 7, 6, 3, 5, 1),
    ];
    for (i, &(b, c, h, wd, co, k, s)) in cases_2d.iter().enumerate() {
        let cfg = Conv2dConfig::square(s, k / 2, 1, 1);
        let xt = random_f64(&[b, c, h, wd], 200 + i as u64, &dev).unwrap();
        let wt = random_f64(&[co, c, k, k], 210 + i as u64, &dev).unwrap();
        let grads = |x: &Tensor, w: &Tensor| {
            let y = conv2d(x, w, None, cfg).unwrap();
            let r = random_f64(y.dims(), 220, &dev).unwrap();
            (&y * &r).unwrap().sum_all().unwrap().backward().unwrap()
        };
        let (xv, wv) = (
            Var::from_tensor(&xt).unwrap(),
            Var::from_tensor(&wt).unwrap(),
        );
        let both = grads(xv.as_tensor(), wv.as_tensor());
        let only_w = grads(&xt, wv.as_tensor());
        let only_x = grads(xv.as_tensor(), &wt);
        assert!(
            only_w.get(&xt).is_none(),
            "2-D case {i}: data got a gradient"
        );
        assert!(
            only_x.get(&wt).is_none(),
            "2-D case {i}: plain weights got a gradient"
        );
        let dw = max_abs_diff(
            only_w.get(wv.as_tensor()).unwrap(),
            both.get(wv.as_tensor()).unwrap(),
        );
        let dx = max_abs_diff(
            only_x.get(xv.as_tensor()).unwrap(),
            both.get(xv.as_tensor()).unwrap(),
        );
        assert!(dw == 0.0 && dx == 0.0, "2-D case {i}: {dw} {dx}");
    }
}

/// The direct 1-D convolution (strided views of time-major rows, or gathered windows where the
/// view would waste many columns) equals the 2-D im2col path and the reference gather for
/// strides 1-3, dilations 1-2, with and without padding, over batches spanning several blocks
/// and partial weight gradients; values and all gradients.
/// A 1-D convolution entry point: `(x, w, bias, cfg) -> y`.
type Conv1dFn = dyn Fn(&Tensor, &Tensor, Option<&Tensor>, Conv1dConfig) -> Result<Tensor>;

#[test]
fn direct_conv1d_equals_the_im2col_path_and_the_reference() {
    let dev = Device::Cpu;
    let cases = [
        // (B, C_in, L, C_out, K, stride, padding, dilation)
        (
            2usize, 3usize, 11usize, 4usize, 3usize, 1usize, 1usize, 1usize,
        ),
        (3, 2, 10, 3, 5, 2, 2, 1),
        (2, 4, 17, 2, 3, 3, 0, 2),
        (1, 1, 7, 2, 7, 1, 3, 1),
        (2, 3, 9, 3, 2, 2, 1, 3),
        (200, 2, 45, 3, 7, 1, 3, 1),
        (90, 3, 31, 2, 3, 2, 1, 2),
        (4, 2, 3, 2, 5, 1, 2, 1),
        // short series, long kernel: the valid windows are gathered (several blocks)
        (200, 3, 10, 4, 7, 1, 1, 1),
        // stride 1, channel-major windows: InceptionTime's 41 taps on 45 steps (several
        // blocks), dilation 2, padding past the kernel span (rows entirely zero)
        (30, 8, 45, 8, 41, 1, 20, 1),
        (3, 4, 12, 5, 3, 1, 4, 2),
        (2, 3, 5, 2, 3, 1, 6, 1),
        // >= 64 channels, stride 1, k 3/5/7: Winograd forward (odd and even lengths, several
        // tasks, a single tile)
        (5, 64, 45, 64, 7, 1, 3, 1),
        (3, 66, 10, 65, 5, 1, 2, 1),
        (70, 64, 12, 68, 3, 1, 1, 1),
        (2, 64, 8, 64, 7, 1, 0, 1),
        (3, 64, 9, 64, 3, 1, 0, 1),
        // 32 channels: the direct kernel (below the Winograd threshold)
        (4, 32, 20, 32, 5, 1, 1, 1),
        // pointwise with a stride (MS-ResNet's shortcuts): channel-major strided copies, odd
        // and even lengths, padding, several blocks
        (300, 5, 23, 6, 1, 2, 0, 1),
        (3, 4, 16, 3, 1, 3, 1, 1),
    ];
    for (i, &(b, ci, l, co, k, s, p, d)) in cases.iter().enumerate() {
        let cfg = Conv1dConfig {
            axis: Axis1 {
                stride: s,
                padding: p,
                dilation: d,
            },
            groups: 1,
        };
        let x = Var::from_tensor(&random_f64(&[b, ci, l], 10 + i as u64, &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&random_f64(&[co, ci, k], 20 + i as u64, &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&random_f64(&[co], 30 + i as u64, &dev).unwrap()).unwrap();
        let run = |f: &Conv1dFn| {
            let y = f(x.as_tensor(), w.as_tensor(), Some(bias.as_tensor()), cfg).unwrap();
            let r = random_f64(y.dims(), 40, &dev).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y];
            for v in [&x, &w, &bias] {
                out.push(g.get(v.as_tensor()).unwrap().clone());
            }
            out
        };
        let direct = run(&conv1d);
        // the bias and ReLU applied as the kernel stores its outputs
        let act = |relu| move |x: &_, w: &_, b: Option<&_>, c| conv1d_act(x, w, b, c, relu);
        let reference_relu = |x: &_, w: &_, b: Option<&_>, c| relu(&conv1d_reference(x, w, b, c)?);
        let pairs = [
            ("im2col", run(&conv1d_as_2d)),
            ("reference", run(&conv1d_reference)),
            ("conv1d_act without ReLU", run(&act(false))),
        ];
        let with_relu = (run(&act(true)), run(&reference_relu));
        assert!(
            with_relu.0[0]
                .min_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
                == 0.0
        );
        for (j, (u, v)) in with_relu.0.iter().zip(&with_relu.1).enumerate() {
            let diff = max_abs_diff(u, v);
            assert!(
                diff < 1e-11,
                "case {i} value {j} conv1d_act with ReLU: {diff:e}"
            );
        }
        for (name, other) in pairs {
            for (j, (u, v)) in direct.iter().zip(&other).enumerate() {
                assert_eq!(u.dims(), v.dims(), "case {i} value {j} vs {name}");
                let diff = max_abs_diff(u, v);
                assert!(
                    diff < 1e-11,
                    "case {i} value {j} (y, dx, dw, db) vs {name}: {diff:e}"
                );
            }
        }
    }
    // bad input: clear errors, no panic
    let x = random_f64(&[2, 3, 9], 1, &dev).unwrap();
    let cfg = Conv1dConfig {
        axis: Axis1 {
            stride: 1,
            padding: 0,
            dilation: 1,
        },
        groups: 1,
    };
    let e = conv1d(&x, &random_f64(&[2, 4, 3], 2, &dev).unwrap(), None, cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("channels") || e.contains("groups"), "{e}");
    let w = random_f64(&[2, 3, 3], 2, &dev).unwrap();
    let e = conv1d(&x, &w, Some(&random_f64(&[3], 3, &dev).unwrap()), cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias"), "{e}");
    let long = random_f64(&[2, 3, 12], 2, &dev).unwrap();
    assert!(
        conv1d(&x, &long, None, cfg).is_err(),
        "kernel longer than the input"
    );
    gradcheck(&[&[2, 3, 9], &[2, 3, 3]], |t| {
        let cfg = Conv1dConfig {
            axis: Axis1 {
                stride: 2,
                padding: 1,
                dilation: 2,
            },
            groups: 1,
        };
        conv1d(&t[0], &t[1], None, cfg)
    });
    // the fused bias + ReLU on the direct kernels and on the Winograd kernels (16 channels)
    let cases: [(&[&[usize]], usize); 2] = [
        (&[&[2, 3, 9], &[4, 3, 3], &[4]], 2),
        (&[&[2, 16, 7], &[16, 16, 3], &[16]], 1),
    ];
    for (shapes, stride) in cases {
        gradcheck(shapes, |t| {
            let cfg = Conv1dConfig {
                axis: Axis1 {
                    stride,
                    padding: 1,
                    dilation: 1,
                },
                groups: 1,
            };
            conv1d_act(&t[0], &t[1], Some(&t[2]), cfg, true)
        });
    }
    let e = conv1d_act(&x, &w, Some(&random_f64(&[3], 3, &dev).unwrap()), cfg, true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias"), "{e}");
}

/// Score-layer shapes (at most 4 output channels, at least 9 taps, stride 1) take the kn2row
/// kernel: equal to the reference gather for values and all gradients, with paddings from none
/// to more than the kernel half-width, per axis, and images smaller than the kernel.
#[test]
fn kn2row_convolution_equals_the_reference() {
    let dev = Device::Cpu;
    let cases = [
        // (B, C_in, H, W, C_out, K_h, K_w, p_h, p_w)
        (
            2usize, 5usize, 12usize, 10usize, 2usize, 9usize, 9usize, 4usize, 4usize,
        ),
        (1, 3, 7, 9, 1, 3, 5, 0, 2),
        (3, 4, 6, 6, 4, 5, 5, 3, 1),
        (2, 2, 5, 4, 3, 7, 3, 2, 1),
        (1, 6, 16, 11, 2, 3, 3, 1, 1),
    ];
    for (i, &(b, c, h, w, co, kh, kw, ph, pw)) in cases.iter().enumerate() {
        let cfg = Conv2dConfig {
            h: Axis1 {
                stride: 1,
                padding: ph,
                dilation: 1,
            },
            w: Axis1 {
                stride: 1,
                padding: pw,
                dilation: 1,
            },
            groups: 1,
        };
        let x = Var::from_tensor(&random_f64(&[b, c, h, w], 50 + i as u64, &dev).unwrap()).unwrap();
        let k =
            Var::from_tensor(&random_f64(&[co, c, kh, kw], 60 + i as u64, &dev).unwrap()).unwrap();
        let bias = Var::from_tensor(&random_f64(&[co], 70 + i as u64, &dev).unwrap()).unwrap();
        let run = |f: fn(&Tensor, &Tensor, Option<&Tensor>, Conv2dConfig) -> Result<Tensor>| {
            let y = f(x.as_tensor(), k.as_tensor(), Some(bias.as_tensor()), cfg).unwrap();
            let r = random_f64(y.dims(), 80, &dev).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![y];
            for v in [&x, &k, &bias] {
                out.push(g.get(v.as_tensor()).unwrap().clone());
            }
            out
        };
        let (fast, reference) = (run(conv2d), run(conv2d_reference));
        for (j, (u, v)) in fast.iter().zip(&reference).enumerate() {
            assert_eq!(u.dims(), v.dims(), "case {i} value {j}");
            let diff = max_abs_diff(u, v);
            assert!(diff < 1e-11, "case {i} value {j} (y, dx, dw, db): {diff:e}");
        }
    }
    gradcheck(&[&[1, 2, 5, 6], &[2, 2, 3, 3]], |t| {
        conv2d(&t[0], &t[1], None, Conv2dConfig::square(1, 2, 1, 1))
    });
    // the im2col path gives the same values (the switch is process-wide; both paths are exact
    // to rounding, so tests running meanwhile are unaffected)
    let x = random_f64(&[2, 3, 11, 9], 90, &dev).unwrap();
    let k = random_f64(&[2, 3, 9, 9], 91, &dev).unwrap();
    let cfg = Conv2dConfig::square(1, 4, 1, 1);
    let fast = conv2d(&x, &k, None, cfg).unwrap();
    set_kn2row_enabled(false);
    let im2col = conv2d(&x, &k, None, cfg);
    set_kn2row_enabled(true);
    assert!(max_abs_diff(&fast, &im2col.unwrap()) < 1e-11);
    // bad input: clear errors
    let e = conv2d(&x, &k, Some(&random_f64(&[3], 1, &dev).unwrap()), cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bias"), "{e}");
    let small = Conv2dConfig::square(1, 0, 1, 1);
    assert!(conv2d(
        &random_f64(&[1, 3, 5, 5], 2, &dev).unwrap(),
        &k,
        None,
        small
    )
    .is_err());
}

/// `cat_channels` equals `Tensor::cat(.., 1)` for values and both gradients (tasks that
/// straddle the two operands and batch items), skips the gradient of an untracked operand, and
/// names a mismatch.
#[test]
fn cat_channels_equals_candles_cat() {
    let dev = Device::Cpu;
    for (i, (da, db)) in [
        (vec![3usize, 5, 70, 90], vec![3usize, 2, 70, 90]),
        (vec![2, 1, 7], vec![2, 4, 7]),
        (vec![1, 3, 4, 4], vec![1, 3, 4, 4]),
    ]
    .into_iter()
    .enumerate()
    {
        let a = Var::from_tensor(&random_f64(&da, 400 + i as u64, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&random_f64(&db, 410 + i as u64, &dev).unwrap()).unwrap();
        let run = |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| {
            let y = f(a.as_tensor(), b.as_tensor()).unwrap();
            let r = random_f64(y.dims(), 420, &dev).unwrap();
            let g = (&y * r).unwrap().sum_all().unwrap().backward().unwrap();
            let grad = |v: &Var| g.get(v.as_tensor()).unwrap().clone();
            [y.clone(), grad(&a), grad(&b)]
        };
        let ours = run(&|a, b| cat_channels(a, b));
        let theirs = run(&|a, b| Ok(Tensor::cat(&[a, b], 1)?));
        for (what, u, v) in [
            ("y", &ours[0], &theirs[0]),
            ("da", &ours[1], &theirs[1]),
            ("db", &ours[2], &theirs[2]),
        ] {
            assert_eq!(u.dims(), v.dims(), "case {i} {what}");
            assert_eq!(max_abs_diff(u, v), 0.0, "case {i} {what}");
        }
        let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
        let y32 = cat_channels(&f32(a.as_tensor()), &f32(b.as_tensor())).unwrap();
        let d = max_abs_diff(&y32.to_dtype(candle_core::DType::F64).unwrap(), &ours[0]);
        assert!(d < 1e-6, "case {i}: f32 {d:e}");
    }
    // an untracked operand (data) gets no gradient
    let a = Var::from_tensor(&random_f64(&[2, 3, 5], 1, &dev).unwrap()).unwrap();
    let data = random_f64(&[2, 2, 5], 2, &dev).unwrap();
    let g = cat_channels(a.as_tensor(), &data)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(&data).is_none());
    assert_eq!(g.get(a.as_tensor()).unwrap().dims(), a.as_tensor().dims());
    let e = cat_channels(&data, &random_f64(&[2, 2, 6], 3, &dev).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cat_channels"), "{e}");
}

#[test]
fn an_empty_batch_gives_empty_outputs_and_zero_weight_gradients() {
    // the Winograd path (3x3, stride 1, 16 channels), the shared-block im2col path (stride 2)
    // and the plain im2col path (4x4); a batch of zero images once divided by zero
    for (stride, k) in [(1, 3), (2, 3), (1, 4)] {
        let x = Tensor::zeros((0, 16, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let x = Var::from_tensor(&x).unwrap();
        let w = Var::from_tensor(
            &Tensor::ones((16, 16, k, k), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = conv2d(
            x.as_tensor(),
            w.as_tensor(),
            None,
            Conv2dConfig::square(stride, 1, 1, 1),
        )
        .unwrap();
        assert_eq!(y.dims()[0], 0);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dw = grads.get(w.as_tensor()).expect("a weight gradient");
        assert_eq!(dw.dims(), &[16, 16, k, k]);
        let total: f32 = dw.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert_eq!(total, 0.0, "stride {stride}, {k}x{k}");
    }
}

//! Finite-difference gradient checks: the test every differentiable op and module in canopy
//! passes, because candle 0.11 has ops whose gradients are silently wrong or missing.
//!
//! [`check_gradients`] compares the gradient that `backward()` computes for a scalar probe
//! `L = sum(f(x) * R)` (`R` a fixed random tensor, so every output element counts) with central
//! differences `(L(x + h e_j) - L(x - h e_j)) / 2h` in f64, at a random subset of elements of
//! every input. A missing gradient is a failure, not a zero.
//!
//! [`check_all_parameters_have_gradients`] is the module-level check: after one backward pass,
//! every trainable variable must receive a finite gradient that is not all zeros.

use candle_core::{backprop::GradStore, DType, Device, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// Settings of [`check_gradients`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckConfig {
    /// Finite-difference step.
    pub eps: f64,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Elements probed per input (all of them when the input is smaller).
    pub probes: usize,
    /// Seed of the probe positions and of `R`.
    pub seed: u64,
}

impl Default for GradCheckConfig {
    fn default() -> Self {
        GradCheckConfig {
            eps: 1e-6,
            rtol: 1e-5,
            atol: 1e-7,
            probes: 48,
            seed: 0,
        }
    }
}

/// The worst disagreement found for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputReport {
    /// Index of the input in the slice given to [`check_gradients`].
    pub input: usize,
    /// Flat index of the worst element.
    pub element: usize,
    /// Gradient from `backward()` there.
    pub analytic: f64,
    /// Central-difference gradient there.
    pub numeric: f64,
    /// `|analytic - numeric| / (atol + rtol * max(|analytic|, |numeric|))`; > 1 fails.
    pub ratio: f64,
}

/// f64 random tensor with values in [-1, 1), from a seed (for gradient-check inputs).
///
/// # Errors
/// When candle cannot allocate the tensor.
pub fn random_f64(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// Checks the gradients of `f` with respect to every tensor in `inputs` (f64 tensors).
/// Returns one report per input; errors with a readable description of every failing input.
///
/// # Errors
/// [`Error::GradCheck`] when an input gets no gradient or a probed element disagrees beyond
/// the tolerance; [`Error::Candle`] when `f` fails.
pub fn check_gradients<F>(f: F, inputs: &[Tensor], cfg: GradCheckConfig) -> Result<Vec<InputReport>>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(DType::F64)?))
        .collect::<candle_core::Result<_>>()?;
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&xs)?;
    let r = random_f64(y.dims(), cfg.seed ^ 0x5eed, y.device())?;
    let loss = |y: &Tensor| -> Result<f64> { Ok((y * &r)?.sum_all()?.to_scalar::<f64>()?) };
    let grads: GradStore = (y.to_dtype(DType::F64)? * &r)?.sum_all()?.backward()?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for (i, x) in xs.iter().enumerate() {
        let Some(g) = grads.get(x) else {
            failures.push(format!(
                "input {i} {:?}: backward() produced NO gradient",
                x.dims()
            ));
            continue;
        };
        let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
        let base: Vec<f64> = x.flatten_all()?.to_vec1()?;
        let n = base.len();
        let idx: Vec<usize> = if n <= cfg.probes {
            (0..n).collect()
        } else {
            (0..cfg.probes).map(|_| rng.random_range(0..n)).collect()
        };
        let mut worst = InputReport {
            input: i,
            element: 0,
            analytic: 0.0,
            numeric: 0.0,
            ratio: 0.0,
        };
        for j in idx {
            let eval = |delta: f64| -> Result<f64> {
                let mut v = base.clone();
                v[j] += delta;
                let xt = Tensor::from_vec(v, x.dims(), x.device())?;
                let mut args = xs.clone();
                args[i] = xt;
                loss(&f(&args)?.to_dtype(DType::F64)?)
            };
            let numeric = (eval(cfg.eps)? - eval(-cfg.eps)?) / (2.0 * cfg.eps);
            let analytic = g[j];
            let tol = cfg.atol + cfg.rtol * analytic.abs().max(numeric.abs());
            let ratio = (analytic - numeric).abs() / tol;
            if ratio > worst.ratio || !ratio.is_finite() {
                worst = InputReport {
                    input: i,
                    element: j,
                    analytic,
                    numeric,
                    ratio,
                };
            }
        }
        if worst.ratio.is_nan() || worst.ratio > 1.0 {
            failures.push(format!(
                "input {i} {:?}: element {} analytic {:.6e} vs numeric {:.6e} ({:.1}x the tolerance)",
                x.dims(),
                worst.element,
                worst.analytic,
                worst.numeric,
                worst.ratio
            ));
        }
        reports.push(worst);
    }
    if failures.is_empty() {
        Ok(reports)
    } else {
        Err(Error::GradCheck(failures.join("; ")))
    }
}

/// After `loss.backward()`, checks that every named variable received a finite gradient that is
/// not all zeros — the check that catches candle ops which silently stop gradients.
///
/// # Errors
/// [`Error::GradCheck`] naming every variable without a usable gradient.
pub fn check_all_parameters_have_gradients(
    vars: &[(String, Var)],
    grads: &GradStore,
) -> Result<()> {
    let mut bad = Vec::new();
    for (name, v) in vars {
        match grads.get(v.as_tensor()) {
            None => bad.push(format!("{name}: no gradient")),
            Some(g) => {
                let v: Vec<f64> = g.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
                if v.iter().any(|x| !x.is_finite()) {
                    bad.push(format!("{name}: non-finite gradient"));
                } else if v.iter().all(|&x| x == 0.0) {
                    bad.push(format!("{name}: gradient is all zeros"));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::GradCheck(bad.join("; ")))
    }
}

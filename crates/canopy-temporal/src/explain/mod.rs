//! Explainability: gradient saliency for any [`SeriesClassifier`], and PNG plots of a series
//! with its saliency per band, of Transformer self-attention maps, and of LSTM state traces
//! with cloudy dates marked.
//!
//! Saliency is the gradient of the top class score with respect to the input series,
//! `∂ max_k ŷ_k / ∂X`, as in the analysis of Rußwurm & Körner (2020) of how models trained on
//! raw (cloudy) Sentinel-2 series ignore clouds: large values mark the observations and bands
//! the decision rests on. The snippet in Rußwurm's talk on cloud-robust classification
//! (PhiWeek 2019) takes `exp(log_softmax(...)).max().backward()`
//! on one series ([`SaliencyTarget::MaxProbability`]); the score can also be the top logit
//! ([`SaliencyTarget::MaxLogit`], which does not saturate). For a batch, each series' own top
//! score is used (the scores are summed, and series do not interact in these models).
//!
//! The attention maps come from [`TransformerClassifier::forward_with_attention`] and the
//! states from [`LstmClassifier::forward_with_states`].
//!
//! Plots are drawn with plotters' bitmap backend and the DejaVu Sans subset embedded by
//! canopy-train (no system font), and written atomically: to a temporary file in the target
//! folder, then renamed.
//!
//! # References
//! Rußwurm & Körner (2020), "Self-attention for raw optical satellite time series
//! classification", ISPRS J. Photogramm. Remote Sens. 169; Simonyan, Vedaldi & Zisserman (2014),
//! "Deep inside convolutional networks" (gradient saliency). Reference repository:
//! <https://github.com/dl4sits/BreizhCrops>.
//!
//! [`TransformerClassifier::forward_with_attention`]: crate::TransformerClassifier::forward_with_attention
//! [`LstmClassifier::forward_with_states`]: crate::LstmClassifier::forward_with_states

use candle_core::{Tensor, Var, D};
use rand::SeedableRng;

use crate::{Error, Result, SeriesClassifier};

mod plot;

pub use plot::{plot_attention, plot_saliency, plot_state_traces, PlotOptions};

/// Which score the saliency differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaliencyTarget {
    /// The largest class probability, `max_k softmax(logits)_k` (the snippet of the PhiWeek 2019 talk).
    #[default]
    MaxProbability,
    /// The largest logit.
    MaxLogit,
}

/// Gradient saliency `∂ max_k ŷ_k / ∂X` of a model in evaluation mode.
///
/// The input is copied into a fresh variable, so `x` itself need not be one.
///
/// # Shapes
/// `x`: `(B, T, C)` -> `(B, T, C)`.
///
/// # Errors
/// [`Error::Shape`] when `x` is not `(B, T, C)` with the model's number of bands;
/// [`Error::Config`] when no gradient reaches the input (a model that detaches its input).
pub fn saliency(
    model: &dyn SeriesClassifier,
    x: &Tensor,
    target: SaliencyTarget,
) -> Result<Tensor> {
    match x.dims() {
        [_, _, c] if *c == model.input_dim() => {}
        dims => {
            return Err(Error::Shape {
                model: "saliency",
                expected: format!("a (B, T, C) series with C = {} bands", model.input_dim()),
                actual: format!("{dims:?}"),
            })
        }
    }
    let xv = Var::from_tensor(&x.detach())?;
    // Evaluation mode: dropout is off, so the generator is never drawn from.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let logits = model.forward_t(xv.as_tensor(), false, &mut rng)?;
    let score = match target {
        SaliencyTarget::MaxLogit => logits,
        SaliencyTarget::MaxProbability => canopy_nn::ops::softmax(&logits, D::Minus1)?,
    };
    let grads = score.max(D::Minus1)?.sum_all()?.backward()?; // (B, K) -> (B,) -> ()
    grads
        .get(xv.as_tensor())
        .cloned()
        .ok_or_else(|| Error::Config {
            model: "saliency",
            message: "no gradient reaches the input: the model detaches it".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lstm::{LstmClassifier, LstmClassifierConfig};
    use crate::transformer::{TransformerClassifier, TransformerClassifierConfig};
    use candle_core::{DType, Device};
    use canopy_nn::SeededVarMap;

    fn small_lstm(dtype: DType) -> anyhow::Result<LstmClassifier> {
        let cfg = LstmClassifierConfig {
            hidden_dims: 5,
            num_layers: 2,
            ..LstmClassifierConfig::breizhcrops(3, 4)
        };
        Ok(LstmClassifier::new(
            &cfg,
            SeededVarMap::new(11).var_builder(dtype, &Device::Cpu),
        )?)
    }

    fn score(m: &dyn SeriesClassifier, x: &Tensor, target: SaliencyTarget) -> anyhow::Result<f64> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let logits = m.forward_t(x, false, &mut rng)?;
        let s = match target {
            SaliencyTarget::MaxLogit => logits,
            SaliencyTarget::MaxProbability => canopy_nn::ops::softmax(&logits, D::Minus1)?,
        };
        Ok(s.max(D::Minus1)?.sum_all()?.to_scalar::<f64>()?)
    }

    #[test]
    fn saliency_matches_finite_differences() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let lstm = small_lstm(DType::F64)?;
        let tcfg = TransformerClassifierConfig {
            d_model: 8,
            d_inner: 8,
            n_layers: 1,
            ..TransformerClassifierConfig::russwurm2020(3, 4)
        };
        let tr =
            TransformerClassifier::new(&tcfg, SeededVarMap::new(5).var_builder(DType::F64, &dev))?;
        let x = canopy_nn::gradcheck::random_f64(&[2, 6, 3], 21, &dev)?;
        let models: [(&dyn SeriesClassifier, &str); 2] = [(&lstm, "lstm"), (&tr, "transformer")];
        for (m, name) in models {
            for target in [SaliencyTarget::MaxProbability, SaliencyTarget::MaxLogit] {
                let g = saliency(m, &x, target)?;
                assert_eq!(g.dims(), &[2, 6, 3]);
                let g: Vec<f64> = g.flatten_all()?.to_vec1()?;
                let base: Vec<f64> = x.flatten_all()?.to_vec1()?;
                let eps = 1e-5;
                let mut worst: f64 = 0.0;
                for i in (0..base.len()).step_by(5) {
                    let shifted = |d: f64| -> anyhow::Result<f64> {
                        let mut v = base.clone();
                        v[i] += d;
                        score(m, &Tensor::from_vec(v, (2, 6, 3), &dev)?, target)
                    };
                    let fd = (shifted(eps)? - shifted(-eps)?) / (2.0 * eps);
                    worst = worst.max((fd - g[i]).abs() / (1e-3 + fd.abs()));
                }
                assert!(
                    worst < 1e-4,
                    "{name} {target:?}: worst relative error {worst:.3e}"
                );
                assert!(
                    g.iter().any(|v| v.abs() > 1e-8),
                    "{name}: all-zero saliency"
                );
            }
        }
        assert!(matches!(
            saliency(
                &lstm,
                &Tensor::zeros((2, 6, 2), DType::F64, &dev)?,
                SaliencyTarget::MaxLogit
            ),
            Err(Error::Shape { .. })
        ));
        Ok(())
    }
}

//! Adam and AdamW.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::inplace::{AdamStep, Pass};
use super::{check_non_negative, Optimizer, ParamGroup, Params, VarState};
use crate::error::invalid;
use crate::Result;

/// How weight decay enters Adam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightDecay {
    /// L2 penalty added to the gradient before the moments (PyTorch `Adam(weight_decay=...)`).
    Coupled,
    /// Parameters shrink by `lr * weight_decay` outside the adaptive update (PyTorch `AdamW`,
    /// Loshchilov & Hutter).
    Decoupled,
}

/// Hyperparameters of [`Adam`], named like PyTorch's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay rates of the first and second moment estimates.
    pub betas: (f64, f64),
    /// Added to the denominator for numerical stability.
    pub eps: f64,
    /// Weight decay factor.
    pub weight_decay: f64,
    /// Coupled (Adam) or decoupled (AdamW) weight decay.
    pub decay: WeightDecay,
}

impl Default for AdamConfig {
    /// PyTorch's `Adam` defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decay: WeightDecay::Coupled,
        }
    }
}

impl AdamConfig {
    /// PyTorch's `Adam` defaults with the learning rate `lr`.
    pub fn adam(lr: f64) -> Self {
        AdamConfig {
            lr,
            ..Default::default()
        }
    }

    /// PyTorch's `AdamW` defaults with the learning rate `lr`: decoupled decay of 0.01.
    pub fn adamw(lr: f64) -> Self {
        AdamConfig {
            lr,
            weight_decay: 0.01,
            decay: WeightDecay::Decoupled,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("Adam", "lr", self.lr)?;
        check_non_negative("Adam", "eps", self.eps)?;
        check_non_negative("Adam", "weight_decay", self.weight_decay)?;
        for b in [self.betas.0, self.betas.1] {
            if !(0.0..1.0).contains(&b) {
                return Err(invalid(
                    "Adam",
                    format!("betas must lie in [0, 1), got {:?}", self.betas),
                ));
            }
        }
        Ok(())
    }
}

/// Adam with coupled L2 or decoupled (AdamW) weight decay; see the module docs.
///
/// For parameter `p`, gradient `g`, step `t` of that parameter and learning rate `lr`:
/// coupled decay first sets `g = g + wd * p`, decoupled decay first sets `p = p * (1 - lr * wd)`;
/// then `m = m + (1 - b1) (g - m)`, `v = b2 v + (1 - b2) g²`,
/// `p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
#[derive(Debug, Clone)]
pub struct Adam {
    cfg: AdamConfig,
    params: Params,
}

impl Adam {
    /// An optimizer over `groups` with `cfg` (`cfg.lr` is the starting base learning rate).
    ///
    /// # Errors
    /// When a hyperparameter is out of range or a parameter name is repeated.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Adam {
            params: Params::new(groups, cfg.lr)?,
            cfg,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &AdamConfig {
        &self.cfg
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamConfig {
            betas: (b1, b2),
            eps,
            weight_decay,
            decay,
            ..
        } = self.cfg;
        self.params
            .for_each_update(grads, weight_decay, |_, var, grad, st, lr, wd| {
                let t = st.step as f64;
                let s = AdamStep {
                    b1,
                    b2,
                    eps,
                    lr,
                    bc1: 1.0 - b1.powf(t),
                    bc2_sqrt: (1.0 - b2.powf(t)).sqrt(),
                    coupled_wd: if decay == WeightDecay::Coupled {
                        wd
                    } else {
                        0.0
                    },
                    shrink: if decay == WeightDecay::Decoupled && wd != 0.0 {
                        1.0 - lr * wd
                    } else {
                        1.0
                    },
                };
                if in_place_applies(var, grad) {
                    in_place_update(var, grad, st, s)
                } else {
                    composed_update(var, grad, st, s)
                }
            })
    }

    fn params(&self) -> &Params {
        &self.params
    }

    fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    fn kind(&self) -> &'static str {
        match self.cfg.decay {
            WeightDecay::Coupled => "adam",
            WeightDecay::Decoupled => "adamw",
        }
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null)
    }
}

/// Whether the update can run as [`super::inplace`] passes: CPU, f32 or f64, contiguous
/// parameter.
fn in_place_applies(var: &Var, grad: &Tensor) -> bool {
    let p = var.as_tensor();
    p.device().is_cpu()
        && matches!(p.dtype(), DType::F32 | DType::F64)
        && grad.dtype() == p.dtype()
        && p.is_contiguous()
}

/// The moment buffer `name` of a parameter, created as zeros on its first step (a zero moment
/// gives the same first update as PyTorch's initialisation from the first gradient, bit for bit).
fn moment(st: &mut VarState, name: &str, p: &Tensor) -> Result<Tensor> {
    match st.buffers.get(name) {
        Some(m) if m.dtype() == p.dtype() && m.is_contiguous() && m.device().is_cpu() => {
            Ok(m.clone())
        }
        Some(m) => Ok(m.to_dtype(p.dtype())?.to_device(p.device())?.copy()?),
        None => Ok(p.zeros_like()?),
    }
}

/// The update as three in-place passes over the moments and the parameter.
fn in_place_update(var: &Var, grad: &Tensor, st: &mut VarState, s: AdamStep) -> Result<()> {
    let p = var.as_tensor();
    let g = grad.contiguous()?;
    let m = moment(st, "exp_avg", p)?;
    let v = moment(st, "exp_avg_sq", p)?;
    m.inplace_op3(&g, p, &Pass::FirstMoment(s))?;
    v.inplace_op3(&g, p, &Pass::SecondMoment(s))?;
    p.inplace_op3(&m, &v, &Pass::Apply(s))?;
    st.buffers.insert("exp_avg".into(), m);
    st.buffers.insert("exp_avg_sq".into(), v);
    Ok(())
}

/// The update as candle tensor ops (other devices and dtypes; the reference the in-place passes
/// are tested against).
pub(crate) fn composed_update(
    var: &Var,
    grad: &Tensor,
    st: &mut VarState,
    s: AdamStep,
) -> Result<()> {
    let p = var.as_tensor();
    let mut p_new = p.clone();
    let mut g = grad.clone();
    if s.coupled_wd != 0.0 {
        g = (g + p.affine(s.coupled_wd, 0.0)?)?;
    }
    if s.shrink != 1.0 {
        p_new = p.affine(s.shrink, 0.0)?;
    }
    let m = match st.buffers.get("exp_avg") {
        Some(m) => (m + (&g - m)?.affine(1.0 - s.b1, 0.0)?)?,
        None => g.affine(1.0 - s.b1, 0.0)?,
    };
    let g2 = g.sqr()?.affine(1.0 - s.b2, 0.0)?;
    let v = match st.buffers.get("exp_avg_sq") {
        Some(v) => (v.affine(s.b2, 0.0)? + g2)?,
        None => g2,
    };
    let denom = (v.sqrt()? / s.bc2_sqrt)?.affine(1.0, s.eps)?;
    let upd = (m.div(&denom)?).affine(-s.lr / s.bc1, 0.0)?;
    var.set(&(p_new + upd)?)?;
    st.buffers.insert("exp_avg".into(), m);
    st.buffers.insert("exp_avg_sq".into(), v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The in-place passes give the composed tensor-op update bit for bit: f32 and f64, no /
    /// coupled / decoupled weight decay, a small tensor and one of several parallel chunks,
    /// several steps (the first creates the moments).
    #[test]
    fn in_place_update_equals_the_composed_update_bit_for_bit() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            for (coupled_wd, shrink) in [(0.0, 1.0), (0.05, 1.0), (0.0, 1.0 - 3e-3 * 0.01)] {
                for n in [7usize, 100_003] {
                    let init = Tensor::randn(0f64, 1.0, n, &dev)?.to_dtype(dtype)?;
                    let (a, b) = (Var::from_tensor(&init)?, Var::from_tensor(&init.copy()?)?);
                    let (mut sa, mut sb) = (VarState::default(), VarState::default());
                    for t in 1..=4u64 {
                        let g = Tensor::randn(0f64, 0.5, n, &dev)?.to_dtype(dtype)?;
                        let (b1, b2) = (0.9f64, 0.999f64);
                        let s = AdamStep {
                            b1,
                            b2,
                            eps: 1e-8,
                            lr: 3e-3,
                            bc1: 1.0 - b1.powf(t as f64),
                            bc2_sqrt: (1.0 - b2.powf(t as f64)).sqrt(),
                            coupled_wd,
                            shrink,
                        };
                        sa.step = t;
                        sb.step = t;
                        assert!(in_place_applies(&a, &g));
                        in_place_update(&a, &g, &mut sa, s)?;
                        composed_update(&b, &g, &mut sb, s)?;
                        let case = format!("{dtype:?} wd {coupled_wd}/{shrink} n {n} step {t}");
                        let bits = |x: &Tensor| -> anyhow::Result<Vec<f64>> {
                            Ok(x.to_dtype(DType::F64)?.to_vec1::<f64>()?)
                        };
                        assert_eq!(bits(a.as_tensor())?, bits(b.as_tensor())?, "{case}");
                        for k in ["exp_avg", "exp_avg_sq"] {
                            assert_eq!(bits(&sa.buffers[k])?, bits(&sb.buffers[k])?, "{case} {k}");
                        }
                        assert!(bits(a.as_tensor())? != bits(&init)?, "{case}: no update");
                    }
                }
            }
        }
        Ok(())
    }

    /// A state taken with `Optimizer::state` is a snapshot: later (in-place) steps do not
    /// change it, and loading it does not tie the optimizer's buffers to it.
    #[test]
    fn saved_state_is_not_changed_by_later_steps() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, 50, &dev)?)?;
        let loss =
            || -> anyhow::Result<GradStore> { Ok(w.as_tensor().sqr()?.sum_all()?.backward()?) };
        let group = || ParamGroup::new("all", vec![("w".to_string(), w.clone())]);
        let mut opt = Adam::new(vec![group()], AdamConfig::adam(1e-2))?;
        opt.step(&loss()?)?;
        let state = opt.state()?;
        let before = state.tensors["w.exp_avg"].to_vec1::<f32>()?;
        opt.step(&loss()?)?;
        assert_eq!(state.tensors["w.exp_avg"].to_vec1::<f32>()?, before);
        let mut other = Adam::new(vec![group()], AdamConfig::adam(1e-2))?;
        other.load_state(&state)?;
        other.step(&loss()?)?;
        assert_eq!(state.tensors["w.exp_avg"].to_vec1::<f32>()?, before);
        Ok(())
    }
}

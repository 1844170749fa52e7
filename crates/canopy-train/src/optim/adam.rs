//! Adam and AdamW.

use candle_core::backprop::GradStore;
use serde::{Deserialize, Serialize};

use super::{check_non_negative, Optimizer, ParamGroup, Params};
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
                let p = var.as_tensor();
                let mut p_new = p.clone();
                let mut g = grad.clone();
                if wd != 0.0 {
                    match decay {
                        WeightDecay::Coupled => g = (g + p.affine(wd, 0.0)?)?,
                        WeightDecay::Decoupled => p_new = p.affine(1.0 - lr * wd, 0.0)?,
                    }
                }
                let m = match st.buffers.get("exp_avg") {
                    Some(m) => (m + (&g - m)?.affine(1.0 - b1, 0.0)?)?,
                    None => g.affine(1.0 - b1, 0.0)?,
                };
                let g2 = g.sqr()?.affine(1.0 - b2, 0.0)?;
                let v = match st.buffers.get("exp_avg_sq") {
                    Some(v) => (v.affine(b2, 0.0)? + g2)?,
                    None => g2,
                };
                let t = st.step as f64;
                let bc1 = 1.0 - b1.powf(t);
                let bc2_sqrt = (1.0 - b2.powf(t)).sqrt();
                let denom = (v.sqrt()? / bc2_sqrt)?.affine(1.0, eps)?;
                let upd = (m.div(&denom)?).affine(-lr / bc1, 0.0)?;
                var.set(&(p_new + upd)?)?;
                st.buffers.insert("exp_avg".into(), m);
                st.buffers.insert("exp_avg_sq".into(), v);
                Ok(())
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

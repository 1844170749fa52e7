//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use candle_core::backprop::GradStore;
use serde::{Deserialize, Serialize};

use super::{check_non_negative, Optimizer, ParamGroup, Params};
use crate::error::invalid;
use crate::Result;

/// Hyperparameters of [`Sgd`], named like PyTorch's arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 disables the momentum buffer).
    pub momentum: f64,
    /// Dampening of the gradient entering the momentum buffer.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    /// PyTorch's `SGD` defaults: lr 1e-3, no momentum, no decay.
    fn default() -> Self {
        SgdConfig {
            lr: 1e-3,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

impl SgdConfig {
    /// Plain SGD with the learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        check_non_negative("Sgd", "lr", self.lr)?;
        check_non_negative("Sgd", "momentum", self.momentum)?;
        check_non_negative("Sgd", "dampening", self.dampening)?;
        check_non_negative("Sgd", "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(invalid(
                "Sgd",
                format!(
                    "Nesterov momentum needs momentum > 0 and dampening = 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            ));
        }
        Ok(())
    }
}

/// SGD as in PyTorch: `g = g + wd * p`; with momentum `b = g` on the first step, then
/// `b = momentum * b + (1 - dampening) * g`, and `g = g + momentum * b` (Nesterov) or `g = b`;
/// finally `p = p - lr * g`.
#[derive(Debug, Clone)]
pub struct Sgd {
    cfg: SgdConfig,
    params: Params,
}

impl Sgd {
    /// An optimizer over `groups` with `cfg` (`cfg.lr` is the starting base learning rate).
    ///
    /// # Errors
    /// When a hyperparameter is out of range or a parameter name is repeated.
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Sgd {
            params: Params::new(groups, cfg.lr)?,
            cfg,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let SgdConfig {
            momentum,
            dampening,
            weight_decay,
            nesterov,
            ..
        } = self.cfg;
        self.params
            .for_each_update(grads, weight_decay, |_, var, grad, st, lr, wd| {
                let p = var.as_tensor();
                let mut g = grad.clone();
                if wd != 0.0 {
                    g = (g + p.affine(wd, 0.0)?)?;
                }
                if momentum != 0.0 {
                    let buf = match st.buffers.get("momentum_buffer") {
                        Some(b) => (b.affine(momentum, 0.0)? + g.affine(1.0 - dampening, 0.0)?)?,
                        None => g.clone(),
                    };
                    g = if nesterov {
                        (g + buf.affine(momentum, 0.0)?)?
                    } else {
                        buf.clone()
                    };
                    st.buffers.insert("momentum_buffer".into(), buf);
                }
                var.set(&(p + g.affine(-lr, 0.0)?)?)?;
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
        "sgd"
    }

    fn hyperparameters(&self) -> serde_json::Value {
        serde_json::to_value(&self.cfg).unwrap_or(serde_json::Value::Null)
    }
}

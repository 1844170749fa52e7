//! Optimizers that own their state: [`Adam`] (coupled L2 decay, PyTorch's
//! `torch.optim.Adam(weight_decay=...)`, and decoupled decay, PyTorch's `torch.optim.AdamW` after
//! Loshchilov & Hutter) and [`Sgd`] (momentum, dampening, Nesterov, weight decay, PyTorch's
//! `torch.optim.SGD`).
//!
//! Each update follows the PyTorch documentation's pseudo-code (single-tensor path, no
//! `amsgrad`, no `maximize`) and is checked step by step against PyTorch in float64 by the golden
//! test `tests/optim.rs`.
//!
//! Parameters are named (the names a `VarMap` / `canopy_nn::SeededVarMap` gives them, which are
//! PyTorch `state_dict` keys) and gathered in [`ParamGroup`]s. A group scales the optimizer's
//! learning rate by its `lr_scale`; a scale of 0 freezes the group: its parameters and its
//! optimizer state (moments, step counts) do not change. Freezing a backbone for the first N
//! steps is then `opt.set_lr_scale("backbone", if step < n { 0.0 } else { 1.0 })`.
//!
//! The state (moment tensors, per-parameter step counts, hyperparameters) is exported as an
//! [`OptimizerState`] and saved as safetensors + JSON, so a resumed run continues bit-exactly.
//!
//! # References
//! - Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
//! - Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
//! - Sutskever et al., "On the importance of initialization and momentum in deep learning",
//!   ICML 2013 (the momentum / Nesterov form PyTorch uses).
//! - PyTorch documentation of `torch.optim.Adam`, `AdamW` and `SGD` (2.x).

mod adam;
mod group;
mod inplace;
mod sgd;
mod state;

pub use adam::{Adam, AdamConfig, WeightDecay};
pub use group::{param_groups, varmap_named_vars, ParamGroup};
pub use sgd::{Sgd, SgdConfig};
pub use state::{GroupState, OptimizerState};

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::invalid;
use crate::Result;

/// What every canopy optimizer offers: a step from a candle `GradStore`, a learning rate the
/// schedules set, named parameter groups, and exportable state.
pub trait Optimizer {
    /// Updates every parameter that has a gradient in `grads` and whose group's effective
    /// learning rate (`learning_rate() * lr_scale`) is not zero. Parameters without a gradient
    /// keep their value and state (as in PyTorch, where `grad is None` skips a parameter).
    ///
    /// # Errors
    /// When a gradient's shape or dtype does not match its parameter, or a tensor op fails.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// The parameter groups with their state.
    fn params(&self) -> &Params;

    /// Mutable access to the parameter groups and state.
    fn params_mut(&mut self) -> &mut Params;

    /// A short name of the algorithm (`"adam"`, `"adamw"`, `"sgd"`), stored with the state.
    fn kind(&self) -> &'static str;

    /// The hyperparameters as JSON, stored with the state for the record.
    fn hyperparameters(&self) -> serde_json::Value;

    /// The base learning rate (before group scales).
    fn learning_rate(&self) -> f64 {
        self.params().lr
    }

    /// Sets the base learning rate (what an LR schedule does every step or epoch).
    fn set_learning_rate(&mut self, lr: f64) {
        self.params_mut().lr = lr;
    }

    /// Sets the learning-rate multiplier of the group named `group` (0 freezes it).
    ///
    /// # Errors
    /// When no group has that name, or the scale is negative or not finite.
    fn set_lr_scale(&mut self, group: &str, scale: f64) -> Result<()> {
        self.params_mut().set_lr_scale(group, scale)
    }

    /// The optimizer state (moments, step counts, groups, hyperparameters) for saving.
    ///
    /// # Errors
    /// Never in practice; kept fallible for future state kinds.
    fn state(&self) -> Result<OptimizerState> {
        self.params().to_state(self.kind(), self.hyperparameters())
    }

    /// Restores a state saved by [`Optimizer::state`]: moments, step counts, the learning rate and
    /// the group scales. The hyperparameters of `self` are kept.
    ///
    /// # Errors
    /// When the state is from another algorithm, names a parameter or group this optimizer does
    /// not have, or a moment's shape differs from its parameter's.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let kind = self.kind();
        self.params_mut().load_state(kind, state)
    }
}

/// A boxed optimizer is an optimizer, so the algorithm can be chosen at run time
/// (`Trainer<Box<dyn Optimizer>>`).
impl<T: Optimizer + ?Sized> Optimizer for Box<T> {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        (**self).step(grads)
    }

    fn params(&self) -> &Params {
        (**self).params()
    }

    fn params_mut(&mut self) -> &mut Params {
        (**self).params_mut()
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn hyperparameters(&self) -> serde_json::Value {
        (**self).hyperparameters()
    }

    fn learning_rate(&self) -> f64 {
        (**self).learning_rate()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        (**self).set_learning_rate(lr)
    }

    fn set_lr_scale(&mut self, group: &str, scale: f64) -> Result<()> {
        (**self).set_lr_scale(group, scale)
    }

    fn state(&self) -> Result<OptimizerState> {
        (**self).state()
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        (**self).load_state(state)
    }
}

/// The state of one parameter: how many updates it received and its named buffers
/// (`exp_avg`, `exp_avg_sq`, `momentum_buffer`, PyTorch's names).
#[derive(Debug, Clone, Default)]
pub struct VarState {
    /// Number of updates applied to this parameter.
    pub step: u64,
    /// Buffers by name.
    pub buffers: BTreeMap<String, Tensor>,
}

/// Parameter groups, the base learning rate and the per-parameter state shared by the
/// optimizers of this module.
#[derive(Debug, Clone)]
pub struct Params {
    groups: Vec<ParamGroup>,
    lr: f64,
    state: BTreeMap<String, VarState>,
}

impl Params {
    /// Checks that parameter and group names are unique and `lr` is valid.
    ///
    /// # Errors
    /// On a duplicated parameter or group name, or a negative / non-finite learning rate.
    pub fn new(groups: Vec<ParamGroup>, lr: f64) -> Result<Self> {
        check_non_negative("optimizer", "lr", lr)?;
        let mut seen = std::collections::BTreeSet::new();
        let mut group_names = std::collections::BTreeSet::new();
        for g in &groups {
            if !group_names.insert(g.name.as_str()) {
                return Err(invalid(
                    "optimizer",
                    format!("two parameter groups are named {:?}", g.name),
                ));
            }
            check_non_negative("optimizer", "lr_scale", g.lr_scale)?;
            for (name, _) in g.params() {
                if !seen.insert(name.as_str()) {
                    return Err(invalid(
                        "optimizer",
                        format!("parameter {name:?} appears twice (each var belongs to one group)"),
                    ));
                }
            }
        }
        Ok(Params {
            groups,
            lr,
            state: BTreeMap::new(),
        })
    }

    /// The groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Every parameter with its name, group by group.
    pub fn named_vars(&self) -> impl Iterator<Item = &(String, Var)> {
        self.groups.iter().flat_map(|g| g.params().iter())
    }

    /// The state of the parameter `name`, if it was updated at least once. On the CPU Adam
    /// updates its moment tensors in place: `copy()` one to keep a snapshot (or take
    /// [`Optimizer::state`], which copies).
    pub fn var_state(&self, name: &str) -> Option<&VarState> {
        self.state.get(name)
    }

    fn set_lr_scale(&mut self, group: &str, scale: f64) -> Result<()> {
        check_non_negative("set_lr_scale", "scale", scale)?;
        let names: Vec<String> = self.groups.iter().map(|g| g.name.clone()).collect();
        let g = self
            .groups
            .iter_mut()
            .find(|g| g.name == group)
            .ok_or_else(|| {
                invalid(
                    "set_lr_scale",
                    format!("no parameter group {group:?} (groups: {names:?})"),
                )
            })?;
        g.lr_scale = scale;
        Ok(())
    }

    /// Runs `update(name, var, grad, state, lr, weight_decay)` for every parameter that has a
    /// gradient in a group whose effective learning rate is not zero, then bumps its step count.
    pub(crate) fn for_each_update(
        &mut self,
        grads: &GradStore,
        default_wd: f64,
        mut update: impl FnMut(&str, &Var, &Tensor, &mut VarState, f64, f64) -> Result<()>,
    ) -> Result<()> {
        for g in &self.groups {
            let lr = self.lr * g.lr_scale;
            if lr == 0.0 {
                continue;
            }
            let wd = g.weight_decay.unwrap_or(default_wd);
            for (name, var) in g.params() {
                let Some(grad) = grads.get(var.as_tensor()) else {
                    continue;
                };
                // A gradient can carry the forward graph (candle records the ops of a backward
                // pass when they involve tracked tensors, e.g. d(w / s)/dw = 1 / s with `s`
                // computed from activations). Kept in a moment buffer it would pin every
                // step's activations: memory grows each step. Use its value only.
                let grad = &grad.detach();
                if grad.dims() != var.dims() || grad.dtype() != var.dtype() {
                    return Err(crate::error::shape(
                        "optimizer step",
                        format!(
                            "gradient of {name} with shape {:?} and dtype {:?}",
                            var.dims(),
                            var.dtype()
                        ),
                        (grad.dims(), grad.dtype()),
                    ));
                }
                let st = self.state.entry(name.clone()).or_default();
                st.step += 1;
                update(name, var, grad, st, lr, wd)?;
            }
        }
        Ok(())
    }
}

pub(crate) fn check_non_negative(op: &'static str, what: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(
            op,
            format!("{what} must be finite and >= 0, got {v}"),
        ))
    }
}

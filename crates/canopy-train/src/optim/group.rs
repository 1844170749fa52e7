//! Named parameter groups.

use candle_core::Var;

use crate::error::invalid;
use crate::Result;

/// A named set of parameters sharing a learning-rate multiplier and, optionally, a weight decay
/// (PyTorch's `param_groups`).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The group's name (`"backbone"`, `"head"`, `"default"`).
    pub name: String,
    /// Multiplier of the optimizer's learning rate; 0 freezes the group (parameters and state).
    pub lr_scale: f64,
    /// Weight decay for this group instead of the optimizer's (e.g. `Some(0.0)` for biases).
    pub weight_decay: Option<f64>,
    params: Vec<(String, Var)>,
}

impl ParamGroup {
    /// A group with scale 1 and the optimizer's weight decay.
    pub fn new(name: impl Into<String>, params: Vec<(String, Var)>) -> Self {
        ParamGroup {
            name: name.into(),
            lr_scale: 1.0,
            weight_decay: None,
            params,
        }
    }

    /// The same group with another learning-rate multiplier.
    pub fn with_lr_scale(mut self, scale: f64) -> Self {
        self.lr_scale = scale;
        self
    }

    /// The same group with its own weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }

    /// The parameters with their names.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }
}

/// The variables of a `candle_nn::VarMap` with their names, sorted by name (what
/// [`param_groups`] takes; `canopy_nn::init::SeededVarMap::named_vars` gives the same for a
/// seeded store).
///
/// # Errors
/// When the map's lock was poisoned by a panic.
pub fn varmap_named_vars(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap.data().lock().map_err(|_| {
        invalid(
            "varmap_named_vars",
            "the VarMap was poisoned by an earlier panic",
        )
    })?;
    let mut named: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named)
}

/// Splits named variables into groups by name prefix: `prefixes` lists `(group name, prefix)`
/// pairs, a variable joins the first group whose prefix its name starts with, and the variables
/// matching none form a last group named `"default"` (left out when empty). Variables keep the
/// order of `named` (sorted by name when it comes from a `SeededVarMap`).
///
/// ```
/// # use candle_core::{Device, Var};
/// # fn main() -> canopy_train::Result<()> {
/// let v = |n: &str| -> candle_core::Result<(String, Var)> { Ok((n.to_string(), Var::zeros(2, candle_core::DType::F32, &Device::Cpu)?)) };
/// let named = vec![v("backbone.conv.weight")?, v("head.weight")?];
/// let groups = canopy_train::optim::param_groups(named, &[("backbone", "backbone.")])?;
/// assert_eq!(groups[0].name, "backbone");
/// assert_eq!(groups[1].name, "default");
/// # Ok(()) }
/// ```
///
/// # Errors
/// When a prefix matches no variable (a typo would otherwise silently train everything) or two
/// groups share a name.
pub fn param_groups(
    named: impl IntoIterator<Item = (String, Var)>,
    prefixes: &[(&str, &str)],
) -> Result<Vec<ParamGroup>> {
    let mut buckets: Vec<Vec<(String, Var)>> = vec![Vec::new(); prefixes.len()];
    let mut rest = Vec::new();
    for (name, var) in named {
        match prefixes.iter().position(|(_, p)| name.starts_with(p)) {
            Some(i) => {
                if let Some(b) = buckets.get_mut(i) {
                    b.push((name, var));
                }
            }
            None => rest.push((name, var)),
        }
    }
    let mut groups = Vec::with_capacity(prefixes.len() + 1);
    for ((group, prefix), params) in prefixes.iter().zip(buckets) {
        if params.is_empty() {
            return Err(invalid(
                "param_groups",
                format!("prefix {prefix:?} of group {group:?} matches no variable"),
            ));
        }
        if *group == "default" || groups.iter().any(|g: &ParamGroup| g.name == *group) {
            return Err(invalid(
                "param_groups",
                format!("group name {group:?} is used twice (\"default\" is reserved)"),
            ));
        }
        groups.push(ParamGroup::new(*group, params));
    }
    if !rest.is_empty() {
        groups.push(ParamGroup::new("default", rest));
    }
    Ok(groups)
}

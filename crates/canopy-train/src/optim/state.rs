//! Saving and restoring optimizer state.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Params, VarState};
use crate::checkpoint::{read_json, write_json_atomic, write_safetensors_atomic};
use crate::error::invalid;
use crate::{Error, Result};

/// A group as stored in an [`OptimizerState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's name.
    pub name: String,
    /// Its learning-rate multiplier.
    pub lr_scale: f64,
    /// Its own weight decay, if any.
    pub weight_decay: Option<f64>,
    /// The names of its parameters.
    pub params: Vec<String>,
}

/// Everything an optimizer needs to continue where it stopped. The tensors (moments) are saved as
/// safetensors under the keys `"<var name>.<buffer>"` (e.g. `"fc.weight.exp_avg"`); the rest as
/// JSON next to them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizerState {
    /// The algorithm (`"adam"`, `"adamw"`, `"sgd"`).
    pub kind: String,
    /// Its hyperparameters, for the record.
    pub hyperparameters: serde_json::Value,
    /// The base learning rate when the state was taken.
    pub lr: f64,
    /// The groups.
    pub groups: Vec<GroupState>,
    /// Number of updates each parameter received.
    pub steps: BTreeMap<String, u64>,
    /// The buffers, keyed `"<var name>.<buffer>"`.
    #[serde(skip)]
    pub tensors: HashMap<String, Tensor>,
}

impl OptimizerState {
    /// Writes `path` (safetensors with the buffers) and `path` with extension `json` (the rest),
    /// each atomically.
    ///
    /// # Errors
    /// When a file cannot be written (the error names it).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        write_safetensors_atomic(path, &self.tensors)?;
        write_json_atomic(&json_path(path), self)
    }

    /// Reads a state written by [`OptimizerState::save`], tensors on `device`.
    ///
    /// # Errors
    /// When a file is missing or malformed (the error names it).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let mut state: OptimizerState = read_json(&json_path(path))?;
        state.tensors = candle_core::safetensors::load(path, device).map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(state)
    }
}

fn json_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

impl Params {
    pub(crate) fn to_state(
        &self,
        kind: &str,
        hyperparameters: serde_json::Value,
    ) -> Result<OptimizerState> {
        let mut tensors = HashMap::new();
        let mut steps = BTreeMap::new();
        for (name, st) in &self.state {
            steps.insert(name.clone(), st.step);
            for (buf, t) in &st.buffers {
                // a copy: the optimizer updates its buffers in place
                tensors.insert(format!("{name}.{buf}"), t.copy()?);
            }
        }
        Ok(OptimizerState {
            kind: kind.to_string(),
            hyperparameters,
            lr: self.lr,
            groups: self
                .groups
                .iter()
                .map(|g| GroupState {
                    name: g.name.clone(),
                    lr_scale: g.lr_scale,
                    weight_decay: g.weight_decay,
                    params: g.params().iter().map(|(n, _)| n.clone()).collect(),
                })
                .collect(),
            steps,
            tensors,
        })
    }

    pub(crate) fn load_state(&mut self, kind: &str, s: &OptimizerState) -> Result<()> {
        const OP: &str = "Optimizer::load_state";
        if s.kind != kind {
            return Err(invalid(
                OP,
                format!("the state is from {:?}, this optimizer is {kind:?}", s.kind),
            ));
        }
        let vars: HashMap<&str, &candle_core::Var> =
            self.named_vars().map(|(n, v)| (n.as_str(), v)).collect();
        let mut state: BTreeMap<String, VarState> = BTreeMap::new();
        for (name, step) in &s.steps {
            if !vars.contains_key(name.as_str()) {
                return Err(invalid(
                    OP,
                    format!("the state has parameter {name:?}, which this optimizer does not"),
                ));
            }
            state.insert(
                name.clone(),
                VarState {
                    step: *step,
                    buffers: BTreeMap::new(),
                },
            );
        }
        for (key, t) in &s.tensors {
            let (name, buf) = key.rsplit_once('.').unwrap_or((key.as_str(), ""));
            let var = vars.get(name).ok_or_else(|| {
                invalid(
                    OP,
                    format!("state tensor {key:?} belongs to no parameter of this optimizer"),
                )
            })?;
            if t.dims() != var.dims() {
                return Err(crate::error::shape(
                    OP,
                    format!("{key} of shape {:?} (its parameter's)", var.dims()),
                    t.dims(),
                ));
            }
            // a copy: the optimizer updates its buffers in place, `s` stays as it is
            let t = t.to_dtype(var.dtype())?.to_device(var.device())?.copy()?;
            state
                .get_mut(name)
                .ok_or_else(|| invalid(OP, format!("state tensor {key:?} has no step count")))?
                .buffers
                .insert(buf.to_string(), t);
        }
        for g in &s.groups {
            let group = self
                .groups
                .iter_mut()
                .find(|x| x.name == g.name)
                .ok_or_else(|| {
                    invalid(
                        OP,
                        format!(
                            "the state has group {:?}, which this optimizer does not",
                            g.name
                        ),
                    )
                })?;
            group.lr_scale = g.lr_scale;
        }
        self.lr = s.lr;
        self.state = state;
        Ok(())
    }
}

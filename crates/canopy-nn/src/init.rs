//! Seeded parameter initialisation. candle's CPU random generator cannot be seeded, so models
//! built through a plain `VarMap` start from different weights on every run. [`SeededVarMap`] is a
//! drop-in `VarBuilder` backend that draws every new variable from one seeded generator,
//! honouring the `Init` hint the layer asked for — runs are reproducible.
//!
//! [`pytorch_uniform`] gives the hint PyTorch's `Linear`/`Conv` defaults amount to
//! (`kaiming_uniform_(a=sqrt(5))` for weights and the matching bias rule): `U(-1/sqrt(fan_in),
//! 1/sqrt(fan_in))`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// PyTorch's default initialisation of `Linear`, `Conv*d` weights and biases for a layer with
/// `fan_in` inputs (`in_features`, or `in_channels / groups * kernel elements`).
pub fn pytorch_uniform(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

#[derive(Debug)]
struct Inner {
    rng: StdRng,
    vars: BTreeMap<String, Var>,
}

/// A variable store whose new variables come from a seeded generator (see the module docs).
#[derive(Debug, Clone)]
pub struct SeededVarMap {
    inner: Arc<Mutex<Inner>>,
}

impl SeededVarMap {
    /// An empty store drawing from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededVarMap {
            inner: Arc::new(Mutex::new(Inner {
                rng: StdRng::seed_from_u64(seed),
                vars: BTreeMap::new(),
            })),
        }
    }

    /// A `VarBuilder` creating (or returning) variables in this store.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| Error::InvalidArgument {
            op: "SeededVarMap",
            message: "poisoned by an earlier panic".into(),
        })
    }

    /// Every variable with its full name, sorted by name.
    ///
    /// # Errors
    /// When the store was poisoned by a panic.
    pub fn named_vars(&self) -> Result<Vec<(String, Var)>> {
        Ok(self
            .lock()?
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    /// Copies of every variable's current value, keyed `{prefix}.{name}` (or `name` when
    /// `prefix` is empty): a snapshot that later training steps do not change, ready for
    /// `candle_core::safetensors::save`.
    ///
    /// # Errors
    /// When the store was poisoned by a panic.
    pub fn snapshot(&self, prefix: &str) -> Result<std::collections::HashMap<String, Tensor>> {
        self.named_vars()?
            .into_iter()
            .map(|(name, var)| {
                let key = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}.{name}")
                };
                Ok((key, var.as_tensor().copy()?))
            })
            .collect()
    }

    /// Every variable (for an optimizer), sorted by name.
    ///
    /// # Errors
    /// When the store was poisoned by a panic.
    pub fn all_vars(&self) -> Result<Vec<Var>> {
        Ok(self.lock()?.vars.values().cloned().collect())
    }

    /// Overwrites variables with tensors of the same names (e.g. a PyTorch `state_dict` exported
    /// as safetensors). Names absent from `tensors` keep their values; returns the names of
    /// `tensors` that matched no variable, so a caller can refuse silently unused weights.
    ///
    /// # Errors
    /// A shape mismatch names the variable and both shapes.
    pub fn load(&self, tensors: &std::collections::HashMap<String, Tensor>) -> Result<Vec<String>> {
        let inner = self.lock()?;
        let mut unused = Vec::new();
        for (name, t) in tensors {
            match inner.vars.get(name) {
                Some(v) => {
                    if v.dims() != t.dims() {
                        return Err(Error::Shape {
                            op: "SeededVarMap::load",
                            expected: format!("{name} of shape {:?}", v.dims()),
                            actual: format!("{:?}", t.dims()),
                        });
                    }
                    v.set(&t.to_dtype(v.dtype())?.to_device(v.device())?)?;
                }
                None => unused.push(name.clone()),
            }
        }
        unused.sort();
        Ok(unused)
    }
}

fn sample(rng: &mut StdRng, init: Init, shape: &Shape) -> Vec<f64> {
    let n = shape.elem_count();
    let normal = |rng: &mut StdRng, mean: f64, std: f64| {
        // Box-Muller
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random();
        mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    match init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => (0..n)
            .map(|_| lo + (up - lo) * rng.random::<f64>())
            .collect(),
        Init::Randn { mean, stdev } => (0..n).map(|_| normal(rng, mean, stdev)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let f = fan.for_shape(shape).max(1) as f64;
            let std = non_linearity.gain() / f.sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    (0..n).map(|_| -b + 2.0 * b * rng.random::<f64>()).collect()
                }
                NormalOrUniform::Normal => (0..n).map(|_| normal(rng, 0.0, std)).collect(),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| candle_core::Error::Msg("SeededVarMap poisoned".into()))?;
        if let Some(v) = inner.vars.get(name) {
            if v.shape() != &s {
                return Err(candle_core::Error::Msg(format!(
                    "variable {name} exists with shape {:?}, requested {:?}",
                    v.dims(),
                    s.dims()
                )));
            }
            return Ok(v.as_tensor().clone());
        }
        let values = sample(&mut inner.rng, h, &s);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let v = Var::from_tensor(&t)?;
        inner.vars.insert(name.to_string(), v.clone());
        Ok(v.as_tensor().clone())
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| candle_core::Error::Msg("SeededVarMap poisoned".into()))?;
        inner
            .vars
            .get(name)
            .map(|v| v.as_tensor().clone())
            .ok_or_else(|| candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            })
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner
            .lock()
            .map(|i| i.vars.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_copies_and_later_updates_do_not_leak_into_it() {
        let m = SeededVarMap::new(3);
        let vb = m.var_builder(DType::F32, &Device::Cpu);
        vb.get_with_hints(3, "a.weight", Init::Const(2.0)).unwrap();
        let snap = m.snapshot("init").unwrap();
        let plain = m.snapshot("").unwrap();
        let (_, var) = m.named_vars().unwrap().remove(0);
        var.set(&Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap())
            .unwrap();
        assert_eq!(snap.keys().collect::<Vec<_>>(), vec!["init.a.weight"]);
        assert!(plain.contains_key("a.weight"));
        assert_eq!(
            snap["init.a.weight"].to_vec1::<f32>().unwrap(),
            vec![2.0; 3]
        );
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn same_seed_same_weights_and_hints_are_honoured() {
        let make = |seed| {
            let m = SeededVarMap::new(seed);
            let vb = m.var_builder(DType::F32, &Device::Cpu);
            let w = vb
                .get_with_hints((64, 32), "lin.weight", pytorch_uniform(32))
                .unwrap();
            let c = vb
                .get_with_hints(5, "norm.weight", Init::Const(1.0))
                .unwrap();
            (
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                c.to_vec1::<f32>().unwrap(),
                m,
            )
        };
        let (a, c, m) = make(7);
        let (b, _, _) = make(7);
        let (d, _, _) = make(8);
        assert_eq!(a, b);
        assert_ne!(a, d);
        assert_eq!(c, vec![1.0; 5]);
        let bound = 1.0 / 32f32.sqrt();
        assert!(a.iter().all(|v| v.abs() <= bound));
        assert!(
            a.iter().any(|v| v.abs() > 0.9 * bound),
            "uniform should reach near the bound"
        );
        assert_eq!(m.named_vars().unwrap().len(), 2);
    }
}

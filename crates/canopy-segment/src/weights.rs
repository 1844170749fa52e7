//! Moving weights between canopy-segment and PyTorch.
//!
//! The models name their variables as the reference PyTorch modules name their parameters and
//! buffers, so `safetensors.torch.save_file(model.state_dict(), path)` on the PyTorch side and
//! [`load_state_dict`] here move trained weights across unchanged. Loading is strict: every
//! variable must be in the file with its shape and every tensor of the file must belong to a
//! variable, so weights of another configuration are refused instead of half-loaded.
//!
//! Some reference modules register a sub-module twice (TernausNet's `conv1` is also
//! `encoder.0`), and their `state_dict` then holds the same tensor under two names. Such
//! aliases are given as `(alias prefix, canonical prefix)` pairs: an alias key is accepted when
//! it equals its canonical tensor, and [`state_dict_with_aliases`] adds the alias keys back
//! for a strict `load_state_dict` in PyTorch.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

/// Loads the safetensors file `path` into `vars` (see the module docs).
///
/// # Errors
/// [`Error::Io`] when the file is missing; [`Error::File`] naming missing or unexpected keys,
/// a shape mismatch, or an alias whose tensor differs from its canonical one.
pub fn load_state_dict(
    path: impl AsRef<Path>,
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> Result<()> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such weights file"),
        });
    }
    let device = vars
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let tensors = candle_core::safetensors::load(path, &device).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file: {e}"),
    })?;
    load_tensors(&tensors, vars, aliases).map_err(|e| match e {
        Error::Config { message, .. } => Error::File {
            path: path.to_path_buf(),
            message,
        },
        other => other,
    })
}

/// Assigns `tensors` to `vars` by name with the strictness of [`load_state_dict`].
///
/// # Errors
/// [`Error::Config`] naming missing or unexpected keys, shape mismatches or differing aliases.
pub fn load_tensors(
    tensors: &HashMap<String, Tensor>,
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> Result<()> {
    let config = |message: String| Error::Config {
        context: "load_state_dict",
        message,
    };
    // resolve alias keys onto their canonical names
    let mut resolved: HashMap<&str, &Tensor> = HashMap::with_capacity(tensors.len());
    let mut pending_aliases = Vec::new();
    for (key, t) in tensors {
        match canonical(key, aliases) {
            Some(c) => pending_aliases.push((key.as_str(), c, t)),
            None => {
                resolved.insert(key.as_str(), t);
            }
        }
    }
    for (alias, canonical, t) in pending_aliases {
        match resolved.get(canonical.as_str()) {
            Some(c) => {
                if !same(c, t)? {
                    return Err(config(format!(
                        "{alias} and {canonical} name the same layer but hold different values"
                    )));
                }
            }
            None => {
                return Err(config(format!(
                    "{alias} is present but {canonical}, the layer it aliases, is missing"
                )))
            }
        }
    }
    let mut missing: Vec<&str> = vars
        .iter()
        .filter(|(n, _)| !resolved.contains_key(n.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    missing.sort_unstable();
    let known: std::collections::HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut unused: Vec<&str> = resolved
        .keys()
        .copied()
        .filter(|k| !known.contains(k))
        .collect();
    unused.sort_unstable();
    if !missing.is_empty() || !unused.is_empty() {
        return Err(config(format!(
            "weights do not fit the model: missing keys {missing:?}, unexpected keys {unused:?} \
             (are they for another model or configuration?)"
        )));
    }
    for (name, var) in vars {
        let Some(t) = resolved.get(name.as_str()) else {
            continue;
        };
        if t.dims() != var.dims() {
            return Err(config(format!(
                "{name}: the file has shape {:?}, the model needs {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// The variables as a `state_dict` with the alias keys added (for PyTorch's strict loading).
///
/// # Errors
/// Never in practice (the signature leaves room for device transfers).
pub fn state_dict_with_aliases(
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> Result<HashMap<String, Tensor>> {
    let mut out: HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    for (name, var) in vars {
        for (alias, canonical) in aliases {
            if let Some(rest) = name.strip_prefix(canonical.as_str()) {
                if rest.starts_with('.') {
                    out.insert(format!("{alias}{rest}"), var.as_tensor().clone());
                }
            }
        }
    }
    Ok(out)
}

/// The canonical key of an alias key, if `key` starts with an alias prefix.
fn canonical(key: &str, aliases: &[(String, String)]) -> Option<String> {
    aliases.iter().find_map(|(alias, canonical)| {
        key.strip_prefix(alias.as_str())
            .filter(|rest| rest.starts_with('.'))
            .map(|rest| format!("{canonical}{rest}"))
    })
}

fn same(a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.dims() != b.dims() {
        return Ok(false);
    }
    let diff = (a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f64>()?;
    Ok(diff == 0.0)
}

//! Strict loading of PyTorch `state_dict`s (exported as safetensors) into named variables.
//!
//! canopy's models name their variables as the reference PyTorch modules name their parameters
//! and buffers, so `safetensors.torch.save_file(model.state_dict(), path)` on the PyTorch side
//! and [`assign`] / [`load_file`] here move trained weights across unchanged. Loading is
//! strict: every variable must be in the file with its shape and every tensor of the file must
//! belong to a variable, so weights of another configuration are refused instead of
//! half-loaded. Values are converted to each variable's dtype and device (PyTorch's int64
//! `num_batches_tracked` and f16 weights included).
//!
//! Some reference modules register a sub-module twice (TernausNet's `conv1` is also
//! `encoder.0`), and their `state_dict` then holds the same tensor under two names. Such
//! aliases are given as `(alias prefix, canonical prefix)` pairs: an alias key is accepted
//! when it equals its canonical tensor, and [`with_aliases`] adds the alias keys back for a
//! strict `load_state_dict` in PyTorch.
//!
//! The model crates wrap these functions into their own error types, adding the file name.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::error::invalid;
use crate::{Error, Result};

const OP: &str = "load_state_dict";

/// Reads a safetensors file onto `device`. The error message (in
/// [`Error::InvalidArgument`]) says what is wrong; the caller names the file.
///
/// # Errors
/// The file is missing or not a readable safetensors file.
pub fn read(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(invalid(OP, "no such weights file"));
    }
    candle_core::safetensors::load(path, device)
        .map_err(|e| invalid(OP, format!("not a readable safetensors file: {e}")))
}

/// Reads the safetensors file `path` and [`assign`]s it to `vars` (on the device of the first
/// variable).
///
/// # Errors
/// As [`read`] and [`assign`].
pub fn load_file(path: &Path, vars: &[(String, Var)], aliases: &[(String, String)]) -> Result<()> {
    let device = vars
        .first()
        .map_or(Device::Cpu, |(_, v)| v.device().clone());
    assign(&read(path, &device)?, vars, aliases)
}

/// Assigns `tensors` to `vars` by name, strictly (see the module docs).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the missing or unexpected keys, a shape mismatch, an
/// alias whose tensor differs from its canonical one, or a failed conversion.
pub fn assign(
    tensors: &HashMap<String, Tensor>,
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> Result<()> {
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
            Some(c) if same(c, t)? => {}
            Some(_) => {
                return Err(invalid(
                    OP,
                    format!(
                        "{alias} and {canonical} name the same layer but hold different values"
                    ),
                ))
            }
            None => {
                return Err(invalid(
                    OP,
                    format!("{alias} is present but {canonical}, the layer it aliases, is missing"),
                ))
            }
        }
    }
    let mut missing: Vec<&str> = vars
        .iter()
        .filter(|(n, _)| !resolved.contains_key(n.as_str()))
        .map(|(n, _)| n.as_str())
        .collect();
    missing.sort_unstable();
    let known: HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut unused: Vec<&str> = resolved
        .keys()
        .copied()
        .filter(|k| !known.contains(k))
        .collect();
    unused.sort_unstable();
    if !missing.is_empty() || !unused.is_empty() {
        return Err(invalid(
            OP,
            format!(
                "weights do not fit the model: missing keys {missing:?}, unexpected keys \
                 {unused:?} (are they for another model or configuration?)"
            ),
        ));
    }
    for (name, var) in vars {
        let Some(t) = resolved.get(name.as_str()) else {
            continue;
        };
        if t.dims() != var.dims() {
            return Err(invalid(
                OP,
                format!(
                    "{name}: the file has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        let value = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| invalid(OP, format!("{name}: {e}")))?;
        var.set(&value)
            .map_err(|e| invalid(OP, format!("{name}: {e}")))?;
    }
    Ok(())
}

/// The variables as a `state_dict` with the alias keys added (for PyTorch's strict loading).
pub fn with_aliases(
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> HashMap<String, Tensor> {
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
    out
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

/// The message of an error from this module (for the model crates' own error types).
pub fn message(e: Error) -> String {
    match e {
        Error::InvalidArgument { message, .. } => message,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Named = Vec<(String, Var)>;

    fn vars(dev: &Device) -> Result<(Var, Var, Named)> {
        let a = Var::zeros((2, 3), DType::F32, dev)?;
        let b = Var::zeros(4, DType::F32, dev)?;
        let v = vec![
            ("m.a".to_string(), a.clone()),
            ("m.b".to_string(), b.clone()),
        ];
        Ok((a, b, v))
    }

    #[test]
    fn strict_loading_converts_and_names_missing_unused_and_misshaped_keys() -> Result<()> {
        let dev = Device::Cpu;
        let (a, b, vars) = vars(&dev)?;
        let mut t = HashMap::new();
        t.insert("m.a".to_string(), Tensor::ones((2, 3), DType::F16, &dev)?);
        t.insert("m.b".to_string(), Tensor::new(&[1i64, 2, 3, 4], &dev)?);
        assign(&t, &vars, &[])?;
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(a.as_tensor().sum_all()?.to_scalar::<f32>()?, 6.0);

        t.insert("c".to_string(), Tensor::ones(1, DType::F32, &dev)?);
        let e = message(assign(&t, &vars, &[]).unwrap_err());
        assert!(e.contains("unexpected keys [\"c\"]"), "{e}");
        t.remove("c");
        t.remove("m.b");
        let e = message(assign(&t, &vars, &[]).unwrap_err());
        assert!(e.contains("missing keys [\"m.b\"]"), "{e}");
        t.insert("m.b".to_string(), Tensor::ones(5, DType::F32, &dev)?);
        let e = message(assign(&t, &vars, &[]).unwrap_err());
        assert!(
            e.contains("m.b: the file has shape [5], the model needs [4]"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn aliases_must_equal_their_canonical_tensor() -> Result<()> {
        let dev = Device::Cpu;
        let (_, _, vars) = vars(&dev)?;
        let aliases = vec![("alias".to_string(), "m".to_string())];
        // copies: a variable cannot be set from its own storage
        let mut t: HashMap<String, Tensor> = with_aliases(&vars, &aliases)
            .into_iter()
            .map(|(k, v)| v.copy().map(|v| (k, v)))
            .collect::<candle_core::Result<_>>()?;
        assert_eq!(t.len(), 4);
        assert!(t.contains_key("alias.a") && t.contains_key("alias.b"));
        assign(&t, &vars, &aliases)?;
        t.insert(
            "alias.a".to_string(),
            Tensor::ones((2, 3), DType::F32, &dev)?,
        );
        let e = message(assign(&t, &vars, &aliases).unwrap_err());
        assert!(e.contains("alias.a and m.a"), "{e}");
        t.remove("m.a");
        let e = message(assign(&t, &vars, &aliases).unwrap_err());
        assert!(e.contains("m.a, the layer it aliases, is missing"), "{e}");
        Ok(())
    }

    #[test]
    fn a_missing_file_is_reported() {
        let e = message(load_file(Path::new("/nonexistent/w.safetensors"), &[], &[]).unwrap_err());
        assert!(e.contains("no such weights file"), "{e}");
    }
}

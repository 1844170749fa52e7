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
//!
//! The strict assignment itself is canopy-nn's [`canopy_nn::state_dict`] (shared with
//! canopy-temporal); this module adds the file names to its errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use canopy_nn::state_dict;

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
    state_dict::load_file(path, vars, aliases).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: state_dict::message(e),
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
    state_dict::assign(tensors, vars, aliases).map_err(|e| Error::Config {
        context: "load_state_dict",
        message: state_dict::message(e),
    })
}

/// The variables as a `state_dict` with the alias keys added (for PyTorch's strict loading).
///
/// # Errors
/// Never in practice (the signature leaves room for device transfers).
pub fn state_dict_with_aliases(
    vars: &[(String, Var)],
    aliases: &[(String, String)],
) -> Result<HashMap<String, Tensor>> {
    Ok(state_dict::with_aliases(vars, aliases))
}

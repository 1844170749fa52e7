//! Loading PyTorch `state_dict`s exported as safetensors.
//!
//! The models of this crate name their variables exactly as the reference PyTorch modules name
//! their parameters and buffers, so `safetensors.torch.save_file(model.state_dict(), path)` on
//! the PyTorch side and [`load_state_dict`] here move trained weights across unchanged.
//! The strict assignment is canopy-nn's [`canopy_nn::state_dict`] (shared with
//! canopy-segment); this module adds the file names to its errors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};
use canopy_nn::state_dict;

use crate::{Error, Result};

/// Loads the safetensors file `path` into `vars` strictly: every variable must be in the file
/// with its shape, and every tensor of the file must belong to a variable (so a file for
/// another configuration is refused instead of half-loaded). Values are converted to each
/// variable's dtype and device (PyTorch's int64 `num_batches_tracked` included).
///
/// # Errors
/// [`Error::Io`]/[`Error::File`] naming the file and the missing or unused keys, or the
/// variable whose shape differs.
pub fn load_state_dict(path: impl AsRef<Path>, vars: &[(String, Var)]) -> Result<()> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such weights file"),
        });
    }
    state_dict::load_file(path, vars, &[]).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: state_dict::message(e),
    })
}

/// Assigns `tensors` to `vars` by name with the same strictness as [`load_state_dict`];
/// the error message names the offending keys.
///
/// # Errors
/// Missing or unused keys, shape mismatches, failed conversions.
pub fn load_tensors(tensors: &HashMap<String, Tensor>, vars: &[(String, Var)]) -> Result<()> {
    state_dict::assign(tensors, vars, &[]).map_err(|e| Error::Config {
        model: "load_tensors",
        message: state_dict::message(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn strict_loading_names_missing_unused_and_misshaped_keys() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let a = Var::zeros((2, 3), DType::F32, &dev)?;
        let b = Var::zeros(4, DType::F32, &dev)?;
        let vars = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];

        let mut t = HashMap::new();
        t.insert("a".to_string(), Tensor::ones((2, 3), DType::F64, &dev)?);
        t.insert("b".to_string(), Tensor::new(&[1i64, 2, 3, 4], &dev)?);
        load_tensors(&t, &vars)?;
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(a.as_tensor().sum_all()?.to_scalar::<f32>()?, 6.0);

        t.insert("c".to_string(), Tensor::ones(1, DType::F32, &dev)?);
        let e = load_tensors(&t, &vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unexpected keys [\"c\"]"), "{e}");

        t.remove("c");
        t.remove("b");
        let e = load_tensors(&t, &vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("missing keys [\"b\"]"), "{e}");

        t.insert("b".to_string(), Tensor::ones(5, DType::F32, &dev)?);
        let e = load_tensors(&t, &vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("b: the file has shape [5], the model needs [4]"),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let e = load_state_dict("/nonexistent/weights.safetensors", &[]);
        assert!(matches!(e, Err(Error::Io { .. })));
    }
}

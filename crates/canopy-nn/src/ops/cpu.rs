//! Helpers shared by the CPU custom ops: contiguous slices of candle storage, and the values a
//! forward pass keeps for its backward pass.

use std::sync::Arc;

use candle_core::{CpuStorage, Layout};

/// The elements of a contiguous operand, or an error naming the op.
pub(crate) fn slice<'a, T: candle_core::WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [T]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: operands must be contiguous")))?;
    Ok(&s.as_slice::<T>()?[start..end])
}

/// Values computed by a forward pass and kept for its backward pass (gate activations,
/// attention probabilities), in the operands' float type.
#[derive(Clone, Default)]
pub(crate) enum Saved {
    /// Nothing computed yet.
    #[default]
    None,
    /// f32 values.
    F32(Arc<Vec<f32>>),
    /// f64 values.
    F64(Arc<Vec<f64>>),
}

//! Differentiable operators: each is built so that candle's backward pass is correct, and each
//! is gradient-checked and compared with PyTorch in the tests.

pub mod activation;
pub(crate) mod attention_kernel;
pub mod channel;
pub mod concat;
pub mod conv;
mod conv1d_cpu;
#[cfg(target_arch = "x86_64")]
mod conv1d_direct;
mod conv_cpu;
pub mod conv_transpose;
pub(crate) mod cpu;
#[cfg(target_arch = "x86_64")]
mod gates_fast;
mod gemm;
pub mod grid_sample;
mod im2col;
mod kn2row;
pub(crate) mod linear_kernel;
#[cfg(target_arch = "x86_64")]
mod lstm_fused;
pub(crate) mod lstm_kernel;
pub mod norm;
pub mod pool;
pub mod resize;
pub mod softmax;
mod transpose;
pub(crate) mod winograd;
mod winograd1d;

pub use activation::{add_relu, gelu, relu};
pub use channel::{add_channel_bias, batch_norm_train, scale_shift};
pub use concat::cat_channels;
pub use conv::{
    conv1d, conv1d_act, conv1d_as_2d, conv1d_reference, conv2d, conv2d_act, conv2d_reference,
    set_direct_conv1d_enabled, set_kn2row_enabled, Axis1, Conv1dConfig, Conv2dConfig,
};
pub use conv_transpose::{conv_transpose1d, conv_transpose2d, TransposeAxis};
pub use grid_sample::{grid_sample, GridPadding};
pub use lstm_kernel::set_fused_lstm_enabled;
pub use norm::{add_layer_norm, layer_norm, layer_norm_composed, LayerNorm};
pub use pool::{avg_pool1d, avg_pool2d, max_pool1d, max_pool2d, PoolAxis};
pub use resize::{
    adaptive_avg_pool2d, interpolate_linear1d, nearest_resample_to_channels_first,
    upsample_bilinear2d, upsample_nearest2d, AlignCorners,
};
pub use softmax::{log_softmax, softmax, softmax_last_dim, softmax_reference};
pub use winograd::set_winograd_enabled;

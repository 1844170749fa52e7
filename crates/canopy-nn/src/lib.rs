#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod allocator;
pub mod attention;
pub mod batch_norm;
pub mod conv_rnn;
pub mod dropout;
mod error;
pub mod gradcheck;
pub mod init;
pub mod linear;
pub mod ops;
pub mod parallel;
pub mod positional;
pub mod rnn;
pub mod state_dict;

pub use allocator::keep_freed_memory;
pub use dropout::Dropout;
pub use error::{Error, Result};
pub use gradcheck::{check_all_parameters_have_gradients, check_gradients, GradCheckConfig};
pub use init::{pytorch_uniform, SeededVarMap};
pub use linear::{linear, linear_relu_forward, Linear};
pub use parallel::use_calling_thread;

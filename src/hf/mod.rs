//! The Hugging Face checkpoint side: config.json, safetensors (single or sharded), and a
//! streaming safetensors writer used by the fixture generator.

pub mod config;
pub mod safetensors;
pub mod writer;

pub use config::{Arch, ModelConfig};
pub use safetensors::{Checkpoint, Dtype, TensorRef};

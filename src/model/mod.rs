//! The reference forward pass of the llm-jp family (Llama and Mixtral MoE), written to be read:
//! one concern per file, f32 activations, weights read in their stored type.
//!
//! - [`config`]: hyperparameters, from config.json or GGUF `llama.*` metadata.
//! - [`names`]: logical tensor names (GGUF's) and their Hugging Face counterparts.
//! - [`kernels`]: per-storage-type row kernels (dequantize a row, dot a row with f32).
//! - [`intmat`]: int4 / int8 weights with group scales (compressed-tensors, GPTQ).
//! - [`mat`]: a typed, borrowed view of one weight matrix and the matmul over it.
//! - `gemm`: that matmul over many positions on x86-64 with AVX2 / FMA (a packed GEMM).
//! - [`weights`]: where the weights come from (safetensors checkpoint or GGUF file).
//! - [`ops`]: RMSNorm, rotary embedding, softmax, SiLU.
//! - [`attention`]: the KV cache and causal grouped-query attention.
//! - [`ffn`]: the SwiGLU MLP and the Mixtral mixture of experts.
//! - [`device`]: CPU or CUDA (`crate::cuda`, `--features cuda`) for the forward pass.
//! - [`forward`]: the transformer, batched over a prompt, with a KV cache.
//! - [`generate`]: last-position logits and greedy decoding.
//!
//! Numerics follow transformers (CPU, float32): activations, norms, softmax and the rotary
//! tables are f32 computed as transformers computes them; matmuls accumulate in f32. Results do
//! not depend on the number of threads: every output element is reduced in a fixed order by
//! one thread.
//!
//! Rotary layout: GGUF stores the Q and K rows permuted into llama.cpp's interleaved rotary
//! order (formats/gguf.md). We un-permute those rows when reading them, so the forward pass
//! always sees Hugging Face's layout and uses one rotary embedding, HF's half-split
//! `rotate_half`. As a consequence an f32 GGUF gives bit-identical logits to its checkpoint.

pub mod attention;
pub mod config;
pub mod device;
pub mod ffn;
pub mod forward;
#[cfg(target_arch = "x86_64")]
mod gemm;
pub mod generate;
pub mod intmat;
pub mod intweights;
pub mod kernels;
pub mod mat;
pub mod names;
pub mod ops;
pub mod weights;

pub use config::Config;
pub use device::Device;
pub use forward::{Logits, Model, Observer};
pub use generate::argmax;
pub use mat::{Mat, matmul};
pub use names::Name;
pub use weights::{GgufWeights, HfWeights, Weights};

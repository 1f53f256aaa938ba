//! llmjp-convert: LLM-jp Hugging Face checkpoints to GGUF and quantized GGUF, checked by a
//! reference forward pass,
//! with the data flowing one way: hf (read) -> convert::plan (map) -> quant (transform) ->
//! gguf (write) -> verify.

pub mod bench;
pub mod chat;
pub mod convert;
pub mod cuda;
pub mod demo;
pub mod generate;
pub mod gguf;
pub mod hf;
pub mod imatrix;
pub mod inspect;
pub mod intq;
pub mod model;
#[cfg(feature = "oracle")]
pub mod oracle;
#[cfg(feature = "oracle")]
pub mod oracle_quant;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod quant;
pub mod quantize;
pub mod synth;
pub mod tokenize;
pub mod verify;
pub mod vocab;

//! Tokenizers: the HF tokenizer and our implementation of llama.cpp's "llama" (SPM) algorithm.
//!
//! - [`hf::HfTokenizer`]: transformers' semantics (Unigram Viterbi, byte fallback), loaded from
//!   `tokenizer.json` or from a GGUF's `tokenizer.huggingface.json`.
//! - [`llama_spm::LlamaSpmTokenizer`]: what llama.cpp does with a GGUF whose
//!   `tokenizer.ggml.model` is `"llama"` (greedy bigram merge by score).
//! - [`parity`]: how often the two disagree on a corpus.

pub mod hf;
pub mod llama_spm;
pub mod parity;

pub use hf::HfTokenizer;
pub use llama_spm::{LlamaSpmTokenizer, SpmParams};
pub use parity::{LineDiff, ParityReport, corpus_lines, hf_vs_llama};

//! GGUF v3: our own streaming writer and a bounds-checked reader. See formats/gguf.md.

pub mod reader;
pub mod stream;
pub mod types;
pub mod writer;

pub use reader::{GgufFile, TensorEntry};
pub use types::{GgmlType, Value};
pub use writer::{GgufWriter, TensorInfo};

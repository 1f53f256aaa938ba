//! The Hugging Face tokenizer (what transformers runs), through the `tokenizers` crate.
//!
//! llm-jp's `tokenizer.json` is a Unigram model (Viterbi best path, byte fallback) behind a
//! normalizer that prepends "▁" at the start of the text (unless it follows a newline) and
//! replaces " " with "▁"; its post-processor prepends `<s>`. This wrapper loads it from a model
//! directory, a `tokenizer.json` file, or the `tokenizer.huggingface.json` key of one of our GGUF
//! files, and encodes text with the same semantics as `tokenizer(text)["input_ids"]` in Python.

use crate::gguf::GgufFile;
use anyhow::{Context, Result, anyhow};
use std::path::Path;

/// The GGUF key that holds the whole `tokenizer.json` (see formats/gguf.md).
pub const GGUF_HF_JSON_KEY: &str = "tokenizer.huggingface.json";

pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish()
    }
}

impl HfTokenizer {
    /// From the bytes of a `tokenizer.json`.
    pub fn from_bytes(json: impl AsRef<[u8]>) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| anyhow!("invalid tokenizer.json: {e}"))?;
        Ok(Self { inner })
    }

    /// From a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::from_bytes(bytes).with_context(|| format!("{}", path.display()))
    }

    /// From a model directory's `tokenizer.json`.
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// From the `tokenizer.huggingface.json` key of a GGUF file.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf_file(&GgufFile::open(path)?)
    }

    /// From the `tokenizer.huggingface.json` key of an opened GGUF file.
    pub fn from_gguf_file(gguf: &GgufFile) -> Result<Self> {
        let json = gguf
            .get(GGUF_HF_JSON_KEY)
            .with_context(|| {
                format!(
                    "{}: no {GGUF_HF_JSON_KEY} key (converted with --no-hf-tokenizer-json?)",
                    gguf.path.display()
                )
            })?
            .as_str()
            .with_context(|| {
                format!(
                    "{}: {GGUF_HF_JSON_KEY} is not a string",
                    gguf.path.display()
                )
            })?;
        Self::from_bytes(json).with_context(|| format!("{}", gguf.path.display()))
    }

    /// Token ids of `text`. `add_special_tokens` applies the post-processor (for llm-jp:
    /// prepend `<s>`), as transformers' `tokenizer(text)` does by default.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| anyhow!("HF tokenizer failed on {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The pieces (vocabulary strings) of `text`'s tokens.
    pub fn encode_pieces(&self, text: &str, add_special_tokens: bool) -> Result<Vec<String>> {
        Ok(self
            .encode(text, add_special_tokens)?
            .into_iter()
            .map(|id| self.piece(id))
            .collect())
    }

    /// The vocabulary string of `id` (including added tokens); `"<id N>"` for an unknown id.
    pub fn piece(&self, id: u32) -> String {
        self.inner
            .id_to_token(id)
            .unwrap_or_else(|| format!("<id {id}>"))
    }

    /// The id of a vocabulary string (including added tokens).
    pub fn token_to_id(&self, piece: &str) -> Option<u32> {
        self.inner.token_to_id(piece)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Decodes ids back to text (`skip_special_tokens` drops `<s>` and the like).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| anyhow!("HF tokenizer could not decode: {e}"))
    }

    /// The underlying `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

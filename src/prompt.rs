//! Text to token ids exactly as transformers makes them for the original model: the HF
//! tokenizer, and for chat prompts the model's chat template rendered as `apply_chat_template`
//! renders it. Used by `generate` and `verify`, for a checkpoint directory or one of our GGUFs
//! (which carry tokenizer.json as `tokenizer.huggingface.json` and the template as
//! `tokenizer.chat_template`).

use crate::chat::{self, Message};
use crate::gguf::GgufFile;
use crate::hf::ModelConfig;
use crate::tokenize::{HfTokenizer, LlamaSpmTokenizer};
use crate::vocab::Vocab;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// llm-jp's instruct system prompt; its template prints this text for any system message.
pub const LLMJP_SYSTEM: &str =
    "以下は、タスクを説明する指示です。要求を適切に満たす応答を書きなさい。";

/// Which tokenizer turns text into ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenizerKind {
    /// tokenizer.json through the `tokenizers` crate: the ids the model was trained on.
    Hf,
    /// llama.cpp's SPM merge over the GGUF vocabulary: the ids llama.cpp would feed it.
    Llama,
}

pub struct PromptEncoder {
    hf: Option<HfTokenizer>,
    llama: Option<LlamaSpmTokenizer>,
    chat_template: Option<String>,
    bos: String,
    eos: String,
    eos_id: Option<u32>,
}

impl PromptEncoder {
    /// From a checkpoint directory (tokenizer.json, tokenizer_config.json) or a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_dir(path)
        } else {
            Self::from_gguf(&GgufFile::open(path)?)
        }
    }

    fn from_dir(dir: &Path) -> Result<Self> {
        let n_rows = ModelConfig::load(dir)?.vocab_size;
        let v = Vocab::load(dir, n_rows)?;
        let name = |id: Option<u32>| id.map(|i| v.tokens[i as usize].clone());
        Ok(Self {
            hf: Some(HfTokenizer::from_model_dir(dir)?),
            llama: None,
            chat_template: v.chat_template.clone(),
            bos: name(v.bos).unwrap_or_default(),
            eos: name(v.eos).unwrap_or_default(),
            eos_id: v.eos,
        })
    }

    fn from_gguf(g: &GgufFile) -> Result<Self> {
        let llama = LlamaSpmTokenizer::from_gguf_file(g).ok();
        let hf = if g.get(crate::tokenize::hf::GGUF_HF_JSON_KEY).is_some() {
            Some(HfTokenizer::from_gguf_file(g)?)
        } else {
            None
        };
        if hf.is_none() && llama.is_none() {
            bail!(
                "{}: neither tokenizer.huggingface.json nor a llama (SPM) vocabulary",
                g.path.display()
            );
        }
        let id = |k: &str| {
            g.get(&format!("tokenizer.ggml.{k}_token_id"))
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
        };
        let piece = |id: Option<u32>| -> String {
            id.and_then(|i| llama.as_ref()?.piece(i).map(str::to_string))
                .unwrap_or_default()
        };
        Ok(Self {
            chat_template: g
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            bos: piece(id("bos")),
            eos: piece(id("eos")),
            eos_id: id("eos"),
            hf,
            llama,
        })
    }

    pub fn hf(&self) -> Option<&HfTokenizer> {
        self.hf.as_ref()
    }

    pub fn llama(&self) -> Option<&LlamaSpmTokenizer> {
        self.llama.as_ref()
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The chat prompt for one user turn (after llm-jp's system turn), ending with the
    /// generation prompt, as `apply_chat_template(..., add_generation_prompt=True)`.
    pub fn render_chat(&self, user: &str, system: Option<&str>) -> Result<String> {
        let t = self
            .chat_template
            .as_deref()
            .context("the model has no chat template (tokenizer_config.json chat_template)")?;
        let mut messages = Vec::new();
        if let Some(s) = system {
            messages.push(Message {
                role: "system".into(),
                content: s.into(),
            });
        }
        messages.push(Message {
            role: "user".into(),
            content: user.into(),
        });
        chat::render(t, &messages, true, &self.bos, &self.eos)
    }

    /// Token ids of `text`: plain text gets the tokenizer's special tokens (`<s>` first); a chat
    /// prompt is rendered first and tokenized without them (the template writes `<s>` itself),
    /// as transformers' `apply_chat_template(tokenize=True)` does.
    pub fn encode(&self, text: &str, chat: bool, kind: TokenizerKind) -> Result<Vec<u32>> {
        let (text, special) = if chat {
            (self.render_chat(text, Some(LLMJP_SYSTEM))?, false)
        } else {
            (text.to_string(), true)
        };
        match kind {
            TokenizerKind::Hf => self
                .hf
                .as_ref()
                .context("no HF tokenizer (GGUF written with --no-hf-tokenizer-json?)")?
                .encode(&text, special),
            // llama.cpp tokenizes a chat prompt with parse_special so that `<s>` is one token.
            TokenizerKind::Llama => self
                .llama
                .as_ref()
                .context(
                    "no llama.cpp SPM vocabulary (not a GGUF with tokenizer.ggml.model = llama)",
                )?
                .tokenize(&text, special, chat),
        }
    }

    /// Text of generated ids, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(hf) = &self.hf {
            return hf.decode(ids, true);
        }
        let llama = self.llama.as_ref().context("no tokenizer")?;
        let mut bytes = Vec::new();
        for &id in ids {
            if llama
                .token_attr(id)
                .is_some_and(|a| a & crate::tokenize::llama_spm::attr::CONTROL != 0)
            {
                continue;
            }
            let p = llama.piece(id).unwrap_or_default();
            if let Some(b) = p
                .strip_prefix("<0x")
                .and_then(|h| h.strip_suffix('>'))
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                bytes.push(b);
            } else {
                bytes.extend_from_slice(p.replace('\u{2581}', " ").as_bytes());
            }
        }
        let s = String::from_utf8_lossy(&bytes).into_owned();
        Ok(s.strip_prefix(' ').map(str::to_string).unwrap_or(s))
    }
}

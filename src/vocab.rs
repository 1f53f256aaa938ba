//! The tokenizer, as llama.cpp expects it in GGUF: llm-jp ships only a Unigram tokenizer.json
//! (no SentencePiece model), so we read pieces and scores from it, classify each piece the
//! way SentencePiece would (unknown, control, byte, user-defined, normal) and pad the list with
//! `[PAD{id}]` rows up to the embedding's row count.

use crate::gguf::Value;
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as J;
use std::path::Path;

/// llama.cpp's token types.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    /// Pieces the tokenizer really has (the rest are `[PAD{id}]`).
    pub n_real: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub sep: Option<u32>,
    pub cls: Option<u32>,
    pub mask: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    /// tokenizer.json verbatim, for `tokenizer.huggingface.json`.
    pub hf_json: String,
}

fn is_byte_piece(s: &str) -> bool {
    s.len() == 6
        && s.starts_with("<0x")
        && s.ends_with('>')
        && s[3..5].chars().all(|c| c.is_ascii_hexdigit())
}

/// A special token named in tokenizer_config.json, either a string or {"content": ...}.
fn token_name(cfg: &J, key: &str) -> Option<String> {
    match cfg.get(key)? {
        J::String(s) => Some(s.clone()),
        J::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl Vocab {
    pub fn load(dir: &Path, n_rows: usize) -> Result<Self> {
        let tj_path = dir.join("tokenizer.json");
        let hf_json = std::fs::read_to_string(&tj_path).with_context(|| {
            format!(
                "{}: cannot read (llm-jp checkpoints ship it)",
                tj_path.display()
            )
        })?;
        let tj: J = serde_json::from_str(&hf_json)
            .with_context(|| format!("{}: invalid JSON", tj_path.display()))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: J = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t)
                .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?,
            Err(_) => J::Null,
        };
        Self::from_json(&tj, &cfg, n_rows, hf_json)
            .with_context(|| format!("{}", tj_path.display()))
    }

    pub fn from_json(tj: &J, cfg: &J, n_rows: usize, hf_json: String) -> Result<Self> {
        let model = tj.get("model").context("no \"model\"")?;
        let kind = model.get("type").and_then(|t| t.as_str()).unwrap_or("");
        ensure!(
            kind == "Unigram",
            "tokenizer model type {kind:?} is not supported (llm-jp uses Unigram)"
        );
        let vocab = model
            .get("vocab")
            .and_then(|v| v.as_array())
            .context("no Unigram vocab")?;
        let unk = model
            .get("unk_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as u32);
        let mut tokens = Vec::with_capacity(n_rows);
        let mut scores = Vec::with_capacity(n_rows);
        let mut types = Vec::with_capacity(n_rows);
        for (i, e) in vocab.iter().enumerate() {
            let piece = e
                .get(0)
                .and_then(|p| p.as_str())
                .with_context(|| format!("vocab entry {i}"))?;
            let score = e
                .get(1)
                .and_then(|p| p.as_f64())
                .with_context(|| format!("vocab entry {i}"))?;
            tokens.push(piece.to_string());
            scores.push(score as f32);
            types.push(if Some(i as u32) == unk {
                token_type::UNKNOWN
            } else if is_byte_piece(piece) {
                token_type::BYTE
            } else {
                token_type::NORMAL
            });
        }
        // Added tokens override: special ones are control tokens (never produced by splitting
        // text), the others user-defined (matched whole), as llama.cpp's own converter does.
        for a in tj
            .get("added_tokens")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
        {
            let id = a
                .get("id")
                .and_then(|v| v.as_u64())
                .context("added token without id")? as usize;
            let content = a
                .get("content")
                .and_then(|v| v.as_str())
                .unwrap_or_default();
            let special = a.get("special").and_then(|v| v.as_bool()).unwrap_or(false);
            if id >= tokens.len() {
                ensure!(
                    id < n_rows,
                    "added token {content:?} has id {id} beyond the {n_rows} embedding rows"
                );
                while tokens.len() <= id {
                    let j = tokens.len();
                    tokens.push(format!("[PAD{j}]"));
                    scores.push(-1000.0);
                    types.push(token_type::UNUSED);
                }
            }
            tokens[id] = content.to_string();
            if Some(id as u32) != unk {
                types[id] = if special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                };
            }
        }
        let n_real = tokens.len();
        if n_real > n_rows {
            bail!("tokenizer has {n_real} tokens but the model has only {n_rows} embedding rows");
        }
        for j in n_real..n_rows {
            tokens.push(format!("[PAD{j}]"));
            scores.push(-1000.0);
            types.push(token_type::UNUSED);
        }
        let id_of = |key: &str| -> Option<u32> {
            let name = token_name(cfg, key)?;
            tokens.iter().position(|t| *t == name).map(|i| i as u32)
        };
        let bos = id_of("bos_token");
        let eos = id_of("eos_token");
        let chat_template = match cfg.get("chat_template") {
            Some(J::String(s)) => Some(s.clone()),
            // A list of named templates: llama.cpp reads the default one.
            Some(J::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => None,
        };
        Ok(Self {
            bos,
            eos,
            unk: id_of("unk_token").or(unk),
            pad: id_of("pad_token"),
            sep: id_of("sep_token"),
            cls: id_of("cls_token"),
            mask: id_of("mask_token"),
            add_bos: cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(bos.is_some()),
            add_eos: cfg
                .get("add_eos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            chat_template,
            tokens,
            scores,
            types,
            n_real,
            hf_json,
        })
    }

    /// The `tokenizer.*` metadata keys, in the order we write them.
    pub fn gguf_kv(&self, with_hf_json: bool) -> Vec<(String, Value)> {
        let mut kv: Vec<(String, Value)> = vec![
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            ("tokenizer.ggml.pre".into(), Value::String("default".into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::ArrString(self.tokens.clone()),
            ),
            (
                "tokenizer.ggml.scores".into(),
                Value::ArrF32(self.scores.clone()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::ArrI32(self.types.clone()),
            ),
        ];
        let ids = [
            ("bos_token_id", self.bos),
            ("eos_token_id", self.eos),
            ("unknown_token_id", self.unk),
            ("padding_token_id", self.pad),
            // llama.cpp's spelling.
            ("seperator_token_id", self.sep),
            ("cls_token_id", self.cls),
            ("mask_token_id", self.mask),
        ];
        for (k, v) in ids {
            if let Some(v) = v {
                kv.push((format!("tokenizer.ggml.{k}"), Value::U32(v)));
            }
        }
        kv.push((
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(self.add_bos),
        ));
        kv.push((
            "tokenizer.ggml.add_eos_token".into(),
            Value::Bool(self.add_eos),
        ));
        if let Some(t) = &self.chat_template {
            kv.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
        }
        if with_hf_json {
            kv.push((
                "tokenizer.huggingface.json".into(),
                Value::String(self.hf_json.clone()),
            ));
        }
        kv
    }
}

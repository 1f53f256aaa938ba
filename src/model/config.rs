//! Model hyperparameters, read from config.json (checkpoints) or `llama.*` metadata (GGUF).

use crate::gguf::GgufFile;
use crate::hf::ModelConfig;
use anyhow::{Context, Result, ensure};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Config {
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Per-head width of Q, K and V; not always hidden / n_head (llm-jp-3-150m, 980m).
    pub head_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    /// f32, as both transformers (`x.pow(2).mean() + eps` on an f32 tensor) and llama.cpp use it.
    pub rms_eps: f32,
    pub rope_theta: f64,
    /// 0 for dense models.
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

impl Config {
    pub fn from_hf(c: &ModelConfig) -> Self {
        let id = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        Self {
            n_layer: c.n_layer,
            hidden: c.hidden,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            ffn: c.ffn,
            vocab: c.vocab_size,
            rms_eps: c.rms_eps as f32,
            rope_theta: c.rope_theta,
            n_expert: c.n_expert,
            n_expert_used: c.n_expert_used,
            bos: id(c.bos_token_id),
            eos: id(c.eos_token_id),
        }
    }

    /// From the GGUF metadata of `general.architecture` (`llama` for everything we write).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f
            .get("general.architecture")
            .and_then(|v| v.as_str())
            .context("missing general.architecture")?;
        ensure!(
            arch == "llama",
            "architecture {arch:?} is not supported (expected llama)"
        );
        let opt = |k: &str| f.get(&format!("llama.{k}")).and_then(|v| v.as_u64());
        let req = |k: &str| {
            opt(k)
                .map(|v| v as usize)
                .with_context(|| format!("missing or non-integer llama.{k}"))
        };
        let float = |k: &str| f.get(&format!("llama.{k}")).and_then(|v| v.as_f64());
        let hidden = req("embedding_length")?;
        let n_head = req("attention.head_count")?;
        let n_head_kv = opt("attention.head_count_kv").map_or(n_head, |v| v as usize);
        // key_length is written only when config.json named head_dim; rope.dimension_count is
        // always head_dim for llm-jp (full rotary).
        let head_dim = opt("attention.key_length")
            .or(opt("rope.dimension_count"))
            .map_or(hidden / n_head, |v| v as usize);
        if let Some(rot) = opt("rope.dimension_count") {
            ensure!(
                rot as usize == head_dim,
                "partial rotary (rope.dimension_count {rot} != head_dim {head_dim}) is not supported"
            );
        }
        if let Some(vl) = opt("attention.value_length") {
            ensure!(
                vl as usize == head_dim,
                "value_length {vl} != key_length {head_dim} is not supported"
            );
        }
        let vocab = match opt("vocab_size") {
            Some(v) => v as usize,
            None => f
                .tensor("token_embd.weight")
                .and_then(|t| t.info.dims.get(1).copied())
                .context("missing llama.vocab_size and token_embd.weight")?
                as usize,
        };
        let tok = |k: &str| {
            f.get(&format!("tokenizer.ggml.{k}_token_id"))
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
        };
        let c = Self {
            n_layer: req("block_count")?,
            hidden,
            n_head,
            n_head_kv,
            head_dim,
            ffn: req("feed_forward_length")?,
            vocab,
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            rope_theta: float("rope.freq_base").unwrap_or(10000.0),
            n_expert: opt("expert_count").unwrap_or(0) as usize,
            n_expert_used: opt("expert_used_count").unwrap_or(0) as usize,
            bos: tok("bos"),
            eos: tok("eos"),
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        ensure!(
            self.n_head_kv > 0 && self.n_head.is_multiple_of(self.n_head_kv),
            "head_count {} is not a multiple of head_count_kv {}",
            self.n_head,
            self.n_head_kv
        );
        ensure!(
            self.head_dim.is_multiple_of(2),
            "head_dim {} is odd",
            self.head_dim
        );
        ensure!(
            self.n_expert_used <= self.n_expert,
            "expert_used_count {} > expert_count {}",
            self.n_expert_used,
            self.n_expert
        );
        ensure!(
            self.n_expert == 0 || self.n_expert_used > 0,
            "MoE model with expert_used_count 0"
        );
        Ok(())
    }

    pub fn is_moe(&self) -> bool {
        self.n_expert > 0
    }

    /// Rows of Q (and of O's input): n_head * head_dim.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Rows of K and V: n_head_kv * head_dim.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

//! config.json of a Hugging Face llm-jp checkpoint (LlamaForCausalLM / MixtralForCausalLM).

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value as J;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mixtral,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub architecture: String,
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// config.json named head_dim itself (then GGUF gets attention.key_length/value_length).
    pub head_dim_explicit: bool,
    pub ffn: usize,
    pub vocab_size: usize,
    pub rms_eps: f64,
    pub rope_theta: f64,
    pub max_pos: usize,
    pub tie_embeddings: bool,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub bos_token_id: Option<i64>,
    pub eos_token_id: Option<i64>,
    /// `torch_dtype` (Hub files) or `dtype` (transformers 5).
    pub dtype: Option<String>,
    pub name_or_path: Option<String>,
}

fn get_usize(j: &J, key: &str) -> Result<usize> {
    j.get(key)
        .with_context(|| format!("missing \"{key}\""))?
        .as_u64()
        .filter(|&v| v > 0)
        .map(|v| v as usize)
        .with_context(|| format!("\"{key}\" is not a positive integer"))
}

fn opt_usize(j: &J, key: &str) -> Result<Option<usize>> {
    match j.get(key) {
        None | Some(J::Null) => Ok(None),
        Some(_) => get_usize(j, key).map(Some),
    }
}

fn opt_id(j: &J, key: &str) -> Option<i64> {
    match j.get(key) {
        Some(J::Number(n)) => n.as_i64(),
        // Some configs list several eos ids; the first is the primary one.
        Some(J::Array(a)) => a.first().and_then(|v| v.as_i64()),
        _ => None,
    }
}

impl ModelConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let j: J = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        Self::from_json(&j).with_context(|| format!("{}", path.display()))
    }

    pub fn from_json(j: &J) -> Result<Self> {
        let architecture = j
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .context("missing \"architectures\"")?
            .to_string();
        let arch = match architecture.as_str() {
            "LlamaForCausalLM" => Arch::Llama,
            "MixtralForCausalLM" => Arch::Mixtral,
            other => bail!(
                "unknown architecture {other:?} (supported: LlamaForCausalLM, MixtralForCausalLM)"
            ),
        };
        let hidden = get_usize(j, "hidden_size")?;
        let n_head = get_usize(j, "num_attention_heads")?;
        let n_head_kv = opt_usize(j, "num_key_value_heads")?.unwrap_or(n_head);
        let head_dim_cfg = opt_usize(j, "head_dim")?;
        ensure!(
            head_dim_cfg.is_some() || hidden % n_head == 0,
            "hidden_size {hidden} is not divisible by num_attention_heads {n_head}"
        );
        let head_dim = head_dim_cfg.unwrap_or(hidden / n_head);
        ensure!(
            head_dim % 2 == 0,
            "head_dim {head_dim} is odd; rotary embedding needs pairs"
        );
        ensure!(
            n_head % n_head_kv == 0,
            "num_attention_heads {n_head} is not a multiple of num_key_value_heads {n_head_kv}"
        );
        let rope_theta = j
            .get("rope_theta")
            .and_then(|v| v.as_f64())
            .or_else(|| {
                j.pointer("/rope_parameters/rope_theta")
                    .and_then(|v| v.as_f64())
            })
            .unwrap_or(10000.0);
        for key in ["rope_scaling", "rope_parameters"] {
            if let Some(t) = j
                .get(key)
                .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            {
                ensure!(
                    t.as_str() == Some("default"),
                    "{key} type {t} is not supported (llm-jp models use plain RoPE)"
                );
            }
        }
        for key in ["attention_bias", "mlp_bias"] {
            ensure!(
                !j.get(key).and_then(|v| v.as_bool()).unwrap_or(false),
                "{key}: true is not supported (llm-jp models have no biases)"
            );
        }
        if let Some(act) = j.get("hidden_act").and_then(|v| v.as_str()) {
            ensure!(
                act == "silu",
                "hidden_act {act:?} is not supported (expected silu)"
            );
        }
        let (n_expert, n_expert_used) = match arch {
            Arch::Llama => (0, 0),
            Arch::Mixtral => {
                let n = get_usize(j, "num_local_experts")?;
                let k = get_usize(j, "num_experts_per_tok")?;
                ensure!(k <= n, "num_experts_per_tok {k} > num_local_experts {n}");
                (n, k)
            }
        };
        Ok(Self {
            arch,
            architecture,
            n_layer: get_usize(j, "num_hidden_layers")?,
            hidden,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_explicit: head_dim_cfg.is_some(),
            ffn: get_usize(j, "intermediate_size")?,
            vocab_size: get_usize(j, "vocab_size")?,
            rms_eps: j
                .get("rms_norm_eps")
                .and_then(|v| v.as_f64())
                .unwrap_or(1e-5),
            rope_theta,
            max_pos: opt_usize(j, "max_position_embeddings")?.unwrap_or(4096),
            tie_embeddings: j
                .get("tie_word_embeddings")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            n_expert,
            n_expert_used,
            bos_token_id: opt_id(j, "bos_token_id"),
            eos_token_id: opt_id(j, "eos_token_id"),
            dtype: j
                .get("torch_dtype")
                .or_else(|| j.get("dtype"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            name_or_path: j
                .get("_name_or_path")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        })
    }

    pub fn q_rows(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_rows(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

//! Deterministic llm-jp-shaped checkpoints with random weights: the test fixtures, the demo's
//! fallback and the benchmark model. Same preset and seed, same bytes, on any machine and any
//! thread count (each tensor chunk has its own seed).
//!
//! The weights are deliberately larger than the usual 0.02 init: with q/k at 1.5/sqrt(hidden),
//! attention scores have a spread of a few units, so a wrong Q/K permutation changes the top-1
//! token instead of moving logits by 1e-3.

use crate::hf::writer::{Decl, SafetensorsWriter};
use crate::hf::{Arch, Dtype};
use crate::output::{AtomicFile, check_output_path};
use anyhow::{Context, Result, bail};
use half::{bf16, f16};
use rayon::prelude::*;
use std::path::Path;

pub const TOKENIZER_JSON: &[u8] = include_bytes!("../fixtures/tokenizer/tokenizer.json");
pub const TOKENIZER_CONFIG_JSON: &[u8] =
    include_bytes!("../fixtures/tokenizer/tokenizer_config.json");
pub const SPECIAL_TOKENS_MAP_JSON: &[u8] =
    include_bytes!("../fixtures/tokenizer/special_tokens_map.json");

#[derive(Clone, Debug)]
pub struct Spec {
    pub arch: Arch,
    pub n_layer: usize,
    pub hidden: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Written to config.json only when Some (then it may differ from hidden / n_head).
    pub head_dim: Option<usize>,
    pub ffn: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
    pub vocab: usize,
    pub dtype: Dtype,
    pub shards: usize,
    pub seed: u64,
    /// Scale of the residual branches' output projections (o_proj, down_proj, experts' w2).
    /// Below 1, each layer moves the residual stream less, as in trained models: quantization
    /// noise then stays near what trained models show instead of being amplified layer by
    /// layer (used by the quantized-verify presets; 1 elsewhere).
    pub branch_scale: f32,
}

pub const PRESETS: &[&str] = &["dense", "gqa", "moe", "sharded", "wide", "wide-moe", "1.8b"];

impl Spec {
    pub fn preset(name: &str) -> Result<Self> {
        let base = Spec {
            arch: Arch::Llama,
            n_layer: 2,
            hidden: 64,
            n_head: 4,
            n_head_kv: 4,
            head_dim: None,
            ffn: 128,
            n_expert: 0,
            n_expert_used: 0,
            vocab: 99584,
            dtype: Dtype::BF16,
            shards: 1,
            seed: 20241126,
            branch_scale: 1.0,
        };
        Ok(match name {
            // Multi-head attention, bf16, one file: the llm-jp-3 1.8b..13b layout in miniature.
            "dense" => base,
            // Grouped-query attention with head_dim (32) != hidden / heads (16), stored as f32.
            "gqa" => Spec {
                n_head_kv: 2,
                head_dim: Some(32),
                ffn: 96,
                dtype: Dtype::F32,
                seed: 7,
                ..base
            },
            // Mixtral-style 8-expert top-2 MoE, as llm-jp-3-8x1.8b.
            "moe" => Spec {
                arch: Arch::Mixtral,
                ffn: 64,
                n_expert: 8,
                n_expert_used: 2,
                seed: 8,
                ..base
            },
            // Three shards with model.safetensors.index.json, stored as f16.
            "sharded" => Spec {
                n_layer: 3,
                dtype: Dtype::F16,
                shards: 3,
                seed: 3,
                ..base
            },
            // 256 wide with ffn 768, so every weight row takes the K-quants' 256-blocks (the
            // narrower presets fall back to Q5_0 / Q8_0): the quantized-verify fixture. GQA.
            "wide" => Spec {
                n_layer: 4,
                hidden: 256,
                n_head: 8,
                n_head_kv: 4,
                ffn: 768,
                seed: 41,
                branch_scale: 0.3,
                ..base
            },
            // The same for the MoE layout: 8 experts of ffn 256, top-2, GQA.
            "wide-moe" => Spec {
                arch: Arch::Mixtral,
                hidden: 256,
                n_head: 4,
                n_head_kv: 2,
                ffn: 256,
                n_expert: 8,
                n_expert_used: 2,
                seed: 42,
                branch_scale: 0.3,
                ..base
            },
            // llm-jp-3-1.8b's shapes (3.7 GB bf16), for benchmarks.
            "1.8b" => Spec {
                n_layer: 24,
                hidden: 2048,
                n_head: 16,
                n_head_kv: 16,
                ffn: 7168,
                seed: 18,
                ..base
            },
            other => bail!(
                "unknown preset {other:?} (expected one of {})",
                PRESETS.join(", ")
            ),
        })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden / self.n_head)
    }

    pub fn config_json(&self) -> serde_json::Value {
        let dtype = match self.dtype {
            Dtype::BF16 => "bfloat16",
            Dtype::F16 => "float16",
            _ => "float32",
        };
        let mut c = serde_json::json!({
            "architectures": [match self.arch { Arch::Llama => "LlamaForCausalLM", Arch::Mixtral => "MixtralForCausalLM" }],
            "model_type": match self.arch { Arch::Llama => "llama", Arch::Mixtral => "mixtral" },
            "attention_bias": false,
            "attention_dropout": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "hidden_size": self.hidden,
            "initializer_range": 0.02,
            "intermediate_size": self.ffn,
            "max_position_embeddings": 4096,
            "num_attention_heads": self.n_head,
            "num_hidden_layers": self.n_layer,
            "num_key_value_heads": self.n_head_kv,
            "rms_norm_eps": 1e-5,
            "rope_scaling": null,
            "rope_theta": 10000.0,
            "tie_word_embeddings": false,
            "torch_dtype": dtype,
            "use_cache": true,
            "vocab_size": self.vocab,
        });
        let o = c.as_object_mut().expect("object");
        if self.arch == Arch::Llama {
            o.insert("mlp_bias".into(), false.into());
            o.insert("pretraining_tp".into(), 1.into());
        } else {
            o.insert("num_local_experts".into(), self.n_expert.into());
            o.insert("num_experts_per_tok".into(), self.n_expert_used.into());
            o.insert("output_router_logits".into(), false.into());
            o.insert("router_aux_loss_coef".into(), 0.02.into());
            o.insert("sliding_window".into(), serde_json::Value::Null);
        }
        if let Some(hd) = self.head_dim {
            o.insert("head_dim".into(), hd.into());
        }
        c
    }

    /// (name, torch shape, init) in checkpoint order.
    fn tensors(&self) -> Vec<(String, Vec<usize>, Init)> {
        let (h, f, v) = (self.hidden, self.ffn, self.vocab);
        let (q, kv) = (
            self.n_head * self.head_dim(),
            self.n_head_kv * self.head_dim(),
        );
        let s = |fan_in: usize, k: f32| Init::Normalish(k / (fan_in as f32).sqrt());
        let mut t = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![v, h],
            Init::Normalish(1.0),
        )];
        for i in 0..self.n_layer {
            let p = format!("model.layers.{i}");
            t.push((format!("{p}.input_layernorm.weight"), vec![h], Init::Norm));
            t.push((
                format!("{p}.self_attn.q_proj.weight"),
                vec![q, h],
                s(h, 1.5),
            ));
            t.push((
                format!("{p}.self_attn.k_proj.weight"),
                vec![kv, h],
                s(h, 1.5),
            ));
            t.push((
                format!("{p}.self_attn.v_proj.weight"),
                vec![kv, h],
                s(h, 1.0),
            ));
            t.push((
                format!("{p}.self_attn.o_proj.weight"),
                vec![h, q],
                s(q, self.branch_scale),
            ));
            t.push((
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                Init::Norm,
            ));
            match self.arch {
                Arch::Llama => {
                    t.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h], s(h, 1.0)));
                    t.push((format!("{p}.mlp.up_proj.weight"), vec![f, h], s(h, 1.0)));
                    t.push((
                        format!("{p}.mlp.down_proj.weight"),
                        vec![h, f],
                        s(f, self.branch_scale),
                    ));
                }
                Arch::Mixtral => {
                    t.push((
                        format!("{p}.block_sparse_moe.gate.weight"),
                        vec![self.n_expert, h],
                        s(h, 2.0),
                    ));
                    for e in 0..self.n_expert {
                        let x = format!("{p}.block_sparse_moe.experts.{e}");
                        t.push((format!("{x}.w1.weight"), vec![f, h], s(h, 1.0)));
                        t.push((
                            format!("{x}.w2.weight"),
                            vec![h, f],
                            s(f, self.branch_scale),
                        ));
                        t.push((format!("{x}.w3.weight"), vec![f, h], s(h, 1.0)));
                    }
                }
            }
        }
        t.push(("model.norm.weight".to_string(), vec![h], Init::Norm));
        t.push(("lm_head.weight".to_string(), vec![v, h], s(h, 2.0)));
        t
    }
}

#[derive(Clone, Copy, Debug)]
enum Init {
    /// Uniform with this standard deviation (uniform keeps the tails bounded).
    Normalish(f32),
    /// RMSNorm gains in [0.5, 1.5]: far enough from 1 that a norm read wrongly shows.
    Norm,
}

/// SplitMix64: tiny, fast, and the same everywhere.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

const GEN_CHUNK: usize = 1 << 18;

fn gen_tensor(name: &str, n: usize, init: Init, dtype: Dtype, seed: u64) -> Vec<u8> {
    let base = seed ^ fnv1a(name);
    let es = dtype.size();
    let mut out = vec![0u8; n * es];
    out.par_chunks_mut(GEN_CHUNK * es)
        .enumerate()
        .for_each(|(c, buf)| {
            let mut rng = Rng(base.wrapping_add((c as u64).wrapping_mul(0xA24B_AED4_963E_E407)));
            for o in buf.chunks_exact_mut(es) {
                let u = rng.uniform();
                let x = match init {
                    Init::Normalish(std) => u * std * 3f32.sqrt(),
                    Init::Norm => 1.0 + 0.5 * u,
                };
                match dtype {
                    Dtype::BF16 => o.copy_from_slice(&bf16::from_f32(x).to_bits().to_le_bytes()),
                    Dtype::F16 => o.copy_from_slice(&f16::from_f32(x).to_bits().to_le_bytes()),
                    _ => o.copy_from_slice(&x.to_le_bytes()),
                }
            }
        });
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

/// Writes a complete Hugging Face model directory for `spec` into `dir`.
pub fn write_model(spec: &Spec, dir: &Path, force: bool) -> Result<()> {
    write_model_with_progress(spec, dir, force, true)
}

/// As `write_model`, with a progress bar unless `quiet`.
pub fn write_model_with_progress(spec: &Spec, dir: &Path, force: bool, quiet: bool) -> Result<()> {
    if dir.exists() {
        if !force {
            bail!(
                "{}: output exists (use --force to overwrite)",
                dir.display()
            );
        }
    } else {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let tensors = spec.tensors();
    let total: usize = tensors
        .iter()
        .map(|(_, s, _)| s.iter().product::<usize>() * spec.dtype.size())
        .sum();
    let per_shard = total.div_ceil(spec.shards);
    let progress = crate::progress::Progress::bytes(total as u64, "synth", quiet);
    // Greedy split in checkpoint order, as transformers' save_pretrained does.
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut acc = 0;
    for (i, (_, s, _)) in tensors.iter().enumerate() {
        let n = s.iter().product::<usize>() * spec.dtype.size();
        if acc > 0 && acc + n > per_shard && groups.len() < spec.shards {
            groups.push(Vec::new());
            acc = 0;
        }
        groups.last_mut().expect("non-empty").push(i);
        acc += n;
    }
    let n_files = groups.len();
    let mut weight_map = serde_json::Map::new();
    for (g, idx) in groups.iter().enumerate() {
        let fname = if spec.shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", g + 1, n_files)
        };
        let decls: Vec<Decl> = idx
            .iter()
            .map(|&i| Decl {
                name: tensors[i].0.clone(),
                dtype: spec.dtype,
                shape: tensors[i].1.clone(),
            })
            .collect();
        let path = dir.join(&fname);
        check_output_path(&path, true, &[])?;
        let mut file = AtomicFile::create(&path)?;
        let mut w = SafetensorsWriter::new(file.writer(), &decls, &[("format", "pt")])?;
        for &i in idx {
            let (name, shape, init) = &tensors[i];
            w.write_tensor(&gen_tensor(
                name,
                shape.iter().product(),
                *init,
                spec.dtype,
                spec.seed,
            ))?;
            weight_map.insert(name.clone(), fname.clone().into());
        }
        w.finish()?;
        file.commit()?;
    }
    progress.finish();
    if spec.shards > 1 {
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_file(
            &dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)?.as_bytes(),
        )?;
    }
    write_file(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&spec.config_json())?.as_bytes(),
    )?;
    write_file(
        &dir.join("generation_config.json"),
        br#"{"bos_token_id": 1, "eos_token_id": 2}"#,
    )?;
    write_file(&dir.join("tokenizer.json"), TOKENIZER_JSON)?;
    write_file(&dir.join("tokenizer_config.json"), TOKENIZER_CONFIG_JSON)?;
    write_file(
        &dir.join("special_tokens_map.json"),
        SPECIAL_TOKENS_MAP_JSON,
    )?;
    Ok(())
}

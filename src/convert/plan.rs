//! Map: which GGUF tensors a Hugging Face checkpoint becomes, with their shapes, types and the
//! transform each needs, and the `general.*` / `llama.*` metadata. Nothing is read here but
//! the headers, so every shape disagreement is reported before any data is written.

use crate::gguf::types::file_type;
use crate::gguf::{GgmlType, TensorInfo, Value};
use crate::hf::{Arch, Checkpoint, Dtype, ModelConfig};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
    /// The checkpoint's own 16-bit type (bf16 stays bf16; f16 and f32 become f16).
    Auto,
}

impl std::str::FromStr for OutType {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "f32" => Self::F32,
            "f16" => Self::F16,
            "bf16" => Self::BF16,
            "q8_0" => Self::Q8_0,
            "auto" => Self::Auto,
            other => bail!("unknown outtype {other:?} (expected f32, f16, bf16, q8_0 or auto)"),
        })
    }
}

impl OutType {
    fn ggml(self) -> GgmlType {
        match self {
            Self::F32 => GgmlType::F32,
            Self::F16 | Self::Auto => GgmlType::F16,
            Self::BF16 => GgmlType::BF16,
            Self::Q8_0 => GgmlType::Q8_0,
        }
    }
    fn file_type(self) -> u32 {
        match self {
            Self::F32 => file_type::ALL_F32,
            Self::F16 | Self::Auto => file_type::MOSTLY_F16,
            Self::BF16 => file_type::MOSTLY_BF16,
            Self::Q8_0 => file_type::MOSTLY_Q8_0,
        }
    }
    /// Resolves `Auto` against the checkpoint's weights.
    pub fn resolve(self, ck: &Checkpoint) -> Self {
        if self != Self::Auto {
            return self;
        }
        let first = ck
            .get("model.embed_tokens.weight")
            .or_else(|| ck.tensors.values().next());
        match first.map(|t| t.dtype) {
            Some(Dtype::BF16) => Self::BF16,
            _ => Self::F16,
        }
    }
}

/// One GGUF tensor and how to produce it.
#[derive(Clone, Debug)]
pub struct PlannedTensor {
    pub info: TensorInfo,
    /// Checkpoint tensors concatenated along the outermost dimension (several for stacked experts).
    pub sources: Vec<String>,
    /// Reorder rows from HF's half-split rotary layout to llama.cpp's interleaved one, with
    /// this many heads.
    pub permute_heads: Option<usize>,
}

pub struct Plan {
    pub outtype: OutType,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<PlannedTensor>,
}

/// `rows'[2i + j] = rows[j * d/2 + i]` within each head of `d = n_rows / n_head` rows:
/// HF rotates (x[i], x[i + d/2]); llama.cpp rotates (x[2i], x[2i + 1]).
pub fn permuted_source_row(out_row: usize, n_rows: usize, n_head: usize) -> usize {
    let d = n_rows / n_head;
    let (head, o) = (out_row / d, out_row % d);
    head * d + (o % 2) * (d / 2) + o / 2
}

struct Mapper<'a> {
    ck: &'a Checkpoint,
    used: BTreeSet<String>,
    out: Vec<PlannedTensor>,
    weight_type: GgmlType,
}

impl Mapper<'_> {
    /// Checks that `name` exists with torch shape `shape`, marks it used.
    fn expect(&mut self, name: &str, shape: &[usize]) -> Result<()> {
        let t = self
            .ck
            .get(name)
            .with_context(|| format!("{}: missing tensor {name}", self.ck.dir.display()))?;
        ensure!(
            t.shape == shape,
            "{}: tensor {name} has shape {:?} but config.json implies {:?}",
            self.ck.dir.display(),
            t.shape,
            shape
        );
        match t.dtype {
            Dtype::BF16 | Dtype::F16 | Dtype::F32 => {}
            other => bail!(
                "{}: tensor {name} has dtype {} (already quantized? expected BF16, F16 or F32)",
                self.ck.dir.display(),
                other.name()
            ),
        }
        self.used.insert(name.to_string());
        Ok(())
    }

    /// Adds a GGUF tensor from one or more (stacked) HF tensors of torch shape `shape`.
    fn add(
        &mut self,
        gguf: String,
        sources: Vec<String>,
        shape: &[usize],
        permute: Option<usize>,
    ) -> Result<()> {
        for s in &sources {
            self.expect(s, shape)?;
        }
        let mut dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if sources.len() > 1 {
            dims.push(sources.len() as u64);
        }
        let ty = if dims.len() == 1 || gguf.ends_with("ffn_gate_inp") {
            // Norms and the MoE router stay F32: they are tiny and precision-critical.
            GgmlType::F32
        } else if self.weight_type.row_bytes(dims[0]).is_err() {
            // Rows that are not whole blocks cannot be block-quantized; llama.cpp's converter
            // falls back to F16 the same way.
            GgmlType::F16
        } else {
            self.weight_type
        };
        self.out.push(PlannedTensor {
            info: TensorInfo {
                name: gguf,
                dims,
                ty,
            },
            sources,
            permute_heads: permute,
        });
        Ok(())
    }
}

pub fn plan(
    ck: &Checkpoint,
    cfg: &ModelConfig,
    vocab_kv: Vec<(String, Value)>,
    outtype: OutType,
    name: &str,
) -> Result<Plan> {
    let outtype = outtype.resolve(ck);
    let mut m = Mapper {
        ck,
        used: BTreeSet::new(),
        out: Vec::new(),
        weight_type: outtype.ggml(),
    };
    let (h, v, f) = (cfg.hidden, cfg.vocab_size, cfg.ffn);
    let emb = ck.get("model.embed_tokens.weight").with_context(|| {
        format!(
            "{}: missing tensor model.embed_tokens.weight",
            ck.dir.display()
        )
    })?;
    ensure!(
        emb.shape.first() == Some(&v),
        "{}: config.json vocab_size is {v} but model.embed_tokens.weight has {} rows",
        ck.dir.display(),
        emb.shape.first().copied().unwrap_or(0)
    );
    m.add(
        "token_embd.weight".into(),
        vec!["model.embed_tokens.weight".into()],
        &[v, h],
        None,
    )?;
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        let b = format!("blk.{i}");
        m.add(
            format!("{b}.attn_norm.weight"),
            vec![format!("{p}.input_layernorm.weight")],
            &[h],
            None,
        )?;
        m.add(
            format!("{b}.attn_q.weight"),
            vec![format!("{p}.self_attn.q_proj.weight")],
            &[cfg.q_rows(), h],
            Some(cfg.n_head),
        )?;
        m.add(
            format!("{b}.attn_k.weight"),
            vec![format!("{p}.self_attn.k_proj.weight")],
            &[cfg.kv_rows(), h],
            Some(cfg.n_head_kv),
        )?;
        m.add(
            format!("{b}.attn_v.weight"),
            vec![format!("{p}.self_attn.v_proj.weight")],
            &[cfg.kv_rows(), h],
            None,
        )?;
        m.add(
            format!("{b}.attn_output.weight"),
            vec![format!("{p}.self_attn.o_proj.weight")],
            &[h, cfg.q_rows()],
            None,
        )?;
        m.add(
            format!("{b}.ffn_norm.weight"),
            vec![format!("{p}.post_attention_layernorm.weight")],
            &[h],
            None,
        )?;
        match cfg.arch {
            Arch::Llama => {
                m.add(
                    format!("{b}.ffn_gate.weight"),
                    vec![format!("{p}.mlp.gate_proj.weight")],
                    &[f, h],
                    None,
                )?;
                m.add(
                    format!("{b}.ffn_up.weight"),
                    vec![format!("{p}.mlp.up_proj.weight")],
                    &[f, h],
                    None,
                )?;
                m.add(
                    format!("{b}.ffn_down.weight"),
                    vec![format!("{p}.mlp.down_proj.weight")],
                    &[h, f],
                    None,
                )?;
            }
            Arch::Mixtral => {
                let n = cfg.n_expert;
                m.add(
                    format!("{b}.ffn_gate_inp.weight"),
                    vec![format!("{p}.block_sparse_moe.gate.weight")],
                    &[n, h],
                    None,
                )?;
                let experts = |w: &str| {
                    (0..n)
                        .map(|e| format!("{p}.block_sparse_moe.experts.{e}.{w}.weight"))
                        .collect()
                };
                m.add(
                    format!("{b}.ffn_gate_exps.weight"),
                    experts("w1"),
                    &[f, h],
                    None,
                )?;
                m.add(
                    format!("{b}.ffn_down_exps.weight"),
                    experts("w2"),
                    &[h, f],
                    None,
                )?;
                m.add(
                    format!("{b}.ffn_up_exps.weight"),
                    experts("w3"),
                    &[f, h],
                    None,
                )?;
            }
        }
    }
    m.add(
        "output_norm.weight".into(),
        vec!["model.norm.weight".into()],
        &[h],
        None,
    )?;
    if ck.get("lm_head.weight").is_some() {
        m.add(
            "output.weight".into(),
            vec!["lm_head.weight".into()],
            &[v, h],
            None,
        )?;
    } else if !cfg.tie_embeddings {
        bail!(
            "{}: missing tensor lm_head.weight (config.json says the embeddings are not tied)",
            ck.dir.display()
        );
    }
    // Anything left over means a model we do not understand; refusing beats silently dropping.
    let unused: Vec<&String> = ck
        .tensors
        .keys()
        .filter(|k| !m.used.contains(*k) && !k.ends_with("rotary_emb.inv_freq"))
        .collect();
    if let Some(first) = unused.first() {
        bail!(
            "{}: unexpected tensor {first} ({} not used in all): config.json and the weights disagree",
            ck.dir.display(),
            unused.len()
        );
    }

    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name.into())),
        ("general.file_type".into(), Value::U32(outtype.file_type())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("llama.block_count".into(), Value::U32(cfg.n_layer as u32)),
        (
            "llama.context_length".into(),
            Value::U32(cfg.max_pos as u32),
        ),
        ("llama.embedding_length".into(), Value::U32(h as u32)),
        ("llama.feed_forward_length".into(), Value::U32(f as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(cfg.n_head as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(cfg.n_head_kv as u32),
        ),
        (
            "llama.rope.freq_base".into(),
            Value::F32(cfg.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_eps as f32),
        ),
        (
            "llama.rope.dimension_count".into(),
            Value::U32(cfg.head_dim as u32),
        ),
        ("llama.vocab_size".into(), Value::U32(v as u32)),
    ];
    if cfg.head_dim_explicit {
        kv.push((
            "llama.attention.key_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
        kv.push((
            "llama.attention.value_length".into(),
            Value::U32(cfg.head_dim as u32),
        ));
    }
    if cfg.arch == Arch::Mixtral {
        kv.push(("llama.expert_count".into(), Value::U32(cfg.n_expert as u32)));
        kv.push((
            "llama.expert_used_count".into(),
            Value::U32(cfg.n_expert_used as u32),
        ));
    }
    kv.extend(vocab_kv);
    Ok(Plan {
        outtype,
        kv,
        tensors: m.out,
    })
}

//! Which ggml type each tensor gets: llama-quantize's file types ("mixes") and its per-tensor
//! rules, for the llama architecture (dense and Mixtral-style MoE alike), ported from
//! `llama_tensor_get_type` / `llama_tensor_get_type_impl` in llama.cpp's `src/llama-quant.cpp`
//! (the version llama-cpp-sys-2 0.1.161 vendors). formats/quantize-mixes.md says the same in
//! prose. The i-quant, ternary and MXFP4 file types are not offered (we have no encoders for
//! them), so their branches are left out; everything else follows the C++ branch for branch.

use crate::gguf::{GgmlType, Value};
use anyhow::{Context, Result, bail, ensure};
use std::cmp::Ordering;

/// llama.cpp's `llama_ftype` values that `quantize` writes (general.file_type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ftype {
    AllF32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
    Q2KS,
    BF16,
}

/// llama-quantize's names, in its help order, with the file type each selects. `Q3_K`, `Q4_K`
/// and `Q5_K` are its aliases for the `_M` mixes.
pub const FTYPE_NAMES: &[(&str, Ftype)] = &[
    ("Q4_0", Ftype::Q4_0),
    ("Q4_1", Ftype::Q4_1),
    ("Q5_0", Ftype::Q5_0),
    ("Q5_1", Ftype::Q5_1),
    ("Q2_K", Ftype::Q2K),
    ("Q2_K_S", Ftype::Q2KS),
    ("Q3_K", Ftype::Q3KM),
    ("Q3_K_S", Ftype::Q3KS),
    ("Q3_K_M", Ftype::Q3KM),
    ("Q3_K_L", Ftype::Q3KL),
    ("Q4_K", Ftype::Q4KM),
    ("Q4_K_S", Ftype::Q4KS),
    ("Q4_K_M", Ftype::Q4KM),
    ("Q5_K", Ftype::Q5KM),
    ("Q5_K_S", Ftype::Q5KS),
    ("Q5_K_M", Ftype::Q5KM),
    ("Q6_K", Ftype::Q6K),
    ("Q8_0", Ftype::Q8_0),
    ("F16", Ftype::F16),
    ("BF16", Ftype::BF16),
    ("F32", Ftype::AllF32),
];

impl Ftype {
    /// Every file type we write, each once.
    pub const ALL: &[Ftype] = &[
        Ftype::AllF32,
        Ftype::F16,
        Ftype::Q4_0,
        Ftype::Q4_1,
        Ftype::Q8_0,
        Ftype::Q5_0,
        Ftype::Q5_1,
        Ftype::Q2K,
        Ftype::Q3KS,
        Ftype::Q3KM,
        Ftype::Q3KL,
        Ftype::Q4KS,
        Ftype::Q4KM,
        Ftype::Q5KS,
        Ftype::Q5KM,
        Ftype::Q6K,
        Ftype::Q2KS,
        Ftype::BF16,
    ];

    /// A llama-quantize type name (any case, aliases included) or its ftype number.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some((_, f)) = FTYPE_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
        {
            return Ok(*f);
        }
        if let Ok(id) = s.trim().parse::<u32>()
            && let Some(f) = Self::ALL.iter().find(|f| f.id() == id)
        {
            return Ok(*f);
        }
        let names: Vec<&str> = FTYPE_NAMES.iter().map(|(n, _)| *n).collect();
        bail!(
            "unknown quantization type {s:?} (expected one of {})",
            names.join(", ")
        )
    }

    /// The `llama_ftype` number, written as general.file_type.
    pub fn id(self) -> u32 {
        match self {
            Ftype::AllF32 => 0,
            Ftype::F16 => 1,
            Ftype::Q4_0 => 2,
            Ftype::Q4_1 => 3,
            Ftype::Q8_0 => 7,
            Ftype::Q5_0 => 8,
            Ftype::Q5_1 => 9,
            Ftype::Q2K => 10,
            Ftype::Q3KS => 11,
            Ftype::Q3KM => 12,
            Ftype::Q3KL => 13,
            Ftype::Q4KS => 14,
            Ftype::Q4KM => 15,
            Ftype::Q5KS => 16,
            Ftype::Q5KM => 17,
            Ftype::Q6K => 18,
            Ftype::Q2KS => 21,
            Ftype::BF16 => 32,
        }
    }

    /// The canonical name (no aliases).
    pub fn name(self) -> &'static str {
        match self {
            Ftype::AllF32 => "F32",
            Ftype::F16 => "F16",
            Ftype::Q4_0 => "Q4_0",
            Ftype::Q4_1 => "Q4_1",
            Ftype::Q8_0 => "Q8_0",
            Ftype::Q5_0 => "Q5_0",
            Ftype::Q5_1 => "Q5_1",
            Ftype::Q2K => "Q2_K",
            Ftype::Q3KS => "Q3_K_S",
            Ftype::Q3KM => "Q3_K_M",
            Ftype::Q3KL => "Q3_K_L",
            Ftype::Q4KS => "Q4_K_S",
            Ftype::Q4KM => "Q4_K_M",
            Ftype::Q5KS => "Q5_K_S",
            Ftype::Q5KM => "Q5_K_M",
            Ftype::Q6K => "Q6_K",
            Ftype::Q2KS => "Q2_K_S",
            Ftype::BF16 => "BF16",
        }
    }

    /// `llama_ftype_get_default_type`: the type of every quantizable tensor before the rules.
    pub fn default_type(self) -> GgmlType {
        match self {
            Ftype::AllF32 => GgmlType::F32,
            Ftype::F16 => GgmlType::F16,
            Ftype::BF16 => GgmlType::BF16,
            Ftype::Q4_0 => GgmlType::Q4_0,
            Ftype::Q4_1 => GgmlType::Q4_1,
            Ftype::Q5_0 => GgmlType::Q5_0,
            Ftype::Q5_1 => GgmlType::Q5_1,
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q2K | Ftype::Q2KS => GgmlType::Q2K,
            Ftype::Q3KS | Ftype::Q3KM | Ftype::Q3KL => GgmlType::Q3K,
            Ftype::Q4KS | Ftype::Q4KM => GgmlType::Q4K,
            Ftype::Q5KS | Ftype::Q5KM => GgmlType::Q5K,
            Ftype::Q6K => GgmlType::Q6K,
        }
    }
}

/// `ggml_is_quantized`: a block type (as opposed to F32/F16/BF16 and the integer types).
pub fn is_quantized(t: GgmlType) -> bool {
    t.block().0 > 1
}

/// The types `quantize` can write (ours encode them byte-identically with ggml).
pub const WRITABLE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// A ggml type name as `ggml_type_name` spells it (`q4_K`, `bf16`, any case), for
/// --output-tensor-type, --token-embedding-type and --tensor-type.
pub fn parse_ggml_type(s: &str) -> Result<GgmlType> {
    let s = s.trim();
    if let Some(t) = WRITABLE.iter().find(|t| t.name().eq_ignore_ascii_case(s)) {
        return Ok(*t);
    }
    let names: Vec<String> = WRITABLE.iter().map(|t| t.name().to_lowercase()).collect();
    bail!(
        "unknown or unsupported tensor type {s:?} (expected one of {})",
        names.join(", ")
    )
}

/// What the rules need to know about the model (llama.cpp's hparams and model type).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub n_layer: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// 0 for a dense model.
    pub n_expert: u32,
    /// llama.cpp's LLM_TYPE_70B: 80 layers with grouped-query attention (and not 8 experts).
    pub is_70b: bool,
}

impl ModelInfo {
    /// From a llama-architecture GGUF's metadata.
    pub fn from_kv(kv: &[(String, Value)]) -> Result<Self> {
        let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        let arch = get("general.architecture")
            .and_then(Value::as_str)
            .context("no general.architecture")?;
        ensure!(
            arch == "llama",
            "architecture {arch:?} is not supported (quantize writes llama-architecture files)"
        );
        // A per-layer array gives the first layer's value, as llama.cpp's n_head() does.
        let num = |k: &str| -> Option<u64> {
            match get(k)? {
                Value::ArrU32(a) => a.first().map(|&v| v as u64),
                Value::ArrI32(a) => a.first().and_then(|&v| u64::try_from(v).ok()),
                v => v.as_u64(),
            }
        };
        let n_layer = num("llama.block_count").context("no llama.block_count")? as u32;
        let n_head = num("llama.attention.head_count").unwrap_or(0) as u32;
        let n_head_kv = num("llama.attention.head_count_kv").unwrap_or(n_head as u64) as u32;
        let n_expert = num("llama.expert_count").unwrap_or(0) as u32;
        Ok(Self::new(n_layer, n_head, n_head_kv, n_expert))
    }

    pub fn new(n_layer: u32, n_head: u32, n_head_kv: u32, n_expert: u32) -> Self {
        Self {
            n_layer,
            n_head,
            n_head_kv,
            n_expert,
            is_70b: n_expert != 8 && n_layer == 80 && n_head != n_head_kv,
        }
    }

    /// `n_head / n_head_kv` (integer), 0 without kv heads.
    pub fn n_gqa(&self) -> u32 {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }
}

/// The user's choices: the file type and llama-quantize's per-tensor options.
#[derive(Clone, Debug)]
pub struct MixParams {
    pub ftype: Ftype,
    /// --pure: the default type everywhere (shape fallbacks still apply).
    pub pure: bool,
    pub output_tensor_type: Option<GgmlType>,
    pub token_embedding_type: Option<GgmlType>,
    /// --tensor-type PATTERN=TYPE, first match wins (patterns lowercased, regex search).
    pub tensor_types: Vec<(regex::Regex, GgmlType)>,
    /// An importance matrix is given (changes Q4_0/Q5_0's first ffn_down layers).
    pub has_imatrix: bool,
}

impl MixParams {
    pub fn new(ftype: Ftype) -> Self {
        Self {
            ftype,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            has_imatrix: false,
        }
    }

    /// Parses one --tensor-type `PATTERN=TYPE` (llama-quantize lowercases the pattern).
    pub fn add_tensor_type(&mut self, arg: &str) -> Result<()> {
        let (pat, ty) = arg
            .split_once('=')
            .with_context(|| format!("--tensor-type {arg:?}: expected PATTERN=TYPE"))?;
        ensure!(
            !pat.is_empty(),
            "--tensor-type {arg:?}: missing tensor name"
        );
        ensure!(!ty.is_empty(), "--tensor-type {arg:?}: missing type");
        let re = regex::Regex::new(&pat.to_lowercase())
            .with_context(|| format!("--tensor-type {arg:?}: bad pattern"))?;
        let ty = parse_ggml_type(ty).with_context(|| format!("--tensor-type {arg:?}"))?;
        self.tensor_types.push((re, ty));
        Ok(())
    }
}

/// The broad kind of a tensor, from its name (llama.cpp's `tensor_get_category`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    TokenEmbd,
    AttnQ,
    AttnV,
    AttnK,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

pub fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        return Output;
    }
    if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        return TokenEmbd;
    }
    // Substring tests in llama.cpp's order: the first that matches decides.
    const ORDER: &[(&str, Category)] = &[
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    ORDER
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Other, |&(_, c)| c)
}

fn is_attn_v_like(c: Category) -> bool {
    matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB)
}

/// Name pieces of tensors llama.cpp never quantizes although they are 2-D weights (routers,
/// other architectures' small tables); only the first two can occur in our files.
const NEVER_QUANTIZED: &[&str] = &[
    "_norm.weight",
    "ffn_gate_inp.weight",
    "ffn_gate_tid2eid.weight",
    "altup",
    "laurel",
    "per_layer_model_proj",
    "ssm_conv1d",
    "shortconv.conv.weight",
    "indexer.k_proj.weight",
    "indexer.q_proj.weight",
    "time_mix_first.weight",
    "time_mix_w0.weight",
    "time_mix_w1.weight",
    "time_mix_w2.weight",
    "time_mix_v0.weight",
    "time_mix_v1.weight",
    "time_mix_v2.weight",
    "time_mix_a0.weight",
    "time_mix_a1.weight",
    "time_mix_a2.weight",
    "time_mix_g1.weight",
    "time_mix_g2.weight",
    "time_mix_decay_w1.weight",
    "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight",
    "attn_rel_b.weight",
    ".position_embd",
    "sam.pos_embd",
    "sam.neck.",
    "sam.net_",
    ".rel_pos",
    ".patch_embd",
    ".patch_merger",
    "a.rvq.codebook",
    "mm.a.code_embd",
];

/// `ggml_n_dims`: the dimension count without trailing 1s (at least 1).
pub fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map_or(1, |i| i + 1)
}

/// `tensor_allows_quantization` (llama arch): 2-D and 3-D weights except norms and routers.
pub fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && !NEVER_QUANTIZED.iter().any(|s| name.contains(s))
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The layer number of a `blk.N.` name, as C's `sscanf(name, "blk.%d.")` reads it.
pub fn layer_of(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (sign, digits) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, rest),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    digits[..n].parse::<i64>().ok().map(|v| sign * v)
}

/// llama.cpp's tensor order when it writes a quantized file (`weight_name_comparer`): tensors
/// outside the blocks first, then block by block, by name (bytewise) within each.
pub fn llama_order(a: &str, b: &str) -> Ordering {
    let (la, lb) = (layer_of(a).unwrap_or(-1), layer_of(b).unwrap_or(-1));
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// One tensor as the rules see it.
#[derive(Clone, Debug)]
pub struct TensorDesc {
    pub name: String,
    /// ggml order: row length first.
    pub dims: Vec<u64>,
    /// The type it is stored in now.
    pub ty: GgmlType,
}

/// The type chosen for one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub ty: GgmlType,
    /// The mix asked for a block type whose blocks do not fit the rows, so a smaller-block
    /// type (or F16) was used instead.
    pub fallback: bool,
    /// The tensor may be quantized at all (2-D/3-D weight, not a norm or the router).
    pub quantizable: bool,
    /// llama.cpp refuses to write it without an importance matrix (Q2_K in a Q2_K_S file).
    pub requires_imatrix: bool,
}

/// llama.cpp's `quantize_state_impl` counters.
struct State<'a> {
    model: &'a ModelInfo,
    params: &'a MixParams,
    n_attention_wv: i64,
    n_ffn_down: i64,
    n_ffn_gate: i64,
    n_ffn_up: i64,
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
    has_tied_embeddings: bool,
}

/// More bits for the first and last eighth of the layers and every third layer in between.
pub fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

impl State<'_> {
    /// `layer_info`: for MoE models the layer comes from the name, otherwise the counter.
    fn layer_info(&self, counter: i64, n: i64, name: &str) -> Result<(i64, i64)> {
        if self.model.n_expert.max(1) > 1 {
            let i = layer_of(name)
                .with_context(|| format!("failed to determine the layer of tensor {name}"))?;
            ensure!(
                (0..n).contains(&i),
                "bad layer {i} for tensor {name}: must be in [0, {n})"
            );
            return Ok((i, n));
        }
        Ok((counter, n))
    }

    /// `llama_tensor_get_type_impl`, llama arch, the file types we offer.
    fn mix_type(
        &mut self,
        mut t: GgmlType,
        name: &str,
        ne0: u64,
        cat: Category,
    ) -> Result<GgmlType> {
        use Ftype as F;
        use GgmlType as G;
        let ftype = self.params.ftype;
        let n_expert = self.model.n_expert;
        if cat == Category::Output || (self.has_tied_embeddings && cat == Category::TokenEmbd) {
            if let Some(o) = self.params.output_tensor_type {
                t = o;
            } else if !ne0.is_multiple_of(t.block().0 as u64) {
                t = G::Q8_0;
            } else if t != G::Q8_0 {
                t = G::Q6K;
            }
        } else if cat == Category::TokenEmbd {
            if let Some(e) = self.params.token_embedding_type {
                t = e;
            }
        } else if is_attn_v_like(cat) {
            let gqa = self.model.n_gqa();
            match ftype {
                F::Q2K => t = if gqa >= 4 { G::Q4K } else { G::Q3K },
                F::Q2KS if gqa >= 4 => t = G::Q4K,
                F::Q3KM => {
                    t = if self.i_attention_wv < 2 {
                        G::Q5K
                    } else {
                        G::Q4K
                    }
                }
                F::Q3KL => t = G::Q5K,
                F::Q4KM | F::Q5KM if use_more_bits(self.i_attention_wv, self.n_attention_wv) => {
                    t = G::Q6K
                }
                F::Q4KS if self.i_attention_wv < 4 => t = G::Q5K,
                _ => {}
            }
            if self.model.is_70b && (t == G::Q3K || t == G::Q4K) {
                t = G::Q5K;
            }
            if n_expert == 8 {
                t = G::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if n_expert == 8 {
                t = G::Q8_0;
            }
        } else if cat == Category::AttnQ {
            // Only i-quant file types change attn_q.
        } else if cat == Category::FfnDown {
            let (i, n) = self.layer_info(self.i_ffn_down, self.n_ffn_down, name)?;
            match ftype {
                F::Q2K => t = G::Q3K,
                F::Q2KS if i < n / 8 => t = G::Q4K,
                // llama.cpp: Q3_K only for Falcon's in-between layers.
                F::Q3KM => t = if i < n / 16 { G::Q5K } else { G::Q4K },
                F::Q3KL => t = G::Q5K,
                F::Q4KM if use_more_bits(i, n) => t = G::Q6K,
                F::Q5KM if use_more_bits(i, n) => t = G::Q6K,
                F::Q4KS if i < n / 8 => t = G::Q5K,
                // Tames the first ffn_down layers, only with an imatrix so that results without
                // one stay what they always were.
                F::Q4_0 if self.params.has_imatrix && i < n / 8 => t = G::Q4_1,
                F::Q5_0 if self.params.has_imatrix && i < n / 8 => t = G::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if n_expert == 8 {
                if matches!(ftype, F::Q2K | F::Q3KS | F::Q3KM | F::Q4KS | F::Q4KM) {
                    t = G::Q5K;
                }
            } else {
                match ftype {
                    F::Q2K => t = G::Q3K,
                    F::Q3KM => t = G::Q4K,
                    F::Q3KL => t = G::Q5K,
                    _ => {}
                }
            }
        } else if cat == Category::AttnQkv {
            match ftype {
                F::Q3KM | F::Q3KL => t = G::Q4K,
                F::Q4KM => t = G::Q5K,
                F::Q5KM => t = G::Q6K,
                _ => {}
            }
        } else if cat == Category::FfnGate {
            // Only i-quant file types change ffn_gate, but the layer check still applies.
            self.layer_info(self.i_ffn_gate, self.n_ffn_gate, name)?;
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.layer_info(self.i_ffn_up, self.n_ffn_up, name)?;
            self.i_ffn_up += 1;
        }
        Ok(t)
    }
}

/// `tensor_type_fallback`: a block type whose blocks do not divide the row length becomes a
/// smaller-block type, and F16 when even 32 does not divide it. Returns (type, fell back).
pub fn shape_fallback(ne0: u64, t: GgmlType) -> Result<(GgmlType, bool)> {
    use GgmlType as G;
    let blck = t.block().0 as u64;
    if ne0.is_multiple_of(blck) {
        return Ok((t, false));
    }
    let mut r = match t {
        G::Q2K | G::Q3K => G::Q4_0,
        G::Q4K => G::Q5_0,
        G::Q5K => G::Q5_1,
        G::Q6K => G::Q8_0,
        _ if blck <= 32 => t,
        _ => bail!("no tensor type fallback is defined for type {}", t.name()),
    };
    if !ne0.is_multiple_of(r.block().0 as u64) {
        r = G::F16;
    }
    Ok((r, true))
}

/// `tensor_requires_imatrix` for the types we write.
fn requires_imatrix(name: &str, t: GgmlType, ftype: Ftype) -> bool {
    let cat = category(name);
    cat != Category::TokenEmbd
        && cat != Category::Output
        && t == GgmlType::Q2K
        && ftype == Ftype::Q2KS
}

/// The type of every tensor, given in llama.cpp's order ([`llama_order`]): the per-tensor
/// counters that pick "more bits" layers count in that order.
pub fn choose_types(
    model: &ModelInfo,
    params: &MixParams,
    tensors: &[TensorDesc],
) -> Result<Vec<Choice>> {
    let mut st = State {
        model,
        params,
        n_attention_wv: 0,
        n_ffn_down: model.n_layer as i64,
        n_ffn_gate: model.n_layer as i64,
        n_ffn_up: model.n_layer as i64,
        i_attention_wv: 0,
        i_ffn_down: 0,
        i_ffn_gate: 0,
        i_ffn_up: 0,
        has_tied_embeddings: true,
    };
    for t in tensors {
        let c = category(&t.name);
        if is_attn_v_like(c) {
            st.n_attention_wv += 1;
        }
        if c == Category::Output {
            st.has_tied_embeddings = false;
        }
    }
    let default = params.ftype.default_type();
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        let name = t.name.as_str();
        let cat = category(name);
        let ne0 = t.dims.first().copied().unwrap_or(1);
        if !allows_quantization(name, &t.dims) {
            out.push(Choice {
                ty: t.ty,
                fallback: false,
                quantizable: false,
                requires_imatrix: false,
            });
            continue;
        }
        let mut fallback = false;
        let ty = if let (Some(e), Category::TokenEmbd) = (params.token_embedding_type, cat) {
            e
        } else if let (Some(o), Category::Output) = (params.output_tensor_type, cat) {
            o
        } else if is_quantized(default) {
            let manual = params
                .tensor_types
                .iter()
                .find(|(re, _)| re.is_match(name))
                .map(|&(_, ty)| ty);
            let mut ty = manual.unwrap_or(default);
            if manual.is_none() && !params.pure {
                ty = st
                    .mix_type(ty, name, ne0, cat)
                    .with_context(|| format!("tensor {name}"))?;
            }
            let (f, fell) = shape_fallback(ne0, ty).with_context(|| format!("tensor {name}"))?;
            fallback = fell;
            f
        } else {
            default
        };
        out.push(Choice {
            ty,
            fallback,
            quantizable: true,
            requires_imatrix: requires_imatrix(name, ty, params.ftype),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftype_names_and_ids() {
        assert_eq!(Ftype::parse("q4_k_m").unwrap(), Ftype::Q4KM);
        assert_eq!(Ftype::parse("Q4_K").unwrap(), Ftype::Q4KM);
        assert_eq!(Ftype::parse("Q3_K").unwrap(), Ftype::Q3KM);
        assert_eq!(Ftype::parse("15").unwrap(), Ftype::Q4KM);
        assert_eq!(Ftype::parse("7").unwrap(), Ftype::Q8_0);
        assert!(Ftype::parse("Q9_K").is_err());
        assert!(Ftype::parse("IQ2_XS").is_err());
        for f in Ftype::ALL {
            assert_eq!(Ftype::parse(f.name()).unwrap(), *f);
        }
        assert_eq!(parse_ggml_type("q6_k").unwrap(), GgmlType::Q6K);
        assert!(parse_ggml_type("iq4_nl").is_err());
    }

    #[test]
    fn order_and_layers() {
        assert_eq!(layer_of("blk.10.attn_k.weight"), Some(10));
        assert_eq!(layer_of("output.weight"), None);
        let mut v = vec![
            "blk.10.attn_k.weight",
            "token_embd.weight",
            "blk.2.ffn_up.weight",
            "blk.2.attn_v.weight",
            "output.weight",
            "output_norm.weight",
        ];
        v.sort_by(|a, b| llama_order(a, b));
        assert_eq!(
            v,
            [
                "output.weight",
                "output_norm.weight",
                "token_embd.weight",
                "blk.2.attn_v.weight",
                "blk.2.ffn_up.weight",
                "blk.10.attn_k.weight"
            ]
        );
        assert_eq!(n_dims(&[64, 1, 1]), 1);
        assert_eq!(n_dims(&[64, 8, 1]), 2);
    }
}

//! Where the weights come from: a Hugging Face safetensors checkpoint or a GGUF file, both
//! memory-mapped. Each gives typed views ([`Mat`]) of the stored data by logical name; nothing
//! is converted to f32 up front.
//!
//! Both sources present Q and K in Hugging Face's row order: GGUF's rows, permuted for
//! llama.cpp's interleaved rotary embedding, are un-permuted as they are read.

use super::config::Config;
use super::intweights::{self, IntKind};
use super::mat::Mat;
use super::names::Name;
use crate::gguf::{GgmlType, GgufFile};
use crate::hf::{Checkpoint, Dtype, ModelConfig};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::path::Path;

pub trait Weights: Send + Sync {
    fn config(&self) -> &Config;
    /// The weight called `name` (1-D tensors as one row), rows in Hugging Face's order.
    fn mat(&self, name: Name) -> Result<Mat<'_>>;
    /// Whether the source holds `name` (the untied `output` may be absent).
    fn has(&self, name: Name) -> bool;
    /// A short description for messages ("GGUF model.gguf", "checkpoint dir").
    fn describe(&self) -> String;
}

/// Opens a GGUF file, or a checkpoint directory (config.json + safetensors).
pub fn open(path: &Path) -> Result<Box<dyn Weights>> {
    if path.is_dir() {
        Ok(Box::new(HfWeights::open(path)?))
    } else {
        Ok(Box::new(GgufWeights::open(path)?))
    }
}

/// `model.safetensors` or its shards, with config.json.
pub struct HfWeights {
    ck: Checkpoint,
    config: Config,
    /// Some: an integer checkpoint (its Linear weights are read through `intweights`).
    int: Option<IntKind>,
}

impl HfWeights {
    pub fn open(dir: &Path) -> Result<Self> {
        let config = Config::from_hf(&ModelConfig::load(dir)?);
        let ck = Checkpoint::open(dir)?;
        let int = intweights::kind(dir)?;
        if let Some(IntKind::Gptq(bits)) = int {
            intweights::check_gptq(&ck, bits)?;
        }
        // The reader advises sequential access (right for one conversion pass, and it lets the
        // kernel drop pages behind the reader); inference reads every weight once per token.
        for s in &ck.shards {
            let _ = s.map.advise(memmap2::Advice::Normal);
        }
        Ok(Self { ck, config, int })
    }
}

impl Weights for HfWeights {
    fn config(&self) -> &Config {
        &self.config
    }

    fn mat(&self, name: Name) -> Result<Mat<'_>> {
        let hf = name.hf();
        if let Some(kind) = self.int
            && self.ck.get(&hf).is_none_or(|t| t.dtype == Dtype::I8)
            && let Some(m) = intweights::mat(&self.ck, kind, &hf)?
        {
            return Ok(m);
        }
        let t = self
            .ck
            .get(&hf)
            .with_context(|| format!("{}: missing tensor {hf}", self.ck.dir.display()))?;
        let ty = match t.dtype {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            other => bail!("{hf}: dtype {} is not supported", other.name()),
        };
        let (rows, cols) = match t.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => bail!("{hf}: shape {:?} is not 1-D or 2-D", t.shape),
        };
        Mat::new(ty, rows, cols, self.ck.bytes(t)).with_context(|| hf.clone())
    }

    fn has(&self, name: Name) -> bool {
        let hf = name.hf();
        self.ck.get(&hf).is_some()
            || self.int.is_some() && {
                let base = hf.strip_suffix(".weight").unwrap_or(&hf);
                ["weight_packed", "qweight"]
                    .iter()
                    .any(|s| self.ck.get(&format!("{base}.{s}")).is_some())
            }
    }

    fn describe(&self) -> String {
        format!("checkpoint {}", self.ck.dir.display())
    }
}

/// A GGUF file as llmjp-convert writes it (formats/gguf.md).
pub struct GgufWeights {
    file: GgufFile,
    index: HashMap<String, usize>,
    config: Config,
}

impl GgufWeights {
    pub fn open(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config =
            Config::from_gguf(&file).with_context(|| format!("{}: metadata", path.display()))?;
        let index = file
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.info.name.clone(), i))
            .collect();
        Ok(Self {
            file,
            index,
            config,
        })
    }
}

impl Weights for GgufWeights {
    fn config(&self) -> &Config {
        &self.config
    }

    fn mat(&self, name: Name) -> Result<Mat<'_>> {
        let g = name.gguf();
        let t = self
            .index
            .get(&g)
            .map(|&i| &self.file.tensors[i])
            .with_context(|| format!("{}: missing tensor {g}", self.file.path.display()))?;
        let dims: Vec<usize> = t.info.dims.iter().map(|&d| d as usize).collect();
        // ggml dims are innermost first: dims[0] is the row length.
        let cols = dims[0];
        let rows = dims[1..].iter().product();
        let m = Mat::new(t.info.ty, rows, cols, self.file.data(t)).with_context(|| g.clone())?;
        let c = &self.config;
        match name {
            Name::AttnQ(_) => m.unpermuted(c.n_head),
            Name::AttnK(_) => m.unpermuted(c.n_head_kv),
            _ => match name.expert() {
                // Stacked experts {cols, n_ff, n_expert}: expert e's rows follow e-1's.
                Some(e) => {
                    ensure!(dims.len() == 3, "{g}: {} dims, expected 3", dims.len());
                    ensure!(e < dims[2], "{g}: no expert {e} (of {})", dims[2]);
                    m.slice_rows(e * dims[1], dims[1])
                }
                None => Ok(m),
            },
        }
    }

    fn has(&self, name: Name) -> bool {
        self.index.contains_key(&name.gguf())
    }

    fn describe(&self) -> String {
        format!("GGUF {}", self.file.path.display())
    }
}

/// Every weight the forward pass will use, with the (rows, cols) the config implies; the
/// model checks them all once, so the forward pass never meets a missing or misshapen tensor.
pub fn expected_shapes(c: &Config, tied: bool) -> Vec<(Name, usize, usize)> {
    let (h, f) = (c.hidden, c.ffn);
    let mut v = vec![(Name::TokenEmbd, c.vocab, h), (Name::OutputNorm, 1, h)];
    if !tied {
        v.push((Name::Output, c.vocab, h));
    }
    for l in 0..c.n_layer {
        v.extend([
            (Name::AttnNorm(l), 1, h),
            (Name::AttnQ(l), c.q_dim(), h),
            (Name::AttnK(l), c.kv_dim(), h),
            (Name::AttnV(l), c.kv_dim(), h),
            (Name::AttnOutput(l), h, c.q_dim()),
            (Name::FfnNorm(l), 1, h),
        ]);
        if c.is_moe() {
            v.push((Name::FfnGateInp(l), c.n_expert, h));
            for e in 0..c.n_expert {
                v.extend([
                    (Name::FfnGateExps(l, e), f, h),
                    (Name::FfnUpExps(l, e), f, h),
                    (Name::FfnDownExps(l, e), h, f),
                ]);
            }
        } else {
            v.extend([
                (Name::FfnGate(l), f, h),
                (Name::FfnUp(l), f, h),
                (Name::FfnDown(l), h, f),
            ]);
        }
    }
    v
}

/// Checks every weight against the config; returns whether the embeddings are tied (no
/// `output`, so the LM head is `token_embd`).
pub fn check(w: &dyn Weights) -> Result<bool> {
    let tied = !w.has(Name::Output);
    for (name, rows, cols) in expected_shapes(w.config(), tied) {
        let m = w.mat(name)?;
        ensure!(
            (m.rows, m.cols) == (rows, cols),
            "{}: {} is {}x{} but the config implies {rows}x{cols}",
            w.describe(),
            name.gguf(),
            m.rows,
            m.cols
        );
    }
    Ok(tied)
}

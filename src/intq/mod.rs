//! `quantize --type int4|int8`: a Hugging Face checkpoint to an integer checkpoint that
//! serving stacks load (formats/int-safetensors.md): compressed-tensors pack-quantized
//! (W4A16 / W8A16), compressed-tensors int-quantized (W8A8) or GPTQ v1.
//!
//! - [`pack`]: the integers of one weight and their three layouts.
//! - [`rtn`], [`mse`], [`gptq`]: the methods (round to nearest; clip search; GPTQ).
//! - [`calib`]: calibration text through our forward pass, collecting activation statistics.
//! - [`writer`]: the output directory, atomically.
//!
//! Embeddings, norms, the MoE router and lm_head are copied in the model's dtype.

pub mod calib;
pub mod eval;
pub mod gptq;
pub mod linalg;
pub mod mse;
pub mod pack;
pub mod rtn;
pub mod writer;

use crate::gguf::GgmlType;
use crate::hf::{Checkpoint, Dtype, ModelConfig};
use crate::model::kernels;
use anyhow::{Context, Result, bail, ensure};
use pack::QTensor;
use rayon::prelude::*;
use rtn::Spec;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Format {
    /// compressed-tensors pack-quantized (W4A16, W8A16).
    CompressedTensors,
    /// compressed-tensors int-quantized (W8A8: int8 weights per channel, int8 activations).
    IntQuantized,
    /// GPTQ v1.
    Gptq,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "compressed-tensors" | "pack-quantized" => Self::CompressedTensors,
            "int-quantized" | "w8a8" => Self::IntQuantized,
            "gptq" => Self::Gptq,
            _ => bail!("unknown --format {s:?} (compressed-tensors, int-quantized, gptq)"),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Method {
    Rtn,
    Mse,
    Gptq,
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "rtn" => Self::Rtn,
            "mse" => Self::Mse,
            "gptq" => Self::Gptq,
            _ => bail!("unknown --method {s:?} (rtn, mse, gptq)"),
        })
    }
}

/// Whether a `--type` names an integer type this module writes.
pub fn is_int_type(ty: &str) -> bool {
    matches!(ty.to_ascii_lowercase().as_str(), "int4" | "int8")
}

#[derive(Clone, Debug)]
pub struct Options {
    pub bits: u32,
    pub format: Format,
    pub method: Method,
    /// Columns per scale; None: one scale per row (channel-wise).
    pub group_size: Option<usize>,
    pub calib: calib::CalibOptions,
    pub force: bool,
    pub quiet: bool,
}

impl Options {
    /// Parses `--type`, `--format`, `--method`, `--group-size` (a number, or `channel` / -1).
    pub fn parse(
        ty: &str,
        format: Option<&str>,
        method: Option<&str>,
        group: Option<&str>,
    ) -> Result<Self> {
        let bits = match ty.to_ascii_lowercase().as_str() {
            "int4" => 4,
            "int8" => 8,
            _ => bail!("unknown integer type {ty:?} (int4, int8)"),
        };
        let format: Format = format.unwrap_or("compressed-tensors").parse()?;
        let method: Method = method.unwrap_or("rtn").parse()?;
        let group_size = match group {
            None if format == Format::IntQuantized => None,
            None => Some(128),
            Some("channel" | "-1") => None,
            Some(g) => match g.parse::<usize>() {
                Ok(g) if g >= 8 && g.is_multiple_of(8) => Some(g),
                _ => bail!("--group-size {g}: expected a multiple of 8, or channel"),
            },
        };
        ensure!(
            format != Format::IntQuantized || bits == 8,
            "--format int-quantized is int8 only (W8A8)"
        );
        ensure!(
            format != Format::IntQuantized || group_size.is_none(),
            "--format int-quantized is channel-wise (W8A8): drop --group-size"
        );
        Ok(Self {
            bits,
            format,
            method,
            group_size,
            calib: calib::CalibOptions::default(),
            force: false,
            quiet: false,
        })
    }

    /// Columns per scale for a row of `cols`.
    pub fn group_for(&self, cols: usize) -> usize {
        self.group_size.unwrap_or(cols)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub output: PathBuf,
    pub bits: u32,
    pub format: Format,
    pub method: Method,
    pub group_size: Option<usize>,
    pub quantized_tensors: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// Whether an input tensor is a Linear weight we quantize: attention and MLP projections and
/// the experts; not embeddings, norms, the router or lm_head.
pub fn is_linear(name: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        ".self_attn.q_proj.weight",
        ".self_attn.k_proj.weight",
        ".self_attn.v_proj.weight",
        ".self_attn.o_proj.weight",
        ".mlp.gate_proj.weight",
        ".mlp.up_proj.weight",
        ".mlp.down_proj.weight",
        ".w1.weight",
        ".w2.weight",
        ".w3.weight",
    ];
    name.starts_with("model.layers.") && SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn ggml(dt: Dtype) -> Result<GgmlType> {
    Ok(match dt {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        other => bail!(
            "dtype {} cannot be quantized (expected BF16, F16 or F32)",
            other.name()
        ),
    })
}

/// The f32 values of a float weight (exact: every source dtype widens exactly).
pub fn load_f32(ck: &Checkpoint, name: &str) -> Result<(Vec<f32>, usize, usize, Dtype)> {
    let t = ck
        .get(name)
        .with_context(|| format!("missing tensor {name}"))?;
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let ty = ggml(t.dtype).with_context(|| name.to_string())?;
    let mut w = vec![0f32; rows * cols];
    let bytes = ck.bytes(t);
    let rb = bytes.len() / rows;
    w.par_chunks_exact_mut(cols).enumerate().for_each(|(r, o)| {
        kernels::dequant_row(ty, &bytes[r * rb..(r + 1) * rb], o);
    });
    ck.release(t);
    Ok((w, rows, cols, t.dtype))
}

/// The spec one weight is quantized to.
pub fn spec_for(opts: &Options, cols: usize, weight_dt: Dtype) -> Spec {
    Spec {
        bits: opts.bits,
        group: opts.group_for(cols),
        scale_dt: writer::scale_dtype(opts.format, weight_dt),
        weight_dt,
    }
}

/// Checks the input and the options against each other before anything is written.
fn check_input(input: &Path, ck: &Checkpoint, opts: &Options) -> Result<()> {
    let cfg_path = input.join("config.json");
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("{}: cannot read", cfg_path.display()))?,
    )
    .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
    if let Some(q) = j.get("quantization_config") {
        let m = q
            .get("quant_method")
            .and_then(|m| m.as_str())
            .unwrap_or("?");
        bail!(
            "{}: already quantized ({m}); quantize the original checkpoint",
            input.display()
        );
    }
    let mut n = 0;
    for (name, t) in &ck.tensors {
        if name.ends_with(".weight_packed") || name.ends_with(".qweight") {
            bail!("{}: already quantized ({name})", input.display());
        }
        if !is_linear(name) {
            continue;
        }
        n += 1;
        ensure!(t.shape.len() == 2, "{name}: shape {:?} is not 2-D", t.shape);
        ggml(t.dtype).with_context(|| format!("{}: {name}", input.display()))?;
        let (rows, cols) = (t.shape[0], t.shape[1]);
        match opts.group_size {
            Some(g) => ensure!(
                cols.is_multiple_of(g),
                "--group-size {g} does not divide the row length {cols} of {name}"
            ),
            None => ensure!(
                cols.is_multiple_of(32 / opts.bits as usize),
                "row length {cols} of {name} is not a multiple of {}",
                32 / opts.bits
            ),
        }
        ensure!(
            opts.format != Format::Gptq || (rows * opts.bits as usize).is_multiple_of(32),
            "{name}: {rows} output rows do not fill GPTQ's int32 zero-point words"
        );
    }
    ensure!(n > 0, "{}: no Linear weights to quantize", input.display());
    Ok(())
}

/// Copies the tokenizer and generation files; writes config.json with `quantization_config`.
fn write_meta(input: &Path, dir: &Path, cfg: &ModelConfig, opts: &Options) -> Result<()> {
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "chat_template.jinja",
    ] {
        let src = input.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f))
                .with_context(|| format!("{}: cannot copy", src.display()))?;
        }
    }
    if !input.join("generation_config.json").exists() {
        let g = serde_json::json!({
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": cfg.eos_token_id,
        });
        writer::write_json(&dir.join("generation_config.json"), &g)?;
    }
    let cfg_path = input.join("config.json");
    let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path)?)?;
    let q = writer::quantization_config(opts, cfg.n_expert > 0);
    j.as_object_mut()
        .context("config.json is not an object")?
        .insert("quantization_config".into(), q.clone());
    writer::write_json(&dir.join("config.json"), &j)?;
    if opts.format == Format::Gptq {
        writer::write_json(&dir.join("quantize_config.json"), &q)?;
    }
    Ok(())
}

/// Quantizes the checkpoint in `input` into the directory `output`.
pub fn quantize_dir(input: &Path, output: &Path, opts: &Options) -> Result<Report> {
    let t0 = Instant::now();
    let cfg = ModelConfig::load(input)?;
    let ck = Checkpoint::open(input)?;
    check_input(input, &ck, opts)?;
    if let (Ok(a), Ok(b)) = (output.canonicalize(), input.canonicalize()) {
        ensure!(
            a != b,
            "{}: output would overwrite the input",
            output.display()
        );
    }
    // Calibration first: its errors (a too-short file) must come before any output exists.
    let mut provider = prepare(input, &ck, opts)?;
    let tmp = writer::TempDir::create(output, opts.force)?;
    let bytes = writer::write_shards(&ck, &tmp.path, opts, &is_linear, &mut |name| provider(name))?;
    write_meta(input, &tmp.path, &cfg, opts)?;
    tmp.commit()?;
    Ok(Report {
        output: output.to_path_buf(),
        bits: opts.bits,
        format: opts.format,
        method: opts.method,
        group_size: opts.group_size,
        quantized_tensors: ck.tensors.keys().filter(|n| is_linear(n)).count(),
        bytes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

type Provider<'a> = Box<dyn FnMut(&str) -> Result<QTensor> + 'a>;

/// The per-weight quantizer of the chosen method (running calibration first where needed).
fn prepare<'a>(input: &Path, ck: &'a Checkpoint, opts: &'a Options) -> Result<Provider<'a>> {
    match opts.method {
        Method::Rtn => Ok(Box::new(move |name| {
            let (w, rows, cols, dt) = load_f32(ck, name)?;
            Ok(rtn::rtn(&spec_for(opts, cols, dt), &w, rows, cols))
        })),
        Method::Mse => {
            let stats = calib::column_stats(input, opts)?;
            Ok(Box::new(move |name| {
                let (w, rows, cols, dt) = load_f32(ck, name)?;
                let cw = stats.as_ref().and_then(|s| s.get(name)).map(|v| &v[..]);
                Ok(mse::mse(&spec_for(opts, cols, dt), &w, rows, cols, cw))
            }))
        }
        Method::Gptq => {
            let mut done = gptq::run(input, ck, opts)?;
            Ok(Box::new(move |name| {
                done.remove(name)
                    .with_context(|| format!("{name}: not quantized by the GPTQ pass"))
            }))
        }
    }
}

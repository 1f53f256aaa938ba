//! `verify`: runs the original checkpoint and a converted or quantized file on the same token
//! ids and decides, by thresholds per storage type, whether the conversion kept the model.
//!
//! - [`prompts`]: the built-in prompts and the prompts-file format.
//! - [`compare`]: one prompt through both models; [`compare::Stats`] holds the metrics.
//! - [`metrics`]: KL divergence, absolute error, argmax, common prefix.
//! - [`thresholds`]: the pass/fail limits per storage type.
//! - [`tokenizer`]: HF vs llama.cpp tokenizer parity, and what the difference costs.
//! - [`report`]: the report (text and JSON) and its checks.
//!
//! Order of work: open both models and check that they are the same architecture (before any
//! compute), hash the files, then the prompts, then the tokenizer section.

pub mod compare;
pub mod metrics;
pub mod prompts;
pub mod report;
pub mod thresholds;
pub mod tokenizer;

use crate::model::{Config, Device, Model, weights};
use crate::progress::Progress;
use crate::prompt::{PromptEncoder, TokenizerKind};
use anyhow::{Context, Result, bail};
use report::{Check, FileHash, PromptResult, Report, Source};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
pub use thresholds::Thresholds;

/// A prompt to verify on.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub name: String,
    pub text: String,
    /// Rendered through the model's chat template as a user turn.
    pub chat: bool,
}

impl Prompt {
    pub fn builtin() -> Vec<Prompt> {
        prompts::BUILTIN
            .iter()
            .map(|p| Prompt {
                name: p.name.into(),
                text: p.text.into(),
                chat: p.chat,
            })
            .collect()
    }
}

pub struct Options {
    pub prompts: Vec<Prompt>,
    /// Where the prompts came from, for the report.
    pub prompts_source: String,
    /// Greedy tokens generated per prompt.
    pub n_new: usize,
    /// (name, text) of the tokenizer-parity corpus.
    pub corpus: (String, String),
    /// Differing corpus lines on which the tokenizer mismatch's cost is measured.
    pub parity_cost_lines: usize,
    /// `NAME=VALUE` threshold overrides.
    pub threshold_overrides: Vec<String>,
    /// Limits for this storage type instead of the candidate's own.
    pub thresholds_for: Option<String>,
    /// sha256 every input file.
    pub hash: bool,
    pub quiet: bool,
    /// Where the candidate runs.
    pub device: Device,
    /// Where the reference runs (None: `device`).
    pub reference_device: Option<Device>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            prompts: Prompt::builtin(),
            prompts_source: "built-in".into(),
            n_new: 16,
            corpus: (
                "built-in sample".into(),
                tokenizer::BUILTIN_CORPUS.to_string(),
            ),
            parity_cost_lines: 6,
            threshold_overrides: Vec::new(),
            thresholds_for: None,
            hash: true,
            quiet: false,
            device: Device::Cpu,
            reference_device: None,
        }
    }
}

/// The input files of a model: the GGUF, or a checkpoint directory's config, tokenizer and
/// safetensors files.
fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("{}: cannot list", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.ends_with(".safetensors")
                        || n.ends_with(".safetensors.index.json")
                        || n == "config.json"
                        || n.starts_with("tokenizer")
                        || n == "special_tokens_map.json"
                        || n == "generation_config.json"
                })
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The storage type of the most weight elements (2-D weights only: norms stay f32 in every
/// format), lowercase (`f16`, `q8_0`, `q4_k`), and the element count per type.
fn storage(m: &Model) -> Result<(String, BTreeMap<String, u64>)> {
    let w = m.weights();
    let tied = !w.has(crate::model::Name::Output);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for (name, rows, cols) in weights::expected_shapes(m.config(), tied) {
        if rows > 1 {
            let t = w.mat(name)?.storage_name();
            *counts.entry(t).or_default() += (rows * cols) as u64;
        }
    }
    let top = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(t, _)| t.clone())
        .context("model has no weights")?;
    Ok((top, counts))
}

fn source(path: &Path, m: &Model, hash: bool) -> Result<Source> {
    let (storage, storage_elements) = storage(m)?;
    let mut files = Vec::new();
    for f in model_files(path)? {
        let bytes = std::fs::metadata(&f)
            .with_context(|| format!("{}: cannot stat", f.display()))?
            .len();
        let sha256 = if hash {
            Some(crate::output::sha256_file(&f)?)
        } else {
            None
        };
        files.push(FileHash {
            path: f.display().to_string(),
            bytes,
            sha256,
        });
    }
    Ok(Source {
        path: path.display().to_string(),
        format: if path.is_dir() { "checkpoint" } else { "gguf" }.into(),
        describe: m.weights().describe(),
        device: m.device_description(),
        storage,
        storage_elements,
        files,
    })
}

/// Refuses a candidate that is not the same model shape as the reference.
pub fn check_compatible(r: &Config, c: &Config) -> Result<()> {
    let fields: [(&str, usize, usize); 10] = [
        ("vocabulary size", r.vocab, c.vocab),
        ("layers", r.n_layer, c.n_layer),
        ("hidden size", r.hidden, c.hidden),
        ("attention heads", r.n_head, c.n_head),
        ("key/value heads", r.n_head_kv, c.n_head_kv),
        ("head dimension", r.head_dim, c.head_dim),
        ("feed-forward size", r.ffn, c.ffn),
        ("experts", r.n_expert, c.n_expert),
        ("experts used per token", r.n_expert_used, c.n_expert_used),
        (
            "architecture (0 dense, 1 MoE)",
            usize::from(r.is_moe()),
            usize::from(c.is_moe()),
        ),
    ];
    let diffs: Vec<String> = fields
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(n, a, b)| format!("{n} {b} (reference {a})"))
        .collect();
    if !diffs.is_empty() {
        bail!(
            "the candidate is not the reference's model: {}",
            diffs.join(", ")
        );
    }
    Ok(())
}

/// Hyperparameters that change the computation without changing any shape. A difference is
/// reported (and fails the `metadata` check) but does not stop the comparison.
fn metadata_diffs(r: &Config, c: &Config) -> Vec<String> {
    let mut v = Vec::new();
    if r.rms_eps != c.rms_eps {
        v.push(format!(
            "rms_eps {:e} (reference {:e})",
            c.rms_eps, r.rms_eps
        ));
    }
    if r.rope_theta != c.rope_theta {
        v.push(format!(
            "rope_theta {} (reference {})",
            c.rope_theta, r.rope_theta
        ));
    }
    if r.bos != c.bos {
        v.push(format!("bos {:?} (reference {:?})", c.bos, r.bos));
    }
    if r.eos != c.eos {
        v.push(format!("eos {:?} (reference {:?})", c.eos, r.eos));
    }
    v
}

pub fn verify(reference: &Path, candidate: &Path, opts: &Options) -> Result<Report> {
    let started = Instant::now();
    let rw = weights::open(reference).with_context(|| format!("{}", reference.display()))?;
    let cw = weights::open(candidate).with_context(|| format!("{}", candidate.display()))?;
    // Shapes first, so a wrong candidate is refused before any file is checked in depth.
    check_compatible(rw.config(), cw.config())?;
    let rdev = opts.reference_device.unwrap_or(opts.device);
    let mut rm = Model::new_on(rw, rdev).with_context(|| format!("{}", reference.display()))?;
    let mut cm =
        Model::new_on(cw, opts.device).with_context(|| format!("{}", candidate.display()))?;
    let enc = PromptEncoder::open(reference)
        .with_context(|| format!("{}: tokenizer", reference.display()))?;
    let cand_enc = PromptEncoder::open(candidate)
        .with_context(|| format!("{}: tokenizer", candidate.display()))?;

    let rsrc = source(reference, &rm, opts.hash)?;
    let csrc = source(candidate, &cm, opts.hash)?;
    // The same weights on two devices: only the arithmetic differs, so f32's strict limits.
    let same_weights = rm.device() != cm.device()
        && std::fs::canonicalize(reference).ok() == std::fs::canonicalize(candidate).ok();
    let default_th = if same_weights { "f32" } else { &csrc.storage };
    let mut th = Thresholds::for_type(opts.thresholds_for.as_deref().unwrap_or(default_th))?;
    for o in &opts.threshold_overrides {
        th.set(o)?;
    }

    // Ids: always the reference's HF tokenizer (the original's ids).
    let mut skipped = Vec::new();
    let mut work = Vec::new();
    for p in &opts.prompts {
        if p.chat && !enc.has_chat_template() {
            skipped.push(format!("{} (no chat template)", p.name));
            continue;
        }
        let ids = enc
            .encode(&p.text, p.chat, TokenizerKind::Hf)
            .with_context(|| format!("prompt {}", p.name))?;
        work.push((p, ids));
    }
    if work.is_empty() {
        bail!("no prompt to verify on");
    }

    let llama = cand_enc.llama();
    let n_cost = if llama.is_some() {
        opts.parity_cost_lines
    } else {
        0
    };
    let bar = Progress::items((work.len() + n_cost) as u64, "verify", opts.quiet);
    let eos = rm.config().eos;
    let mut prompts = Vec::new();
    let mut overall = compare::Stats::default();
    for (p, ids) in &work {
        bar.set_message(&p.name);
        let c = compare::compare(&mut rm, &mut cm, ids, opts.n_new, eos)
            .with_context(|| format!("prompt {}", p.name))?;
        overall.add(&c.stats);
        prompts.push(PromptResult {
            name: p.name.clone(),
            chat: p.chat,
            text: p.text.clone(),
            tokens: ids.len(),
            reference_continuation: enc
                .decode(&c.reference_tokens)
                .unwrap_or_else(|e| format!("<{e}>")),
            candidate_continuation: cand_enc
                .decode(&c.candidate_tokens)
                .or_else(|_| enc.decode(&c.candidate_tokens))
                .unwrap_or_else(|e| format!("<{e}>")),
            reference_tokens: c.reference_tokens,
            candidate_tokens: c.candidate_tokens,
            stats: c.stats,
        });
        bar.inc(1);
    }

    let tokenizer = match llama {
        Some(l) => {
            bar.set_message("tokenizer");
            let hf = enc.hf().context("the reference has no HF tokenizer")?;
            Some(tokenizer::report(
                &tokenizer::Inputs {
                    corpus_name: opts.corpus.0.clone(),
                    corpus: &opts.corpus.1,
                    reference_hf: hf,
                    llama: l,
                    embedded_hf: cand_enc.hf(),
                    cost_lines: n_cost,
                    n_new: opts.n_new,
                    eos,
                },
                &mut rm,
                &mut cm,
                || bar.inc(1),
            )?)
        }
        None => None,
    };
    bar.finish();

    let meta = metadata_diffs(rm.config(), cm.config());
    let mut checks = report::metric_checks(&th, &overall);
    checks.push(Check {
        name: "metadata".into(),
        value: meta.len() as f64,
        limit: 0.0,
        at_least: false,
        pass: meta.is_empty(),
        detail: meta.join("; "),
    });
    if let Some(t) = &tokenizer
        && let Some(same) = t.embedded_hf_identical
    {
        checks.push(Check {
            name: "embedded_hf_tokenizer".into(),
            value: if same { 0.0 } else { 1.0 },
            limit: 0.0,
            at_least: false,
            pass: same,
            detail: if same {
                String::new()
            } else {
                "the GGUF's tokenizer.huggingface.json gives other ids than the reference's \
                 tokenizer.json"
                    .into()
            },
        });
    }
    let pass = checks.iter().all(|c| c.pass);
    Ok(Report {
        tool: report::Tool::current(),
        reference: rsrc,
        candidate: csrc,
        config: rm.config().clone(),
        prompts_source: opts.prompts_source.clone(),
        new_tokens: opts.n_new,
        skipped_prompts: skipped,
        thresholds: th,
        prompts,
        overall,
        tokenizer,
        checks,
        pass,
        seconds: started.elapsed().as_secs_f64(),
    })
}

//! The verify report: everything measured, the limits used and the verdict, as text for a
//! person and as JSON to archive beside a release.

use super::compare::Stats;
use super::thresholds::Thresholds;
use super::tokenizer::TokenizerReport;
use crate::model::Config;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
    /// Versions of the libraries whose behaviour the numbers depend on.
    pub tokenizers_crate: &'static str,
    pub target: String,
    pub threads: usize,
}

impl Tool {
    pub fn current() -> Self {
        Self {
            name: env!("CARGO_PKG_NAME"),
            version: env!("CARGO_PKG_VERSION"),
            tokenizers_crate: "0.23",
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
            threads: rayon::current_num_threads(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FileHash {
    pub path: String,
    pub bytes: u64,
    /// None when hashing was turned off (--no-hash).
    pub sha256: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Source {
    pub path: String,
    /// "checkpoint" or "gguf".
    pub format: String,
    pub describe: String,
    /// Where its forward pass ran: "cpu", or the GPU and how its weights were held.
    pub device: String,
    /// The storage type of most weight elements (lowercase ggml/dtype name).
    pub storage: String,
    /// Weight elements per storage type (2-D weights).
    pub storage_elements: BTreeMap<String, u64>,
    pub files: Vec<FileHash>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PromptResult {
    pub name: String,
    pub chat: bool,
    pub text: String,
    /// Prompt length in ids.
    pub tokens: usize,
    #[serde(flatten)]
    pub stats: Stats,
    pub reference_tokens: Vec<u32>,
    /// Up to and including the first token that differs from the reference's.
    pub candidate_tokens: Vec<u32>,
    pub reference_continuation: String,
    pub candidate_continuation: String,
}

/// One pass/fail decision.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub value: f64,
    pub limit: f64,
    /// true: value must be >= limit; false: value must be <= limit.
    pub at_least: bool,
    pub pass: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub tool: Tool,
    pub reference: Source,
    pub candidate: Source,
    /// The reference's hyperparameters.
    pub config: Config,
    pub prompts_source: String,
    pub new_tokens: usize,
    pub skipped_prompts: Vec<String>,
    pub thresholds: Thresholds,
    pub prompts: Vec<PromptResult>,
    pub overall: Stats,
    pub tokenizer: Option<TokenizerReport>,
    pub checks: Vec<Check>,
    pub pass: bool,
    pub seconds: f64,
}

/// The metric checks that `th` asks for.
pub fn metric_checks(th: &Thresholds, s: &Stats) -> Vec<Check> {
    let mut v = Vec::new();
    let mut add = |name: &str, value: f64, limit: Option<f64>, at_least: bool| {
        if let Some(limit) = limit {
            let pass = if at_least {
                value >= limit
            } else {
                value <= limit
            };
            v.push(Check {
                name: name.into(),
                value,
                limit,
                at_least,
                // NaN never passes.
                pass: pass && !value.is_nan(),
                detail: String::new(),
            });
        }
    };
    add("max_abs_error", s.max_abs_error, th.max_abs_error, false);
    add("mean_kl", s.mean_kl, th.mean_kl, false);
    add("max_kl", s.max_kl, th.max_kl, false);
    add("top1_agreement", s.top1_agreement, th.top1_agreement, true);
    add(
        "greedy_agreement",
        s.greedy_agreement,
        th.greedy_agreement,
        true,
    );
    v
}

impl Report {
    /// The failed checks, for the error message.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.pass).collect()
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.at_least { ">=" } else { "<=" };
        write!(
            f,
            "{} {} (limit {op} {})",
            self.name,
            num(self.value),
            num(self.limit)
        )?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

fn num(x: f64) -> String {
    if x == 0.0 || (1e-3..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.3e}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "reference  {} ({}, {})",
            self.reference.path, self.reference.format, self.reference.storage
        )?;
        writeln!(
            f,
            "candidate  {} ({}, {})",
            self.candidate.path, self.candidate.format, self.candidate.storage
        )?;
        if self.reference.device != "cpu" || self.candidate.device != "cpu" {
            writeln!(
                f,
                "devices    reference {}; candidate {}",
                self.reference.device, self.candidate.device
            )?;
        }
        for file in &self.candidate.files {
            if let Some(h) = &file.sha256 {
                writeln!(f, "  sha256 {h}  {}", file.path)?;
            }
        }
        writeln!(
            f,
            "thresholds for {}; {} prompts ({}), {} greedy tokens each",
            self.thresholds.for_type,
            self.prompts.len(),
            self.prompts_source,
            self.new_tokens
        )?;
        for s in &self.skipped_prompts {
            writeln!(f, "  skipped {s}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<14} {:>5} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7}",
            "prompt", "pos", "max|dl|", "mean|dl|", "mean KL", "max KL", "top-1", "greedy"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &Stats| {
            writeln!(
                f,
                "{:<14} {:>5} {:>10.3e} {:>10.3e} {:>10.3e} {:>10.3e} {:>6.1}% {:>3}/{:<3}",
                name,
                s.positions,
                s.max_abs_error,
                s.mean_abs_error,
                s.mean_kl,
                s.max_kl,
                100.0 * s.top1_agreement,
                s.greedy_same,
                s.greedy_total
            )
        };
        for p in &self.prompts {
            row(f, &p.name, &p.stats)?;
        }
        row(f, "overall", &self.overall)?;
        if let Some(p) = self.prompts.first() {
            writeln!(f, "\n{}: {:?}", p.name, p.text)?;
            writeln!(f, "  reference -> {:?}", p.reference_continuation)?;
            writeln!(f, "  candidate -> {:?}", p.candidate_continuation)?;
        }
        if let Some(t) = &self.tokenizer {
            writeln!(
                f,
                "\ntokenizer parity on {} ({} lines): HF vs llama.cpp ids differ on {} lines \
                 ({:.1}%), {:.2}% of token positions; {} HF / {} llama.cpp tokens",
                t.corpus,
                t.lines,
                t.lines_differ,
                100.0 * t.line_share,
                100.0 * t.token_share,
                t.hf_tokens,
                t.llama_cpp_tokens
            )?;
            if let Some(same) = t.embedded_hf_identical {
                writeln!(
                    f,
                    "  embedded tokenizer.huggingface.json: {}",
                    if same {
                        "identical ids on every line"
                    } else {
                        "DIFFERENT ids"
                    }
                )?;
            }
            for e in t.examples.iter().take(2) {
                writeln!(f, "  line {}: {:?}", e.line, e.text)?;
                writeln!(f, "    HF        {}", e.hf.join(" "))?;
                writeln!(f, "    llama.cpp {}", e.llama_cpp.join(" "))?;
            }
            if let Some(c) = &t.cost {
                writeln!(
                    f,
                    "  cost over {} differing lines, next-token KL / top-1 / greedy ({} tokens):",
                    c.lines, c.new_tokens
                )?;
                for (label, x) in [
                    ("HF ids", &c.with_hf_ids),
                    ("llama.cpp ids", &c.with_llama_cpp_ids),
                ] {
                    writeln!(
                        f,
                        "    candidate on {label:<13} mean KL {:.3e}, max KL {:.3e}, top-1 {}/{}, \
                         greedy {}/{}",
                        x.mean_kl, x.max_kl, x.top1_same, c.lines, x.greedy_same, x.greedy_total
                    )?;
                }
            }
        }
        writeln!(f)?;
        for c in &self.checks {
            writeln!(f, "{} {c}", if c.pass { "ok  " } else { "FAIL" })?;
        }
        writeln!(
            f,
            "{} in {:.1}s",
            if self.pass { "PASS" } else { "FAIL" },
            self.seconds
        )
    }
}

/// Writes the report as pretty JSON through a temporary file.
pub fn write_json(r: &Report, path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let mut a = crate::output::AtomicFile::create(path)?;
    serde_json::to_writer_pretty(&mut *a.writer(), r)?;
    writeln!(a.writer())?;
    a.commit()?;
    Ok(())
}

//! The tokenizer part of a verify report: how often llama.cpp's tokenizer (our port of its SPM
//! merge, run over the candidate GGUF's vocabulary) splits text differently from the HF
//! tokenizer the model was trained with, and what that costs: the candidate fed llama.cpp's ids
//! against the candidate fed HF's ids, both compared with the reference on HF's ids.
//!
//! The built-in corpus (`sample.txt`) is 160 Japanese lines from JGLUE (JNLI and
//! JCommonsenseQA, CC BY-SA 4.0; see fixtures/corpus) and 20 English, mixed-script and code
//! lines written for this project.

use super::metrics::{argmax, common_prefix, kl_divergence};
use crate::model::Model;
use crate::tokenize::{HfTokenizer, LlamaSpmTokenizer, corpus_lines, hf_vs_llama};
use anyhow::{Context, Result};
use serde::Serialize;

pub const BUILTIN_CORPUS: &str = include_str!("sample.txt");

#[derive(Clone, Debug, Serialize)]
pub struct Example {
    /// 1-based line number in the corpus.
    pub line: usize,
    pub text: String,
    pub hf: Vec<String>,
    pub llama_cpp: Vec<String>,
}

/// The cost of feeding the candidate one tokenizer's ids, over the corpus lines measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Feed {
    /// Mean KL(reference on HF ids || candidate) of the next-token distribution after the line.
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Lines whose next-token argmax equals the reference's.
    pub top1_same: usize,
    /// Greedy tokens identical to the reference's before the first divergence, summed.
    pub greedy_same: usize,
    pub greedy_total: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    /// Corpus lines measured (the first ones whose ids differ).
    pub lines: usize,
    pub new_tokens: usize,
    pub with_hf_ids: Feed,
    pub with_llama_cpp_ids: Feed,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenizerReport {
    /// "built-in sample" or the --corpus path.
    pub corpus: String,
    /// The algorithm compared with HF: what llama.cpp runs for this GGUF.
    pub llama_cpp_tokenizer: String,
    pub lines: usize,
    pub lines_differ: usize,
    pub line_share: f64,
    /// 1 - LCS-aligned ids / max(len): share of token positions that differ.
    pub token_share: f64,
    pub hf_tokens: usize,
    pub llama_cpp_tokens: usize,
    /// Whether the GGUF's embedded tokenizer.json gives the reference's ids on every line
    /// (None: the GGUF has none).
    pub embedded_hf_identical: Option<bool>,
    pub examples: Vec<Example>,
    pub cost: Option<Cost>,
}

fn feed(f: &mut Feed, r: &[f32], r_toks: &[u32], c: &[f32], c_toks: &[u32]) {
    let kl = kl_divergence(r, c);
    f.mean_kl += kl;
    f.max_kl = f.max_kl.max(kl);
    f.top1_same += usize::from(argmax(r) == argmax(c));
    f.greedy_same += common_prefix(r_toks, c_toks);
    f.greedy_total += r_toks.len();
}

pub struct Inputs<'a> {
    pub corpus_name: String,
    pub corpus: &'a str,
    pub reference_hf: &'a HfTokenizer,
    pub llama: &'a LlamaSpmTokenizer,
    pub embedded_hf: Option<&'a HfTokenizer>,
    pub cost_lines: usize,
    pub n_new: usize,
    pub eos: Option<u32>,
}

pub fn report(
    inp: &Inputs,
    reference: &mut Model,
    candidate: &mut Model,
    mut progress: impl FnMut(),
) -> Result<TokenizerReport> {
    let lines = corpus_lines(inp.corpus);
    let p = hf_vs_llama(inp.reference_hf, inp.llama, &lines, usize::MAX)?;
    let embedded_hf_identical = match inp.embedded_hf {
        None => None,
        Some(e) => {
            let mut same = true;
            for l in &lines {
                same &= e.encode(l, true)? == inp.reference_hf.encode(l, true)?;
            }
            Some(same)
        }
    };
    let mut cost = None;
    if inp.cost_lines > 0 && !p.examples.is_empty() {
        let mut c = Cost {
            lines: 0,
            new_tokens: inp.n_new,
            with_hf_ids: Feed::default(),
            with_llama_cpp_ids: Feed::default(),
        };
        for d in p.examples.iter().take(inp.cost_lines) {
            let (r, r_toks) = reference
                .greedy_with_first_logits(&d.hf_ids, inp.n_new, inp.eos)
                .with_context(|| format!("corpus line {}", d.line + 1))?;
            let (ch, ch_toks) =
                candidate.greedy_with_first_logits(&d.hf_ids, inp.n_new, inp.eos)?;
            let (cl, cl_toks) =
                candidate.greedy_with_first_logits(&d.llama_ids, inp.n_new, inp.eos)?;
            feed(&mut c.with_hf_ids, &r, &r_toks, &ch, &ch_toks);
            feed(&mut c.with_llama_cpp_ids, &r, &r_toks, &cl, &cl_toks);
            c.lines += 1;
            progress();
        }
        for f in [&mut c.with_hf_ids, &mut c.with_llama_cpp_ids] {
            f.mean_kl /= c.lines as f64;
        }
        cost = Some(c);
    }
    Ok(TokenizerReport {
        corpus: inp.corpus_name.clone(),
        llama_cpp_tokenizer: "llama (SPM greedy merge by score, byte fallback): our port of \
                              llama.cpp's llm_tokenizer_spm"
            .into(),
        lines: p.lines,
        lines_differ: p.lines_differ,
        line_share: p.line_share(),
        token_share: p.token_share(),
        hf_tokens: p.hf_tokens,
        llama_cpp_tokens: p.llama_tokens,
        embedded_hf_identical,
        examples: p
            .examples
            .iter()
            .take(5)
            .map(|d| Example {
                line: d.line + 1,
                text: d.text.clone(),
                hf: d.hf_pieces.clone(),
                llama_cpp: d.llama_pieces.clone(),
            })
            .collect(),
        cost,
    })
}

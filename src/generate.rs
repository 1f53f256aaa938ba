//! `generate`: greedy decoding from any model the forward pass reads, so that a person can talk
//! to a converted file. Prompt ids come from [`crate::prompt::PromptEncoder`] (HF ids by
//! default, as transformers would make them); the continuation is printed as it is produced.

use crate::model::{Logits, Model, argmax};
use crate::prompt::{PromptEncoder, TokenizerKind};
use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

pub struct Request {
    pub prompt: String,
    pub chat: bool,
    pub max_new_tokens: usize,
    pub tokenizer: TokenizerKind,
    /// Print the prompt's and the generated ids to stderr.
    pub show_ids: bool,
    /// Where the forward pass runs.
    pub device: crate::model::Device,
}

/// Generates and writes the continuation to `out`; returns the new ids.
pub fn run(model_path: &Path, req: &Request, out: &mut impl Write) -> Result<Vec<u32>> {
    let enc = PromptEncoder::open(model_path)
        .with_context(|| format!("{}: tokenizer", model_path.display()))?;
    let mut model = Model::open_on(model_path, req.device)
        .with_context(|| format!("{}", model_path.display()))?;
    let ids = enc.encode(&req.prompt, req.chat, req.tokenizer)?;
    if req.show_ids {
        eprintln!("prompt ids ({}): {ids:?}", ids.len());
    }
    let eos = enc.eos_id().or(model.config().eos);
    let t0 = Instant::now();
    let mut new = Vec::new();
    let mut printed = String::new();
    let mut logits = if req.max_new_tokens > 0 {
        model.forward(&ids, Logits::Last)?
    } else {
        Vec::new()
    };
    let t_prompt = t0.elapsed().as_secs_f64();
    while new.len() < req.max_new_tokens {
        let t = argmax(&logits);
        if eos == Some(t) {
            break;
        }
        new.push(t);
        // Decode the whole continuation each step: a character may span several byte tokens.
        let text = enc.decode(&new)?;
        if text.len() > printed.len() && text.starts_with(&printed) && !text.ends_with('\u{fffd}') {
            out.write_all(&text.as_bytes()[printed.len()..])?;
            out.flush()?;
            printed = text;
        }
        if new.len() == req.max_new_tokens {
            break;
        }
        logits = model.forward(&[t], Logits::Last)?;
    }
    let text = enc.decode(&new)?;
    if text.len() > printed.len() && text.starts_with(&printed) {
        out.write_all(&text.as_bytes()[printed.len()..])?;
    }
    writeln!(out)?;
    let total = t0.elapsed().as_secs_f64();
    if req.show_ids {
        eprintln!("generated ids ({}): {new:?}", new.len());
    }
    eprintln!(
        "[{} prompt tokens in {:.2}s, {} new tokens in {:.2}s ({:.1} tok/s)]",
        ids.len(),
        t_prompt,
        new.len(),
        total - t_prompt,
        new.len() as f64 / (total - t_prompt).max(1e-9)
    );
    Ok(new)
}

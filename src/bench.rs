//! `bench`: forward-pass speed on the CPU or the GPU, through the same `Model::forward` that
//! verify and generate use. Prompt processing (ppN): one batch of N tokens, logits of the
//! last; generation (genM): M greedy steps of one token each on the KV cache. One warm-up
//! pass first, then `reps` timed repetitions; reports the median and the range in tokens/s.

use crate::model::{Device, Logits, Model, argmax};
use anyhow::{Result, ensure};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

pub struct Options {
    pub device: Device,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub reps: usize,
}

#[derive(Serialize)]
pub struct Rate {
    pub test: String,
    pub tokens: usize,
    /// Median, slowest and fastest repetition, tokens per second.
    pub tok_s_median: f64,
    pub tok_s_min: f64,
    pub tok_s_max: f64,
    pub seconds: Vec<f64>,
}

#[derive(Serialize)]
pub struct Report {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub load_seconds: f64,
    pub results: Vec<Rate>,
}

fn rate(test: String, tokens: usize, seconds: Vec<f64>) -> Rate {
    let mut r: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
    r.sort_by(f64::total_cmp);
    Rate {
        test,
        tokens,
        tok_s_median: r[r.len() / 2],
        tok_s_min: r[0],
        tok_s_max: r[r.len() - 1],
        seconds,
    }
}

/// Deterministic prompt ids spread over the vocabulary (never 0..3, often special tokens).
fn prompt(vocab: usize, n: usize) -> Vec<u32> {
    let span = (vocab.saturating_sub(4)).max(1) as u64;
    (0..n as u64)
        .map(|i| (4 + (i * 2_654_435_761 + 12_345) % span) as u32)
        .collect()
}

pub fn run(model: &Path, o: &Options) -> Result<Report> {
    ensure!(
        o.prompt_tokens > 0 && o.reps > 0,
        "bench: need at least one token and one rep"
    );
    let t0 = Instant::now();
    let mut m = Model::open_on(model, o.device)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let ids = prompt(m.config().vocab, o.prompt_tokens);
    let time = |m: &mut Model, generation: bool| -> Result<f64> {
        m.reset();
        if !generation {
            let t = Instant::now();
            m.forward(&ids, Logits::Last)?;
            return Ok(t.elapsed().as_secs_f64());
        }
        let mut next = argmax(&m.forward(&ids, Logits::Last)?);
        let t = Instant::now();
        for _ in 0..o.gen_tokens {
            next = argmax(&m.forward(&[next], Logits::Last)?);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let mut results = Vec::new();
    // Warm-up: kernels, caches, page-in of memory-mapped weights.
    time(&mut m, false)?;
    let s: Vec<f64> = (0..o.reps)
        .map(|_| time(&mut m, false))
        .collect::<Result<_>>()?;
    results.push(rate(format!("pp{}", o.prompt_tokens), o.prompt_tokens, s));
    if o.gen_tokens > 0 {
        let s: Vec<f64> = (0..o.reps)
            .map(|_| time(&mut m, true))
            .collect::<Result<_>>()?;
        results.push(rate(format!("gen{}", o.gen_tokens), o.gen_tokens, s));
    }
    Ok(Report {
        model: model.display().to_string(),
        device: m.device_description(),
        threads: rayon::current_num_threads(),
        load_seconds,
        results,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} on {} ({} threads), loaded in {:.2}s",
            self.model, self.device, self.threads, self.load_seconds
        )?;
        for r in &self.results {
            writeln!(
                f,
                "{:>8}  {:>10.2} tok/s  (min {:.2}, max {:.2}, {} reps)",
                r.test,
                r.tok_s_median,
                r.tok_s_min,
                r.tok_s_max,
                r.seconds.len()
            )?;
        }
        Ok(())
    }
}

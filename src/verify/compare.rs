//! Runs the reference and the candidate on the same ids and measures how far apart they are.
//!
//! For one prompt: the reference reads the prompt (logits at every prompt position) and then
//! decodes greedily, one token at a time with its KV cache, for `n_new` tokens (stopping at
//! eos). The candidate reads the same prompt and is then fed the reference's tokens in the same
//! way. Every next-token distribution of the two is compared (the prompt positions and the
//! generated ones). The greedy agreement is the number of leading steps where the candidate's
//! own argmax equals the reference's token: since both saw identical inputs up to that step,
//! this is exactly how many tokens the candidate's greedy generation shares with the
//! reference's before the first divergence.

use super::metrics::{abs_error, argmax, kl_divergence};
use crate::model::{Logits, Model};
use anyhow::Result;
use serde::Serialize;

/// Metrics over a set of scored positions; [`Stats::add`] merges.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Next-token distributions compared.
    pub positions: usize,
    pub max_abs_error: f64,
    pub mean_abs_error: f64,
    pub mean_kl: f64,
    pub max_kl: f64,
    /// Positions with the same argmax.
    pub top1_same: usize,
    pub top1_agreement: f64,
    /// Greedy tokens identical before the first divergence / tokens the reference generated.
    pub greedy_same: usize,
    pub greedy_total: usize,
    pub greedy_agreement: f64,
    #[serde(skip)]
    sum_abs: f64,
    #[serde(skip)]
    sum_kl: f64,
    #[serde(skip)]
    values: usize,
}

impl Stats {
    /// One position's two logit vectors.
    pub fn push(&mut self, reference: &[f32], candidate: &[f32]) {
        let (max, mean) = abs_error(reference, candidate);
        let kl = kl_divergence(reference, candidate);
        self.positions += 1;
        self.values += reference.len();
        self.sum_abs += mean * reference.len() as f64;
        self.sum_kl += kl;
        self.max_abs_error = self.max_abs_error.max(max);
        self.max_kl = self.max_kl.max(kl);
        self.top1_same += usize::from(argmax(reference) == argmax(candidate));
        self.finish();
    }

    pub fn add(&mut self, o: &Stats) {
        self.positions += o.positions;
        self.values += o.values;
        self.sum_abs += o.sum_abs;
        self.sum_kl += o.sum_kl;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.max_kl = self.max_kl.max(o.max_kl);
        self.top1_same += o.top1_same;
        self.greedy_same += o.greedy_same;
        self.greedy_total += o.greedy_total;
        self.finish();
    }

    fn finish(&mut self) {
        let r = |a: f64, b: usize| if b == 0 { 0.0 } else { a / b as f64 };
        self.mean_abs_error = r(self.sum_abs, self.values);
        self.mean_kl = r(self.sum_kl, self.positions);
        self.top1_agreement = r(self.top1_same as f64, self.positions);
        // Nothing generated (eos first, or n_new 0) counts as full agreement.
        self.greedy_agreement = if self.greedy_total == 0 {
            1.0
        } else {
            self.greedy_same as f64 / self.greedy_total as f64
        };
    }

    fn set_greedy(&mut self, same: usize, total: usize) {
        self.greedy_same = same;
        self.greedy_total = total;
        self.finish();
    }
}

/// One prompt's comparison.
pub struct Compared {
    pub stats: Stats,
    /// The reference's greedy tokens.
    pub reference_tokens: Vec<u32>,
    /// The candidate's greedy tokens up to and including its first divergence.
    pub candidate_tokens: Vec<u32>,
}

/// Splits `All` logits into one slice per position.
fn rows(logits: &[f32], vocab: usize) -> impl Iterator<Item = &[f32]> {
    logits.chunks_exact(vocab)
}

/// Compares `reference` and `candidate` on `ids` and the reference's greedy continuation of
/// up to `n_new` tokens (stopping after `eos`).
pub fn compare(
    reference: &mut Model,
    candidate: &mut Model,
    ids: &[u32],
    n_new: usize,
    eos: Option<u32>,
) -> Result<Compared> {
    let vocab = reference.config().vocab;
    reference.reset();
    candidate.reset();
    let r_all = reference.forward(ids, Logits::All)?;
    let c_all = candidate.forward(ids, Logits::All)?;
    let mut stats = Stats::default();
    for (r, c) in rows(&r_all, vocab).zip(rows(&c_all, vocab)) {
        stats.push(r, c);
    }
    let mut r_last = r_all[r_all.len() - vocab..].to_vec();
    let mut c_last = c_all[c_all.len() - vocab..].to_vec();
    drop((r_all, c_all));

    let (mut ref_tokens, mut cand_tokens) = (Vec::new(), Vec::new());
    let mut diverged = false;
    while ref_tokens.len() < n_new {
        let t = argmax(&r_last) as u32;
        let c = argmax(&c_last) as u32;
        ref_tokens.push(t);
        if !diverged {
            cand_tokens.push(c);
            diverged = c != t;
        }
        if ref_tokens.len() == n_new || eos == Some(t) {
            break;
        }
        r_last = reference.forward(&[t], Logits::Last)?;
        c_last = candidate.forward(&[t], Logits::Last)?;
        stats.push(&r_last, &c_last);
    }
    let same = cand_tokens.len() - usize::from(diverged);
    stats.set_greedy(same, ref_tokens.len());
    Ok(Compared {
        stats,
        reference_tokens: ref_tokens,
        candidate_tokens: cand_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_merge_and_means() {
        let mut a = Stats::default();
        a.push(&[0.0, 1.0], &[0.0, 1.0]);
        a.push(&[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!((a.positions, a.top1_same), (2, 1));
        assert!((a.mean_abs_error - 0.5).abs() < 1e-12);
        assert!((a.max_abs_error - 1.0).abs() < 1e-12);
        a.set_greedy(3, 4);
        let mut b = Stats::default();
        b.push(&[2.0, 0.0], &[2.0, 0.0]);
        b.set_greedy(4, 4);
        let mut t = Stats::default();
        t.add(&a);
        t.add(&b);
        assert_eq!((t.positions, t.greedy_same, t.greedy_total), (3, 7, 8));
        assert!((t.top1_agreement - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.mean_kl - a.max_kl / 3.0).abs() < 1e-12);
        assert!((t.greedy_agreement - 7.0 / 8.0).abs() < 1e-12);
    }
}

//! Next-token logits and greedy decoding on top of [`Model::forward`].

use super::forward::{Logits, Model};
use anyhow::Result;

/// Index of the largest logit; the first on ties (as torch.argmax and greedy search do).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Model {
    /// Logits of the position after `ids`, from a fresh sequence (the cache is reset first).
    pub fn logits_last(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        self.reset();
        self.forward(ids, Logits::Last)
    }

    /// Greedy decoding: the prompt as one batch, then one token at a time with the KV cache.
    /// Returns the `n_new` new ids, fewer if `stop_on_eos` is `Some(eos)` and eos is generated
    /// (eos included, as transformers returns it).
    pub fn generate_greedy(
        &mut self,
        ids: &[u32],
        n_new: usize,
        stop_on_eos: Option<u32>,
    ) -> Result<Vec<u32>> {
        if n_new == 0 {
            return Ok(Vec::new());
        }
        Ok(self.greedy_with_first_logits(ids, n_new, stop_on_eos)?.1)
    }

    /// [`Model::generate_greedy`], also returning the logits of the position after `ids`
    /// (computed even when `n_new` is 0).
    pub fn greedy_with_first_logits(
        &mut self,
        ids: &[u32],
        n_new: usize,
        stop_on_eos: Option<u32>,
    ) -> Result<(Vec<f32>, Vec<u32>)> {
        let first = self.logits_last(ids)?;
        let mut out = Vec::with_capacity(n_new);
        if n_new > 0 {
            let mut next = argmax(&first);
            loop {
                out.push(next);
                if out.len() == n_new || stop_on_eos == Some(next) {
                    break;
                }
                next = argmax(&self.forward(&[next], Logits::Last)?);
            }
        }
        Ok((first, out))
    }
}

//! Held-out quality of a quantized model: perplexity of the reference and the candidate on the
//! same token sequences, the mean KL(reference || candidate) and top-1 agreement over every
//! position. Verify's few prompts are too few positions to rank int4 methods; this scores
//! thousands.

use crate::intq::calib::{CalibOptions, sequences};
use crate::model::{Logits, Model};
use crate::verify::metrics::{argmax, log_softmax};
use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct Eval {
    pub tokens: usize,
    pub ppl_reference: f64,
    pub ppl_candidate: f64,
    pub mean_kl: f64,
    pub top1_agreement: f64,
}

/// `samples` sequences of `seq_len` tokens of `text` (tokenized with the reference's tokenizer).
pub fn eval(
    reference: &Path,
    candidate: &Path,
    text: &Path,
    samples: usize,
    seq_len: usize,
) -> Result<Eval> {
    let c = CalibOptions {
        file: Some(text.to_path_buf()),
        samples,
        seq_len,
        chat: false,
    };
    let seqs = sequences(reference, &c)?;
    let (mut r, mut m) = (Model::open(reference)?, Model::open(candidate)?);
    let v = r.config().vocab;
    let (mut nll_r, mut nll_c, mut kl, mut agree, mut n) = (0f64, 0f64, 0f64, 0usize, 0usize);
    for s in &seqs {
        r.reset();
        m.reset();
        let (a, b) = (r.forward(s, Logits::All)?, m.forward(s, Logits::All)?);
        // Per position in parallel, summed in position order (the same for any thread count).
        let per: Vec<(f64, f64, f64, bool)> = (0..s.len() - 1)
            .into_par_iter()
            .map(|t| {
                let (x, y) = (&a[t * v..(t + 1) * v], &b[t * v..(t + 1) * v]);
                let next = s[t + 1] as usize;
                // One log-softmax per side (the vocabulary is 100k wide: this is the cost).
                let (lr, lc) = (log_softmax(x), log_softmax(y));
                let kl: f64 = lr.iter().zip(&lc).map(|(p, q)| p.exp() * (p - q)).sum();
                (-lr[next], -lc[next], kl, argmax(x) == argmax(y))
            })
            .collect();
        for (r_, c_, k_, a_) in per {
            nll_r += r_;
            nll_c += c_;
            kl += k_;
            agree += usize::from(a_);
            n += 1;
        }
    }
    let nf = n.max(1) as f64;
    Ok(Eval {
        tokens: n,
        ppl_reference: (nll_r / nf).exp(),
        ppl_candidate: (nll_c / nf).exp(),
        mean_kl: kl / nf,
        top1_agreement: agree as f64 / nf,
    })
}

//! Causal self-attention with grouped-query heads over a KV cache.

use super::config::Config;
use super::kernels::{axpy, dot};
use super::ops::softmax;
use rayon::prelude::*;

/// Keys and values of every position seen so far, for one layer: `[pos][n_head_kv * head_dim]`
/// (after the rotary embedding, for keys).
#[derive(Default, Clone)]
pub struct KvCache {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Attention output for `n` new positions starting at `pos0`, whose (rotated) queries are `q`
/// (`[n][n_head * head_dim]`) and whose keys and values are already in `cache`. Query head h
/// reads kv head h / (n_head / n_head_kv), as transformers' `repeat_kv`.
pub fn attention(c: &Config, q: &[f32], cache: &KvCache, pos0: usize, n: usize) -> Vec<f32> {
    let (hd, nh, kvd) = (c.head_dim, c.n_head, c.kv_dim());
    let group = nh / c.n_head_kv;
    // transformers multiplies q.k by the python float head_dim**-0.5, i.e. by its f32 rounding.
    let scale = (hd as f64).powf(-0.5) as f32;
    let mut out = vec![0f32; n * c.q_dim()];
    out.par_chunks_mut(hd)
        .enumerate()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, (i, o)| {
            let (t, h) = (i / nh, i % nh);
            let g = h / group;
            let qh = &q[i * hd..(i + 1) * hd];
            // Causal: position pos0 + t sees positions 0..=pos0 + t.
            let len = pos0 + t + 1;
            scores.clear();
            scores.extend((0..len).map(|s| {
                let ks = &cache.k[s * kvd + g * hd..][..hd];
                dot(qh, ks) * scale
            }));
            softmax(scores);
            for (s, &p) in scores.iter().enumerate() {
                axpy(p, &cache.v[s * kvd + g * hd..][..hd], o);
            }
        });
    out
}

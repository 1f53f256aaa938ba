//! The feed-forward blocks: Llama's SwiGLU MLP and Mixtral's top-k mixture of SwiGLU experts.

use super::config::Config;
use super::forward::Observer;
use super::mat::{Mat, matmul};
use super::names::Name;
use super::ops::{silu, softmax};
use super::weights::Weights;
use anyhow::Result;
use rayon::prelude::*;

/// `down(silu(gate(x)) * up(x))` for `n` positions; `obs` sees down's input (gate's and up's
/// is `x`, which the caller reports).
pub fn swiglu(
    gate: &Mat,
    up: &Mat,
    down: &Mat,
    x: &[f32],
    n: usize,
    obs: Option<(&mut Observer, Name)>,
) -> Vec<f32> {
    let h = gated(gate, up, x, n);
    if let Some((o, name)) = obs {
        o(name, &h, n);
    }
    matmul(down, &h, n)
}

/// `silu(gate(x)) * up(x)` for `n` positions: down's input.
pub fn gated(gate: &Mat, up: &Mat, x: &[f32], n: usize) -> Vec<f32> {
    let g = matmul(gate, x, n);
    let u = matmul(up, x, n);
    // Element-wise (each value computed alone), in parallel: a prompt has n * ffn of them.
    let mut h = g;
    h.par_chunks_mut(1 << 14)
        .zip(u.par_chunks(1 << 14))
        .for_each(|(h, u)| {
            for (h, &u) in h.iter_mut().zip(u) {
                *h = silu(*h) * u;
            }
        });
    h
}

/// The dense MLP of layer `l`.
pub fn dense(
    w: &dyn Weights,
    l: usize,
    x: &[f32],
    n: usize,
    obs: &mut Option<Observer>,
) -> Result<Vec<f32>> {
    if let Some(o) = obs {
        o(Name::FfnGate(l), x, n);
        o(Name::FfnUp(l), x, n);
    }
    Ok(swiglu(
        &w.mat(Name::FfnGate(l))?,
        &w.mat(Name::FfnUp(l))?,
        &w.mat(Name::FfnDown(l))?,
        x,
        n,
        obs.as_mut().map(|o| (o, Name::FfnDown(l))),
    ))
}

/// The experts chosen for one position, with their weights: softmax over all router logits,
/// the top k (largest first, lower index on ties), renormalised to sum to 1.
pub fn route(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut p = logits.to_vec();
    softmax(&mut p);
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    idx.truncate(k);
    let sum: f32 = idx.iter().map(|&e| p[e]).sum();
    idx.into_iter().map(|e| (e, p[e] / sum)).collect()
}

/// Layer `l`'s routing of `n` positions: for each expert, the positions sent to it (ascending)
/// with their weights.
pub fn by_expert(
    w: &dyn Weights,
    c: &Config,
    l: usize,
    x: &[f32],
    n: usize,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let router = matmul(&w.mat(Name::FfnGateInp(l))?, x, n);
    let mut experts = vec![Vec::new(); c.n_expert];
    for (t, r) in router.chunks_exact(c.n_expert).enumerate() {
        for (e, wt) in route(r, c.n_expert_used) {
            experts[e].push((t, wt));
        }
    }
    Ok(experts)
}

/// The rows (of width `h`) of `x` at the chosen positions, in order.
pub fn gather(x: &[f32], h: usize, chosen: &[(usize, f32)]) -> Vec<f32> {
    chosen
        .iter()
        .flat_map(|&(t, _)| x[t * h..(t + 1) * h].iter().copied())
        .collect()
}

/// The Mixtral sparse MoE block of layer `l`. Each expert runs once on the positions routed
/// to it; outputs are added in expert order, as transformers' `index_add_` loop does.
pub fn moe(
    w: &dyn Weights,
    c: &Config,
    l: usize,
    x: &[f32],
    n: usize,
    obs: &mut Option<Observer>,
) -> Result<Vec<f32>> {
    let h = c.hidden;
    if let Some(o) = obs {
        o(Name::FfnGateInp(l), x, n);
    }
    let mut out = vec![0f32; n * h];
    for (e, chosen) in by_expert(w, c, l, x, n)?.into_iter().enumerate() {
        if chosen.is_empty() {
            continue;
        }
        let xe = gather(x, h, &chosen);
        if let Some(o) = obs {
            o(Name::FfnGateExps(l, e), &xe, chosen.len());
            o(Name::FfnUpExps(l, e), &xe, chosen.len());
        }
        let y = swiglu(
            &w.mat(Name::FfnGateExps(l, e))?,
            &w.mat(Name::FfnUpExps(l, e))?,
            &w.mat(Name::FfnDownExps(l, e))?,
            &xe,
            chosen.len(),
            obs.as_mut().map(|o| (o, Name::FfnDownExps(l, e))),
        );
        for (yi, &(t, wt)) in y.chunks_exact(h).zip(&chosen) {
            for (o, &v) in out[t * h..(t + 1) * h].iter_mut().zip(yi) {
                *o += v * wt;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn route_renormalises_the_top_k() {
        let r = route(&[0.0, 2.0, 1.0, 2.0], 2);
        assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 3]);
        assert!((r[0].1 - 0.5).abs() < 1e-6 && (r[1].1 - 0.5).abs() < 1e-6);
        let r = route(&[0.0, 1.0, 3.0], 1);
        assert_eq!(r, [(2, 1.0)]);
    }
}

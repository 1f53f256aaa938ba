//! GPTQ (Frantar et al. 2022), layer by layer on our own forward pass:
//!
//! 1. the calibration sequences are embedded;
//! 2. each decoder layer is quantized sub-module by sub-module, as AutoGPTQ's and GPTQModel's
//!    default `true_sequential`: [q, k, v], then [o], then [gate, up] (each expert's), then
//!    [down]; each group's Hessian `H = Σ x xᵀ` comes from inputs computed with the groups
//!    before it already quantized, and the layer's inputs from the quantized layers before it;
//! 3. a group is quantized with damping 1% of the mean diagonal, the upper Cholesky factor of
//!    `H⁻¹` (damping x10 and retry when not positive definite, round to nearest after five
//!    failures), columns in blocks of 128 with the error spread over the later columns, a
//!    group's scale taken when the loop reaches its first column (no act-order, so groups are
//!    contiguous and g_idx is `k / group_size`);
//! 4. the layer is run with all its quantized weights to give the next layer's inputs.

use super::linalg;
use super::pack::QTensor;
use super::rtn::{Spec, absmax, quant, scale};
use super::{Options, calib, spec_for};
use crate::gguf::GgmlType;
use crate::hf::Checkpoint;
use crate::model::attention::{KvCache, attention};
use crate::model::ffn;
use crate::model::ops::{Rope, add, rms_norm_rows};
use crate::model::weights::{HfWeights, Weights};
use crate::model::{Config, Mat, Name, matmul};
use crate::progress::Progress;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Damping: this share of the mean Hessian diagonal is added to the diagonal.
pub const DAMP: f64 = 0.01;
/// Columns per lazy-update block.
const BLOCK: usize = 128;

/// What GPTQ needs from one Hessian (`cols` x `cols`), shared by the weights that read the
/// same input: the columns never activated, and the upper Cholesky factor of the damped H⁻¹
/// (None when five dampings all failed: those weights fall back to round to nearest).
pub struct Prepared {
    dead: Vec<usize>,
    u: Option<Vec<f32>>,
}

pub fn prepare(mut h: Vec<f64>, cols: usize) -> Prepared {
    // Columns never activated carry no information: H_ii = 1, W[:, i] = 0 (as the reference).
    let dead: Vec<usize> = (0..cols).filter(|&i| h[i * cols + i] == 0.0).collect();
    for &i in &dead {
        h[i * cols + i] = 1.0;
    }
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
    let mut damp = DAMP * mean_diag;
    let mut added = 0.0;
    let mut u = None;
    for _ in 0..5 {
        for i in 0..cols {
            h[i * cols + i] += damp - added;
        }
        added = damp;
        u = linalg::upper_chol_of_inverse(&h, cols);
        if u.is_some() {
            break;
        }
        damp *= 10.0;
    }
    Prepared { dead, u }
}

/// GPTQ of one weight (`rows` x `cols`, f32).
pub fn gptq(spec: &Spec, mut w: Vec<f32>, rows: usize, cols: usize, p: &Prepared) -> QTensor {
    for &i in &p.dead {
        for r in 0..rows {
            w[r * cols + i] = 0.0;
        }
    }
    let Some(u) = &p.u else {
        return super::rtn::rtn(spec, &w, rows, cols);
    };
    let groups = cols / spec.group;
    let mut q = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * groups];
    let mut i0 = 0;
    while i0 < cols {
        let i1 = (i0 + BLOCK).min(cols);
        let b = i1 - i0;
        // Within the block, row by row (rows are independent given U).
        let mut err = vec![0f32; rows * b];
        w.par_chunks_mut(cols)
            .zip(q.par_chunks_mut(cols))
            .zip(scales.par_chunks_mut(groups))
            .zip(err.par_chunks_mut(b))
            .for_each(|(((w, q), s), e)| {
                for i in i0..i1 {
                    if i % spec.group == 0 {
                        let g = i / spec.group;
                        s[g] = scale(spec, absmax(&w[i..i + spec.group]), 1.0);
                    }
                    let sc = s[i / spec.group];
                    q[i] = quant(spec, w[i], sc);
                    let d = (w[i] - sc * q[i] as f32) / u[i * cols + i];
                    e[i - i0] = d;
                    let ur = &u[i * cols + i + 1..i * cols + i1];
                    for (wv, uv) in w[i + 1..i1].iter_mut().zip(ur) {
                        *wv -= d * uv;
                    }
                }
            });
        // The rest of the columns: W[:, i1..] -= E U[i0..i1, i1..] (a GEMM).
        if i1 < cols {
            let m = cols - i1;
            w.par_chunks_mut(64 * cols)
                .zip(err.par_chunks(64 * b))
                .for_each(|(wc, ec)| {
                    let r = wc.len() / cols;
                    // SAFETY: dst = W[rows, i1..] (row stride cols), lhs = E (r x b, row
                    // stride b), rhs = U[i0..i1, i1..] (b x m, row stride cols): in bounds.
                    unsafe {
                        gemm::gemm(
                            r,
                            m,
                            b,
                            wc.as_mut_ptr().add(i1),
                            1,
                            cols as isize,
                            true,
                            ec.as_ptr(),
                            1,
                            b as isize,
                            u.as_ptr().add(i0 * cols + i1),
                            1,
                            cols as isize,
                            1.0,
                            -1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                });
        }
        i0 = i1;
    }
    spec.tensor(rows, cols, q, scales)
}

/// The weights with one layer's Linears replaced by their dequantized values.
struct Overlay<'a> {
    base: &'a dyn Weights,
    over: HashMap<Name, (usize, usize, Vec<f32>)>,
}

impl Weights for Overlay<'_> {
    fn config(&self) -> &Config {
        self.base.config()
    }
    fn mat(&self, name: Name) -> Result<Mat<'_>> {
        match self.over.get(&name) {
            Some((r, c, v)) => Mat::new(GgmlType::F32, *r, *c, bytemuck::cast_slice(v)),
            None => self.base.mat(name),
        }
    }
    fn has(&self, name: Name) -> bool {
        self.base.has(name)
    }
    fn describe(&self) -> String {
        self.base.describe()
    }
}

/// Layer `l`'s attention over one sequence at positions 0.. (a fresh KV cache), from its
/// normed input `xn`: o_proj's input.
fn attention_block(w: &dyn Weights, rope: &Rope, l: usize, xn: &[f32]) -> Result<Vec<f32>> {
    let c = w.config();
    let n = xn.len() / c.hidden;
    let mut q = matmul(&w.mat(Name::AttnQ(l))?, xn, n);
    let mut k = matmul(&w.mat(Name::AttnK(l))?, xn, n);
    let v = matmul(&w.mat(Name::AttnV(l))?, xn, n);
    for t in 0..n {
        let (cos, sin) = rope.cos_sin(t);
        let qt = &mut q[t * c.q_dim()..(t + 1) * c.q_dim()];
        let kt = &mut k[t * c.kv_dim()..(t + 1) * c.kv_dim()];
        for head in qt
            .chunks_exact_mut(c.head_dim)
            .chain(kt.chunks_exact_mut(c.head_dim))
        {
            Rope::apply(head, &cos, &sin);
        }
    }
    let cache = KvCache { k, v };
    Ok(attention(c, &q, &cache, 0, n))
}

/// The feed-forward block of layer `l` on normed input `xn`.
fn ffn_block(w: &dyn Weights, l: usize, xn: &[f32]) -> Result<Vec<f32>> {
    let c = w.config();
    let n = xn.len() / c.hidden;
    if c.is_moe() {
        ffn::moe(w, c, l, xn, n, &mut None)
    } else {
        ffn::dense(w, l, xn, n, &mut None)
    }
}

/// Σ x xᵀ per Hessian key, with the number of rows.
#[derive(Default)]
struct Hessians(HashMap<Name, (usize, Vec<f32>)>);

impl Hessians {
    fn add(&mut self, key: Name, x: &[f32], n: usize) {
        if n == 0 {
            return;
        }
        let cols = x.len() / n;
        let (cnt, h) = self
            .0
            .entry(key)
            .or_insert_with(|| (0, vec![0f32; cols * cols]));
        linalg::add_xtx(h, x, n, cols);
        *cnt += n;
    }
}

/// The Hessian a weight's GPTQ uses: q/k/v share their input, as do gate/up.
fn hessian_key(name: Name) -> Option<Name> {
    use Name::*;
    match name {
        AttnQ(_) | AttnOutput(_) | FfnGate(_) | FfnDown(_) => Some(name),
        AttnK(l) | AttnV(l) => Some(AttnQ(l)),
        FfnUp(l) => Some(FfnGate(l)),
        FfnGateExps(..) | FfnDownExps(..) => Some(name),
        FfnUpExps(l, e) => Some(FfnGateExps(l, e)),
        _ => None,
    }
}

/// Layer `l`'s Linears in AutoGPTQ's true-sequential groups: [q, k, v], [o], [gate, up],
/// [down] (per expert in a MoE).
fn groups(c: &Config, l: usize) -> [Vec<Name>; 4] {
    use Name::*;
    let (mut gate_up, mut down) = (Vec::new(), Vec::new());
    if c.is_moe() {
        for e in 0..c.n_expert {
            gate_up.extend([FfnGateExps(l, e), FfnUpExps(l, e)]);
            down.push(FfnDownExps(l, e));
        }
    } else {
        gate_up.extend([FfnGate(l), FfnUp(l)]);
        down.push(FfnDown(l));
    }
    [
        vec![AttnQ(l), AttnK(l), AttnV(l)],
        vec![AttnOutput(l)],
        gate_up,
        down,
    ]
}

/// Quantizes one group of Linears from its inputs' Hessians (one factorization per distinct
/// input); their dequantized values go into `ov` for the groups after it.
fn quantize_group(
    names: &[Name],
    hs: Hessians,
    ck: &Checkpoint,
    opts: &Options,
    ov: &mut Overlay,
    out: &mut HashMap<String, QTensor>,
    progress: &Progress,
) -> Result<()> {
    let prepared: HashMap<Name, Prepared> =
        hs.0.into_iter()
            .map(|(key, (cnt, h))| {
                // H = 2/n Σ x xᵀ (the scale only matters relative to the damping).
                let f = 2.0 / cnt as f64;
                let cols = (h.len() as f64).sqrt() as usize;
                (key, prepare(linalg::symmetric(&h, cols, f), cols))
            })
            .collect();
    for &name in names {
        let hf = name.hf();
        progress.set_message(&hf);
        let (w, rows, cols, dt) = super::load_f32(ck, &hf)?;
        let spec = spec_for(opts, cols, dt);
        let t = match hessian_key(name).and_then(|k| prepared.get(&k)) {
            Some(p) => gptq(&spec, w, rows, cols, p),
            // An expert no calibration token was routed to.
            None => super::rtn::rtn(&spec, &w, rows, cols),
        };
        ov.over.insert(name, (rows, cols, dequant(&t)));
        out.insert(hf, t);
    }
    Ok(())
}

/// GPTQ of decoder layer `l` (see the module comment); `xs` holds each sequence's input to the
/// layer and is left holding its output.
#[allow(clippy::too_many_arguments)]
fn quantize_layer(
    base: &HfWeights,
    ck: &Checkpoint,
    opts: &Options,
    rope: &Rope,
    l: usize,
    xs: &mut [Vec<f32>],
    out: &mut HashMap<String, QTensor>,
    progress: &Progress,
) -> Result<()> {
    let c = base.config();
    let (h, eps) = (c.hidden, c.rms_eps);
    let attn_norm = base.mat(Name::AttnNorm(l))?.to_f32();
    let ffn_norm = base.mat(Name::FfnNorm(l))?.to_f32();
    let [qkv, o, gate_up, down] = groups(c, l);
    let mut ov = Overlay {
        base,
        over: HashMap::new(),
    };
    // [q, k, v] read the normed layer input.
    let mut hs = Hessians::default();
    for x in xs.iter() {
        hs.add(
            Name::AttnQ(l),
            &rms_norm_rows(x, &attn_norm, eps),
            x.len() / h,
        );
    }
    quantize_group(&qkv, hs, ck, opts, &mut ov, out, progress)?;
    // [o] reads attention over the quantized q, k, v.
    let mut hs = Hessians::default();
    let mut atts = Vec::with_capacity(xs.len());
    for x in xs.iter() {
        let att = attention_block(&ov, rope, l, &rms_norm_rows(x, &attn_norm, eps))?;
        hs.add(Name::AttnOutput(l), &att, x.len() / h);
        atts.push(att);
    }
    quantize_group(&o, hs, ck, opts, &mut ov, out, progress)?;
    // [gate, up] read the normed residual after the quantized attention (per expert: the
    // positions routed to it); xs becomes that residual.
    let mut hs = Hessians::default();
    {
        let wo = ov.mat(Name::AttnOutput(l))?;
        for (x, att) in xs.iter_mut().zip(atts) {
            let n = x.len() / h;
            add(x, &matmul(&wo, &att, n));
            let xn = rms_norm_rows(x, &ffn_norm, eps);
            if c.is_moe() {
                for (e, chosen) in ffn::by_expert(&ov, c, l, &xn, n)?.iter().enumerate() {
                    hs.add(
                        Name::FfnGateExps(l, e),
                        &ffn::gather(&xn, h, chosen),
                        chosen.len(),
                    );
                }
            } else {
                hs.add(Name::FfnGate(l), &xn, n);
            }
        }
    }
    quantize_group(&gate_up, hs, ck, opts, &mut ov, out, progress)?;
    // [down] reads silu(gate(x)) * up(x) with the quantized gate and up (down itself is not
    // run here: its output is not needed until it is quantized).
    let mut hs = Hessians::default();
    for x in xs.iter() {
        let xn = rms_norm_rows(x, &ffn_norm, eps);
        let n = x.len() / h;
        let act = |gate, up, x: &[f32], n| -> Result<Vec<f32>> {
            Ok(ffn::gated(&ov.mat(gate)?, &ov.mat(up)?, x, n))
        };
        if c.is_moe() {
            for (e, chosen) in ffn::by_expert(&ov, c, l, &xn, n)?.iter().enumerate() {
                if !chosen.is_empty() {
                    let xe = ffn::gather(&xn, h, chosen);
                    let a = act(
                        Name::FfnGateExps(l, e),
                        Name::FfnUpExps(l, e),
                        &xe,
                        chosen.len(),
                    )?;
                    hs.add(Name::FfnDownExps(l, e), &a, chosen.len());
                }
            }
        } else {
            hs.add(
                Name::FfnDown(l),
                &act(Name::FfnGate(l), Name::FfnUp(l), &xn, n)?,
                n,
            );
        }
    }
    quantize_group(&down, hs, ck, opts, &mut ov, out, progress)?;
    // The layer's output with all its quantized weights: the next layer's input.
    for x in xs.iter_mut() {
        let y = ffn_block(&ov, l, &rms_norm_rows(x, &ffn_norm, eps)).context("gptq layer pass")?;
        add(x, &y);
    }
    Ok(())
}

/// Every Linear of the checkpoint, by HF name.
pub fn run(input: &Path, ck: &Checkpoint, opts: &Options) -> Result<HashMap<String, QTensor>> {
    let seqs = calib::sequences(input, &opts.calib)?;
    let base = HfWeights::open(input)?;
    let c = base.config().clone();
    let rope = Rope::new(c.head_dim, c.rope_theta);
    let emb = base.mat(Name::TokenEmbd)?;
    let mut xs: Vec<Vec<f32>> = seqs
        .iter()
        .map(|s| {
            let mut x = vec![0f32; s.len() * c.hidden];
            for (row, &id) in x.chunks_exact_mut(c.hidden).zip(s) {
                emb.dequant_row(id as usize, row);
            }
            x
        })
        .collect();
    let mut out = HashMap::new();
    let progress = Progress::items(c.n_layer as u64, "gptq layers", opts.quiet);
    // The bar hides itself when stderr is not a terminal: log a line per layer there instead.
    let log = !opts.quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let t0 = std::time::Instant::now();
    for l in 0..c.n_layer {
        quantize_layer(&base, ck, opts, &rope, l, &mut xs, &mut out, &progress)?;
        progress.inc(1);
        if log {
            let t = t0.elapsed().as_secs_f64();
            let left = t / (l + 1) as f64 * (c.n_layer - l - 1) as f64;
            eprintln!(
                "gptq: layer {}/{} done, {t:.0}s, about {left:.0}s left",
                l + 1,
                c.n_layer
            );
        }
    }
    progress.finish();
    Ok(out)
}

fn dequant(t: &QTensor) -> Vec<f32> {
    let g = t.groups();
    t.q.par_iter()
        .enumerate()
        .map(|(i, &v)| v as f32 * t.scales[(i / t.cols) * g + (i % t.cols) / t.group])
        .collect()
}

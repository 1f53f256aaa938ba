//! GPTQ (Frantar et al. 2022), layer by layer on our own forward pass:
//!
//! 1. the calibration sequences are embedded;
//! 2. for each decoder layer: run it (original weights) over every sequence, its inputs coming
//!    from the already quantized layers before it, accumulating `H = Σ x xᵀ` per Linear input
//!    (q/k/v share one, gate/up one, each expert its own routed tokens);
//! 3. quantize the layer's Linears: damping 1% of the mean diagonal, the upper Cholesky factor
//!    of `H⁻¹` (damping x10 and retry when not positive definite, round to nearest after five
//!    failures), columns in blocks of 128 with the error spread over the later columns, a
//!    group's scale taken when the loop reaches its first column (no act-order, so groups are
//!    contiguous and g_idx is `k / group_size`);
//! 4. run the layer again with the quantized weights to get the next layer's inputs.
//!
//! All Linears of a layer see inputs from the original weights of that layer (GPTQ's
//! "sequential by layer", not by sub-module).

use super::linalg;
use super::pack::QTensor;
use super::rtn::{Spec, absmax, quant, scale};
use super::{Options, calib, spec_for};
use crate::gguf::GgmlType;
use crate::hf::Checkpoint;
use crate::model::attention::{KvCache, attention};
use crate::model::ffn;
use crate::model::ops::{Rope, rms_norm_rows};
use crate::model::weights::{HfWeights, Weights};
use crate::model::{Config, Mat, Name, Observer, matmul};
use crate::progress::Progress;
use anyhow::{Context, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// Decoder layer `l` over one sequence at positions 0.. (a fresh KV cache), in place.
fn layer(
    w: &dyn Weights,
    rope: &Rope,
    l: usize,
    x: &mut [f32],
    obs: &mut Option<Observer>,
) -> Result<()> {
    let c = w.config();
    let (h, hd, eps) = (c.hidden, c.head_dim, c.rms_eps);
    let n = x.len() / h;
    let norm = |name| -> Result<Vec<f32>> { Ok(w.mat(name)?.to_f32()) };
    let xn = rms_norm_rows(x, &norm(Name::AttnNorm(l))?, eps);
    if let Some(o) = obs {
        o(Name::AttnQ(l), &xn, n);
    }
    let mut q = matmul(&w.mat(Name::AttnQ(l))?, &xn, n);
    let mut k = matmul(&w.mat(Name::AttnK(l))?, &xn, n);
    let v = matmul(&w.mat(Name::AttnV(l))?, &xn, n);
    for t in 0..n {
        let (cos, sin) = rope.cos_sin(t);
        let qt = &mut q[t * c.q_dim()..(t + 1) * c.q_dim()];
        let kt = &mut k[t * c.kv_dim()..(t + 1) * c.kv_dim()];
        for head in qt.chunks_exact_mut(hd).chain(kt.chunks_exact_mut(hd)) {
            Rope::apply(head, &cos, &sin);
        }
    }
    let cache = KvCache { k, v };
    let att = attention(c, &q, &cache, 0, n);
    if let Some(o) = obs {
        o(Name::AttnOutput(l), &att, n);
    }
    let o = matmul(&w.mat(Name::AttnOutput(l))?, &att, n);
    add(x, &o);
    let xn = rms_norm_rows(x, &norm(Name::FfnNorm(l))?, eps);
    let y = if c.is_moe() {
        ffn::moe(w, c, l, &xn, n, obs)?
    } else {
        ffn::dense(w, l, &xn, n, obs)?
    };
    add(x, &y);
    Ok(())
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
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

/// The Linears of layer `l`.
fn linears(c: &Config, l: usize) -> Vec<Name> {
    use Name::*;
    let mut v = vec![AttnQ(l), AttnK(l), AttnV(l), AttnOutput(l)];
    if c.is_moe() {
        for e in 0..c.n_expert {
            v.extend([FfnGateExps(l, e), FfnUpExps(l, e), FfnDownExps(l, e)]);
        }
    } else {
        v.extend([FfnGate(l), FfnUp(l), FfnDown(l)]);
    }
    v
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
        // 2. Hessians from this layer's inputs.
        type Acc = HashMap<Name, (usize, Vec<f32>)>;
        let acc: Arc<Mutex<Acc>> = Arc::default();
        let a = acc.clone();
        let mut obs: Option<Observer> = Some(Box::new(move |name, x, n| {
            let Some(key) = hessian_key(name).filter(|k| *k == name) else {
                return;
            };
            let cols = x.len() / n.max(1);
            let mut m = a.lock().expect("hessian lock");
            let (cnt, h) = m.entry(key).or_insert_with(|| (0, vec![0f32; cols * cols]));
            linalg::add_xtx(h, x, n, cols);
            *cnt += n;
        }));
        for x in &xs {
            let mut y = x.clone();
            layer(&base, &rope, l, &mut y, &mut obs)?;
        }
        drop(obs);
        let hs = std::mem::take(&mut *acc.lock().expect("hessian lock"));
        // 3. Quantize the layer (one factorization per distinct input).
        let mut prepared: HashMap<Name, Prepared> = HashMap::new();
        for (key, (cnt, h)) in hs {
            if cnt > 0 {
                // H = 2/n Σ x xᵀ (the scale only matters relative to the damping).
                let f = 2.0 / cnt as f64;
                let cols = (h.len() as f64).sqrt() as usize;
                let h: Vec<f64> = h.par_iter().map(|&v| v as f64 * f).collect();
                prepared.insert(key, prepare(h, cols));
            }
        }
        let mut over = HashMap::new();
        for name in linears(&c, l) {
            let hf = name.hf();
            progress.set_message(&hf);
            let (w, rows, cols, dt) = super::load_f32(ck, &hf)?;
            let spec = spec_for(opts, cols, dt);
            let t = match hessian_key(name).and_then(|k| prepared.get(&k)) {
                Some(p) => gptq(&spec, w, rows, cols, p),
                // An expert no calibration token was routed to.
                None => super::rtn::rtn(&spec, &w, rows, cols),
            };
            over.insert(name, (rows, cols, dequant(&t)));
            out.insert(hf, t);
        }
        // 4. This layer's output with its quantized weights: the next layer's input.
        let ov = Overlay { base: &base, over };
        let mut none = None;
        for x in xs.iter_mut() {
            layer(&ov, &rope, l, x, &mut none).context("gptq layer pass")?;
        }
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

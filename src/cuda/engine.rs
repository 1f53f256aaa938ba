//! The forward pass on the GPU, step for step the CPU's (`model::forward`): host embedding
//! lookup, then per layer RMSNorm -> Q/K/V -> rotary -> KV cache -> attention -> output ->
//! residual -> RMSNorm -> SwiGLU or MoE -> residual; final norm and LM head.
//!
//! Weights stay in their stored bytes on the GPU, rows in Hugging Face order (uploaded row by
//! row as `Mat::row` gives them, so GGUF Q/K arrive un-permuted). When they all fit (free
//! memory, with a margin) they are uploaded once ("resident"); otherwise, or with
//! `LLMJP_CUDA_STREAM=1`, each weight is uploaded when a forward call needs it ("streamed").
//! Matmuls of up to 8 positions use the fused dequant-dot `gemv_*` kernels; larger batches
//! decode blocks of weight rows to f32 (`dequant_*`) and run cuBLAS SGEMM.

use super::gpu::{Arg, Gpu};
use crate::gguf::GgmlType;
use crate::model::ffn::route;
use crate::model::ops::Rope;
use crate::model::weights::{Weights, expected_shapes};
use crate::model::{Config, Logits, Mat, Name};
use anyhow::{Context, Result, bail};
use cudarc::driver::CudaSlice;
use std::collections::HashMap;

/// Largest f32 block a weight is decoded into before SGEMM (floats): 256 MiB.
const DEQ_FLOATS: usize = 64 << 20;
/// Up to this many positions, matmuls use the fused GEMV kernels.
const GEMV_MAX: usize = 8;
/// Memory kept free beside the weights, for activations, the KV cache and cuBLAS.
const MARGIN: usize = 2 << 30;

/// One weight on the GPU.
struct DMat {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    buf: CudaSlice<u8>,
}

/// Scratch buffers (f32), grown on demand.
#[derive(Clone, Copy)]
enum Slot {
    X,
    Xn,
    Q,
    K,
    V,
    Att,
    O,
    G,
    U,
    Y,
    Scores,
    Deq,
    Cos,
    Sin,
    Router,
    Mx,
    Ey,
    Wt,
    Logits,
}
const N_SLOTS: usize = 19;

pub struct Engine {
    gpu: Gpu,
    cfg: Config,
    tied: bool,
    /// None: streamed mode.
    resident: Option<HashMap<Name, DMat>>,
    norms: HashMap<Name, CudaSlice<f32>>,
    /// Per layer (keys, values), `kv_cap` positions each.
    kv: Vec<(CudaSlice<f32>, CudaSlice<f32>)>,
    kv_cap: usize,
    slots: Vec<Option<CudaSlice<f32>>>,
    /// Weights uploaded for the current layer in streamed mode.
    streamed: Vec<DMat>,
    staging: Vec<u8>,
    mode: String,
}

fn kernel_type(ty: GgmlType) -> Result<&'static str> {
    Ok(match ty {
        GgmlType::F32 => "f32",
        GgmlType::F16 => "f16",
        GgmlType::BF16 => "bf16",
        GgmlType::Q8_0 => "q8_0",
        GgmlType::Q4_0 => "q4_0",
        GgmlType::Q4_1 => "q4_1",
        GgmlType::Q5_0 => "q5_0",
        GgmlType::Q5_1 => "q5_1",
        GgmlType::Q2K => "q2_k",
        GgmlType::Q3K => "q3_k",
        GgmlType::Q4K => "q4_k",
        GgmlType::Q5K => "q5_k",
        GgmlType::Q6K => "q6_k",
        other => bail!("{} weights are not supported on CUDA", other.name()),
    })
}

/// Bytes one row of `m` takes on the GPU (packed integer rows go up decoded to f32).
fn device_row_bytes(m: &Mat) -> usize {
    if m.int.is_some() {
        m.cols * 4
    } else {
        m.row(0).len()
    }
}

fn is_norm(name: Name) -> bool {
    matches!(
        name,
        Name::AttnNorm(_) | Name::FfnNorm(_) | Name::OutputNorm
    )
}

fn blocks(n: usize, per: usize) -> u64 {
    n.div_ceil(per) as u64
}

impl Engine {
    /// Sets up the GPU and uploads the norms, and every other weight too when they fit.
    pub fn new(w: &dyn Weights, tied: bool) -> Result<Self> {
        let gpu = Gpu::new()?;
        let cfg = w.config().clone();
        let shapes = expected_shapes(&cfg, tied);
        for (name, ..) in &shapes {
            let m = w.mat(*name)?;
            match m.int {
                // Activation quantization (W8A8) is emulated on the CPU path only.
                Some(v) if v.act_bits.is_some() => bail!(
                    "{}: int8 activation quantization (W8A8) runs on the CPU only",
                    name.gguf()
                ),
                Some(_) => {}
                None => {
                    kernel_type(m.ty).with_context(|| name.gguf())?;
                }
            }
        }
        let total: usize = shapes
            .iter()
            .map(|(name, ..)| w.mat(*name).map(|m| m.rows * device_row_bytes(&m)))
            .sum::<Result<usize>>()?;
        let (free, _) = gpu.mem()?;
        let forced =
            std::env::var_os("LLMJP_CUDA_STREAM").is_some_and(|v| !v.is_empty() && v != "0");
        let fits = total + DEQ_FLOATS * 4 + MARGIN < free;
        let mut e = Self {
            mode: String::new(),
            gpu,
            tied,
            resident: None,
            norms: HashMap::new(),
            kv: Vec::new(),
            kv_cap: 0,
            slots: (0..N_SLOTS).map(|_| None).collect(),
            streamed: Vec::new(),
            staging: Vec::new(),
            cfg,
        };
        let mut resident = HashMap::new();
        for &(name, ..) in &shapes {
            let m = w.mat(name)?;
            if is_norm(name) {
                e.norms.insert(name, e.gpu.upload(&m.to_f32())?);
            } else if fits && !forced {
                resident.insert(name, e.upload(&m)?);
            }
        }
        let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
        e.mode = if fits && !forced {
            e.resident = Some(resident);
            format!(
                "cuda {}, weights resident ({:.2} GiB)",
                e.gpu.name,
                gib(total)
            )
        } else {
            format!(
                "cuda {}, weights streamed per call ({:.2} GiB; {})",
                e.gpu.name,
                gib(total),
                if forced {
                    "LLMJP_CUDA_STREAM".to_string()
                } else {
                    format!("{:.2} GiB free", gib(free))
                }
            )
        };
        Ok(e)
    }

    /// "cuda NAME, weights resident (...)": for reports.
    pub fn describe(&self) -> String {
        self.mode.clone()
    }

    fn upload(&mut self, m: &Mat) -> Result<DMat> {
        self.staging.clear();
        let ty = if m.int.is_some() {
            // Packed int4/int8 weights (compressed-tensors, GPTQ) have no GPU kernel yet: their
            // rows are decoded on the host, exactly as the CPU path decodes them, and go up as
            // f32.
            let mut row = vec![0f32; m.cols];
            for r in 0..m.rows {
                m.dequant_row(r, &mut row);
                self.staging
                    .extend_from_slice(bytemuck::cast_slice::<f32, u8>(&row));
            }
            GgmlType::F32
        } else {
            for r in 0..m.rows {
                self.staging.extend_from_slice(m.row(r));
            }
            m.ty
        };
        Ok(DMat {
            ty,
            rows: m.rows,
            cols: m.cols,
            row_bytes: self.staging.len() / m.rows.max(1),
            buf: self.gpu.upload(&self.staging)?,
        })
    }

    /// Device address of scratch slot `s`, holding at least `n` floats.
    fn slot(&mut self, s: Slot, n: usize) -> Result<u64> {
        let i = s as usize;
        if self.slots[i].as_ref().is_none_or(|b| b.len() < n) {
            self.slots[i] = None;
            self.slots[i] = Some(self.gpu.alloc::<f32>(n.next_power_of_two())?);
        }
        Ok(self.gpu.ptr(self.slots[i].as_ref().unwrap()))
    }

    /// Grows every layer's KV cache to hold `len` positions, keeping the first `keep`.
    fn ensure_kv(&mut self, len: usize, keep: usize) -> Result<()> {
        if len <= self.kv_cap && self.kv.len() == self.cfg.n_layer {
            return Ok(());
        }
        let cap = len.max(2 * self.kv_cap).max(256);
        let kvd = self.cfg.kv_dim();
        let mut kv = Vec::with_capacity(self.cfg.n_layer);
        for l in 0..self.cfg.n_layer {
            let (k, v) = (
                self.gpu.alloc::<f32>(cap * kvd)?,
                self.gpu.alloc::<f32>(cap * kvd)?,
            );
            if let Some((ok, ov)) = self.kv.get(l) {
                let n = keep.min(self.kv_cap) * kvd;
                if n > 0 {
                    self.gpu.copy(self.gpu.ptr(&k), self.gpu.ptr(ok), n)?;
                    self.gpu.copy(self.gpu.ptr(&v), self.gpu.ptr(ov), n)?;
                }
            }
            kv.push((k, v));
        }
        self.kv = kv;
        self.kv_cap = cap;
        Ok(())
    }

    /// (type, rows, cols, row_bytes, device address) of weight `name`, uploading it first in
    /// streamed mode.
    fn weight(
        &mut self,
        w: &dyn Weights,
        name: Name,
    ) -> Result<(GgmlType, usize, usize, usize, u64)> {
        let d = match self.resident.as_ref().and_then(|r| r.get(&name)) {
            Some(d) => d,
            None => {
                let m = w.mat(name)?;
                let d = self.upload(&m)?;
                self.streamed.push(d);
                self.streamed.last().unwrap()
            }
        };
        Ok((d.ty, d.rows, d.cols, d.row_bytes, self.gpu.ptr(&d.buf)))
    }

    /// `y[n][rows] = x[n][cols] . W^T` for weight `name`; returns rows.
    fn matmul(&mut self, w: &dyn Weights, name: Name, x: u64, n: usize, y: u64) -> Result<usize> {
        let (ty, rows, cols, rb, wp) = self.weight(w, name)?;
        let t = kernel_type(ty)?;
        if n <= GEMV_MAX {
            // 8 warps per block, one weight row per warp.
            let args = [
                Arg::P(wp),
                Arg::L(rb as i64),
                Arg::I(rows as i32),
                Arg::I(cols as i32),
                Arg::P(x),
                Arg::I(n as i32),
                Arg::P(y),
            ];
            self.gpu
                .launch(&format!("gemv_{t}"), blocks(rows, 8), 256, &args)?;
        } else if ty == GgmlType::F32 {
            self.gpu.sgemm(wp, rows, cols, x, n, y, rows)?;
        } else {
            let chunk = (DEQ_FLOATS / cols).clamp(1, rows);
            let deq = self.slot(Slot::Deq, chunk * cols)?;
            let mut r0 = 0;
            while r0 < rows {
                let m = chunk.min(rows - r0);
                let args = [
                    Arg::P(wp + (r0 * rb) as u64),
                    Arg::L(rb as i64),
                    Arg::I(m as i32),
                    Arg::I(cols as i32),
                    Arg::P(deq),
                ];
                let grid = blocks(m * cols, 256).min(1 << 20);
                self.gpu.launch(&format!("dequant_{t}"), grid, 256, &args)?;
                self.gpu
                    .sgemm(deq, m, cols, x, n, y + (r0 * 4) as u64, rows)?;
                r0 += m;
            }
        }
        Ok(rows)
    }

    fn rms_norm(&mut self, name: Name, x: u64, out: u64, n: usize) -> Result<()> {
        let h = self.cfg.hidden;
        let wn = self
            .gpu
            .ptr(self.norms.get(&name).context("norm not uploaded")?);
        let args = [
            Arg::P(x),
            Arg::P(wn),
            Arg::P(out),
            Arg::I(h as i32),
            Arg::F(self.cfg.rms_eps),
        ];
        self.gpu.launch("rms_norm", n as u64, 256, &args)
    }

    fn elementwise(&self, k: &str, a: u64, b: u64, n: usize) -> Result<()> {
        self.gpu.launch(
            k,
            blocks(n, 256),
            256,
            &[Arg::P(a), Arg::P(b), Arg::L(n as i64)],
        )
    }

    /// `down(silu(gate(x)) * up(x))` of `m` rows at `x` into `out`.
    fn swiglu(
        &mut self,
        w: &dyn Weights,
        names: [Name; 3],
        x: u64,
        m: usize,
        out: u64,
    ) -> Result<()> {
        let f = self.cfg.ffn;
        let (g, u) = (self.slot(Slot::G, m * f)?, self.slot(Slot::U, m * f)?);
        self.matmul(w, names[0], x, m, g)?;
        self.matmul(w, names[1], x, m, u)?;
        self.elementwise("swiglu", g, u, m * f)?;
        self.matmul(w, names[2], g, m, out)?;
        Ok(())
    }

    /// The Mixtral MoE of layer `l` on `n` normed rows at `xn`, into `out`: routing on the
    /// host (`ffn::route`), each expert once on its positions, added in expert order.
    fn moe(&mut self, w: &dyn Weights, l: usize, xn: u64, n: usize, out: u64) -> Result<()> {
        let (h, ne) = (self.cfg.hidden, self.cfg.n_expert);
        let rp = self.slot(Slot::Router, n * ne)?;
        self.matmul(w, Name::FfnGateInp(l), xn, n, rp)?;
        let logits = self.gpu.download(rp, n * ne)?;
        let routes: Vec<Vec<(usize, f32)>> = logits
            .chunks_exact(ne)
            .map(|r| route(r, self.cfg.n_expert_used))
            .collect();
        self.gpu.zero(out, n * h)?;
        for e in 0..ne {
            let (idx, wt): (Vec<i32>, Vec<f32>) = routes
                .iter()
                .enumerate()
                .filter_map(|(t, r)| {
                    r.iter()
                        .find(|(re, _)| *re == e)
                        .map(|&(_, p)| (t as i32, p))
                })
                .unzip();
            let m = idx.len();
            if m == 0 {
                continue;
            }
            let idx_d = self.gpu.upload(&idx)?;
            let ip = self.gpu.ptr(&idx_d);
            let wp = self.slot(Slot::Wt, m)?;
            self.gpu.write(wp, &wt)?;
            let (mx, ey) = (self.slot(Slot::Mx, m * h)?, self.slot(Slot::Ey, m * h)?);
            let gather = [
                Arg::P(xn),
                Arg::P(ip),
                Arg::P(mx),
                Arg::I(m as i32),
                Arg::I(h as i32),
            ];
            self.gpu
                .launch("gather_rows", blocks(m * h, 256), 256, &gather)?;
            let names = [
                Name::FfnGateExps(l, e),
                Name::FfnUpExps(l, e),
                Name::FfnDownExps(l, e),
            ];
            self.swiglu(w, names, mx, m, ey)?;
            let scatter = [
                Arg::P(out),
                Arg::P(ey),
                Arg::P(ip),
                Arg::P(wp),
                Arg::I(m as i32),
                Arg::I(h as i32),
            ];
            self.gpu
                .launch("scatter_add", blocks(m * h, 256), 256, &scatter)?;
            // idx_d is freed on this stream after the launches that read it.
            drop(idx_d);
        }
        Ok(())
    }

    /// Runs `ids` at positions `pos0..` (the cache holds positions `0..pos0`); the caller
    /// (`Model::forward`) has checked the ids and advances its position count.
    pub fn forward(
        &mut self,
        w: &dyn Weights,
        rope: &Rope,
        ids: &[u32],
        which: Logits,
        pos0: usize,
    ) -> Result<Vec<f32>> {
        let c = self.cfg.clone();
        let (n, h, hd) = (ids.len(), c.hidden, c.head_dim);
        let (qd, kvd) = (c.q_dim(), c.kv_dim());

        // Embedding rows and rotary tables: on the host, with the CPU's own code.
        let emb = w.mat(Name::TokenEmbd)?;
        let mut x = vec![0f32; n * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            emb.dequant_row(id as usize, row);
        }
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * hd / 2),
            Vec::with_capacity(n * hd / 2),
        );
        for t in 0..n {
            let (c, s) = rope.cos_sin(pos0 + t);
            cos.extend(c);
            sin.extend(s);
        }
        let xp = self.slot(Slot::X, n * h)?;
        self.gpu.write(xp, &x)?;
        let (cp, sp) = (
            self.slot(Slot::Cos, cos.len())?,
            self.slot(Slot::Sin, sin.len())?,
        );
        self.gpu.write(cp, &cos)?;
        self.gpu.write(sp, &sin)?;
        self.ensure_kv(pos0 + n, pos0)?;

        let xn = self.slot(Slot::Xn, n * h)?;
        let (q, k, v) = (
            self.slot(Slot::Q, n * qd)?,
            self.slot(Slot::K, n * kvd)?,
            self.slot(Slot::V, n * kvd)?,
        );
        let (att, o, y) = (
            self.slot(Slot::Att, n * qd)?,
            self.slot(Slot::O, n * h)?,
            self.slot(Slot::Y, n * h)?,
        );
        let lmax = pos0 + n;
        let scores = self.slot(Slot::Scores, n * c.n_head * lmax)?;
        // transformers multiplies q.k by the python float head_dim**-0.5 (its f32 rounding).
        let scale = (hd as f64).powf(-0.5) as f32;

        for l in 0..c.n_layer {
            self.rms_norm(Name::AttnNorm(l), xp, xn, n)?;
            self.matmul(w, Name::AttnQ(l), xn, n, q)?;
            self.matmul(w, Name::AttnK(l), xn, n, k)?;
            self.matmul(w, Name::AttnV(l), xn, n, v)?;
            for (buf, heads) in [(q, c.n_head), (k, c.n_head_kv)] {
                let args = [
                    Arg::P(buf),
                    Arg::P(cp),
                    Arg::P(sp),
                    Arg::I(n as i32),
                    Arg::I(heads as i32),
                    Arg::I(hd as i32),
                ];
                self.gpu
                    .launch("rope", blocks(n * heads * hd / 2, 256), 256, &args)?;
            }
            let (kc, vc) = (self.gpu.ptr(&self.kv[l].0), self.gpu.ptr(&self.kv[l].1));
            self.gpu.copy(kc + (pos0 * kvd * 4) as u64, k, n * kvd)?;
            self.gpu.copy(vc + (pos0 * kvd * 4) as u64, v, n * kvd)?;
            let args = [
                Arg::P(q),
                Arg::P(kc),
                Arg::P(vc),
                Arg::P(att),
                Arg::P(scores),
                Arg::I(c.n_head as i32),
                Arg::I(c.n_head_kv as i32),
                Arg::I(hd as i32),
                Arg::I(pos0 as i32),
                Arg::I(lmax as i32),
                Arg::F(scale),
            ];
            self.gpu
                .launch("attention", (n * c.n_head) as u64, 128, &args)?;
            self.matmul(w, Name::AttnOutput(l), att, n, o)?;
            self.elementwise("add", xp, o, n * h)?;

            self.rms_norm(Name::FfnNorm(l), xp, xn, n)?;
            if c.is_moe() {
                self.moe(w, l, xn, n, y)?;
            } else {
                let names = [Name::FfnGate(l), Name::FfnUp(l), Name::FfnDown(l)];
                self.swiglu(w, names, xn, n, y)?;
            }
            self.elementwise("add", xp, y, n * h)?;
            self.streamed.clear();
        }

        let (src, m) = match which {
            Logits::Last => (xp + ((n - 1) * h * 4) as u64, 1),
            Logits::All => (xp, n),
        };
        self.rms_norm(Name::OutputNorm, src, xn, m)?;
        let head = if self.tied {
            Name::TokenEmbd
        } else {
            Name::Output
        };
        let lp = self.slot(Slot::Logits, m * c.vocab)?;
        self.matmul(w, head, xn, m, lp)?;
        let out = self.gpu.download(lp, m * c.vocab);
        self.streamed.clear();
        out
    }
}

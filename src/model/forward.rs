//! The transformer: embedding, then per layer RMSNorm -> attention -> residual -> RMSNorm ->
//! MLP or MoE -> residual, then the final norm and the LM head. A call processes a batch of
//! new positions (a whole prompt, or one generated token) against the KV cache.

use super::attention::{KvCache, attention};
use super::config::Config;
use super::device::Device;
use super::ffn;
use super::mat::matmul;
use super::names::Name;
use super::ops::{Rope, add, rms_norm_rows};
use super::weights::{self, Weights};
use anyhow::{Result, ensure};
use std::path::Path;

/// Sees the input of every weight matmul: the weight's name (one name per MoE expert), the `n`
/// input rows (row-major, `n` x the weight's columns) and `n`. The importance-matrix and
/// calibration passes collect activation statistics through it.
pub type Observer = Box<dyn FnMut(Name, &[f32], usize) + Send>;

pub struct Model {
    w: Box<dyn Weights>,
    cfg: Config,
    /// No `output` tensor: the LM head is `token_embd`.
    tied: bool,
    rope: Rope,
    cache: Vec<KvCache>,
    n_past: usize,
    observer: Option<Observer>,
    engine: Engine,
}

/// Where [`Model::forward`] runs. The CPU path is this file; the GPU path (`crate::cuda`)
/// computes the same steps with the same host-side rotary tables and routing.
enum Engine {
    Cpu,
    Cuda(Box<crate::cuda::Engine>),
}

/// Which positions' logits [`Model::forward`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last new position's: `vocab` floats.
    Last,
    /// Every new position's: `n * vocab` floats.
    All,
}

impl Model {
    /// Checks every weight against the config (shapes, supported types) before anything runs.
    pub fn new(w: Box<dyn Weights>) -> Result<Self> {
        let tied = weights::check(w.as_ref())?;
        let cfg = w.config().clone();
        Ok(Self {
            rope: Rope::new(cfg.head_dim, cfg.rope_theta),
            cache: vec![KvCache::default(); cfg.n_layer],
            n_past: 0,
            observer: None,
            engine: Engine::Cpu,
            w,
            cfg,
            tied,
        })
    }

    /// A GGUF file, or a checkpoint directory.
    pub fn open(path: &Path) -> Result<Self> {
        Self::new(weights::open(path)?)
    }

    /// [`Model::new`] on `device` (`Auto`: CUDA when usable, else the CPU). CUDA uploads the
    /// weights here; without the `cuda` feature or a GPU it is an error.
    pub fn new_on(w: Box<dyn Weights>, device: Device) -> Result<Self> {
        let mut m = Self::new(w)?;
        if device.resolve() == Device::Cuda {
            m.engine = Engine::Cuda(Box::new(crate::cuda::Engine::new(m.w.as_ref(), m.tied)?));
        }
        Ok(m)
    }

    /// [`Model::open`] on `device`.
    pub fn open_on(path: &Path, device: Device) -> Result<Self> {
        Self::new_on(weights::open(path)?, device)
    }

    /// The device the forward pass runs on (never `Auto`).
    pub fn device(&self) -> Device {
        match self.engine {
            Engine::Cpu => Device::Cpu,
            Engine::Cuda(_) => Device::Cuda,
        }
    }

    /// The device in words ("cpu", or the GPU and how its weights are held).
    pub fn device_description(&self) -> String {
        match &self.engine {
            Engine::Cpu => "cpu".into(),
            Engine::Cuda(e) => e.describe(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn weights(&self) -> &dyn Weights {
        self.w.as_ref()
    }

    /// Positions in the KV cache.
    pub fn n_past(&self) -> usize {
        self.n_past
    }

    /// Installs (or removes) the matmul-input observer; returns the previous one.
    pub fn set_observer(&mut self, obs: Option<Observer>) -> Option<Observer> {
        std::mem::replace(&mut self.observer, obs)
    }

    /// Empties the KV cache: the next call starts a new sequence at position 0.
    pub fn reset(&mut self) {
        self.cache.iter_mut().for_each(|c| *c = KvCache::default());
        self.n_past = 0;
    }

    /// Runs `ids` at positions `n_past..n_past + ids.len()`, extends the KV cache, and returns
    /// logits. On error the cache is reset.
    pub fn forward(&mut self, ids: &[u32], which: Logits) -> Result<Vec<f32>> {
        ensure!(!ids.is_empty(), "forward: no tokens");
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.cfg.vocab) {
            anyhow::bail!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab
            );
        }
        let r = match &mut self.engine {
            Engine::Cpu => self.run(ids, which),
            // The observer (imatrix, calibration) sees host activations: CPU only.
            Engine::Cuda(_) if self.observer.is_some() => Err(anyhow::anyhow!(
                "activation statistics are collected on the CPU only"
            )),
            Engine::Cuda(e) => e
                .forward(self.w.as_ref(), &self.rope, ids, which, self.n_past)
                .inspect(|_| self.n_past += ids.len()),
        };
        if r.is_err() {
            self.reset();
        }
        r
    }

    fn run(&mut self, ids: &[u32], which: Logits) -> Result<Vec<f32>> {
        let (n, h, hd) = (ids.len(), self.cfg.hidden, self.cfg.head_dim);
        let (pos0, eps) = (self.n_past, self.cfg.rms_eps);
        let w = self.w.as_ref();
        let obs = &mut self.observer;

        let emb = w.mat(Name::TokenEmbd)?;
        let mut x = vec![0f32; n * h];
        for (row, &id) in x.chunks_exact_mut(h).zip(ids) {
            emb.dequant_row(id as usize, row);
        }
        let rot: Vec<(Vec<f32>, Vec<f32>)> = (0..n).map(|t| self.rope.cos_sin(pos0 + t)).collect();

        for l in 0..self.cfg.n_layer {
            // Attention.
            let xn = rms_norm_rows(&x, &norm(w, Name::AttnNorm(l))?, eps);
            if let Some(o) = obs {
                for name in [Name::AttnQ(l), Name::AttnK(l), Name::AttnV(l)] {
                    o(name, &xn, n);
                }
            }
            let mut q = matmul(&w.mat(Name::AttnQ(l))?, &xn, n);
            let mut k = matmul(&w.mat(Name::AttnK(l))?, &xn, n);
            let v = matmul(&w.mat(Name::AttnV(l))?, &xn, n);
            for (t, (cos, sin)) in rot.iter().enumerate() {
                let qt = &mut q[t * self.cfg.q_dim()..(t + 1) * self.cfg.q_dim()];
                let kt = &mut k[t * self.cfg.kv_dim()..(t + 1) * self.cfg.kv_dim()];
                for head in qt.chunks_exact_mut(hd).chain(kt.chunks_exact_mut(hd)) {
                    Rope::apply(head, cos, sin);
                }
            }
            let cache = &mut self.cache[l];
            cache.k.extend_from_slice(&k);
            cache.v.extend_from_slice(&v);
            let att = attention(&self.cfg, &q, cache, pos0, n);
            if let Some(o) = obs {
                o(Name::AttnOutput(l), &att, n);
            }
            let o = matmul(&w.mat(Name::AttnOutput(l))?, &att, n);
            add(&mut x, &o);

            // Feed-forward.
            let xn = rms_norm_rows(&x, &norm(w, Name::FfnNorm(l))?, eps);
            let y = if self.cfg.is_moe() {
                ffn::moe(w, &self.cfg, l, &xn, n, obs)?
            } else {
                ffn::dense(w, l, &xn, n, obs)?
            };
            add(&mut x, &y);
        }
        self.n_past += n;

        // Only the positions whose logits are wanted go through the (vocab-sized) LM head.
        let (x, m) = match which {
            Logits::Last => (&x[(n - 1) * h..], 1),
            Logits::All => (&x[..], n),
        };
        let xn = rms_norm_rows(x, &norm(w, Name::OutputNorm)?, eps);
        let head_name = if self.tied {
            Name::TokenEmbd
        } else {
            Name::Output
        };
        if let Some(o) = obs {
            o(head_name, &xn, m);
        }
        let head = w.mat(head_name)?;
        Ok(matmul(&head, &xn, m))
    }
}

fn norm(w: &dyn Weights, name: Name) -> Result<Vec<f32>> {
    Ok(w.mat(name)?.to_f32())
}

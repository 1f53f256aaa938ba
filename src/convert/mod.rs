//! `to-gguf`: read (hf) -> map (plan) -> transform (this file) -> write (gguf).

pub mod plan;

pub use plan::{OutType, Plan, PlannedTensor, permuted_source_row, plan};

use crate::gguf::GgufWriter;
use crate::hf::{Checkpoint, ModelConfig};
use crate::output::{AtomicFile, check_output_path, checksum_path, write_checksum};
use crate::progress::Progress;
use crate::quant;
use crate::vocab::Vocab;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Options {
    pub outtype: OutType,
    /// Embed tokenizer.json as `tokenizer.huggingface.json`.
    pub hf_tokenizer_json: bool,
    pub force: bool,
    pub quiet: bool,
    pub checksum: bool,
    pub name: Option<String>,
    /// Apply the HF -> llama.cpp Q/K row permutation. Always true in real use; tests turn it off
    /// to prove that the permutation is needed.
    pub permute_qk: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            outtype: OutType::Auto,
            hf_tokenizer_json: true,
            force: false,
            quiet: true,
            checksum: true,
            name: None,
            permute_qk: true,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub input: PathBuf,
    pub output: PathBuf,
    pub outtype: String,
    pub tensors: usize,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

/// Elements converted per parallel work item: big enough to amortise scheduling, small enough
/// that a few in flight stay far below the memory budget.
const CHUNK_ELEMS: usize = 1 << 20;

/// Produces the bytes of output rows `rows` (a range over the planned tensor's outer rows).
pub fn convert_rows(
    ck: &Checkpoint,
    t: &PlannedTensor,
    rows: std::ops::Range<usize>,
) -> Result<Vec<u8>> {
    let src0 = ck.get(&t.sources[0]).expect("planned sources exist");
    let row_len = *src0.shape.last().unwrap_or(&1);
    let rows_per_src = src0.n_elements() / row_len.max(1);
    let es = src0.dtype.size();
    let mut x = vec![0f32; rows.len() * row_len];
    for (k, r) in rows.clone().enumerate() {
        let src = ck
            .get(&t.sources[r / rows_per_src])
            .expect("planned sources exist");
        let mut sr = r % rows_per_src;
        if let Some(nh) = t.permute_heads {
            sr = permuted_source_row(sr, rows_per_src, nh);
        }
        let bytes = &ck.bytes(src)[sr * row_len * es..(sr + 1) * row_len * es];
        quant::to_f32(bytes, src.dtype, &mut x[k * row_len..(k + 1) * row_len])?;
    }
    if let Some(i) = quant::first_non_finite(&x) {
        let r = rows.start + i / row_len;
        bail!(
            "{}: tensor {} has a non-finite value ({}) in row {}: the checkpoint is damaged",
            ck.dir.display(),
            t.sources[r / rows_per_src],
            x[i],
            r % rows_per_src
        );
    }
    let mut out = Vec::with_capacity(t.info.ty.row_bytes(row_len as u64)? as usize * rows.len());
    quant::encode(&x, row_len, t.info.ty, &mut out)?;
    Ok(out)
}

/// Streams every planned tensor into `w` (see [`crate::gguf::stream`]).
pub fn write_tensors<W: Write>(
    ck: &Checkpoint,
    plan: &Plan,
    w: &mut GgufWriter<W>,
    progress: &Progress,
) -> Result<()> {
    crate::gguf::stream::write_tensors(
        w,
        &plan.tensors,
        |t| {
            let row_len = t.info.dims[0] as usize;
            let n_rows = (t.info.n_elements() / t.info.dims[0]) as usize;
            let rows_per_chunk = (CHUNK_ELEMS / row_len).max(1);
            (0..n_rows)
                .step_by(rows_per_chunk)
                .map(|s| s..(s + rows_per_chunk).min(n_rows))
                .collect()
        },
        |t, rows| convert_rows(ck, t, rows),
        |t| {
            for s in &t.sources {
                ck.release(ck.get(s).expect("planned sources exist"));
            }
        },
        progress,
    )
}

fn model_name(dir: &Path, cfg: &ModelConfig) -> String {
    cfg.name_or_path
        .as_deref()
        .and_then(|p| p.rsplit('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            dir.canonicalize()
                .ok()?
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "llm-jp".into())
}

/// Opens a checkpoint and plans its conversion: everything `to_gguf` does before writing.
/// (`quantize` uses it to read a checkpoint directory without an intermediate file.)
pub fn open_plan(dir: &Path, opts: &Options) -> Result<(Checkpoint, Plan)> {
    let cfg = ModelConfig::load(dir)?;
    let ck = Checkpoint::open(dir)?;
    let rows = ck
        .get("model.embed_tokens.weight")
        .map(|t| t.shape[0])
        .with_context(|| {
            format!(
                "{}: missing tensor model.embed_tokens.weight",
                dir.display()
            )
        })?;
    let vocab = Vocab::load(dir, rows)?;
    let name = opts.name.clone().unwrap_or_else(|| model_name(dir, &cfg));
    let mut plan = plan(
        &ck,
        &cfg,
        vocab.gguf_kv(opts.hf_tokenizer_json),
        opts.outtype,
        &name,
    )?;
    if !opts.permute_qk {
        plan.tensors.iter_mut().for_each(|t| t.permute_heads = None);
    }
    Ok((ck, plan))
}

/// The whole `to-gguf` job.
pub fn to_gguf(dir: &Path, out: &Path, opts: &Options) -> Result<Report> {
    let start = Instant::now();
    check_output_path(out, opts.force, &[dir])?;
    let (ck, plan) = open_plan(dir, opts)?;
    let infos: Vec<_> = plan.tensors.iter().map(|t| t.info.clone()).collect();
    let total: u64 = infos.iter().map(|t| t.n_bytes()).sum::<Result<u64>>()?;

    let mut file = AtomicFile::create(out)?;
    let progress = Progress::bytes(total, "to-gguf", opts.quiet);
    {
        let mut w = GgufWriter::new(file.writer(), &plan.kv, &infos)?;
        write_tensors(&ck, &plan, &mut w, &progress)
            .and_then(|_| w.finish().map(|_| ()))
            .with_context(|| format!("{}: conversion failed", out.display()))?;
    }
    let bytes = file.writer().written;
    // The checksum goes first, so that a failure writing it leaves no output at all.
    let sidecar = opts.checksum.then(|| checksum_path(out));
    let committed = file.commit_with(|hash| match &sidecar {
        Some(_) => write_checksum(out, hash).map(|_| ()),
        None => Ok(()),
    });
    let sha256 = committed.inspect_err(|_| {
        if let Some(s) = &sidecar {
            let _ = std::fs::remove_file(s);
        }
    })?;
    progress.finish();
    Ok(Report {
        input: dir.to_path_buf(),
        output: out.to_path_buf(),
        outtype: format!("{:?}", plan.outtype).to_lowercase(),
        tensors: infos.len(),
        bytes,
        sha256,
        seconds: start.elapsed().as_secs_f64(),
    })
}

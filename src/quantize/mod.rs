//! `quantize`: a GGUF (F32/F16/BF16, or already quantized with --allow-requantize) or a
//! checkpoint directory becomes a GGUF in one of llama-quantize's file types, with the same
//! bytes llama-quantize writes: the same type per tensor ([`mix`]), the same tensor order and
//! metadata, and each tensor decoded to f32 and re-encoded by our ggml-exact quantizers
//! (`crate::quant`), with importance-matrix weights ([`imatrix`]) where given.
//! formats/quantize-mixes.md describes the rules.
//!
//! Memory: tensors are streamed chunk by chunk (a few MB per worker), the input's mapped pages
//! are dropped after each tensor, and the output is written through a buffer, so resident
//! memory does not grow with the model.

pub mod imatrix;
pub mod mix;

use crate::convert::{self, OutType, Plan};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use crate::hf::Checkpoint;
use crate::output::{AtomicFile, check_output_path, checksum_path, write_checksum};
use crate::progress::Progress;
use crate::quant;
use anyhow::{Context, Result, bail, ensure};
use imatrix::Imatrix;
use memmap2::Mmap;
use mix::{Choice, Ftype, MixParams, ModelInfo, TensorDesc};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct Options {
    /// A llama-quantize type name (Q4_K_M, Q8_0, ...) or ftype number.
    pub ftype: String,
    pub pure: bool,
    pub output_tensor_type: Option<String>,
    pub token_embedding_type: Option<String>,
    /// `PATTERN=TYPE`, in order; the first pattern found in a tensor's name decides.
    pub tensor_types: Vec<String>,
    pub imatrix: Option<PathBuf>,
    pub allow_requantize: bool,
    pub force: bool,
    pub quiet: bool,
    pub checksum: bool,
}

impl Options {
    pub fn new(ftype: &str) -> Self {
        Self {
            ftype: ftype.to_string(),
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            imatrix: None,
            allow_requantize: false,
            force: false,
            quiet: true,
            checksum: true,
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub input: PathBuf,
    pub output: PathBuf,
    pub ftype: String,
    pub file_type: u32,
    pub tensors: usize,
    /// Tensor count per written type.
    pub types: BTreeMap<String, usize>,
    /// Tensors whose rows did not fit the mix's block type (see formats/quantize-mixes.md).
    pub fallbacks: Vec<String>,
    /// Tensors quantized with importance-matrix weights.
    pub imatrix_tensors: usize,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

/// Where tensors come from.
enum Source {
    /// A GGUF file: its header, and our own map of its data (whose pages we drop per tensor).
    Gguf(GgufFile, Mmap),
    /// A checkpoint directory, planned as `to-gguf --outtype f32` would write it: every value
    /// exactly as stored (bf16/f16 widen exactly), so quantizing it equals quantizing the
    /// GGUF of the checkpoint's own precision.
    Dir(Checkpoint, Plan),
}

impl Source {
    fn open(input: &Path) -> Result<Self> {
        if input.is_dir() {
            let opts = convert::Options {
                outtype: OutType::F32,
                ..Default::default()
            };
            let (ck, plan) = convert::open_plan(input, &opts)?;
            return Ok(Source::Dir(ck, plan));
        }
        let g = GgufFile::open(input)?;
        let f = std::fs::File::open(input)
            .with_context(|| format!("{}: cannot open", input.display()))?;
        // SAFETY: read-only map of a file we only read; a file changed underneath us can only
        // give wrong values, and every range we take was bounds-checked by the reader.
        let map =
            unsafe { Mmap::map(&f) }.with_context(|| format!("{}: cannot map", input.display()))?;
        ensure!(
            map.len() as u64 == g.file_len(),
            "{}: changed while being read",
            input.display()
        );
        Ok(Source::Gguf(g, map))
    }

    fn kv(&self) -> &[(String, Value)] {
        match self {
            Source::Gguf(g, _) => &g.kv,
            Source::Dir(_, p) => &p.kv,
        }
    }

    /// Every tensor as stored, in file order.
    fn tensors(&self) -> Vec<TensorDesc> {
        match self {
            Source::Gguf(g, _) => g
                .tensors
                .iter()
                .map(|t| TensorDesc {
                    name: t.info.name.clone(),
                    dims: t.info.dims.clone(),
                    ty: t.info.ty,
                })
                .collect(),
            Source::Dir(_, p) => p
                .tensors
                .iter()
                .map(|t| TensorDesc {
                    name: t.info.name.clone(),
                    dims: t.info.dims.clone(),
                    ty: t.info.ty,
                })
                .collect(),
        }
    }

    /// The stored bytes of rows `rows` of tensor `i`.
    fn raw_rows(&self, i: usize, rows: Range<usize>) -> Result<Vec<u8>> {
        match self {
            Source::Gguf(g, map) => {
                let t = &g.tensors[i];
                let rb = t.info.ty.row_bytes(t.info.dims[0])? as usize;
                let off = t.offset as usize;
                Ok(map[off + rows.start * rb..off + rows.end * rb].to_vec())
            }
            Source::Dir(ck, p) => convert::convert_rows(ck, &p.tensors[i], rows),
        }
    }

    /// Rows `rows` of tensor `i` as f32 (dequantized exactly as ggml's `to_float` does).
    fn f32_rows(
        &self,
        i: usize,
        ty: GgmlType,
        rows: Range<usize>,
        row_len: usize,
    ) -> Result<Vec<f32>> {
        let raw = self.raw_rows(i, rows.clone())?;
        let mut x = vec![0f32; rows.len() * row_len];
        quant::dequantize_row(ty, &raw, &mut x)?;
        Ok(x)
    }

    /// Drops the mapped input pages of tensor `i` (they are re-read if needed again).
    fn release(&self, i: usize) {
        match self {
            Source::Gguf(g, map) => {
                let t = &g.tensors[i];
                let page = 4096;
                let s = (t.offset as usize).div_ceil(page) * page;
                let e = (t.offset + t.n_bytes) as usize / page * page;
                if e > s {
                    // SAFETY: read-only file-backed map: MADV_DONTNEED drops clean pages only,
                    // which are re-read from the file on the next access.
                    let _ = unsafe {
                        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s, e - s)
                    };
                }
            }
            Source::Dir(ck, p) => {
                for s in &p.tensors[i].sources {
                    if let Some(t) = ck.get(s) {
                        ck.release(t);
                    }
                }
            }
        }
    }
}

/// One output tensor and how to make it.
struct Job {
    /// Index in the source's tensor list.
    src: usize,
    name: String,
    dims: Vec<u64>,
    from: GgmlType,
    to: GgmlType,
    /// Per-expert importance (ne0 values per expert), when quantized with an imatrix.
    imatrix: Option<Vec<f32>>,
}

impl Job {
    fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    fn n_rows(&self) -> usize {
        (self.dims.iter().product::<u64>() / self.dims[0].max(1)) as usize
    }
    /// Rows per expert (`ne1`): chunks never cross an expert boundary.
    fn rows_per_expert(&self) -> usize {
        self.dims.get(1).copied().unwrap_or(1).max(1) as usize
    }
    fn copy(&self) -> bool {
        self.from == self.to
    }
}

/// Values converted per parallel work item.
const CHUNK_ELEMS: usize = 1 << 20;

fn produce(src: &Source, job: &Job, rows: Range<usize>) -> Result<Vec<u8>> {
    if job.copy() {
        return src.raw_rows(job.src, rows);
    }
    let row_len = job.row_len();
    let x = src.f32_rows(job.src, job.from, rows.clone(), row_len)?;
    if let Some(i) = quant::first_non_finite(&x) {
        bail!(
            "tensor {} has a non-finite value ({}) in row {}",
            job.name,
            x[i],
            rows.start + i / row_len
        );
    }
    let im = job.imatrix.as_ref().map(|v| {
        let e = rows.start / job.rows_per_expert();
        &v[e * row_len..(e + 1) * row_len]
    });
    let mut out = Vec::with_capacity(job.to.row_bytes(row_len as u64)? as usize * rows.len());
    quant::encode_with_imatrix(&x, row_len, job.to, im, &mut out)?;
    if job.to == GgmlType::F16 {
        // ggml refuses rows that overflowed to infinity (ggml_validate_row_data).
        let inf = out
            .chunks_exact(2)
            .any(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7fff == 0x7c00);
        ensure!(!inf, "tensor {}: a value overflows F16", job.name);
    }
    Ok(out)
}

/// Streams every job's bytes into `w` (see [`crate::gguf::stream`]). Chunks never cross an
/// expert boundary, so each chunk uses one expert's importance weights.
fn write_jobs<W: Write>(
    src: &Source,
    jobs: &[Job],
    w: &mut GgufWriter<W>,
    progress: &Progress,
) -> Result<()> {
    crate::gguf::stream::write_tensors(
        w,
        jobs,
        |job| {
            let per_chunk = (CHUNK_ELEMS / job.row_len().max(1)).max(1);
            let per_expert = job.rows_per_expert();
            let n = job.n_rows();
            let mut chunks = Vec::new();
            let mut s = 0;
            while s < n {
                let expert_end = (s / per_expert + 1) * per_expert;
                let e = (s + per_chunk).min(expert_end).min(n);
                chunks.push(s..e);
                s = e;
            }
            chunks
        },
        |job, rows| produce(src, job, rows),
        |job| src.release(job.src),
        progress,
    )
}

/// Replaces (remove, then append) a metadata key, as gguf_set_val_* does.
fn set_kv(kv: &mut Vec<(String, Value)>, key: &str, v: Value) {
    kv.retain(|(k, _)| k != key);
    kv.push((key.to_string(), v));
}

/// Everything decided before a byte is written: output metadata, tensor table and jobs.
struct Prepared {
    kv: Vec<(String, Value)>,
    jobs: Vec<Job>,
    fallbacks: Vec<String>,
}

fn prepare(
    input: &Path,
    src: &Source,
    ftype: Ftype,
    params: &MixParams,
    im: Option<(&Imatrix, &Path, String)>,
    allow_requantize: bool,
) -> Result<Prepared> {
    let kv_in = src.kv();
    let get = |k: &str| kv_in.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    if let Some(n) = get("split.count").and_then(Value::as_u64) {
        ensure!(
            n <= 1,
            "{}: a split GGUF ({n} files) is not supported: merge it first (llama-gguf-split --merge)",
            input.display()
        );
    }
    if let Some(a) = get("general.alignment") {
        ensure!(
            a.as_u64() == Some(32),
            "{}: general.alignment {} is not supported (only the default 32)",
            input.display(),
            a.summary()
        );
    }
    let model = ModelInfo::from_kv(kv_in).with_context(|| format!("{}", input.display()))?;
    let all = src.tensors();
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.sort_by(|&a, &b| mix::llama_order(&all[a].name, &all[b].name));
    let sorted: Vec<TensorDesc> = order.iter().map(|&i| all[i].clone()).collect();
    let choices: Vec<Choice> = mix::choose_types(&model, params, &sorted)?;

    // The importance matrix must describe this model: every entry names one of its tensors,
    // with one value per column (per expert for expert tensors).
    if let Some((m, path, _)) = &im {
        for (name, v) in &m.entries {
            let t = all.iter().find(|t| &t.name == name).with_context(|| {
                format!(
                    "{}: importance matrix entry {name} is not a tensor of {}: it was made for another model",
                    path.display(),
                    input.display()
                )
            })?;
            let want = t.dims[0] * t.dims.get(2).copied().unwrap_or(1);
            ensure!(
                v.len() as u64 == want || name == "token_embd.weight",
                "{}: importance matrix entry {name} has {} values but the tensor needs {want}: it was made for another model",
                path.display(),
                v.len()
            );
        }
    }

    let mut jobs = Vec::with_capacity(sorted.len());
    let mut fallbacks = Vec::new();
    for ((&i, t), c) in order.iter().zip(&sorted).zip(&choices) {
        let (from, to) = (t.ty, c.ty);
        if c.fallback {
            fallbacks.push(format!("{} -> {}", t.name, to.name()));
        }
        let mut imx = None;
        if from != to {
            ensure!(
                mix::WRITABLE.contains(&to),
                "tensor {}: cannot write type {}",
                t.name,
                to.name()
            );
            to.row_bytes(t.dims[0]).with_context(|| {
                format!(
                    "tensor {}: type {} does not fit its rows",
                    t.name,
                    to.name()
                )
            })?;
            ensure!(
                quant::can_dequantize(from),
                "tensor {}: cannot decode type {}",
                t.name,
                from.name()
            );
            if mix::is_quantized(from) && !allow_requantize {
                bail!(
                    "{}: tensor {} is already quantized ({}): requantizing loses quality; use --allow-requantize to do it anyway",
                    input.display(),
                    t.name,
                    from.name()
                );
            }
            if let Some((m, _, _)) = &im
                && let Some(v) = m.entries.get(&t.name)
                && v.len() as u64 == t.dims[0] * t.dims.get(2).copied().unwrap_or(1)
            {
                imx = Some(v.clone());
            }
            if c.requires_imatrix && imx.is_none() {
                bail!(
                    "tensor {}: {} in a {} file needs an importance matrix (--imatrix) with an entry for it",
                    t.name,
                    to.name(),
                    ftype.name()
                );
            }
        }
        let nd = mix::n_dims(&t.dims);
        jobs.push(Job {
            src: i,
            name: t.name.clone(),
            dims: t.dims[..nd].to_vec(),
            from,
            to,
            imatrix: imx,
        });
    }

    let mut kv = kv_in.to_vec();
    set_kv(&mut kv, "general.quantization_version", Value::U32(2));
    set_kv(&mut kv, "general.file_type", Value::U32(ftype.id()));
    for k in ["split.no", "split.count", "split.tensors.count"] {
        kv.retain(|(key, _)| key != k);
    }
    if let Some((m, _, arg)) = &im {
        for (k, v) in m.kv(arg) {
            set_kv(&mut kv, &k, v);
        }
    }
    Ok(Prepared {
        kv,
        jobs,
        fallbacks,
    })
}

/// Parses the options into the mix parameters.
pub fn mix_params(opts: &Options) -> Result<(Ftype, MixParams)> {
    let ftype = Ftype::parse(&opts.ftype)?;
    let mut p = MixParams::new(ftype);
    p.pure = opts.pure;
    p.output_tensor_type = opts
        .output_tensor_type
        .as_deref()
        .map(mix::parse_ggml_type)
        .transpose()
        .context("--output-tensor-type")?;
    p.token_embedding_type = opts
        .token_embedding_type
        .as_deref()
        .map(mix::parse_ggml_type)
        .transpose()
        .context("--token-embedding-type")?;
    for a in &opts.tensor_types {
        p.add_tensor_type(a)?;
    }
    p.has_imatrix = opts.imatrix.is_some();
    Ok((ftype, p))
}

/// The whole `quantize` job.
pub fn quantize(input: &Path, out: &Path, opts: &Options) -> Result<Report> {
    let start = Instant::now();
    let mut inputs = vec![input];
    if let Some(i) = &opts.imatrix {
        inputs.push(i);
    }
    check_output_path(out, opts.force, &inputs)?;
    let (ftype, params) = mix_params(opts)?;
    let im = match &opts.imatrix {
        Some(p) => Some(Imatrix::load(p)?),
        None => None,
    };
    let src = Source::open(input)?;
    let im_arg = opts
        .imatrix
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let prepared = prepare(
        input,
        &src,
        ftype,
        &params,
        im.as_ref()
            .zip(opts.imatrix.as_deref())
            .zip(im_arg)
            .map(|((m, p), a)| (m, p, a)),
        opts.allow_requantize,
    )?;
    let infos: Vec<TensorInfo> = prepared
        .jobs
        .iter()
        .map(|j| TensorInfo {
            name: j.name.clone(),
            dims: j.dims.clone(),
            ty: j.to,
        })
        .collect();
    let total: u64 = infos.iter().map(|t| t.n_bytes()).sum::<Result<u64>>()?;

    let mut file = AtomicFile::create(out)?;
    let progress = Progress::bytes(total, &format!("quantize {}", ftype.name()), opts.quiet);
    {
        let mut w = GgufWriter::new(file.writer(), &prepared.kv, &infos)?;
        write_jobs(&src, &prepared.jobs, &mut w, &progress)
            .and_then(|_| w.finish().map(|_| ()))
            .with_context(|| format!("{}: quantization failed", out.display()))?;
    }
    let bytes = file.writer().written;
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
    let mut types = BTreeMap::new();
    for j in &prepared.jobs {
        *types.entry(j.to.name().to_string()).or_insert(0) += 1;
    }
    Ok(Report {
        input: input.to_path_buf(),
        output: out.to_path_buf(),
        ftype: ftype.name().to_string(),
        file_type: ftype.id(),
        tensors: prepared.jobs.len(),
        types,
        fallbacks: prepared.fallbacks,
        imatrix_tensors: prepared.jobs.iter().filter(|j| j.imatrix.is_some()).count(),
        bytes,
        sha256,
        seconds: start.elapsed().as_secs_f64(),
    })
}

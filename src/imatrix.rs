//! `imatrix`: an importance matrix computed with our forward pass over calibration text, written
//! in llama-imatrix's GGUF format, so that our `quantize --imatrix` and llama.cpp's
//! llama-quantize both take it.
//!
//! What llama-imatrix does, and so do we (tools/imatrix/imatrix.cpp):
//! - the text is tokenized whole, with BOS (llama.cpp's tokenizer for a GGUF input, the
//!   model's own tokenizer.json for a checkpoint), and cut into chunks of `chunk_size` tokens
//!   (a partial last chunk is dropped); each chunk starts a new sequence with its first token
//!   replaced by BOS, and runs as one batch;
//! - for every weight matmul in `blk.*` (and `output.weight` with `--process-output`) it sums,
//!   per input column, x and x² over the input rows, in f32, row after row; a dense weight
//!   counts its input rows, only from batches of at least 16 rows; an expert tensor keeps one
//!   slice and one count per expert, for the rows routed to that expert;
//! - the file holds per weight `NAME.in_sum2` and `NAME.in_sum` (F32, `{ncols, n_mat}`) and
//!   `NAME.counts` (F32, `{1, n_mat}`), names sorted, and `general.type = imatrix`,
//!   `imatrix.datasets`, `imatrix.chunk_count`, `imatrix.chunk_size`.
//!
//! The activations are our forward pass's, which matches llama.cpp's to about 1e-5, not bit
//! for bit, so the sums agree with llama-imatrix's to that precision.

use crate::gguf::{GgmlType, GgufWriter, TensorInfo, Value};
use crate::model::{Logits, Model, Name};
use crate::output::{AtomicFile, check_output_path};
use crate::progress::Progress;
use crate::prompt::{PromptEncoder, TokenizerKind};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The default calibration text: Japanese-heavy, as the llm-jp models are. JGLUE's
/// JCommonsenseQA and JNLI lines (CC BY-SA 4.0, fixtures/corpus/README.md), then our mixed
/// Japanese / English / code sample.
pub const BUILTIN_TEXT: [&str; 3] = [
    include_str!("../fixtures/corpus/ja-jcommonsenseqa-2000.txt"),
    include_str!("../fixtures/corpus/ja-jnli-2000.txt"),
    crate::verify::tokenizer::BUILTIN_CORPUS,
];
pub const BUILTIN_NAME: &str = "builtin:jglue-jcqa+jnli+sample";
/// Chunks taken from the built-in text unless `--chunks` says otherwise: enough for stable
/// statistics in minutes on a 2-core machine for the small models.
pub const BUILTIN_CHUNKS: usize = 64;
/// llama-imatrix ignores dense matmuls over fewer rows (single-token generation steps).
const MIN_ROWS: usize = 16;

pub struct Options {
    /// Calibration text; None: the built-in text.
    pub text: Option<PathBuf>,
    pub chunk_size: usize,
    /// At most this many chunks (None: every whole chunk, or BUILTIN_CHUNKS of the built-in).
    pub chunks: Option<usize>,
    /// Also record output.weight's input (llama-imatrix --process-output).
    pub process_output: bool,
    pub force: bool,
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            text: None,
            chunk_size: 512,
            chunks: None,
            process_output: false,
            force: false,
            quiet: false,
        }
    }
}

/// What was computed, for the CLI's summary.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub output: PathBuf,
    pub dataset: String,
    pub tokens: usize,
    pub chunks: usize,
    pub chunk_size: usize,
    pub entries: usize,
    pub seconds: f64,
}

/// Sums for one weight: `n_mat` slices of `cols` (one per expert; 1 for a dense weight).
struct Stats {
    cols: usize,
    sum: Vec<f32>,
    sum2: Vec<f32>,
    counts: Vec<f32>,
}

impl Stats {
    fn new(cols: usize, n_mat: usize) -> Self {
        Self {
            cols,
            sum: vec![0.0; cols * n_mat],
            sum2: vec![0.0; cols * n_mat],
            counts: vec![0.0; n_mat],
        }
    }

    /// Adds `n` rows of input to slice `mat`, in row order (f32, as llama-imatrix sums).
    fn add(&mut self, mat: usize, x: &[f32], n: usize) -> Result<()> {
        let c = self.cols;
        ensure!(x.len() == n * c, "activation rows of the wrong width");
        let (s, s2) = (
            &mut self.sum[mat * c..(mat + 1) * c],
            &mut self.sum2[mat * c..(mat + 1) * c],
        );
        for row in x.chunks_exact(c) {
            for ((a, b), &v) in s.iter_mut().zip(s2.iter_mut()).zip(row) {
                *a += v;
                *b += v * v;
            }
        }
        if let Some(bad) = s2.iter().position(|v| !v.is_finite()) {
            bail!("non-finite activation sum at column {bad}");
        }
        self.counts[mat] += n as f32;
        Ok(())
    }
}

/// The collector behind the forward pass's observer.
struct Collector {
    stats: BTreeMap<String, Stats>,
    n_expert: usize,
    process_output: bool,
    error: Option<String>,
}

impl Collector {
    fn observe(&mut self, name: Name, x: &[f32], n: usize) {
        if self.error.is_some() || n == 0 {
            return;
        }
        let (mat, n_mat) = match name {
            Name::FfnGateExps(_, e) | Name::FfnUpExps(_, e) | Name::FfnDownExps(_, e) => {
                (e, self.n_expert)
            }
            Name::Output | Name::TokenEmbd if !self.process_output => return,
            _ if n < MIN_ROWS => return,
            _ => (0, 1),
        };
        // A tied head reads token_embd; llama-imatrix records it under output.weight's node
        // name only when the model has one, so a tied head is recorded as token_embd.
        let key = name.gguf();
        let cols = x.len() / n;
        let s = self
            .stats
            .entry(key.clone())
            .or_insert_with(|| Stats::new(cols, n_mat));
        if let Err(e) = s.add(mat, x, n) {
            self.error = Some(format!("{key}: {e}"));
        }
    }
}

fn load_text(opts: &Options) -> Result<(String, String)> {
    match &opts.text {
        Some(p) => {
            let t = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read calibration text", p.display()))?;
            Ok((t, p.display().to_string()))
        }
        None => Ok((BUILTIN_TEXT.concat(), BUILTIN_NAME.to_string())),
    }
}

pub fn run(model_path: &Path, out: &Path, opts: &Options) -> Result<Summary> {
    let t0 = std::time::Instant::now();
    ensure!(opts.chunk_size >= 2, "--chunk-size must be at least 2");
    let mut inputs: Vec<&Path> = vec![model_path];
    if let Some(t) = &opts.text {
        inputs.push(t);
    }
    check_output_path(out, opts.force, &inputs)?;
    let (text, dataset) = load_text(opts)?;

    let enc = PromptEncoder::open(model_path)?;
    // llama-imatrix tokenizes with llama.cpp's tokenizer; a checkpoint has only its own.
    let kind = if model_path.is_dir() || enc.llama().is_none() {
        TokenizerKind::Hf
    } else {
        TokenizerKind::Llama
    };
    let tokens = enc.encode(&text, false, kind)?;
    let whole = tokens.len() / opts.chunk_size;
    ensure!(
        whole >= 1,
        "{dataset}: the calibration text has {} tokens, fewer than one chunk of {} (use a \
         longer text or a smaller --chunk-size)",
        tokens.len(),
        opts.chunk_size
    );
    let limit = opts.chunks.unwrap_or(if opts.text.is_none() {
        BUILTIN_CHUNKS
    } else {
        whole
    });
    ensure!(limit >= 1, "--chunks must be at least 1");
    let n_chunks = whole.min(limit);

    let mut model = Model::open(model_path).with_context(|| format!("{}", model_path.display()))?;
    let cfg = model.config().clone();
    let bos = tokens[0];
    let collector = Arc::new(Mutex::new(Collector {
        stats: BTreeMap::new(),
        n_expert: cfg.n_expert.max(1),
        process_output: opts.process_output,
        error: None,
    }));
    let c2 = Arc::clone(&collector);
    model.set_observer(Some(Box::new(move |name, x, n| {
        c2.lock().expect("collector").observe(name, x, n)
    })));

    let bar = Progress::items(n_chunks as u64, "imatrix chunks", opts.quiet);
    let which = if opts.process_output {
        Logits::All
    } else {
        Logits::Last
    };
    for c in 0..n_chunks {
        let mut ids = tokens[c * opts.chunk_size..(c + 1) * opts.chunk_size].to_vec();
        ids[0] = bos;
        model.reset();
        model.forward(&ids, which)?;
        if let Some(e) = &collector.lock().expect("collector").error {
            bail!("{e}");
        }
        bar.inc(1);
    }
    bar.finish();
    model.set_observer(None);
    let col = Arc::try_unwrap(collector)
        .ok()
        .expect("observer dropped")
        .into_inner()
        .expect("collector");

    write(out, &col.stats, &dataset, n_chunks, opts.chunk_size)?;
    Ok(Summary {
        output: out.to_path_buf(),
        dataset,
        tokens: tokens.len(),
        chunks: n_chunks,
        chunk_size: opts.chunk_size,
        entries: col.stats.len(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes llama-imatrix's GGUF layout (see the module comment), atomically.
fn write(
    out: &Path,
    stats: &BTreeMap<String, Stats>,
    dataset: &str,
    chunks: usize,
    chunk_size: usize,
) -> Result<()> {
    let kv = vec![
        ("general.type".to_string(), Value::String("imatrix".into())),
        (
            "imatrix.datasets".to_string(),
            Value::ArrString(vec![dataset.to_string()]),
        ),
        ("imatrix.chunk_count".to_string(), Value::U32(chunks as u32)),
        (
            "imatrix.chunk_size".to_string(),
            Value::U32(chunk_size as u32),
        ),
    ];
    let mut infos = Vec::new();
    let mut data: Vec<Vec<u8>> = Vec::new();
    for (name, s) in stats {
        let n_mat = s.counts.len() as u64;
        let mut add = |suffix: &str, dims: Vec<u64>, v: &[f32]| {
            infos.push(TensorInfo {
                name: format!("{name}.{suffix}"),
                dims,
                ty: GgmlType::F32,
            });
            data.push(f32_bytes(v));
        };
        add("in_sum2", vec![s.cols as u64, n_mat], &s.sum2);
        add("counts", vec![1, n_mat], &s.counts);
        add("in_sum", vec![s.cols as u64, n_mat], &s.sum);
    }
    let mut file = AtomicFile::create(out)?;
    {
        let mut w = GgufWriter::new(file.writer(), &kv, &infos)?;
        for d in &data {
            w.begin_tensor()?;
            w.write(d)?;
            w.end_tensor()?;
        }
        w.finish()?.flush()?;
    }
    file.commit()?;
    Ok(())
}

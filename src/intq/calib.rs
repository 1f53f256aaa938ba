//! Calibration: text through our own forward pass (src/model), collecting what the methods need
//! from each Linear's inputs. The text is tokenized with the model directory's tokenizer.json as
//! transformers does (src/prompt.rs), concatenated, and cut into `samples` sequences of
//! `seq_len` tokens; too little text in a `--calibration` file is an error, not a silently
//! shorter calibration (the built-in text gives as many sequences as it holds, up to `samples`).

use super::Options;
use crate::model::{Logits, Model, Name, Observer};
use crate::progress::Progress;
use crate::prompt::{PromptEncoder, TokenizerKind};
use anyhow::{Context, Result, ensure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The built-in calibration text: Japanese-heavy (verify's mixed sample, the JCommonsenseQA
/// and JNLI texts of fixtures/corpus).
const BUILTIN: &[&str] = &[
    include_str!("../verify/sample.txt"),
    include_str!("../../fixtures/corpus/ja-jcommonsenseqa-2000.txt"),
    include_str!("../../fixtures/corpus/ja-jnli-2000.txt"),
];

#[derive(Clone, Debug)]
pub struct CalibOptions {
    /// Text, one sample per line (default: the built-in sample).
    pub file: Option<PathBuf>,
    /// Sequences of `seq_len` tokens.
    pub samples: usize,
    pub seq_len: usize,
    /// Render each line through the chat template as a user turn.
    pub chat: bool,
}

impl Default for CalibOptions {
    fn default() -> Self {
        Self {
            file: None,
            samples: 128,
            seq_len: 512,
            chat: false,
        }
    }
}

/// The calibration sequences for the model in `dir`.
pub fn sequences(dir: &Path, c: &CalibOptions) -> Result<Vec<Vec<u32>>> {
    ensure!(
        c.samples > 0 && c.seq_len > 1,
        "--samples and --seq-len must be positive"
    );
    let (text, what) = match &c.file {
        Some(f) => (
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?,
            f.display().to_string(),
        ),
        None => (BUILTIN.concat(), "the built-in calibration text".into()),
    };
    let enc = PromptEncoder::open(dir)?;
    let want = c.samples * c.seq_len;
    let mut ids = Vec::with_capacity(want);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        ids.extend(enc.encode(line, c.chat, TokenizerKind::Hf)?);
        if ids.len() >= want {
            break;
        }
    }
    // The built-in text (33.6k tokens) is shorter than the default 128 x 512: use what fits.
    if c.file.is_none() && ids.len() < want && ids.len() >= c.seq_len {
        let n = ids.len() / c.seq_len * c.seq_len;
        return Ok(ids[..n].chunks(c.seq_len).map(|s| s.to_vec()).collect());
    }
    ensure!(
        ids.len() >= want,
        "{what}: {} tokens, but --samples {} x --seq-len {} needs {want} (give more text or fewer samples)",
        ids.len(),
        c.samples,
        c.seq_len
    );
    Ok(ids[..want].chunks(c.seq_len).map(|s| s.to_vec()).collect())
}

/// Per-Linear (HF name) mean squared input activation per column, from a forward pass over the
/// calibration text; None unless `--calibration` was given (mse then weighs all columns alike).
pub fn column_stats(input: &Path, opts: &Options) -> Result<Option<HashMap<String, Vec<f32>>>> {
    if opts.calib.file.is_none() {
        return Ok(None);
    }
    let seqs = sequences(input, &opts.calib)?;
    let mut model = Model::open(input)?;
    type Acc = HashMap<Name, (Vec<f64>, u64)>;
    let acc: Arc<Mutex<Acc>> = Arc::default();
    let a = acc.clone();
    let obs: Observer = Box::new(move |name, x, n| {
        let cols = x.len() / n.max(1);
        let mut m = a.lock().expect("observer lock");
        let (s, c) = m.entry(name).or_insert_with(|| (vec![0.0; cols], 0));
        for row in x.chunks_exact(cols) {
            for (s, v) in s.iter_mut().zip(row) {
                *s += (*v as f64) * (*v as f64);
            }
        }
        *c += n as u64;
    });
    model.set_observer(Some(obs));
    let p = Progress::items(seqs.len() as u64, "calibrate", opts.quiet);
    for s in &seqs {
        model.reset();
        model.forward(s, Logits::Last)?;
        p.inc(1);
    }
    p.finish();
    model.set_observer(None);
    let m = std::mem::take(&mut *acc.lock().expect("observer lock"));
    Ok(Some(
        m.into_iter()
            .map(|(name, (s, c))| {
                let c = c.max(1) as f64;
                (name.hf(), s.iter().map(|v| (v / c) as f32).collect())
            })
            .collect(),
    ))
}

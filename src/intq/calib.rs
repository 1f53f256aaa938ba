//! Calibration: text through our own forward pass, collecting what the methods need from each
//! Linear's inputs.

use super::Options;
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct CalibOptions {
    /// Text, one sample per line (default: the built-in Japanese-heavy sample).
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

/// Per-Linear mean squared input activation per column, when `--calibration` was given.
pub fn column_stats(_input: &Path, opts: &Options) -> Result<Option<HashMap<String, Vec<f32>>>> {
    if opts.calib.file.is_none() {
        return Ok(None);
    }
    bail!("activation-weighted mse is not implemented yet")
}

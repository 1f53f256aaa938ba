//! GPTQ (Frantar et al. 2022).

use super::Options;
use super::pack::QTensor;
use crate::hf::Checkpoint;
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::Path;

/// Damping: this share of the mean Hessian diagonal is added to the diagonal.
pub const DAMP: f64 = 0.01;

pub fn run(_input: &Path, _ck: &Checkpoint, _opts: &Options) -> Result<HashMap<String, QTensor>> {
    bail!("--method gptq is not implemented yet")
}

//! The output directory: safetensors shards laid out like the input's (each tensor goes to the
//! file named like its source shard), config.json with `quantization_config`, the tokenizer
//! and generation files. Everything is written into a temporary directory beside the target
//! and renamed into place at the end, so a failed run leaves nothing behind.

use super::pack::{QTensor, float_bytes, u32_bytes};
use super::{Format, Options};
use crate::hf::writer::{Decl, SafetensorsWriter};
use crate::hf::{Checkpoint, Dtype};
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// A directory removed on drop unless [`TempDir::commit`] renamed it into place.
pub struct TempDir {
    pub path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl TempDir {
    pub fn create(dest: &Path, force: bool) -> Result<Self> {
        if dest.exists() && !force {
            bail!(
                "{}: output exists (use --force to overwrite)",
                dest.display()
            );
        }
        if dest.exists() && !dest.is_dir() {
            bail!("{}: output exists and is not a directory", dest.display());
        }
        let name = dest
            .file_name()
            .context("output path has no directory name")?
            .to_string_lossy();
        let path = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir(&path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Self {
            path,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    pub fn commit(mut self) -> Result<()> {
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest)
                .with_context(|| format!("{}: cannot replace", self.dest.display()))?;
        }
        std::fs::rename(&self.path, &self.dest)
            .with_context(|| format!("{}: cannot rename into place", self.dest.display()))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One output tensor: copied from the input, or one part of a quantized Linear.
enum Source {
    Copy(String),
    Part(String, Part),
}

#[derive(Clone, Copy)]
enum Part {
    Packed,
    Shape,
    Scale,
    Int8,
    QWeight,
    QZeros,
    Scales,
    GIdx,
}

/// The output tensors of a quantized Linear `base` (`rows` x `cols`) in `format`.
fn parts(
    format: Format,
    base: &str,
    rows: usize,
    cols: usize,
    bits: usize,
    groups: usize,
    dt: Dtype,
) -> Vec<(String, Dtype, Vec<usize>, Part)> {
    let n = |s: &str| format!("{base}.{s}");
    match format {
        Format::CompressedTensors => vec![
            (
                n("weight_packed"),
                Dtype::I32,
                vec![rows, cols * bits / 32],
                Part::Packed,
            ),
            (n("weight_scale"), dt, vec![rows, groups], Part::Scale),
            (n("weight_shape"), Dtype::I64, vec![2], Part::Shape),
        ],
        Format::IntQuantized => vec![
            (n("weight"), Dtype::I8, vec![rows, cols], Part::Int8),
            (n("weight_scale"), dt, vec![rows, groups], Part::Scale),
        ],
        Format::Gptq => vec![
            (n("g_idx"), Dtype::I32, vec![cols], Part::GIdx),
            (
                n("qweight"),
                Dtype::I32,
                vec![cols * bits / 32, rows],
                Part::QWeight,
            ),
            (
                n("qzeros"),
                Dtype::I32,
                vec![groups, rows * bits / 32],
                Part::QZeros,
            ),
            (n("scales"), Dtype::F16, vec![groups, rows], Part::Scales),
        ],
    }
}

fn encode(t: &QTensor, part: Part, dt: Dtype) -> Vec<u8> {
    match part {
        Part::Packed => u32_bytes(&t.packed_rows()),
        Part::Shape => [t.rows as i64, t.cols as i64]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        Part::Scale => float_bytes(&t.scales, dt),
        Part::Int8 => t.q.iter().map(|&v| v as u8).collect(),
        Part::QWeight => u32_bytes(&t.packed_gptq()),
        Part::QZeros => u32_bytes(&t.gptq_zeros()),
        Part::Scales => float_bytes(&t.scales_t(), Dtype::F16),
        Part::GIdx => (0..t.cols)
            .flat_map(|k| ((k / t.group) as i32).to_le_bytes())
            .collect(),
    }
}

/// One output shard: tensor name -> (dtype, shape, where its bytes come from).
type ShardPlan = BTreeMap<String, (Dtype, Vec<usize>, Source)>;

/// The dtype scales are stored in for a weight of `weight_dt`.
pub fn scale_dtype(format: Format, weight_dt: Dtype) -> Dtype {
    match format {
        Format::Gptq => Dtype::F16,
        _ => weight_dt,
    }
}

/// Writes every shard. `quantize(name)` gives the integers of the Linear weight `name`
/// (called once per quantized weight, in name order within each shard); `is_quantized(name)`
/// says which weights are.
pub fn write_shards(
    ck: &Checkpoint,
    dir: &Path,
    opts: &Options,
    is_quantized: &dyn Fn(&str) -> bool,
    quantize: &mut dyn FnMut(&str) -> Result<QTensor>,
) -> Result<u64> {
    let bits = opts.bits as usize;
    // shard file -> output tensor name -> (dtype, shape, source)
    let mut shards: BTreeMap<String, ShardPlan> = BTreeMap::new();
    for (name, t) in &ck.tensors {
        let file = ck.shards[t.shard]
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model.safetensors".into());
        let out = shards.entry(file).or_default();
        if is_quantized(name) {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let groups = cols / opts.group_for(cols);
            let base = name.strip_suffix(".weight").unwrap_or(name);
            let dt = scale_dtype(opts.format, t.dtype);
            for (n, d, shape, part) in parts(opts.format, base, rows, cols, bits, groups, dt) {
                out.insert(n, (d, shape, Source::Part(name.clone(), part)));
            }
        } else {
            out.insert(
                name.clone(),
                (t.dtype, t.shape.clone(), Source::Copy(name.clone())),
            );
        }
    }
    let n_quant = ck.tensors.keys().filter(|n| is_quantized(n)).count();
    let progress = Progress::items(n_quant as u64, "quantize", opts.quiet);
    let mut total = 0u64;
    let mut weight_map = BTreeMap::new();
    for (file, tensors) in &shards {
        let decls: Vec<Decl> = tensors
            .iter()
            .map(|(n, (d, s, _))| Decl {
                name: n.clone(),
                dtype: *d,
                shape: s.clone(),
            })
            .collect();
        total += decls.iter().map(|d| d.n_bytes() as u64).sum::<u64>();
        let path = dir.join(file);
        let f = std::fs::File::create(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        let mut w = SafetensorsWriter::new(
            BufWriter::with_capacity(8 << 20, f),
            &decls,
            &[("format", "pt")],
        )?;
        // The parts of one Linear are adjacent in name order, so one QTensor at a time.
        let mut current: Option<(String, QTensor)> = None;
        for (n, (_, _, src)) in tensors {
            weight_map.insert(n.clone(), file.clone());
            match src {
                Source::Copy(name) => {
                    let t = ck.get(name).expect("listed tensor");
                    w.write_tensor(ck.bytes(t))?;
                    ck.release(t);
                }
                Source::Part(name, part) => {
                    if current.as_ref().is_none_or(|(c, _)| c != name) {
                        progress.set_message(name);
                        current = Some((name.clone(), quantize(name)?));
                        progress.inc(1);
                    }
                    let (_, qt) = current.as_ref().expect("set above");
                    let dt = scale_dtype(opts.format, ck.get(name).expect("listed").dtype);
                    w.write_tensor(&encode(qt, *part, dt))?;
                }
            }
        }
        let bw = w.finish()?;
        let f = bw
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("{}: write failed", path.display()))?;
        f.sync_all()
            .with_context(|| format!("{}: sync failed", path.display()))?;
    }
    progress.finish();
    if shards.len() > 1 || ck.dir.join("model.safetensors.index.json").exists() {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&dir.join("model.safetensors.index.json"), &index)?;
    }
    Ok(total)
}

pub fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    std::fs::write(path, s).with_context(|| format!("{}: cannot write", path.display()))
}

/// The `quantization_config` for config.json (and GPTQ's quantize_config.json).
pub fn quantization_config(opts: &Options, moe: bool) -> Value {
    let group = opts.group_size;
    match opts.format {
        Format::Gptq => json!({
            "quant_method": "gptq",
            "bits": opts.bits,
            "group_size": group.map_or(-1, |g| g as i64),
            "desc_act": false,
            "sym": true,
            "static_groups": false,
            "true_sequential": true,
            "damp_percent": super::gptq::DAMP,
            "checkpoint_format": "gptq",
        }),
        Format::CompressedTensors | Format::IntQuantized => {
            let (strategy, gs) = match group {
                Some(g) => ("group", json!(g)),
                None => ("channel", Value::Null),
            };
            let fmt = if opts.format == Format::IntQuantized {
                "int-quantized"
            } else {
                "pack-quantized"
            };
            let acts = if opts.format == Format::IntQuantized {
                // W8A8: int8 activations per token, quantized at run time.
                json!({"num_bits": 8, "type": "int", "symmetric": true, "strategy": "token",
                       "dynamic": true})
            } else {
                Value::Null
            };
            let mut ignore = vec![json!("lm_head")];
            if moe {
                ignore.push(json!("re:.*block_sparse_moe\\.gate$"));
            }
            json!({
                "quant_method": "compressed-tensors",
                "format": fmt,
                "quantization_status": "compressed",
                "config_groups": {"group_0": {
                    "targets": ["Linear"],
                    "weights": {"num_bits": opts.bits, "type": "int", "symmetric": true,
                                "strategy": strategy, "group_size": gs, "dynamic": false},
                    "input_activations": acts,
                    "output_activations": null,
                    "format": fmt,
                }},
                "ignore": ignore,
                "kv_cache_scheme": null,
                "sparsity_config": {},
            })
        }
    }
}

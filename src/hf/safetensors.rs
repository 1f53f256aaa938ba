//! Safetensors checkpoints (one file, or shards listed by model.safetensors.index.json),
//! read through read-only memory maps. We parse the header ourselves so that every way a
//! header can lie (offsets overlapping, past the end, sizes not matching the shape) is caught
//! with a message naming the file and the tensor.

use anyhow::{Context, Result, bail, ensure};
use memmap2::{Mmap, UncheckedAdvice};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "F32" => Self::F32,
            "F16" => Self::F16,
            "BF16" => Self::BF16,
            "F64" => Self::F64,
            "I64" => Self::I64,
            "I32" => Self::I32,
            "I16" => Self::I16,
            "I8" => Self::I8,
            "U8" => Self::U8,
            "BOOL" => Self::Bool,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::F64 => "F64",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "BOOL",
        }
    }
}

#[derive(Clone, Debug)]
pub struct TensorRef {
    pub name: String,
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    pub start: usize,
    pub end: usize,
}

impl TensorRef {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct Shard {
    pub path: PathBuf,
    pub map: Mmap,
    /// `__metadata__` of the header.
    pub metadata: BTreeMap<String, String>,
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub shards: Vec<Shard>,
    pub tensors: BTreeMap<String, TensorRef>,
}

/// Parses one safetensors file's header; returns its tensors (shard index filled with `shard`).
fn parse_shard(path: &Path, shard: usize) -> Result<(Shard, Vec<TensorRef>)> {
    let f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    // SAFETY: a read-only shared map of a file we never write; a concurrent writer could only
    // change the numbers we read, never memory safety of the bounds-checked slices below.
    let map =
        unsafe { Mmap::map(&f) }.with_context(|| format!("{}: cannot map", path.display()))?;
    let ctx = || format!("{}: invalid safetensors file", path.display());
    let len = map.len();
    ensure!(
        len >= 8,
        "{}: file is {len} bytes, too short for a header",
        ctx()
    );
    let n = u64::from_le_bytes(map[..8].try_into()?);
    ensure!(
        n <= (len - 8) as u64 && n <= 100 << 20,
        "{}: header length {n} runs past the end of the file ({len} bytes): truncated?",
        ctx()
    );
    let data_start = 8 + n as usize;
    let header: serde_json::Value = serde_json::from_slice(&map[8..data_start])
        .map_err(|e| anyhow::anyhow!("{}: header is not valid JSON: {e}", ctx()))?;
    let obj = header
        .as_object()
        .with_context(|| format!("{}: header is not an object", ctx()))?;
    let data_len = len - data_start;
    let mut metadata = BTreeMap::new();
    let mut out = Vec::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, v) in m {
                    metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let bad = |what: &str| anyhow::anyhow!("{}: tensor {name}: {what}", ctx());
        let dtype_s = v
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?;
        // FP8 / FP4 checkpoints land here: name what is wrong, not just "unknown".
        let dtype = Dtype::parse(dtype_s).ok_or_else(|| {
            bad(&format!(
                "dtype {dtype_s} is not supported (already quantized? expected BF16, F16 or F32)"
            ))
        })?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of integers"))?;
        let offs: Vec<u64> = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .and_then(|a| a.iter().map(|d| d.as_u64()).collect::<Option<Vec<_>>>())
            .filter(|a| a.len() == 2)
            .ok_or_else(|| bad("data_offsets is not [start, end]"))?;
        let (s, e) = (offs[0], offs[1]);
        let want = shape
            .iter()
            .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64))
            .ok_or_else(|| bad("shape overflows"))?;
        ensure!(
            e >= s,
            bad(&format!("data_offsets [{s}, {e}] are reversed"))
        );
        ensure!(
            e - s == want,
            bad(&format!(
                "data_offsets [{s}, {e}] hold {} bytes but {dtype_s} {shape:?} needs {want}",
                e - s
            ))
        );
        ensure!(
            e <= data_len as u64,
            bad(&format!(
                "data_offsets [{s}, {e}] run past the end of the data ({data_len} bytes): file truncated?"
            ))
        );
        out.push(TensorRef {
            name: name.clone(),
            shard,
            dtype,
            shape,
            start: data_start + s as usize,
            end: data_start + e as usize,
        });
    }
    let mut sorted: Vec<&TensorRef> = out.iter().filter(|t| t.end > t.start).collect();
    sorted.sort_by_key(|t| t.start);
    for w in sorted.windows(2) {
        ensure!(
            w[0].end <= w[1].start,
            "{}: tensors {} and {} overlap",
            ctx(),
            w[0].name,
            w[1].name
        );
    }
    // Tell the kernel we read front to back; it doubles read-ahead.
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok((
        Shard {
            path: path.to_path_buf(),
            map,
            metadata,
        },
        out,
    ))
}

impl Checkpoint {
    /// Opens `dir/model.safetensors`, or the shards named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut ck = Checkpoint {
            dir: dir.to_path_buf(),
            shards: Vec::new(),
            tensors: BTreeMap::new(),
        };
        if index.exists() {
            let text = std::fs::read_to_string(&index)
                .with_context(|| format!("{}: cannot read", index.display()))?;
            let j: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", index.display()))?;
            let wm = j
                .get("weight_map")
                .and_then(|w| w.as_object())
                .with_context(|| format!("{}: no weight_map", index.display()))?;
            let mut files: Vec<&str> = wm.values().filter_map(|v| v.as_str()).collect();
            files.sort();
            files.dedup();
            for (i, f) in files.iter().enumerate() {
                ensure!(
                    !f.contains('/') && !f.contains('\\') && !f.starts_with('.'),
                    "{}: shard name {f:?} is not a plain file name",
                    index.display()
                );
                let p = dir.join(f);
                ensure!(
                    p.exists(),
                    "{}: missing (model.safetensors.index.json names it)",
                    p.display()
                );
                let (shard, ts) = parse_shard(&p, i)?;
                ck.shards.push(shard);
                for t in ts {
                    if let Some(prev) = ck.tensors.get(&t.name) {
                        bail!(
                            "{}: tensor {} is in both {} and {f}",
                            dir.display(),
                            t.name,
                            files[prev.shard]
                        );
                    }
                    ck.tensors.insert(t.name.clone(), t);
                }
            }
            for (name, f) in wm {
                let f = f.as_str().unwrap_or_default();
                match ck.tensors.get(name) {
                    Some(t) if ck.shards[t.shard].path.file_name() == Some(f.as_ref()) => {}
                    Some(t) => bail!(
                        "{}: index puts {name} in {f} but it is in {}",
                        index.display(),
                        files[t.shard]
                    ),
                    None => bail!(
                        "{}: index names tensor {name} in {f}, but {f} does not contain it",
                        index.display()
                    ),
                }
            }
        } else if single.exists() {
            return Self::open_file(&single);
        } else {
            bail!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            );
        }
        Ok(ck)
    }

    /// Opens one safetensors file on its own.
    pub fn open_file(path: &Path) -> Result<Self> {
        let (shard, ts) = parse_shard(path, 0)?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let tensors = ts.into_iter().map(|t| (t.name.clone(), t)).collect();
        Ok(Checkpoint {
            dir,
            shards: vec![shard],
            tensors,
        })
    }

    pub fn get(&self, name: &str) -> Option<&TensorRef> {
        self.tensors.get(name)
    }

    pub fn bytes(&self, t: &TensorRef) -> &[u8] {
        &self.shards[t.shard].map[t.start..t.end]
    }

    /// Drops the mapped pages of a tensor we are done with, so that resident memory stays at
    /// one tensor's worth however large the checkpoint is (the page cache keeps them).
    pub fn release(&self, t: &TensorRef) {
        let map = &self.shards[t.shard].map;
        // Round inward to whole pages: advising a partial page would drop a neighbour's too
        // (harmless for a read-only map, but wasteful).
        let page = 4096;
        let s = t.start.div_ceil(page) * page;
        let e = t.end / page * page;
        if e > s {
            // SAFETY: the map is read-only and file-backed, so MADV_DONTNEED only drops clean
            // pages, which are re-read from the file on next access; no data is lost.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, s, e - s) };
        }
    }

    pub fn total_bytes(&self) -> u64 {
        self.tensors
            .values()
            .map(|t| (t.end - t.start) as u64)
            .sum()
    }
}

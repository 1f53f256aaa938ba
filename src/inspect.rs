//! `inspect`: what is in a GGUF file or a safetensors checkpoint, as text or JSON.

use crate::gguf::GgufFile;
use crate::hf::{Checkpoint, ModelConfig};
use anyhow::Result;
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;

pub fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && &magic == b"GGUF"
}

pub fn inspect(path: &Path, as_json: bool, max_items: usize) -> Result<String> {
    if is_gguf(path) {
        gguf(path, as_json, max_items)
    } else {
        safetensors(path, as_json)
    }
}

fn gguf(path: &Path, as_json: bool, max_items: usize) -> Result<String> {
    let g = GgufFile::open(path)?;
    if as_json {
        let kv: serde_json::Map<String, serde_json::Value> =
            g.kv.iter()
                .map(|(k, v)| (k.clone(), v.to_json(max_items)))
                .collect();
        let tensors: Vec<_> = g
            .tensors
            .iter()
            .map(|t| json!({"name": t.info.name, "type": t.info.ty.name(), "dims": t.info.dims, "offset": t.offset, "bytes": t.n_bytes}))
            .collect();
        let doc = json!({"format": "gguf", "path": path, "version": g.version, "alignment": g.alignment,
            "data_offset": g.data_offset, "file_bytes": g.file_len(), "metadata": kv, "tensors": tensors});
        return Ok(serde_json::to_string_pretty(&doc)?);
    }
    let mut s = String::new();
    writeln!(
        s,
        "{}: GGUF v{}, {} bytes, {} metadata keys, {} tensors, data at {} (alignment {})",
        path.display(),
        g.version,
        g.file_len(),
        g.kv.len(),
        g.tensors.len(),
        g.data_offset,
        g.alignment
    )?;
    writeln!(s, "\nmetadata:")?;
    for (k, v) in &g.kv {
        writeln!(s, "  {k:<44} {}", v.summary())?;
    }
    writeln!(s, "\ntensors:")?;
    let mut by_type = std::collections::BTreeMap::<&str, (usize, u64)>::new();
    for t in &g.tensors {
        writeln!(
            s,
            "  {:<32} {:<5} {:<24} {:>12} bytes @ {}",
            t.info.name,
            t.info.ty.name(),
            format!("{:?}", t.info.dims),
            t.n_bytes,
            t.offset
        )?;
        let e = by_type.entry(t.info.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.n_bytes;
    }
    writeln!(s, "\nby type:")?;
    for (ty, (n, b)) in by_type {
        writeln!(s, "  {ty:<5} {n:>5} tensors {b:>14} bytes")?;
    }
    Ok(s)
}

fn safetensors(path: &Path, as_json: bool) -> Result<String> {
    // A model directory, or one safetensors file (inspected as a one-shard checkpoint).
    let (ck, cfg) = if path.is_dir() {
        (Checkpoint::open(path)?, ModelConfig::load(path).ok())
    } else {
        (Checkpoint::open_file(path)?, None)
    };
    let total = ck.total_bytes();
    if as_json {
        let tensors: Vec<_> = ck
            .tensors
            .values()
            .map(|t| json!({"name": t.name, "dtype": t.dtype.name(), "shape": t.shape,
                "shard": ck.shards[t.shard].path.file_name().map(|f| f.to_string_lossy().into_owned())}))
            .collect();
        let doc = json!({"format": "safetensors", "path": path,
            "shards": ck.shards.iter().map(|s| s.path.file_name().map(|f| f.to_string_lossy().into_owned())).collect::<Vec<_>>(),
            "tensor_bytes": total, "config": cfg.as_ref().map(|c| format!("{c:?}")), "tensors": tensors});
        return Ok(serde_json::to_string_pretty(&doc)?);
    }
    let mut s = String::new();
    writeln!(
        s,
        "{}: safetensors, {} shard(s), {} tensors, {} bytes of tensor data",
        path.display(),
        ck.shards.len(),
        ck.tensors.len(),
        total
    )?;
    if let Some(c) = cfg {
        writeln!(
            s,
            "config: {} layers {} hidden {} heads {} kv heads {} head_dim {} ffn {} vocab {} experts {}/{}",
            c.architecture,
            c.n_layer,
            c.hidden,
            c.n_head,
            c.n_head_kv,
            c.head_dim,
            c.ffn,
            c.vocab_size,
            c.n_expert_used,
            c.n_expert
        )?;
    }
    for t in ck.tensors.values() {
        writeln!(s, "  {:<60} {:<5} {:?}", t.name, t.dtype.name(), t.shape)?;
    }
    Ok(s)
}

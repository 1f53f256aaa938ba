//! A streaming safetensors writer: the header is computed from the declared tensors, then
//! data is written in declaration order. Used for generated fixture checkpoints.

use super::safetensors::Dtype;
use anyhow::{Result, ensure};
use std::io::Write;

pub struct Decl {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl Decl {
    pub fn n_bytes(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// Encodes the 8-byte length and the JSON header, padded with spaces to a multiple of 8 so that
/// the data section is aligned (as the reference implementation does).
pub fn encode_header(decls: &[Decl], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut obj = serde_json::Map::new();
    if !metadata.is_empty() {
        let m: serde_json::Map<String, serde_json::Value> = metadata
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
            .collect();
        obj.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut off = 0usize;
    for d in decls {
        let n = d.n_bytes();
        obj.insert(
            d.name.clone(),
            serde_json::json!({"dtype": d.dtype.name(), "shape": d.shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(obj)).expect("JSON of plain data");
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

/// Writes tensors declared up front; `write_tensor` must be called once per declaration, in order.
pub struct SafetensorsWriter<W: Write> {
    w: W,
    sizes: Vec<usize>,
    next: usize,
}

impl<W: Write> SafetensorsWriter<W> {
    pub fn new(mut w: W, decls: &[Decl], metadata: &[(&str, &str)]) -> Result<Self> {
        w.write_all(&encode_header(decls, metadata))?;
        Ok(Self {
            w,
            sizes: decls.iter().map(Decl::n_bytes).collect(),
            next: 0,
        })
    }

    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        ensure!(self.next < self.sizes.len(), "more tensors than declared");
        ensure!(data.len() == self.sizes[self.next], "tensor size mismatch");
        self.w.write_all(data)?;
        self.next += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        ensure!(self.next == self.sizes.len(), "not all tensors written");
        self.w.flush()?;
        Ok(self.w)
    }
}

//! Streaming GGUF v3 writer: the header and every tensor offset are computed up front from the
//! tensor shapes, then tensor data is streamed in order. Nothing is buffered beyond what the
//! caller hands over, so a 100 GB model needs no more memory than a 1 MB one.

use super::types::{GgmlType, Value, vt};
use anyhow::{Context, Result, bail, ensure};
use std::io::Write;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const GGUF_VERSION: u32 = 3;
pub const ALIGNMENT: u64 = 32;

/// One tensor's entry in the GGUF tensor table. `dims` are ggml order: innermost (row length)
/// first, i.e. the reverse of the PyTorch shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    pub fn n_bytes(&self) -> Result<u64> {
        let row = self.dims.first().copied().unwrap_or(1);
        let rows: u64 = self.dims.iter().skip(1).product();
        Ok(self
            .ty
            .row_bytes(row)
            .with_context(|| format!("tensor {}", self.name))?
            * rows)
    }
}

pub fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.push(*x as u8),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::ArrString(a) => {
            out.extend_from_slice(&vt::STRING.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a {
                put_str(out, s);
            }
        }
        Value::ArrF32(a) => {
            out.extend_from_slice(&vt::F32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrI32(a) => {
            out.extend_from_slice(&vt::I32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrU32(a) => {
            out.extend_from_slice(&vt::U32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            a.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        Value::ArrOther(t, raw, n) => {
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(raw);
        }
    }
}

/// Serialises the header (magic .. tensor infos, padded to the data section).
/// Returns the bytes and each tensor's offset relative to the data section.
pub fn encode_header(
    kv: &[(String, Value)],
    tensors: &[TensorInfo],
) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut seen = std::collections::HashSet::new();
    for (k, _) in kv {
        ensure!(seen.insert(k.as_str()), "duplicate metadata key {k}");
    }
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        ensure!(
            names.insert(t.name.as_str()),
            "duplicate tensor name {}",
            t.name
        );
        ensure!(
            t.name.len() < 64,
            "tensor name {} is longer than GGUF's 63 bytes",
            t.name
        );
        ensure!(
            !t.dims.is_empty() && t.dims.len() <= 4,
            "tensor {} has {} dimensions (GGUF allows 1..=4)",
            t.name,
            t.dims.len()
        );
    }
    let mut h = Vec::new();
    h.extend_from_slice(GGUF_MAGIC);
    h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
    h.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    h.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_str(&mut h, k);
        h.extend_from_slice(&v.type_id().to_le_bytes());
        put_value(&mut h, v);
    }
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut off = 0u64;
    for t in tensors {
        put_str(&mut h, &t.name);
        h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            h.extend_from_slice(&d.to_le_bytes());
        }
        h.extend_from_slice(&t.ty.id().to_le_bytes());
        h.extend_from_slice(&off.to_le_bytes());
        offsets.push(off);
        off = align(off + t.n_bytes()?);
    }
    h.resize(align(h.len() as u64) as usize, 0);
    Ok((h, offsets))
}

/// Writes a GGUF file tensor by tensor. Call `begin_tensor`, then `write` the tensor's bytes
/// (in any number of pieces), for each tensor in table order, then `finish`.
pub struct GgufWriter<W: Write> {
    w: W,
    sizes: Vec<u64>,
    names: Vec<String>,
    current: Option<usize>,
    done: usize,
    written: u64,
}

impl<W: Write> GgufWriter<W> {
    pub fn new(mut w: W, kv: &[(String, Value)], tensors: &[TensorInfo]) -> Result<Self> {
        let (header, _) = encode_header(kv, tensors)?;
        w.write_all(&header)?;
        let sizes = tensors.iter().map(|t| t.n_bytes()).collect::<Result<_>>()?;
        Ok(Self {
            w,
            sizes,
            names: tensors.iter().map(|t| t.name.clone()).collect(),
            current: None,
            done: 0,
            written: 0,
        })
    }

    pub fn begin_tensor(&mut self) -> Result<&str> {
        ensure!(self.current.is_none(), "previous tensor not finished");
        ensure!(
            self.done < self.sizes.len(),
            "more tensors written than declared"
        );
        self.current = Some(self.done);
        self.written = 0;
        Ok(&self.names[self.done])
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let i = self.current.context("write outside a tensor")?;
        ensure!(
            self.written + bytes.len() as u64 <= self.sizes[i],
            "tensor {} got more bytes than its declared {}",
            self.names[i],
            self.sizes[i]
        );
        self.w.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    pub fn end_tensor(&mut self) -> Result<()> {
        let i = self
            .current
            .take()
            .context("end_tensor without begin_tensor")?;
        if self.written != self.sizes[i] {
            bail!(
                "tensor {}: wrote {} bytes, declared {}",
                self.names[i],
                self.written,
                self.sizes[i]
            );
        }
        let pad = align(self.written) - self.written;
        self.w
            .write_all(&[0u8; ALIGNMENT as usize][..pad as usize])?;
        self.done += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        ensure!(
            self.current.is_none() && self.done == self.sizes.len(),
            "only {} of {} tensors were written",
            self.done,
            self.sizes.len()
        );
        self.w.flush()?;
        Ok(self.w)
    }
}

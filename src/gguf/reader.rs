//! GGUF v2/v3 reader over a memory map. Every length read from the file is checked against
//! the file size before use, so a truncated or lying file gives an error, not a panic or a
//! huge allocation.

use super::types::{GgmlType, Value, vt};
use super::writer::{ALIGNMENT, GGUF_MAGIC, TensorInfo};
use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub info: TensorInfo,
    /// Absolute offset of the tensor's data in the file.
    pub offset: u64,
    pub n_bytes: u64,
}

pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorEntry>,
    pub data_offset: u64,
    pub alignment: u64,
    map: Mmap,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = (self.pos as u64)
            .checked_add(n)
            .filter(|&e| e <= self.b.len() as u64)
            .with_context(|| format!("truncated header: needs {n} bytes at offset {}", self.pos))?;
        let s = &self.b[self.pos..end as usize];
        self.pos = end as usize;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        let raw = self.take(n)?;
        String::from_utf8(raw.to_vec()).context("string is not UTF-8")
    }
    /// Guards array counts: each element takes at least `min` bytes, so a count larger than the
    /// rest of the file is a lie.
    fn count(&mut self, min: u64) -> Result<u64> {
        let n = self.u64()?;
        let left = (self.b.len() - self.pos) as u64;
        ensure!(
            n.saturating_mul(min) <= left,
            "count {n} at offset {} runs past the end of the file",
            self.pos
        );
        Ok(n)
    }
}

fn scalar_size(t: u32) -> Option<u64> {
    Some(match t {
        vt::U8 | vt::I8 | vt::BOOL => 1,
        vt::U16 | vt::I16 => 2,
        vt::U32 | vt::I32 | vt::F32 => 4,
        vt::U64 | vt::I64 | vt::F64 => 8,
        _ => return None,
    })
}

fn read_value(c: &mut Cursor, t: u32) -> Result<Value> {
    Ok(match t {
        vt::U8 => Value::U8(c.u8()?),
        vt::I8 => Value::I8(c.u8()? as i8),
        vt::U16 => Value::U16(c.u16()?),
        vt::I16 => Value::I16(c.u16()? as i16),
        vt::U32 => Value::U32(c.u32()?),
        vt::I32 => Value::I32(c.u32()? as i32),
        vt::F32 => Value::F32(f32::from_bits(c.u32()?)),
        vt::BOOL => Value::Bool(c.u8()? != 0),
        vt::STRING => Value::String(c.string()?),
        vt::U64 => Value::U64(c.u64()?),
        vt::I64 => Value::I64(c.u64()? as i64),
        vt::F64 => Value::F64(f64::from_bits(c.u64()?)),
        vt::ARRAY => {
            let et = c.u32()?;
            match et {
                vt::STRING => {
                    let n = c.count(8)?;
                    Value::ArrString((0..n).map(|_| c.string()).collect::<Result<_>>()?)
                }
                vt::F32 => {
                    let n = c.count(4)?;
                    Value::ArrF32(
                        (0..n)
                            .map(|_| Ok(f32::from_bits(c.u32()?)))
                            .collect::<Result<_>>()?,
                    )
                }
                vt::I32 => {
                    let n = c.count(4)?;
                    Value::ArrI32((0..n).map(|_| Ok(c.u32()? as i32)).collect::<Result<_>>()?)
                }
                vt::U32 => {
                    let n = c.count(4)?;
                    Value::ArrU32((0..n).map(|_| c.u32()).collect::<Result<_>>()?)
                }
                other => {
                    let size = scalar_size(other)
                        .with_context(|| format!("unsupported array element type {other}"))?;
                    let n = c.count(size)?;
                    Value::ArrOther(other, c.take(n * size)?.to_vec(), n)
                }
            }
        }
        other => bail!("unknown metadata value type {other}"),
    })
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::File::open(path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        // SAFETY: read-only map; we never hand out references that outlive `self`, and a file
        // changed underneath us can only produce wrong numbers, which the checks below bound.
        let map =
            unsafe { Mmap::map(&f) }.with_context(|| format!("{}: cannot map", path.display()))?;
        Self::parse(path, map).with_context(|| format!("{}: not a valid GGUF file", path.display()))
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        let mut c = Cursor { b: &map, pos: 0 };
        let magic = c.take(4)?;
        ensure!(magic == GGUF_MAGIC, "bad magic {:?}", magic);
        let version = c.u32()?;
        ensure!(
            version == 2 || version == 3,
            "unsupported GGUF version {version}"
        );
        let n_tensors = c.count(24)?;
        let n_kv = c.count(12)?;
        let mut kv = Vec::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let k = c.string()?;
            let t = c.u32()?;
            let v = read_value(&mut c, t).with_context(|| format!("metadata key {k}"))?;
            kv.push((k, v));
        }
        let alignment = kv
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(ALIGNMENT);
        ensure!(
            alignment.is_power_of_two(),
            "general.alignment {alignment} is not a power of two"
        );
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let nd = c.u32()?;
            ensure!((1..=4).contains(&nd), "tensor {name}: {nd} dimensions");
            let dims = (0..nd).map(|_| c.u64()).collect::<Result<Vec<_>>>()?;
            let ty = GgmlType::from_id(c.u32()?).with_context(|| format!("tensor {name}"))?;
            let off = c.u64()?;
            infos.push((TensorInfo { name, dims, ty }, off));
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = map.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        for (info, off) in infos {
            ensure!(
                off % alignment == 0,
                "tensor {}: offset {off} is not aligned",
                info.name
            );
            let dims_ok = info
                .dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .is_some();
            ensure!(dims_ok, "tensor {}: dimensions overflow", info.name);
            let n_bytes = info.n_bytes()?;
            let start = data_offset.checked_add(off).context("offset overflow")?;
            ensure!(
                start.checked_add(n_bytes).is_some_and(|e| e <= file_len),
                "tensor {} ({} bytes at {start}) runs past the end of the file ({file_len} bytes)",
                info.name,
                n_bytes
            );
            tensors.push(TensorEntry {
                info,
                offset: start,
                n_bytes,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            version,
            kv,
            tensors,
            data_offset,
            alignment,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.info.name == name)
    }

    pub fn data(&self, t: &TensorEntry) -> &[u8] {
        &self.map[t.offset as usize..(t.offset + t.n_bytes) as usize]
    }

    pub fn file_len(&self) -> u64 {
        self.map.len() as u64
    }
}

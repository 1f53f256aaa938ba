//! Importance matrices as llama-imatrix writes them, read the way llama-quantize reads them.
//!
//! Two formats:
//! - GGUF (current llama-imatrix): per weight `NAME.in_sum2` (F32, `{ne0, n_mat}`: summed
//!   squared activations per column, one row per expert) and `NAME.counts` (F32, `{1, n_mat}`:
//!   how many activations each expert saw), optionally `NAME.in_sum`; metadata
//!   `imatrix.datasets` (string array), `imatrix.chunk_count`, `imatrix.chunk_size` (all three
//!   required). Value = in_sum2 / count per expert row; 1 where an expert saw nothing.
//! - legacy `.dat`: i32 n_entries, then per entry i32 name length, name, i32 ncall, i32 nval,
//!   nval f32; optionally i32 chunk count, i32 length, dataset name. Value = sum / ncall (the
//!   raw sum when ncall is 0).
//!
//! A 3-D expert tensor's entry holds one `ne0` slice per expert, in expert order: rows of
//! expert e are quantized with slice e.

use crate::gguf::{GgmlType, GgufFile, Value};
use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeMap;
use std::path::Path;

pub struct Imatrix {
    /// Per weight name, the importance of each column (per expert for expert tensors).
    pub entries: BTreeMap<String, Vec<f32>>,
    pub datasets: Vec<String>,
    /// Chunks of calibration text it was computed on (0 when unknown).
    pub chunk_count: i64,
    pub legacy: bool,
}

impl Imatrix {
    pub fn load(path: &Path) -> Result<Self> {
        let head = {
            use std::io::Read;
            let mut f = std::fs::File::open(path)
                .with_context(|| format!("{}: cannot open", path.display()))?;
            let mut b = [0u8; 4];
            let n = f.read(&mut b).unwrap_or(0);
            b[..n].to_vec()
        };
        let m = if head == b"GGUF" {
            Self::load_gguf(path)
        } else {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            Self::parse_legacy(&bytes)
        }
        .with_context(|| format!("{}: not a usable importance matrix", path.display()))?;
        for (name, v) in &m.entries {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                bail!(
                    "{}: importance matrix entry {name} has a non-finite value ({}) at {i}",
                    path.display(),
                    v[i]
                );
            }
        }
        Ok(m)
    }

    fn load_gguf(path: &Path) -> Result<Self> {
        let f = GgufFile::open(path)?;
        ensure!(!f.tensors.is_empty(), "no data");
        let datasets = match f.get("imatrix.datasets") {
            Some(Value::ArrString(a)) => Some(a.clone()),
            Some(_) => Some(Vec::new()),
            None => None,
        };
        let chunk_count = f.get("imatrix.chunk_count").and_then(Value::as_u64);
        let chunk_size = f.get("imatrix.chunk_size").and_then(Value::as_u64);
        let (Some(datasets), Some(chunk_count), Some(_)) = (datasets, chunk_count, chunk_size)
        else {
            bail!(
                "missing imatrix metadata (imatrix.datasets, imatrix.chunk_count, imatrix.chunk_size)"
            );
        };
        #[derive(Default)]
        struct Parts<'a> {
            in_sum: Option<&'a crate::gguf::TensorEntry>,
            in_sum2: Option<&'a crate::gguf::TensorEntry>,
            counts: Option<&'a crate::gguf::TensorEntry>,
        }
        let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
        for t in &f.tensors {
            let n = t.info.name.as_str();
            if let Some(b) = n.strip_suffix(".in_sum") {
                parts.entry(b).or_default().in_sum = Some(t);
            } else if let Some(b) = n.strip_suffix(".in_sum2") {
                parts.entry(b).or_default().in_sum2 = Some(t);
            } else if let Some(b) = n.strip_suffix(".counts") {
                parts.entry(b).or_default().counts = Some(t);
            }
        }
        let floats = |t: &crate::gguf::TensorEntry| -> Vec<f32> {
            f.data(t)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut entries = BTreeMap::new();
        for (name, p) in parts {
            let (Some(s2), Some(c)) = (p.in_sum2, p.counts) else {
                bail!("mismatched sums and counts for {name}");
            };
            if let Some(s) = p.in_sum {
                ensure!(
                    s.info.n_elements() == s2.info.n_elements(),
                    "mismatched sums and counts for {name}"
                );
            }
            ensure!(
                s2.info.ty == GgmlType::F32 && c.info.ty == GgmlType::F32,
                "sums and counts for {name} must be F32"
            );
            let sums = floats(s2);
            // llama.cpp rounds the stored counts to integers.
            let counts: Vec<i64> = floats(c).iter().map(|&x| x.round() as i64).collect();
            if counts.is_empty() || sums.is_empty() {
                continue;
            }
            let ne0 = sums.len() / counts.len();
            let mut v = vec![0f32; sums.len()];
            for (j, &n) in counts.iter().enumerate() {
                let count = n as f32;
                for i in 0..ne0 {
                    v[j * ne0 + i] = if count > 0.0 {
                        sums[j * ne0 + i] / count
                    } else {
                        1.0
                    };
                }
            }
            entries.insert(name.to_string(), v);
        }
        Ok(Self {
            entries,
            datasets,
            chunk_count: chunk_count as u32 as i32 as i64,
            legacy: false,
        })
    }

    /// The legacy `.dat` format.
    pub fn parse_legacy(b: &[u8]) -> Result<Self> {
        let mut pos = 0usize;
        let i32_at = |pos: &mut usize| -> Option<i32> {
            let v = b.get(*pos..*pos + 4)?;
            *pos += 4;
            Some(i32::from_le_bytes(v.try_into().ok()?))
        };
        let n_entries = i32_at(&mut pos).context("no data")?;
        ensure!(n_entries >= 1, "no data");
        let mut entries = BTreeMap::new();
        for i in 0..n_entries {
            let len = i32_at(&mut pos)
                .filter(|&l| l >= 0)
                .with_context(|| format!("failed reading the name of entry {}", i + 1))?
                as usize;
            let raw = b
                .get(pos..pos + len)
                .with_context(|| format!("failed reading the name of entry {}", i + 1))?;
            pos += len;
            // As C reads it: up to the first NUL.
            let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
            let name = String::from_utf8_lossy(raw).into_owned();
            let ncall = i32_at(&mut pos);
            let nval = i32_at(&mut pos)
                .filter(|&n| n >= 1)
                .with_context(|| format!("failed reading the number of values of entry {i}"))?;
            let ncall = ncall.context("truncated")? as i64;
            let bytes = b
                .get(pos..pos + nval as usize * 4)
                .with_context(|| format!("failed reading the data of entry {i}"))?;
            pos += nval as usize * 4;
            let sums: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let v = if ncall > 0 {
                sums.iter().map(|&s| s / ncall as f32).collect()
            } else {
                sums
            };
            entries.insert(name, v);
        }
        let mut chunk_count = 0;
        let mut datasets = Vec::new();
        if let Some(n) = i32_at(&mut pos) {
            chunk_count = n as i64;
            if let Some(len) = i32_at(&mut pos).filter(|&l| l > 0)
                && let Some(raw) = b.get(pos..pos + len as usize)
            {
                let raw = raw.split(|&c| c == 0).next().unwrap_or_default();
                datasets.push(String::from_utf8_lossy(raw).into_owned());
            }
        }
        Ok(Self {
            entries,
            datasets,
            chunk_count,
            legacy: true,
        })
    }

    /// The metadata llama-quantize adds to a file quantized with this matrix (through its
    /// KV overrides, in this order): the file name as given on the command line and the first
    /// dataset (each cut to 127 bytes), the number of entries, and the chunk count when known.
    pub fn kv(&self, file_arg: &str) -> Vec<(String, Value)> {
        fn cut(s: &str) -> String {
            let mut n = s.len().min(127);
            while !s.is_char_boundary(n) {
                n -= 1;
            }
            s[..n].to_string()
        }
        let mut kv = vec![(
            "quantize.imatrix.file".to_string(),
            Value::String(cut(file_arg)),
        )];
        if let Some(d) = self.datasets.first() {
            kv.push(("quantize.imatrix.dataset".into(), Value::String(cut(d))));
        }
        kv.push((
            "quantize.imatrix.entries_count".into(),
            Value::U32(self.entries.len() as u32),
        ));
        if self.chunk_count > 0 {
            kv.push((
                "quantize.imatrix.chunks_count".into(),
                Value::U32(self.chunk_count as u32),
            ));
        }
        kv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(entries: &[(&str, i32, &[f32])], tail: Option<(i32, &str)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
        for (name, ncall, v) in entries {
            b.extend_from_slice(&(name.len() as i32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(&ncall.to_le_bytes());
            b.extend_from_slice(&(v.len() as i32).to_le_bytes());
            v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        }
        if let Some((n, d)) = tail {
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&(d.len() as i32).to_le_bytes());
            b.extend_from_slice(d.as_bytes());
        }
        b
    }

    #[test]
    fn legacy_values_and_tail() {
        let b = legacy(
            &[("a.weight", 4, &[4.0, 8.0]), ("b.weight", 0, &[3.0])],
            Some((10, "wiki.txt")),
        );
        let m = Imatrix::parse_legacy(&b).unwrap();
        assert_eq!(m.entries["a.weight"], vec![1.0, 2.0]);
        assert_eq!(m.entries["b.weight"], vec![3.0]);
        assert_eq!(m.chunk_count, 10);
        assert_eq!(m.datasets, vec!["wiki.txt".to_string()]);
        let kv = m.kv("im.dat");
        assert_eq!(kv.len(), 4);
        assert_eq!(kv[2].1, Value::U32(2));
        // No tail: no dataset, no chunk count.
        let m = Imatrix::parse_legacy(&legacy(&[("a.weight", 1, &[1.0])], None)).unwrap();
        assert_eq!(m.kv("x").len(), 2);
        // Truncated.
        let b = legacy(&[("a.weight", 4, &[4.0, 8.0])], None);
        assert!(Imatrix::parse_legacy(&b[..b.len() - 1]).is_err());
        assert!(Imatrix::parse_legacy(&0i32.to_le_bytes()).is_err());
    }
}

//! Reading integer checkpoints (compressed-tensors pack-quantized / int-quantized, GPTQ v1) as
//! [`Mat`] views: what `quantization_config` in config.json promises is checked once when the
//! directory is opened, then each Linear's tensors are found by name.

use super::intmat::{IntLayout, IntView};
use super::mat::Mat;
use crate::gguf::GgmlType;
use crate::hf::{Checkpoint, Dtype, TensorRef};
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use std::path::Path;

/// What kind of integer checkpoint a directory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntKind {
    /// With `Some(8)`: int8 activations, quantized per token at run time (W8A8).
    CompressedTensors { act_bits: Option<u32> },
    /// GPTQ v1 with this many bits.
    Gptq(u32),
}

/// Reads `quantization_config` from `dir/config.json`: None for an unquantized checkpoint, an
/// error for a scheme our forward pass cannot read.
pub fn kind(dir: &Path) -> Result<Option<IntKind>> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let j: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let Some(q) = j.get("quantization_config") else {
        return Ok(None);
    };
    let ctx = path.display();
    let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
    match method {
        "compressed-tensors" => {
            let groups = q
                .get("config_groups")
                .and_then(Value::as_object)
                .with_context(|| format!("{ctx}: quantization_config has no config_groups"))?;
            let mut act_bits = None;
            for (name, g) in groups {
                if let Some(a) = g.get("input_activations").filter(|a| !a.is_null()) {
                    let ok = a.get("type").and_then(Value::as_str) == Some("int")
                        && a.get("num_bits").and_then(Value::as_u64) == Some(8)
                        && a.get("symmetric").and_then(Value::as_bool) == Some(true)
                        && a.get("strategy").and_then(Value::as_str) == Some("token")
                        && a.get("dynamic").and_then(Value::as_bool) == Some(true);
                    ensure!(
                        ok,
                        "{ctx}: config group {name}: only dynamic symmetric int8 per-token \
                         activations are supported"
                    );
                    act_bits = Some(8);
                }
                let w = g.get("weights").unwrap_or(&Value::Null);
                let sym = w.get("symmetric").and_then(Value::as_bool) == Some(true);
                let int = w.get("type").and_then(Value::as_str) == Some("int");
                let bits = w.get("num_bits").and_then(Value::as_u64);
                ensure!(
                    sym && int && matches!(bits, Some(4 | 8)),
                    "{ctx}: config group {name}: only symmetric int4/int8 weights are supported"
                );
            }
            Ok(Some(IntKind::CompressedTensors { act_bits }))
        }
        "gptq" => {
            let bits = q.get("bits").and_then(Value::as_u64).unwrap_or(0) as u32;
            ensure!(
                bits == 4 || bits == 8,
                "{ctx}: GPTQ with {bits} bits is not supported (4 or 8)"
            );
            ensure!(
                q.get("sym").and_then(Value::as_bool) != Some(false),
                "{ctx}: asymmetric GPTQ is not supported"
            );
            let fmt = q.get("checkpoint_format").and_then(Value::as_str);
            ensure!(
                matches!(fmt, None | Some("gptq")),
                "{ctx}: GPTQ checkpoint_format {fmt:?} is not supported (gptq)"
            );
            Ok(Some(IntKind::Gptq(bits)))
        }
        other => bail!("{ctx}: quant_method {other:?} is not supported"),
    }
}

fn ggml(t: &TensorRef) -> Result<GgmlType> {
    Ok(match t.dtype {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        other => bail!("{}: scale dtype {} is not supported", t.name, other.name()),
    })
}

fn int32s(ck: &Checkpoint, t: &TensorRef) -> impl Iterator<Item = i32> {
    ck.bytes(t)
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
}

/// GPTQ's zero points and g_idx carry no information in the files we read (symmetric, static
/// groups); check that once, so that the row kernels can ignore them.
pub fn check_gptq(ck: &Checkpoint, bits: u32) -> Result<()> {
    // Every 4-bit zero is 2^(bits-1) - 1 = 7 (v1 stores zero - 1), packed like the weights.
    let per = 32 / bits;
    let zero = (0..per).fold(0u32, |a, i| a | (((1u32 << (bits - 1)) - 1) << (i * bits))) as i32;
    for (name, t) in &ck.tensors {
        if name.ends_with(".qzeros") {
            ensure!(
                t.dtype == Dtype::I32 && int32s(ck, t).all(|z| z == zero),
                "{name}: zero points are not the symmetric {zero:#x} (asymmetric or gptq_v2?)"
            );
        }
        if let Some(base) = name.strip_suffix(".g_idx") {
            let group = ck
                .get(&format!("{base}.scales"))
                .and_then(|s| s.shape.first().copied())
                .filter(|&g| g > 0)
                .map(|g| t.n_elements() / g)
                .unwrap_or(0);
            ensure!(
                t.dtype == Dtype::I32
                    && group > 0
                    && int32s(ck, t)
                        .enumerate()
                        .all(|(k, g)| g as usize == k / group),
                "{name}: g_idx is not k / group_size (act-order checkpoints are not supported)"
            );
        }
    }
    Ok(())
}

/// The integer Linear whose float weight would be `hf` (`X.weight`), if the checkpoint has one.
pub fn mat<'a>(ck: &'a Checkpoint, kind: IntKind, hf: &str) -> Result<Option<Mat<'a>>> {
    let base = hf.strip_suffix(".weight").unwrap_or(hf);
    let get = |s: &str| ck.get(&format!("{base}.{s}"));
    let shape2 = |t: &TensorRef| -> Result<(usize, usize)> {
        match t.shape[..] {
            [a, b] => Ok((a, b)),
            _ => bail!("{}: shape {:?} is not 2-D", t.name, t.shape),
        }
    };
    let view = |layout, bits, group, q: &TensorRef, s: &TensorRef| -> Result<IntView<'a>> {
        Ok(IntView {
            act_bits: match kind {
                IntKind::CompressedTensors { act_bits } => act_bits,
                IntKind::Gptq(_) => None,
            },
            layout,
            bits,
            group,
            q: ck.bytes(q),
            scale_ty: ggml(s)?,
            scales: ck.bytes(s),
        })
    };
    match kind {
        IntKind::CompressedTensors { .. } => {
            let scale = match get("weight_scale") {
                Some(s) => s,
                None => return Ok(None),
            };
            let (rows, s_cols) = shape2(scale)?;
            if let Some(p) = get("weight_packed") {
                let shape = get("weight_shape")
                    .filter(|t| t.dtype == Dtype::I64 && t.shape == [2])
                    .with_context(|| format!("{base}: no int64 [2] weight_shape"))?;
                let b = ck.bytes(shape);
                let cols = i64::from_le_bytes(b[8..16].try_into()?) as usize;
                let (p_rows, words) = shape2(p)?;
                ensure!(
                    p.dtype == Dtype::I32 && p_rows == rows && cols > 0 && s_cols > 0,
                    "{base}: weight_packed {:?} {} does not match weight_scale {:?}",
                    p.shape,
                    p.dtype.name(),
                    scale.shape
                );
                let bits = (words * 32 / cols) as u32;
                let v = view(IntLayout::Packed, bits, cols / s_cols, p, scale)?;
                return Mat::new_int(rows, cols, v)
                    .with_context(|| base.to_string())
                    .map(Some);
            }
            let w = get("weight").with_context(|| format!("{base}: no weight_packed or weight"))?;
            ensure!(
                w.dtype == Dtype::I8,
                "{base}: weight is {}, expected I8",
                w.dtype.name()
            );
            let (r, cols) = shape2(w)?;
            ensure!(r == rows && s_cols > 0, "{base}: weight_scale rows");
            let v = view(IntLayout::Int8, 8, cols / s_cols, w, scale)?;
            Mat::new_int(rows, cols, v)
                .with_context(|| base.to_string())
                .map(Some)
        }
        IntKind::Gptq(bits) => {
            let (Some(q), Some(s)) = (get("qweight"), get("scales")) else {
                return Ok(None);
            };
            let (words, rows) = shape2(q)?;
            let (groups, s_rows) = shape2(s)?;
            let cols = words * 32 / bits as usize;
            ensure!(
                q.dtype == Dtype::I32 && s_rows == rows && groups > 0,
                "{base}: qweight {:?} does not match scales {:?}",
                q.shape,
                s.shape
            );
            let v = view(IntLayout::GptqT, bits, cols / groups, q, s)?;
            Mat::new_int(rows, cols, v)
                .with_context(|| base.to_string())
                .map(Some)
        }
    }
}

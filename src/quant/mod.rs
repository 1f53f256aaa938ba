//! Element conversions (bf16/f16/f32) and the ggml block quantizers we write.
//! Every quantizer here follows ggml's reference kernel bit for bit; see formats/gguf.md.

pub mod q8_0;

use crate::gguf::GgmlType;
use crate::hf::Dtype;
use anyhow::{Result, bail};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Decodes little-endian `src` of `dtype` into `out` (same element count).
pub fn to_f32(src: &[u8], dtype: Dtype, out: &mut [f32]) -> Result<()> {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            let h: Vec<f16> = src
                .chunks_exact(2)
                .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            h.convert_to_f32_slice(out);
        }
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        other => bail!(
            "tensor dtype {} cannot be converted (expected BF16, F16 or F32)",
            other.name()
        ),
    }
    Ok(())
}

/// Index of the first NaN or infinity, if any.
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    x.iter().position(|v| !v.is_finite())
}

/// Encodes rows of f32 into `ty`, appending to `out`. `row_len` must be a whole number of
/// blocks of `ty` (the converter checks before choosing a block type).
pub fn encode(x: &[f32], row_len: usize, ty: GgmlType, out: &mut Vec<u8>) -> Result<()> {
    match ty {
        GgmlType::F32 => x
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => {
            let mut h = vec![f16::ZERO; x.len()];
            h.convert_from_f32_slice(x);
            h.iter()
                .for_each(|v| out.extend_from_slice(&v.to_bits().to_le_bytes()));
        }
        GgmlType::BF16 => x
            .iter()
            .for_each(|&v| out.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes())),
        GgmlType::Q8_0 => {
            for row in x.chunks_exact(row_len) {
                q8_0::quantize_row(row, out);
            }
        }
        other => bail!("encoding to {} is not implemented", other.name()),
    }
    Ok(())
}

//! Element conversions (bf16/f16/f32) and the ggml block quantizers we write.
//! Every quantizer here follows ggml's kernels bit for bit (with and without an importance
//! matrix); block layouts in formats/quant-blocks.md, file layout in formats/gguf.md.

// The block quantizers are line-by-line ports of ggml's C loops; indexed loops keep them
// easy to compare with the original.
#[allow(clippy::needless_range_loop)]
pub mod helpers;
#[allow(clippy::needless_range_loop)]
pub mod q2_k;
#[allow(clippy::needless_range_loop)]
pub mod q3_k;
#[allow(clippy::needless_range_loop)]
pub mod q4_0;
#[allow(clippy::needless_range_loop)]
pub mod q4_1;
#[allow(clippy::needless_range_loop)]
pub mod q4_k;
#[allow(clippy::needless_range_loop)]
pub mod q5_0;
#[allow(clippy::needless_range_loop)]
pub mod q5_1;
#[allow(clippy::needless_range_loop)]
pub mod q5_k;
#[allow(clippy::needless_range_loop)]
pub mod q6_k;
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
/// blocks of `ty` (the converter checks before choosing a block type). Without an importance
/// matrix: byte-identical with ggml's `quantize_row_*_ref`.
pub fn encode(x: &[f32], row_len: usize, ty: GgmlType, out: &mut Vec<u8>) -> Result<()> {
    encode_with_imatrix(x, row_len, ty, None, out)
}

/// Like [`encode`], with an optional importance matrix (one weight per column, `row_len`
/// values), byte-identical with `ggml_quantize_chunk(ty, x, out, 0, rows, row_len, imatrix)`.
/// Types without an imatrix-aware quantizer in ggml (F32, F16, BF16, Q8_0) ignore it, as ggml
/// does.
pub fn encode_with_imatrix(
    x: &[f32],
    row_len: usize,
    ty: GgmlType,
    imatrix: Option<&[f32]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    if row_len == 0 {
        if x.is_empty() {
            return Ok(());
        }
        bail!("row length 0 with {} values", x.len());
    }
    if !x.len().is_multiple_of(row_len) {
        bail!(
            "{} values are not a whole number of rows of {row_len}",
            x.len()
        );
    }
    let (be, _) = ty.block();
    if !row_len.is_multiple_of(be) {
        bail!(
            "a row of {row_len} elements is not a whole number of {} blocks ({be} each)",
            ty.name()
        );
    }
    if let Some(im) = imatrix
        && im.len() != row_len
    {
        bail!(
            "importance matrix has {} values, expected one per column ({row_len})",
            im.len()
        );
    }
    type RowFn = fn(&[f32], Option<&[f32]>, &mut Vec<u8>);
    let row_fn: RowFn = match ty {
        GgmlType::F32 => {
            out.reserve(x.len() * 4);
            x.iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
            return Ok(());
        }
        GgmlType::F16 => {
            let mut h = vec![f16::ZERO; x.len()];
            h.convert_from_f32_slice(x);
            h.iter()
                .for_each(|v| out.extend_from_slice(&v.to_bits().to_le_bytes()));
            return Ok(());
        }
        GgmlType::BF16 => {
            x.iter()
                .for_each(|&v| out.extend_from_slice(&bf16::from_f32(v).to_bits().to_le_bytes()));
            return Ok(());
        }
        GgmlType::Q8_0 => {
            for row in x.chunks_exact(row_len) {
                q8_0::quantize_row(row, out);
            }
            return Ok(());
        }
        GgmlType::Q4_0 => q4_0::quantize_row,
        GgmlType::Q4_1 => q4_1::quantize_row,
        GgmlType::Q5_0 => q5_0::quantize_row,
        GgmlType::Q5_1 => q5_1::quantize_row,
        GgmlType::Q2K => q2_k::quantize_row,
        GgmlType::Q3K => q3_k::quantize_row,
        GgmlType::Q4K => q4_k::quantize_row,
        GgmlType::Q5K => q5_k::quantize_row,
        GgmlType::Q6K => q6_k::quantize_row,
        other => bail!("encoding to {} is not implemented", other.name()),
    };
    for row in x.chunks_exact(row_len) {
        row_fn(row, imatrix, out);
    }
    Ok(())
}

/// Whether [`dequantize_row`] can decode `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32
            | GgmlType::F16
            | GgmlType::BF16
            | GgmlType::Q8_0
            | GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
    )
}

/// Decodes `src` (whole blocks of `ty`) into `out`, bit-identical with ggml's `to_float`
/// (`dequantize_row_*`, `ggml_fp16_to_fp32_row`, `ggml_bf16_to_fp32_row`). `out.len()` must
/// be the element count that `src` holds.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    if !can_dequantize(ty) {
        bail!("decoding {} is not implemented", ty.name());
    }
    let (be, bb) = ty.block();
    if !src.len().is_multiple_of(bb) || src.len() / bb * be != out.len() {
        bail!(
            "{} bytes of {} do not hold {} values (blocks of {be} values in {bb} bytes)",
            src.len(),
            ty.name(),
            out.len()
        );
    }
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = helpers::fp16_to_fp32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        GgmlType::Q8_0 => q8_0::dequantize_row(src, out),
        GgmlType::Q4_0 => q4_0::dequantize_row(src, out),
        GgmlType::Q4_1 => q4_1::dequantize_row(src, out),
        GgmlType::Q5_0 => q5_0::dequantize_row(src, out),
        GgmlType::Q5_1 => q5_1::dequantize_row(src, out),
        GgmlType::Q2K => q2_k::dequantize_row(src, out),
        GgmlType::Q3K => q3_k::dequantize_row(src, out),
        GgmlType::Q4K => q4_k::dequantize_row(src, out),
        GgmlType::Q5K => q5_k::dequantize_row(src, out),
        GgmlType::Q6K => q6_k::dequantize_row(src, out),
        _ => unreachable!(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: &[GgmlType] = &[
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// Deterministic roughly-Gaussian weights (sum of uniforms) with a few outliers.
    fn weights(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut u = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..n)
            .map(|i| {
                let g = (0..4).map(|_| u()).sum::<f32>() - 2.0;
                if i % 997 == 0 { g * 0.2 } else { g * 0.03 }
            })
            .collect()
    }

    /// Relative RMS error of quantize -> dequantize (with and without an imatrix), per type.
    /// The bounds are 1.3-1.5x what ggml's quantizers reach on this data (e.g. Q4_0 0.088,
    /// Q4_K 0.072, Q6_K 0.018, Q2_K 0.29).
    #[test]
    fn quant_round_trip_error_is_bounded() {
        let row_len = 1024;
        let x = weights(row_len * 16, 5);
        let im: Vec<f32> = (0..row_len).map(|i| 0.5 + (i % 7) as f32).collect();
        let rms = |v: &[f32]| (v.iter().map(|a| a * a).sum::<f32>() / v.len() as f32).sqrt();
        for &ty in TYPES {
            let bound = match ty {
                GgmlType::Q8_0 => 0.008,
                GgmlType::Q6K => 0.025,
                GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => 0.06,
                GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => 0.12,
                GgmlType::Q3K => 0.21,
                GgmlType::Q2K => 0.4,
                _ => unreachable!(),
            };
            for imx in [None, Some(im.as_slice())] {
                let mut q = Vec::new();
                encode_with_imatrix(&x, row_len, ty, imx, &mut q).unwrap();
                let (be, bb) = ty.block();
                assert_eq!(q.len(), x.len() / be * bb, "{}", ty.name());
                let mut y = vec![0f32; x.len()];
                dequantize_row(ty, &q, &mut y).unwrap();
                let err: Vec<f32> = x.iter().zip(&y).map(|(a, b)| a - b).collect();
                let rel = rms(&err) / rms(&x);
                eprintln!("{} imatrix={} rel rms {rel:.4}", ty.name(), imx.is_some());
                assert!(
                    rel < bound,
                    "{} (imatrix {}): relative RMS error {rel} over {bound}",
                    ty.name(),
                    imx.is_some()
                );
                // Deterministic.
                let mut q2 = Vec::new();
                encode_with_imatrix(&x, row_len, ty, imx, &mut q2).unwrap();
                assert!(q == q2);
            }
        }
    }

    /// Zeros decode to zeros; a constant row decodes close to the constant; values that a type
    /// represents exactly (small integers with an anchoring extreme) come back exactly.
    #[test]
    fn quant_special_rows() {
        for &ty in TYPES {
            let n = 512;
            let mut q = Vec::new();
            encode(&vec![0.0; n], n, ty, &mut q).unwrap();
            let mut y = vec![1f32; n];
            dequantize_row(ty, &q, &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 0.0), "{} zeros", ty.name());

            let mut q = Vec::new();
            encode(&vec![0.75; n], n, ty, &mut q).unwrap();
            dequantize_row(ty, &q, &mut y).unwrap();
            assert!(
                y.iter().all(|&v| (v - 0.75).abs() < 0.75 * 0.07),
                "{} constant: {:?}",
                ty.name(),
                &y[..4]
            );
        }
        // Q4_0: multiples of d = 1 between -8 and 7, with -8 present in every block.
        let x: Vec<f32> = (0..256)
            .map(|i| {
                if i % 32 == 0 {
                    -8.0
                } else {
                    (i % 16) as f32 - 8.0
                }
            })
            .collect();
        let mut q = Vec::new();
        encode(&x, 256, GgmlType::Q4_0, &mut q).unwrap();
        let mut y = vec![0f32; 256];
        dequantize_row(GgmlType::Q4_0, &q, &mut y).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn quant_rejects_partial_blocks() {
        let x = vec![1.0f32; 384];
        let mut out = Vec::new();
        assert!(encode(&x, 384, GgmlType::Q4K, &mut out).is_err());
        assert!(encode(&x, 384, GgmlType::Q6K, &mut out).is_err());
        assert!(encode(&x, 384, GgmlType::Q4_0, &mut out).is_ok());
        assert!(encode_with_imatrix(&x, 384, GgmlType::Q4_0, Some(&[1.0; 10]), &mut out).is_err());
        let mut y = vec![0f32; 31];
        assert!(dequantize_row(GgmlType::Q4_0, &[0u8; 18], &mut y).is_err());
        assert!(!can_dequantize(GgmlType::Q8K));
        assert!(can_dequantize(GgmlType::Q5K));
    }
}

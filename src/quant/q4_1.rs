//! Q4_1: blocks of 32 weights, 20 bytes: f16 scale `d`, f16 minimum `m`, then 16 bytes of
//! 4-bit quants (byte j: weight j low nibble, weight j+16 high nibble); y = q * d + m.
//! Ports ggml's `quantize_row_q4_1_ref`, `quantize_row_q4_1_impl` (imatrix) and
//! `dequantize_row_q4_1`.

use super::helpers::{check_row, cvtt_i32_block, fp32_to_fp16, make_qkx3_quants, read_f16, sum_sq};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 20;

/// Quantizes one row (whole blocks), appending `x.len() / 32 * 20` bytes.
pub fn quantize_row(x: &[f32], imatrix: Option<&[f32]>, out: &mut Vec<u8>) {
    check_row(x, QK, imatrix);
    out.reserve(x.len() / QK * BLOCK_BYTES);
    match imatrix {
        None => {
            for b in x.chunks_exact(QK) {
                out.extend_from_slice(&block_ref(b.try_into().unwrap()));
            }
        }
        Some(qw) => {
            let sigma2 = sum_sq(x) / x.len() as f32;
            for (b, q) in x.chunks_exact(QK).zip(qw.chunks_exact(QK)) {
                out.extend_from_slice(&block_weighted(
                    b.try_into().unwrap(),
                    q.try_into().unwrap(),
                    sigma2,
                ));
            }
        }
    }
}

fn block_ref(x: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut y = [0u8; BLOCK_BYTES];
    y[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
    y[2..4].copy_from_slice(&fp32_to_fp16(min).to_le_bytes());
    // `MIN(15, (int8_t)((x - min)*id + 0.5f))`, stored as uint8_t.
    let mut t = [0f32; QK];
    for j in 0..QK {
        t[j] = (x[j] - min) * id + 0.5;
    }
    let q = cvtt_i32_block(&t).map(|v| (v as i8 as i32).min(15) as u8);
    for j in 0..QK / 2 {
        y[4 + j] = q[j] | (q[QK / 2 + j] << 4);
    }
    y
}

fn block_weighted(x: &[f32; QK], qw: &[f32; QK], sigma2: f32) -> [u8; BLOCK_BYTES] {
    let mut weight = [0f32; QK];
    for j in 0..QK {
        weight[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
    let mut l = [0u8; QK];
    let (d, min) = make_qkx3_quants(15, x, &weight, &mut l, -0.9, 0.05, 36, false);
    let mut y = [0u8; BLOCK_BYTES];
    y[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
    y[2..4].copy_from_slice(&fp32_to_fp16(-min).to_le_bytes());
    for j in 0..16 {
        y[4 + j] = l[j] | (l[j + 16] << 4);
    }
    y
}

/// As ggml's `dequantize_row_q4_1`; `out` holds 32 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = read_f16(b, 0);
        let m = read_f16(b, 2);
        for j in 0..QK / 2 {
            let x0 = (b[4 + j] & 0x0F) as i32;
            let x1 = (b[4 + j] >> 4) as i32;
            o[j] = x0 as f32 * d + m;
            o[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

//! Q5_0: blocks of 32 weights, 22 bytes: f16 scale `d`, a little-endian u32 `qh` holding bit 4
//! of weight j in bit j, then 16 bytes of low nibbles (byte j: weight j low, weight j+16 high);
//! y = (q - 16) * d. Ports ggml's `quantize_row_q5_0_ref`, `quantize_row_q5_0_impl` (imatrix)
//! and `dequantize_row_q5_0`.

use super::helpers::{check_row, cvtt_i32_block, fp32_to_fp16, make_qx_quants, read_f16, sum_sq};

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 22;

/// Quantizes one row (whole blocks), appending `x.len() / 32 * 22` bytes.
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

/// Packs 32 five-bit levels (C `uint8_t`, only the low 5 bits used) into qh + qs.
fn pack(y: &mut [u8; BLOCK_BYTES], xi: impl Fn(usize) -> u8) {
    let mut qh = 0u32;
    for j in 0..QK / 2 {
        let xi0 = xi(j);
        let xi1 = xi(j + QK / 2);
        y[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
    }
    y[2..6].copy_from_slice(&qh.to_le_bytes());
}

fn block_ref(x: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut y = [0u8; BLOCK_BYTES];
    y[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
    // `MIN(31, (int8_t)(x*id + 16.5f))`, stored as uint8_t.
    let mut t = [0f32; QK];
    for j in 0..QK {
        t[j] = x[j] * id + 16.5;
    }
    let q = cvtt_i32_block(&t).map(|v| (v as i8 as i32).min(31) as u8);
    pack(&mut y, |j| q[j]);
    y
}

fn block_weighted(x: &[f32; QK], qw: &[f32; QK], sigma2: f32) -> [u8; BLOCK_BYTES] {
    let mut weight = [0f32; QK];
    for j in 0..QK {
        weight[j] = qw[j] * (sigma2 + x[j] * x[j]).sqrt();
    }
    let mut l = [0i8; QK];
    let d = make_qx_quants(16, x, &mut l, &weight);
    let mut y = [0u8; BLOCK_BYTES];
    y[..2].copy_from_slice(&fp32_to_fp16(d).to_le_bytes());
    pack(&mut y, |j| l[j] as u8);
    y
}

/// As ggml's `dequantize_row_q5_0`; `out` holds 32 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = read_f16(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for j in 0..QK / 2 {
            let xh_0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh_1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b[6 + j] & 0x0F) | xh_0) as i32 - 16;
            let x1 = ((b[6 + j] >> 4) | xh_1) as i32 - 16;
            o[j] = x0 as f32 * d;
            o[j + QK / 2] = x1 as f32 * d;
        }
    }
}

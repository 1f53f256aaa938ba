//! Q5_K: super-blocks of 256 weights, 176 bytes: f16 `d`, f16 `dmin`, 12 bytes of 6-bit
//! scales and mins packed as in Q4_K, 32 bytes `qh`, then 128 bytes of low nibbles laid out as
//! Q4_K's quants. Weight 64*c + l has its high bit in bit 2c of qh[l], weight 64*c + 32 + l in
//! bit 2c+1. y = d * sc * q - dmin * m, q = 0..31. Ports ggml's `quantize_row_q5_K_ref`,
//! `quantize_row_q5_K_impl` (imatrix) and `dequantize_row_q5_K`.

use super::helpers::{check_row, read_f16};
use super::q4_k::{get_scale_min_k4, requantize, scales_ref, scales_weighted};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 176;
const OFF_SCALES: usize = 4;
const OFF_QH: usize = 16;
const OFF_QS: usize = 48;

/// Quantizes one row (whole super-blocks), appending `x.len() / 256 * 176` bytes.
pub fn quantize_row(x: &[f32], imatrix: Option<&[f32]>, out: &mut Vec<u8>) {
    check_row(x, QK, imatrix);
    out.reserve(x.len() / QK * BLOCK_BYTES);
    for (i, b) in x.chunks_exact(QK).enumerate() {
        let b: &[f32; QK] = b.try_into().unwrap();
        let mut y = [0u8; BLOCK_BYTES];
        let mut l = [0u8; QK];
        let head: &mut [u8; 16] = (&mut y[..16]).try_into().unwrap();
        match imatrix {
            None => scales_ref(b, 31, -0.5, 0.1, 15, head, &mut l),
            Some(qw) => scales_weighted(
                b,
                qw[i * QK..(i + 1) * QK].try_into().unwrap(),
                31,
                head,
                &mut l,
            ),
        }
        requantize(b, head, 31, &mut l);
        let mut qh = [0u8; 32];
        let (mut m1, mut m2) = (1u8, 2u8);
        for c in 0..4 {
            for j in 0..32 {
                let mut l1 = l[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * c + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                y[OFF_QS + 32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
        y[OFF_QH..OFF_QH + 32].copy_from_slice(&qh);
        out.extend_from_slice(&y);
    }
}

/// As ggml's `dequantize_row_q5_K`; `out` holds 256 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = read_f16(b, 0);
        let min = read_f16(b, 2);
        let s = &b[OFF_SCALES..OFF_SCALES + 12];
        let qh = &b[OFF_QH..OFF_QH + 32];
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let ql = &b[OFF_QS + 32 * c..OFF_QS + 32 * c + 32];
            let (sc, m) = get_scale_min_k4(2 * c, s);
            let d1 = d * sc as f32;
            let m1 = min * m as f32;
            let (sc, m) = get_scale_min_k4(2 * c + 1, s);
            let d2 = d * sc as f32;
            let m2 = min * m as f32;
            let o = &mut o[64 * c..64 * c + 64];
            for l in 0..32 {
                let q = (ql[l] & 0xF) as i32 + if qh[l] & u1 != 0 { 16 } else { 0 };
                o[l] = d1 * q as f32 - m1;
            }
            for l in 0..32 {
                let q = (ql[l] >> 4) as i32 + if qh[l] & u2 != 0 { 16 } else { 0 };
                o[32 + l] = d2 * q as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

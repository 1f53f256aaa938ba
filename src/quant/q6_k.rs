//! Q6_K: super-blocks of 256 weights, 210 bytes: 128 bytes `ql` (low nibbles), 64 bytes `qh`
//! (high two bits), 16 signed 8-bit sub-block scales (sub-blocks of 16), then f16 `d`.
//! Within each half h (128 weights): ql[64h + l] holds weight 128h + l (low nibble) and
//! 128h + 64 + l (high nibble), ql[64h + 32 + l] holds 128h + 32 + l and 128h + 96 + l, and
//! qh[32h + l] holds the top bits of 128h + l, +32, +64, +96 in bit pairs 0, 2, 4, 6.
//! y = d * sc * (q - 32). Ports ggml's `quantize_row_q6_K_ref`, `quantize_row_q6_K_impl`
//! (imatrix) and `dequantize_row_q6_K`.

use super::helpers::{
    GROUP_MAX_EPS, check_row, clamp_i, fp32_to_fp16, make_qx_quants, nearest_int, read_f16,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 210;
const OFF_QH: usize = 128;
const OFF_SCALES: usize = 192;
const OFF_D: usize = 208;

/// Quantizes one row (whole super-blocks), appending `x.len() / 256 * 210` bytes.
pub fn quantize_row(x: &[f32], imatrix: Option<&[f32]>, out: &mut Vec<u8>) {
    check_row(x, QK, imatrix);
    out.reserve(x.len() / QK * BLOCK_BYTES);
    for (i, b) in x.chunks_exact(QK).enumerate() {
        let b: &[f32; QK] = b.try_into().unwrap();
        out.extend_from_slice(&block(b, imatrix.map(|q| &q[i * QK..(i + 1) * QK])));
    }
}

fn block(x: &[f32; QK], qw: Option<&[f32]>) -> [u8; BLOCK_BYTES] {
    let mut l = [0i8; QK];
    let mut scales = [0f32; 16];
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    let mut w = [0f32; 16];
    for ib in 0..16 {
        let xs: &[f32; 16] = x[16 * ib..16 * ib + 16].try_into().unwrap();
        match qw {
            Some(q) => w.copy_from_slice(&q[16 * ib..16 * ib + 16]),
            None => {
                for (w, v) in w.iter_mut().zip(xs) {
                    *w = v * v;
                }
            }
        }
        let lj: &mut [i8; 16] = (&mut l[16 * ib..16 * ib + 16]).try_into().unwrap();
        let scale = make_qx_quants(32, xs, lj, &w);
        scales[ib] = scale;
        let abs_scale = scale.abs();
        if abs_scale > max_abs_scale {
            max_abs_scale = abs_scale;
            max_scale = scale;
        }
    }
    let mut y = [0u8; BLOCK_BYTES];
    if max_abs_scale < GROUP_MAX_EPS {
        y[OFF_D..].copy_from_slice(&fp32_to_fp16(0.0).to_le_bytes());
        return y;
    }
    let iscale = -128.0f32 / max_scale;
    y[OFF_D..].copy_from_slice(&fp32_to_fp16(1.0 / iscale).to_le_bytes());
    for ib in 0..16 {
        y[OFF_SCALES + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
    }
    let dd = read_f16(&y, OFF_D);
    for j in 0..16 {
        let d = dd * y[OFF_SCALES + j] as i8 as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d);
            l[16 * j + ii] = (clamp_i(q, -32, 31) + 32) as i8;
        }
    }
    for h in 0..2 {
        let j = 128 * h;
        for i in 0..32 {
            let q1 = (l[j + i] & 0xF) as u8;
            let q2 = (l[j + i + 32] & 0xF) as u8;
            let q3 = (l[j + i + 64] & 0xF) as u8;
            let q4 = (l[j + i + 96] & 0xF) as u8;
            y[64 * h + i] = q1 | (q3 << 4);
            y[64 * h + i + 32] = q2 | (q4 << 4);
            y[OFF_QH + 32 * h + i] = ((l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6)) as u8;
        }
    }
    y
}

/// As ggml's `dequantize_row_q6_K`; `out` holds 256 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = read_f16(b, OFF_D);
        for h in 0..2 {
            let ql = &b[64 * h..64 * h + 64];
            let qh = &b[OFF_QH + 32 * h..OFF_QH + 32 * h + 32];
            let sc = &b[OFF_SCALES + 8 * h..OFF_SCALES + 8 * h + 8];
            let y = &mut o[128 * h..128 * h + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    }
}

//! Q2_K: super-blocks of 256 weights, 84 bytes: 16 bytes of sub-block scales (byte j: 4-bit
//! scale of sub-block j in the low nibble, 4-bit min in the high nibble; sub-blocks of 16),
//! 64 bytes of 2-bit quants, f16 `d` (scale of the scales), f16 `dmin` (scale of the mins).
//! Quant byte 32*h + l (h = 0, 1) holds, in bits 2k..2k+1, weight 128*h + 32*k + l.
//! y = d * sc * q - dmin * m. Ports ggml's `quantize_row_q2_K_ref`, `quantize_row_q2_K_impl`
//! (imatrix) and `dequantize_row_q2_K`.

use super::helpers::{
    check_row, clamp_i, fp16_to_fp32, make_qkx2_quants, make_qkx3_quants, make_qp_quants,
    nearest_int, read_f16, sum_sq, write_f16,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 84;
const OFF_QS: usize = 16;
const OFF_D: usize = 80;
const OFF_DMIN: usize = 82;

/// Quantizes one row (whole super-blocks), appending `x.len() / 256 * 84` bytes.
pub fn quantize_row(x: &[f32], imatrix: Option<&[f32]>, out: &mut Vec<u8>) {
    check_row(x, QK, imatrix);
    out.reserve(x.len() / QK * BLOCK_BYTES);
    for (i, b) in x.chunks_exact(QK).enumerate() {
        let b: &[f32; QK] = b.try_into().unwrap();
        let y = match imatrix {
            None => block_ref(b),
            Some(qw) => block_weighted(b, qw[i * QK..(i + 1) * QK].try_into().unwrap()),
        };
        out.extend_from_slice(&y);
    }
}

fn sub16(x: &[f32; QK], j: usize) -> &[f32; 16] {
    x[16 * j..16 * j + 16].try_into().unwrap()
}

fn block_ref(x: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut l = [0u8; QK];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let q4scale = 15.0f32;
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..16 {
        let xs = sub16(x, j);
        let mut weights = [0f32; 16];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = v.abs();
        }
        let lj: &mut [u8; 16] = (&mut l[16 * j..16 * j + 16]).try_into().unwrap();
        let (s, m) = make_qkx2_quants(3, xs, &weights, lj, -0.5, 0.1, 15, true);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let mut y = [0u8; BLOCK_BYTES];
    if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..16 {
            y[j] = nearest_int(iscale * scales[j]) as u8;
        }
        write_f16(&mut y, OFF_D, max_scale / q4scale);
    } else {
        write_f16(&mut y, OFF_D, 0.0);
    }
    if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..16 {
            let lm = nearest_int(iscale * mins[j]);
            y[j] |= (lm << 4) as u8;
        }
        write_f16(&mut y, OFF_DMIN, max_min / q4scale);
    } else {
        write_f16(&mut y, OFF_DMIN, 0.0);
    }
    requantize(x, &y, &mut l);
    pack(&mut y, &l);
    y
}

fn block_weighted(x: &[f32; QK], qw: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut l = [0u8; QK];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = sum_sq(x) / QK as f32;
    for j in 0..16 {
        let xs = sub16(x, j);
        let mut weight = [0f32; 16];
        for i in 0..16 {
            weight[i] = qw[16 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        for w in weight {
            sw[j] += w;
        }
        let lj: &mut [u8; 16] = (&mut l[16 * j..16 * j + 16]).try_into().unwrap();
        let (s, m) = make_qkx3_quants(3, xs, &weight, lj, -0.9, 0.05, 36, false);
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 16];
    let mut lm = [0u8; 16];
    let dm = make_qp_quants(15, &scales, &mut ls, &sw);
    let mm = make_qp_quants(15, &mins, &mut lm, &sw);
    let mut y = [0u8; BLOCK_BYTES];
    write_f16(&mut y, OFF_D, dm);
    write_f16(&mut y, OFF_DMIN, mm);
    for j in 0..16 {
        y[j] = ls[j] | (lm[j] << 4);
    }
    requantize(x, &y, &mut l);
    pack(&mut y, &l);
    y
}

/// Second pass shared by both paths: each weight's 2-bit level against the f16-rounded scales.
fn requantize(x: &[f32; QK], y: &[u8; BLOCK_BYTES], l: &mut [u8; QK]) {
    let dm = read_f16(y, OFF_D);
    let mm = read_f16(y, OFF_DMIN);
    for j in 0..16 {
        let d = dm * (y[j] & 0xF) as f32;
        if d == 0.0 {
            continue;
        }
        let m = mm * (y[j] >> 4) as f32;
        for ii in 0..16 {
            let q = nearest_int((x[16 * j + ii] + m) / d);
            l[16 * j + ii] = clamp_i(q, 0, 3) as u8;
        }
    }
}

fn pack(y: &mut [u8; BLOCK_BYTES], l: &[u8; QK]) {
    for h in 0..2 {
        let j = 128 * h;
        for i in 0..32 {
            y[OFF_QS + 32 * h + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
}

/// As ggml's `dequantize_row_q2_K`; `out` holds 256 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = fp16_to_fp32(u16::from_le_bytes([b[OFF_D], b[OFF_D + 1]]));
        let min = fp16_to_fp32(u16::from_le_bytes([b[OFF_DMIN], b[OFF_DMIN + 1]]));
        let mut is = 0;
        let mut y = 0;
        for h in 0..2 {
            let q = &b[OFF_QS + 32 * h..OFF_QS + 32 * h + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = b[is];
                    is += 1;
                    let dl = d * (sc & 0xF) as f32;
                    let ml = min * (sc >> 4) as f32;
                    for l in 0..16 {
                        let v = ((q[16 * half + l] >> shift) & 3) as f32;
                        o[y] = dl * v - ml;
                        y += 1;
                    }
                }
            }
        }
    }
}

//! Q3_K: super-blocks of 256 weights, 110 bytes: 32 bytes `hmask` (bit k of byte l is the
//! high bit of weight 32*k + l), 64 bytes of low 2-bit quants (laid out as Q2_K's), 12 bytes
//! of sixteen 6-bit signed sub-block scales (offset by 32; low nibbles of scales 0..7 in the
//! low nibbles of bytes 0..7, of scales 8..15 in their high nibbles, the top two bits of scale
//! j in bits 2*(j/4) of byte 8 + j%4), then f16 `d`. y = d * (sc - 32) * (q - 4), q = 0..7.
//! Ports ggml's `quantize_row_q3_K_ref`, `quantize_row_q3_K_impl` (imatrix) and
//! `dequantize_row_q3_K`.

use super::helpers::{
    check_row, clamp_i, fp32_to_fp16, make_q3_quants, make_qx_quants, nearest_int, read_f16, sum_sq,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 110;
const OFF_QS: usize = 32;
const OFF_SCALES: usize = 96;
const OFF_D: usize = 108;

/// Quantizes one row (whole super-blocks), appending `x.len() / 256 * 110` bytes.
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

/// Stores 6-bit scale code `l` (C `int`, 0..=63 in practice) of sub-block j.
fn put_scale(y: &mut [u8; BLOCK_BYTES], j: usize, l: i32) {
    let s = &mut y[OFF_SCALES..OFF_SCALES + 12];
    if j < 8 {
        s[j] = (l & 0xF) as u8;
    } else {
        s[j - 8] |= ((l & 0xF) << 4) as u8;
    }
    let l = l >> 4;
    s[j % 4 + 8] |= (l << (2 * (j / 4))) as u8;
}

/// Signed scale of sub-block j as ggml reads it back (C `int8_t sc`).
fn get_scale(s: &[u8], j: usize) -> i8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    ((lo | (hi << 4)) as i32 - 32) as i8
}

fn block_ref(x: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut l = [0i8; QK];
    let mut scales = [0f32; 16];
    let mut max_scale = 0.0f32;
    let mut amax = 0.0f32;
    for j in 0..16 {
        let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().unwrap();
        let lj: &mut [i8; 16] = (&mut l[16 * j..16 * j + 16]).try_into().unwrap();
        scales[j] = make_q3_quants(4, xs, lj);
        let scale = scales[j].abs();
        if scale > amax {
            amax = scale;
            max_scale = scales[j];
        }
    }
    let mut y = [0u8; BLOCK_BYTES];
    if max_scale != 0.0 {
        let iscale = -32.0f32 / max_scale;
        for j in 0..16 {
            let l8 = nearest_int(iscale * scales[j]) as i8;
            let lv = clamp_i(l8 as i32, -32, 31) + 32;
            put_scale(&mut y, j, lv as i8 as i32);
        }
        y[OFF_D..OFF_D + 2].copy_from_slice(&fp32_to_fp16(1.0 / iscale).to_le_bytes());
    } else {
        y[OFF_D..OFF_D + 2].copy_from_slice(&fp32_to_fp16(0.0).to_le_bytes());
    }
    finish(x, &mut y, &mut l);
    y
}

fn block_weighted(x: &[f32; QK], qw: &[f32; QK]) -> [u8; BLOCK_BYTES] {
    let mut l = [0i8; QK];
    let mut scales = [0f32; 16];
    let mut sw = [0f32; 16];
    let sigma2 = 2.0 * sum_sq(x) / QK as f32;
    for j in 0..16 {
        let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().unwrap();
        let mut weight = [0f32; 16];
        for i in 0..16 {
            weight[i] = qw[16 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        let mut sumw = 0.0f32;
        for w in weight {
            sumw += w;
        }
        sw[j] = sumw;
        let lj: &mut [i8; 16] = (&mut l[16 * j..16 * j + 16]).try_into().unwrap();
        scales[j] = make_qx_quants(4, xs, lj, &weight);
    }
    let mut ls = [0i8; 16];
    let d_block = make_qx_quants(32, &scales, &mut ls, &sw);
    let mut y = [0u8; BLOCK_BYTES];
    for j in 0..16 {
        put_scale(&mut y, j, ls[j] as i32);
    }
    y[OFF_D..OFF_D + 2].copy_from_slice(&fp32_to_fp16(d_block).to_le_bytes());
    finish(x, &mut y, &mut l);
    y
}

/// Requantizes against the stored scales, then writes hmask and the 2-bit quants.
fn finish(x: &[f32; QK], y: &mut [u8; BLOCK_BYTES], l: &mut [i8; QK]) {
    let dall = read_f16(y, OFF_D);
    for j in 0..16 {
        let sc = get_scale(&y[OFF_SCALES..OFF_SCALES + 12], j);
        let d = dall * sc as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d);
            l[16 * j + ii] = (clamp_i(q, -4, 3) + 4) as i8;
        }
    }
    // hmask: the high bit of the first 32 quants goes to bit 0, the next 32 to bit 1, ...
    let mut hmask = [0u8; 32];
    for (j, lj) in l.iter_mut().enumerate() {
        if *lj > 3 {
            hmask[j % 32] |= 1 << (j / 32);
            *lj -= 4;
        }
    }
    y[..32].copy_from_slice(&hmask);
    for h in 0..2 {
        let j = 128 * h;
        for i in 0..32 {
            y[OFF_QS + 32 * h + i] =
                (l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6))
                    as u8;
        }
    }
}

/// As ggml's `dequantize_row_q3_K`; `out` holds 256 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d_all = read_f16(b, OFF_D);
        let s = &b[OFF_SCALES..OFF_SCALES + 12];
        let hm = &b[..32];
        let mut is = 0;
        let mut y = 0;
        let mut m = 1u8;
        for h in 0..2 {
            let q = &b[OFF_QS + 32 * h..OFF_QS + 32 * h + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * get_scale(s, is) as f32;
                    is += 1;
                    for l in 0..16 {
                        let k = 16 * half + l;
                        let lo = ((q[k] >> shift) & 3) as i32;
                        let v = lo - if hm[k] & m != 0 { 0 } else { 4 };
                        o[y] = dl * v as f32;
                        y += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}

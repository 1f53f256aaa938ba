//! Q4_K: super-blocks of 256 weights, 144 bytes: f16 `d`, f16 `dmin`, 12 bytes of eight 6-bit
//! sub-block scales and eight 6-bit mins (sub-blocks of 32; see [`put_scale_min`]), then 128
//! bytes of 4-bit quants: byte 32*c + l holds weight 64*c + l in its low nibble and
//! 64*c + 32 + l in its high nibble. y = d * sc * q - dmin * m. Ports ggml's
//! `quantize_row_q4_K_ref`, `quantize_row_q4_K_impl` (imatrix) and `dequantize_row_q4_K`.

use super::helpers::{
    check_row, clamp_i, make_qkx2_quants, make_qkx3_quants, make_qp_quants, nearest_int, read_f16,
    sum_sq, write_f16,
};

pub const QK: usize = 256;
pub const BLOCK_BYTES: usize = 144;
const OFF_SCALES: usize = 4;
const OFF_QS: usize = 16;

/// Quantizes one row (whole super-blocks), appending `x.len() / 256 * 144` bytes.
pub fn quantize_row(x: &[f32], imatrix: Option<&[f32]>, out: &mut Vec<u8>) {
    check_row(x, QK, imatrix);
    out.reserve(x.len() / QK * BLOCK_BYTES);
    for (i, b) in x.chunks_exact(QK).enumerate() {
        let b: &[f32; QK] = b.try_into().unwrap();
        let mut y = [0u8; BLOCK_BYTES];
        let mut l = [0u8; QK];
        let head: &mut [u8; 16] = (&mut y[..16]).try_into().unwrap();
        match imatrix {
            None => scales_ref(b, 15, -1.0, 0.1, 20, head, &mut l),
            Some(qw) => scales_weighted(
                b,
                qw[i * QK..(i + 1) * QK].try_into().unwrap(),
                15,
                head,
                &mut l,
            ),
        }
        requantize(b, head, 15, &mut l);
        for c in 0..4 {
            for j in 0..32 {
                y[OFF_QS + 32 * c + j] = l[64 * c + j] | (l[64 * c + 32 + j] << 4);
            }
        }
        out.extend_from_slice(&y);
    }
}

/// Packs the 6-bit scale `ls` and min `lm` of sub-block j (0..8) into the 12 scale bytes:
/// j < 4: bytes j and j+4 hold them whole; j >= 4: byte j+4 holds their low nibbles and the
/// top two bits go to bits 6..7 of bytes j-4 (scale) and j (min). As in ggml, values above 63
/// are not masked (C `uint8_t` arithmetic).
pub(crate) fn put_scale_min(s: &mut [u8], j: usize, ls: u8, lm: u8) {
    if j < 4 {
        s[j] = ls;
        s[j + 4] = lm;
    } else {
        s[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
        s[j - 4] |= (ls >> 4) << 6;
        s[j] |= (lm >> 4) << 6;
    }
}

/// ggml's `get_scale_min_k4`.
#[inline(always)]
pub(crate) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The `_ref` first pass shared by Q4_K (nmax 15, rmin -1, 20 steps) and Q5_K (nmax 31,
/// rmin -0.5, 15 steps): per-sub-block `make_qkx2_quants`, then d/dmin and the 6-bit codes
/// written into `head` (d, dmin, scales).
pub(crate) fn scales_ref(
    x: &[f32; QK],
    nmax: i32,
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    head: &mut [u8; 16],
    l: &mut [u8; QK],
) {
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().unwrap();
        let av_x = (sum_sq(xs) / 32.0).sqrt();
        let mut weights = [0f32; 32];
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let lj: &mut [u8; 32] = (&mut l[32 * j..32 * j + 32]).try_into().unwrap();
        let (s, m) = make_qkx2_quants(nmax, xs, &weights, lj, rmin, rdelta, nstep, false);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        put_scale_min(&mut head[OFF_SCALES..], j, ls, lm);
    }
    write_f16(head, 0, max_scale / 63.0);
    write_f16(head, 2, max_min / 63.0);
}

/// The imatrix first pass shared by Q4_K and Q5_K (`quantize_row_q{4,5}_K_impl`):
/// `make_qkx3_quants` per sub-block with weights qw * sqrt(sigma2 + x^2), then
/// `make_qp_quants` for the scales and mins. Q5_K clamps the codes to 63, Q4_K does not.
pub(crate) fn scales_weighted(
    x: &[f32; QK],
    qw: &[f32; QK],
    nmax: i32,
    head: &mut [u8; 16],
    l: &mut [u8; QK],
) {
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut sw = [0f32; 8];
    let sigma2 = 2.0 * sum_sq(x) / QK as f32;
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().unwrap();
        let mut weights = [0f32; 32];
        for i in 0..32 {
            weights[i] = qw[32 * j + i] * (sigma2 + xs[i] * xs[i]).sqrt();
        }
        let mut sumw = 0.0f32;
        for w in weights {
            sumw += w;
        }
        sw[j] = sumw;
        let lj: &mut [u8; 32] = (&mut l[32 * j..32 * j + 32]).try_into().unwrap();
        let (s, m) = make_qkx3_quants(nmax, xs, &weights, lj, -0.9, 0.05, 36, false);
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    let clamp = nmax == 31;
    for j in 0..8 {
        let (a, b) = if clamp {
            (ls[j].min(63), lm[j].min(63))
        } else {
            (ls[j], lm[j])
        };
        put_scale_min(&mut head[OFF_SCALES..], j, a, b);
    }
    write_f16(head, 0, d_block);
    write_f16(head, 2, m_block);
}

/// Second pass: each weight's level against the f16-rounded scale and min of its sub-block.
pub(crate) fn requantize(x: &[f32; QK], head: &[u8; 16], nmax: i32, l: &mut [u8; QK]) {
    let dd = read_f16(head, 0);
    let dmin = read_f16(head, 2);
    for j in 0..8 {
        let (sc, m) = get_scale_min_k4(j, &head[OFF_SCALES..]);
        let d = dd * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = clamp_i(q, 0, nmax) as u8;
        }
    }
}

/// As ggml's `dequantize_row_q4_K`; `out` holds 256 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = read_f16(b, 0);
        let min = read_f16(b, 2);
        let s = &b[OFF_SCALES..OFF_SCALES + 12];
        for c in 0..4 {
            let q = &b[OFF_QS + 32 * c..OFF_QS + 32 * c + 32];
            let (sc, m) = get_scale_min_k4(2 * c, s);
            let d1 = d * sc as f32;
            let m1 = min * m as f32;
            let (sc, m) = get_scale_min_k4(2 * c + 1, s);
            let d2 = d * sc as f32;
            let m2 = min * m as f32;
            let o = &mut o[64 * c..64 * c + 64];
            for l in 0..32 {
                o[l] = d1 * (q[l] & 0xF) as f32 - m1;
            }
            for l in 0..32 {
                o[32 + l] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

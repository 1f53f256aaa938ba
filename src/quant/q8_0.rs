//! Q8_0: blocks of 32 weights, an f16 scale d = absmax/127 and 32 signed bytes round(x/d).
//! Matches ggml's `quantize_row_q8_0_ref`: the scale is computed in f32, the quants use the f32
//! reciprocal (not the f16-rounded scale), and rounding is C's roundf (half away from zero).

use half::f16;

pub const QK: usize = 32;
pub const BLOCK_BYTES: usize = 34;

pub fn quantize_row(x: &[f32], out: &mut Vec<u8>) {
    debug_assert_eq!(x.len() % QK, 0);
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_bits().to_le_bytes());
        out.extend(b.iter().map(|&v| c_round_to_i8(v * id)));
    }
}

/// As ggml's `dequantize_row_q8_0`: y = q * d, d widened from f16. `out` holds 32 values per block.
pub fn dequantize_row(blocks: &[u8], out: &mut [f32]) {
    for (b, o) in blocks
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(QK))
    {
        let d = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        for (o, &q) in o.iter_mut().zip(&b[2..]) {
            *o = q as i8 as f32 * d;
        }
    }
}

/// `(int8_t)roundf(x)` as ggml's C code computes it on x86-64: `roundf` rounds half away from
/// zero (Rust's `f32::round`), the conversion goes through a 32-bit `cvttss2si`, which gives
/// 0x80000000 for NaN and out-of-range values, and the cast keeps the low byte. Only reachable
/// in range for normal weights; the edge matters for subnormal blocks, where 1/d overflows to inf.
fn c_round_to_i8(x: f32) -> u8 {
    let r = x.round();
    let i = if r.is_finite() && r.abs() < 2_147_483_648.0 {
        r as i32
    } else {
        i32::MIN
    };
    i as u8
}

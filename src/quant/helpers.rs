//! Scalar building blocks shared by the ggml block quantizers, each a line-by-line port of the
//! static helper of the same name in ggml's `ggml-quants.c` (or `ggml-impl.h`).
//!
//! Bit-identity rules followed throughout the quantizers:
//! - every expression is evaluated in f32 with C's left-to-right operation order, never fused
//!   (ggml-base is built for baseline x86-64, so the C compiler cannot emit FMA either);
//! - `int` values that C converts to float are converted with `as f32` at the same point;
//! - stores into C `uint8_t` / `int8_t` truncate (`as u8` / `as i8` of the `i32`);
//! - C's `MIN(a, b)` is `a < b ? a : b` and `MAX(a, b)` is `a > b ? a : b`, which matters when a
//!   float operand is NaN, and `if (f)` on a float is `f != 0.0` (NaN is true).

/// `GROUP_MAX_EPS` in ggml-quants.c.
pub const GROUP_MAX_EPS: f32 = 1e-15;

/// `nearest_int`: round half to even through the 1.5 * 2^23 magic add, reading the low mantissa
/// bits. Exact for |x| <= 4194303; outside that (ggml's assert is compiled out) it wraps the way
/// the C code does, e.g. inf gives -4194304 and NaN gives 0.
#[inline(always)]
pub fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12582912.0f32;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff) - 0x0040_0000
}

/// A C float -> (u)int8_t conversion as gcc emits it for x86-64 (`cvttss2si` / `cvttps2dq` into
/// 32 bits, then the low byte): truncation toward zero, and 0x80000000 ("integer indefinite",
/// low byte 0) for NaN and values outside the i32 range. Other targets compute the same x86
/// result, so our bytes never depend on the host (ggml built for ARM saturates instead, which
/// only shows in blocks of subnormals).
#[inline(always)]
pub fn cvtt_i32(x: f32) -> i32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvttss_si32, _mm_set_ss};
        // SAFETY: SSE2 is part of the x86-64 baseline, so these are always available.
        unsafe { _mm_cvttss_si32(_mm_set_ss(x)) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        if (-2_147_483_648.0f32..2_147_483_648.0f32).contains(&x) {
            x as i32
        } else {
            i32::MIN
        }
    }
}

/// [`cvtt_i32`] on every element of a block (`cvttps2dq`, four lanes at a time, on x86-64).
#[inline(always)]
pub fn cvtt_i32_block<const N: usize>(v: &[f32; N]) -> [i32; N] {
    let mut out = [0i32; N];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128, __m128i, _mm_cvttps_epi32};
        for (o, c) in out.chunks_exact_mut(4).zip(v.chunks_exact(4)) {
            let c: [f32; 4] = c.try_into().unwrap();
            // SAFETY: SSE2 is part of the x86-64 baseline; [f32; 4] / [i32; 4] and
            // __m128 / __m128i have the same size and every bit pattern is valid for each.
            let r: [i32; 4] = unsafe {
                std::mem::transmute::<__m128i, [i32; 4]>(_mm_cvttps_epi32(std::mem::transmute::<
                    [f32; 4],
                    __m128,
                >(c)))
            };
            o.copy_from_slice(&r);
        }
        for i in N / 4 * 4..N {
            out[i] = cvtt_i32(v[i]);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..N {
        out[i] = cvtt_i32(v[i]);
    }
    out
}

/// `(int8_t)x` for a float `x`, see [`cvtt_i32`].
#[inline(always)]
pub fn cvtt_i8(x: f32) -> i8 {
    cvtt_i32(x) as i8
}

/// C `MIN` on floats: `a < b ? a : b`.
#[inline(always)]
pub fn c_min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// C `MAX` on floats: `a > b ? a : b`.
#[inline(always)]
pub fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `ggml_compute_fp32_to_fp16` (software path used by ggml-base): round to nearest even,
/// overflow to inf, every NaN to 0x7E00 with the sign kept.
#[inline]
#[allow(clippy::assign_op_pattern)] // keeps C's operand order
pub fn fp32_to_fp16(f: f32) -> u16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;
    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base = f32::from_bits((bias >> 1) + 0x0780_0000) + base;
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    (sign >> 16) as u16
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign as u16
        }
}

/// `ggml_compute_fp16_to_fp32`.
#[inline]
pub fn fp16_to_fp32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized_value = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let magic_bias = 0.5f32;
    let denormalized_value = f32::from_bits((two_w >> 17) | magic_mask) - magic_bias;
    let denormalized_cutoff = 1u32 << 27;
    let result = sign
        | if two_w < denormalized_cutoff {
            denormalized_value.to_bits()
        } else {
            normalized_value.to_bits()
        };
    f32::from_bits(result)
}

/// Reads a little-endian f16 at `b[at..at + 2]` as f32.
#[inline(always)]
pub fn read_f16(b: &[u8], at: usize) -> f32 {
    fp16_to_fp32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Writes `fp32_to_fp16(v)` little-endian at `b[at..at + 2]` and returns the f16 bits.
#[inline(always)]
pub fn write_f16(b: &mut [u8], at: usize, v: f32) -> u16 {
    let h = fp32_to_fp16(v);
    b[at..at + 2].copy_from_slice(&h.to_le_bytes());
    h
}

/// `make_qx_quants(N, nmax, x, L, rmse_type = 1, qw)` with the weights given explicitly
/// (`w[i] = qw[i]`, or `x[i] * x[i]` when ggml passes `qw = NULL`). Writes L in `0..2*nmax`
/// and returns the scale.
pub fn make_qx_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    l_out: &mut [i8; N],
    w: &[f32; N],
) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    // `w*x[i]*l` is `(w*x[i])*l` in C: the product w*x[i] is the same in every pass.
    let mut wx = [0f32; N];
    for i in 0..N {
        wx[i] = w[i] * x[i];
    }
    let nmaxf = nmax as f32;
    // One pass: the clamped levels for `iscale`, then the two sums in C's order.
    let pass = |iscale: f32, lv: &mut [i32; N]| {
        for i in 0..N {
            lv[i] = clamp_i(nearest_int(iscale * x[i]), -nmax, nmax - 1);
        }
        let mut plx = [0f32; N];
        let mut pl2 = [0f32; N];
        for i in 0..N {
            let lf = lv[i] as f32;
            plx[i] = wx[i] * lf;
            pl2[i] = w[i] * lf * lf;
        }
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for i in 0..N {
            sumlx += plx[i];
            suml2 += pl2[i];
        }
        (sumlx, suml2)
    };
    let mut lv = [0i32; N];
    let (sumlx, suml2) = pass((-nmax) as f32 / max, &mut lv);
    for i in 0..N {
        l_out[i] = (lv[i] + nmax) as i8;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmaxf + 0.1f32 * is as f32) / max;
        let (sumlx, suml2) = pass(iscale, &mut lv);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..N {
                l_out[i] = (lv[i] + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// `MAX(lo, MIN(hi, l))` on ints.
#[inline(always)]
pub fn clamp_i(l: i32, lo: i32, hi: i32) -> i32 {
    let m = if hi < l { hi } else { l };
    if lo > m { lo } else { m }
}

/// `make_q3_quants(N, nmax, x, L, do_rmse = true)`. Writes L in `0..2*nmax`.
pub fn make_q3_quants<const N: usize>(nmax: i32, x: &[f32; N], l_out: &mut [i8; N]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    // w = x*x and w*x, as C forms them inside every use.
    let mut w = [0f32; N];
    let mut wx = [0f32; N];
    for i in 0..N {
        w[i] = x[i] * x[i];
        wx[i] = w[i] * x[i];
    }
    let iscale = (-nmax) as f32 / max;
    for i in 0..N {
        l_out[i] = clamp_i(nearest_int(iscale * x[i]), -nmax, nmax - 1) as i8;
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let lf = l_out[i] as f32;
        sumlx += wx[i] * lf;
        suml2 += w[i] * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..N {
            let li = l_out[i] as f32;
            let mut slx = sumlx - wx[i] * li;
            if slx > 0.0 {
                let mut sl2 = suml2 - w[i] * li * li;
                let new_l = clamp_i(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1);
                if new_l != l_out[i] as i32 {
                    let nf = new_l as f32;
                    slx += wx[i] * nf;
                    sl2 += w[i] * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l = (*l as i32 + nmax) as i8;
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// The weighted sums of one search step of `make_qkx2_quants` / `make_qkx3_quants`:
/// `sum_l += w*l; sum_l2 += w*l*l; sum_xl += w*l*x[i]`, accumulated in C's order. The
/// element-wise products are formed first (the same f32 values C computes), so only the
/// three additions stay serial.
#[inline(always)]
fn level_sums<const N: usize>(l: &[u8; N], w: &[f32; N], x: &[f32; N]) -> (f32, f32, f32) {
    let mut wl = [0f32; N];
    let mut wl2 = [0f32; N];
    let mut wlx = [0f32; N];
    for i in 0..N {
        let lf = l[i] as f32;
        wl[i] = w[i] * lf;
        wl2[i] = wl[i] * lf;
        wlx[i] = wl[i] * x[i];
    }
    let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
    for i in 0..N {
        sum_l += wl[i];
        sum_l2 += wl2[i];
        sum_xl += wlx[i];
    }
    (sum_l, sum_l2, sum_xl)
}

/// `sum w * err` with `err = |scale*l + min - x|` (`use_mad`) or its square, in C's order.
#[inline(always)]
fn level_error<const N: usize>(
    scale: f32,
    min: f32,
    l: &[u8; N],
    w: &[f32; N],
    x: &[f32; N],
    use_mad: bool,
) -> f32 {
    let mut t = [0f32; N];
    for i in 0..N {
        let diff = scale * l[i] as f32 + min - x[i];
        let diff = if use_mad { diff.abs() } else { diff * diff };
        t[i] = w[i] * diff;
    }
    let mut e = 0.0f32;
    for v in t {
        e += v;
    }
    e
}

/// `make_qkx2_quants(N, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`.
/// Returns (scale, the_min).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn make_qkx2_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    // `x[i] - min` for the current min (recomputed whenever a step improves min).
    let mut xm = [0f32; N];
    for i in 0..N {
        xm[i] = x[i] - min;
    }
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..N {
        l_out[i] = clamp_i(nearest_int(iscale * xm[i]), 0, nmax) as u8;
    }
    let mut best_error = level_error(scale, min, l_out, weights, x, use_mad);
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        for i in 0..N {
            laux[i] = clamp_i(nearest_int(iscale * xm[i]), 0, nmax) as u8;
        }
        let (sum_l, sum_l2, sum_xl) = level_sums(&laux, weights, x);
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = level_error(this_scale, this_min, &laux, weights, x, use_mad);
            if cur_error < best_error {
                *l_out = laux;
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
                for i in 0..N {
                    xm[i] = x[i] - min;
                }
            }
        }
    }
    (scale, -min)
}
/// `make_qkx3_quants(N, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)`
/// with non-NULL weights (the only way ggml calls it for these types). Returns (scale, the_min).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn make_qkx3_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    weights: &[f32; N],
    l_out: &mut [u8; N],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..N {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max <= min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    // `x[i] - min` for the current min (recomputed whenever a step improves min).
    let mut xm = [0f32; N];
    for i in 0..N {
        xm[i] = x[i] - min;
    }
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    for i in 0..N {
        l_out[i] = clamp_i(nearest_int(iscale * xm[i]), 0, nmax) as u8;
    }
    let mut best_mad = level_error(scale, min, l_out, weights, x, use_mad);
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; N];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        for i in 0..N {
            // min is the best fit so far and can be at or near max, so v can be inf, NaN or
            // out of range for nearest_int: ggml clamps before rounding.
            let v = iscale * xm[i];
            laux[i] = if v > 0.0 {
                nearest_int(c_min(v, nmaxf)) as u8
            } else {
                0
            };
        }
        let (sum_l, sum_l2, sum_xl) = level_sums(&laux, weights, x);
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mad = level_error(this_scale, this_min, &laux, weights, x, use_mad);
            if mad < best_mad {
                *l_out = laux;
                best_mad = mad;
                scale = this_scale;
                min = this_min;
                for i in 0..N {
                    xm[i] = x[i] - min;
                }
            }
        }
    }
    (scale, -min)
}

/// `make_qp_quants(N, nmax, x, L, quant_weights)`: quantizes non-negative values (sub-block
/// scales or mins) to `0..=nmax` without an offset. L is C's `uint8_t`, so out-of-range
/// (negative) levels wrap exactly as there.
pub fn make_qp_quants<const N: usize>(
    nmax: i32,
    x: &[f32; N],
    l_out: &mut [u8; N],
    quant_weights: &[f32; N],
) -> f32 {
    let mut max = 0.0f32;
    for &v in x {
        max = c_max(max, v);
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / max;
    for i in 0..N {
        l_out[i] = nearest_int(iscale * x[i]) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0.0f32;
    for i in 0..N {
        let diff = x[i] - scale * l_out[i] as f32;
        let w = quant_weights[i];
        best_mse += w * diff * diff;
    }
    for is in -4i32..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1f32 * is as f32 + nmaxf) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0.0f32;
        for i in 0..N {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            let w = quant_weights[i];
            mse += w * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for i in 0..N {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        let w = quant_weights[i];
        let lf = l as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for i in 0..N {
            let w = quant_weights[i];
            let li = l_out[i] as f32;
            let mut slx = sumlx - w * x[i] * li;
            let mut sl2 = suml2 - w * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    let nf = new_l as f32;
                    slx += w * x[i] * nf;
                    sl2 += w * nf * nf;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 { sumlx / suml2 } else { 0.0 }
}

/// `sum_x2 += x[j]*x[j]` over a whole slice, in order.
#[inline]
pub fn sum_sq(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for &v in x {
        s += v * v;
    }
    s
}

/// Checks the shared preconditions of a row quantizer: whole blocks, imatrix as long as the row.
pub fn check_row(x: &[f32], qk: usize, imatrix: Option<&[f32]>) {
    assert!(
        x.len().is_multiple_of(qk),
        "row of {} is not whole blocks of {qk}",
        x.len()
    );
    if let Some(q) = imatrix {
        assert_eq!(q.len(), x.len(), "imatrix length must equal the row length");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn nearest_int_is_round_half_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4999998), -2);
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(f32::INFINITY), -4194304);
        assert_eq!(nearest_int(f32::NAN), 0);
    }

    #[test]
    fn fp16_conversions_match_half_on_non_nan() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let f = f32::from_bits(rng as u32);
            if f.is_nan() {
                assert_eq!(fp32_to_fp16(f) & 0x7fff, 0x7e00);
                continue;
            }
            assert_eq!(fp32_to_fp16(f), f16::from_f32(f).to_bits(), "{f:e}");
        }
        for h in 0..=u16::MAX {
            let a = fp16_to_fp32(h);
            let b = f16::from_bits(h).to_f32();
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{h:#x}"
            );
        }
    }

    #[test]
    fn cvtt_matches_x86_indefinite() {
        assert_eq!(cvtt_i8(8.7), 8);
        assert_eq!(cvtt_i8(-0.9), 0);
        assert_eq!(cvtt_i8(300.0), 44);
        assert_eq!(cvtt_i8(f32::INFINITY), 0);
        assert_eq!(cvtt_i8(f32::NAN), 0);
        assert_eq!(cvtt_i32(-2_147_483_648.0), i32::MIN);
        assert_eq!(cvtt_i32(3e9), i32::MIN);
        let v = [
            1.5f32,
            -1.5,
            f32::NAN,
            f32::INFINITY,
            -3e9,
            2_147_483_520.0,
            -2_147_483_648.0,
            0.99,
            -0.0,
        ];
        let b = cvtt_i32_block(&v);
        for (x, q) in v.iter().zip(b) {
            assert_eq!(q, cvtt_i32(*x), "{x}");
        }
    }
}

//! Row kernels, one per storage type: decode a stored row to f32, and dot a stored row with an
//! f32 vector. A new GGUF block type (Q4_0 .. Q6_K) needs only a `dequant_row` arm; `dot_row`
//! falls back to decode-then-dot, and may get a fused arm later for speed.
//!
//! Two implementations: on x86-64 with AVX2, FMA and F16C (detected at run time) the `x86`
//! kernels read the stored bytes directly (f16 widened with F16C, q8_0 blocks as int8 x scale in
//! registers, 32 lanes in four accumulators); elsewhere (or with `LLMJP_NO_SIMD=1` in the
//! environment) the portable ones below (16 lanes, autovectorised). Both keep activations f32.
//!
//! Reductions have a fixed order (fixed lanes, then a fixed tree), so a result never depends on
//! which thread computed it; the two implementations round differently from each other.

use crate::gguf::GgmlType;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::sync::OnceLock;

/// Storage types the forward pass can read: every type `quant` decodes (the block types
/// `quantize` writes included; those without an arm below are decoded by ggml's `to_float`
/// rules in `quant::dequantize_row`).
pub fn supported(ty: GgmlType) -> bool {
    crate::quant::can_dequantize(ty)
}

/// Whether the AVX2 / FMA / F16C kernels are used: detected once per process.
#[inline]
pub fn simd() -> bool {
    static SIMD: OnceLock<bool> = OnceLock::new();
    *SIMD.get_or_init(|| {
        if std::env::var_os("LLMJP_NO_SIMD").is_some_and(|v| !v.is_empty() && v != "0") {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Reinterprets little-endian bytes as `T` without copying when aligned (memory maps and
/// GGUF data usually are); `None` means the caller decodes element by element.
fn cast<T: bytemuck::Pod>(src: &[u8]) -> Option<&[T]> {
    if cfg!(target_endian = "little") {
        bytemuck::try_cast_slice(src).ok()
    } else {
        None
    }
}

fn bf16_to_f32(bits: u16) -> f32 {
    // bf16 is the top half of an f32: widening is exact.
    f32::from_bits((bits as u32) << 16)
}

/// Decodes one stored row of `ty` (`src` holds exactly that row) into `out`.
pub fn dequant_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        let n = out.len();
        match ty {
            GgmlType::F16 if src.len() == 2 * n => {
                // SAFETY: the CPU has the features (simd()); src holds n f16 values.
                return unsafe { x86::dequant_f16(src, out) };
            }
            GgmlType::BF16 if src.len() == 2 * n => {
                // SAFETY: as above, n bf16 values.
                return unsafe { x86::dequant_bf16(src, out) };
            }
            GgmlType::Q8_0 if n.is_multiple_of(32) && src.len() == n / 32 * 34 => {
                // SAFETY: as above, n / 32 blocks of 34 bytes.
                return unsafe { x86::dequant_q8_0(src, out) };
            }
            _ => {}
        }
    }
    match ty {
        GgmlType::F32 => match cast::<f32>(src) {
            Some(s) => out.copy_from_slice(s),
            None => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        },
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::F16 => match cast::<f16>(src) {
            Some(h) => h.convert_to_f32_slice(out),
            None => {
                for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
                }
            }
        },
        GgmlType::Q8_0 => crate::quant::q8_0::dequantize_row(src, out),
        // Mat::new admits only decodable types with whole-block rows, so this cannot fail.
        other => crate::quant::dequantize_row(other, src, out)
            .unwrap_or_else(|e| panic!("row kernel for {}: {e}", other.name())),
    }
}

/// `src` (one stored row of `ty`) dotted with `x`; `scratch` holds at least `x.len()` floats
/// for the types that are decoded first.
pub fn dot_row(ty: GgmlType, src: &[u8], x: &[f32], scratch: &mut [f32]) -> f32 {
    dot_row_on(simd(), ty, src, x, scratch)
}

/// [`dot_row`] with the SIMD kernels (`simd`, where the CPU has them) or the portable ones.
pub(crate) fn dot_row_on(
    simd: bool,
    ty: GgmlType,
    src: &[u8],
    x: &[f32],
    scratch: &mut [f32],
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd && self::simd() {
        let n = x.len();
        match ty {
            GgmlType::F32 if src.len() == 4 * n => {
                // SAFETY: the CPU has the features (simd()); src holds n f32 values.
                return unsafe { x86::dot_f32(src, x) };
            }
            GgmlType::F16 if src.len() == 2 * n => {
                // SAFETY: as above, n f16 values.
                return unsafe { x86::dot_f16(src, x) };
            }
            GgmlType::BF16 if src.len() == 2 * n => {
                // SAFETY: as above, n bf16 values.
                return unsafe { x86::dot_bf16(src, x) };
            }
            GgmlType::Q8_0 if n.is_multiple_of(32) && src.len() == n / 32 * 34 => {
                // SAFETY: as above, n / 32 blocks of 34 bytes.
                return unsafe { x86::dot_q8_0(src, x) };
            }
            _ => {}
        }
    }
    match ty {
        GgmlType::F32 => {
            if let Some(w) = cast::<f32>(src) {
                return dot_portable(w, x);
            }
        }
        GgmlType::BF16 => {
            if let Some(w) = cast::<u16>(src) {
                return dot_bf16(w, x);
            }
        }
        _ => {}
    }
    let s = &mut scratch[..x.len()];
    dequant_row(ty, src, s);
    if simd { dot(s, x) } else { dot_portable(s, x) }
}

/// f32 dot product (attention scores, norms, decoded rows).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has the features; a holds b.len() f32 values.
        return unsafe { x86::dot_f32(bytemuck::cast_slice(a), b) };
    }
    dot_portable(a, b)
}

/// `y += a * x`, element-wise (attention's weighted sum of values).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: the CPU has the features.
        return unsafe { x86::axpy(a, x, y) };
    }
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

const LANES: usize = 16;

/// Sums 16 lane accumulators and a tail in one fixed order.
fn reduce(acc: [f32; LANES], tail: f32) -> f32 {
    let mut a = acc;
    let mut w = LANES / 2;
    while w > 0 {
        for j in 0..w {
            a[j] += a[j + w];
        }
        w /= 2;
    }
    a[0] + tail
}

/// f32 dot product with 16 independent accumulators (vectorizes without fast-math).
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    reduce(acc, tail)
}

/// bf16 row times f32 vector, widening on the fly (the row is never copied).
fn dot_bf16(w: &[u16], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut acc = [0f32; LANES];
    let (cw, cx) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let tail: f32 = cw
        .remainder()
        .iter()
        .zip(cx.remainder())
        .map(|(&a, b)| bf16_to_f32(a) * b)
        .sum();
    for (a, b) in cw.zip(cx) {
        for j in 0..LANES {
            acc[j] += bf16_to_f32(a[j]) * b[j];
        }
    }
    reduce(acc, tail)
}

/// The AVX2 + FMA + F16C kernels. Each is a safe function with those target features: calling
/// one is sound only where [`simd`] says they are present. Every access is bounds-checked up
/// front by an assert. Dot products run 32 lanes (four 8-lane accumulators), summed as
/// `(a0 + a1) + (a2 + a3)` and then across lanes in a fixed tree; a tail of fewer than 8
/// elements is added last, in order.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// How far ahead of the bytes being read (into the next rows) the dot products prefetch.
    /// A 2048-wide f16 row is one 4 KiB page, and the hardware prefetchers stop at pages:
    /// without this each row would start cold.
    const PREFETCH: usize = 2048;

    /// Asks for the cache line at `p` (any address: a prefetch never faults).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn prefetch(p: *const u8) {
        // A hint: it reads nothing architecturally and cannot fault.
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }

    /// 8 f32 weights at `p` (32 bytes).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f32(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 32 readable bytes at p (unaligned is fine).
        unsafe { _mm256_loadu_ps(p.cast()) }
    }

    /// 8 f16 weights at `p` (16 bytes), widened exactly.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }

    /// 8 bf16 weights at `p` (16 bytes), widened exactly (shifted into the top half).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_bf16(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 16 readable bytes at p.
        let h = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }

    /// 8 int8 quants at `p` (8 bytes) as f32.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_i8(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        let q = unsafe { _mm_loadl_epi64(p.cast()) };
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
    }

    /// The f16 at `p` (2 bytes) in all 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn splat_f16(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 2 readable bytes at p.
        let bits = unsafe { p.cast::<u16>().read_unaligned() };
        _mm256_cvtph_ps(_mm_set1_epi16(u16::from_le(bits) as i16))
    }

    /// The 8 lanes of `v` summed in a fixed tree.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    macro_rules! dot_fn {
        ($(#[$doc:meta])* $name:ident, $load:ident, $size:expr, $scalar:expr) => {
            $(#[$doc])*
            #[target_feature(enable = "avx2,fma,f16c")]
            pub fn $name(w: &[u8], x: &[f32]) -> f32 {
                let n = x.len();
                assert!(w.len() >= n * $size);
                let (wp, xp) = (w.as_ptr(), x.as_ptr());
                let mut a = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: i + 32 <= n (then i + 8 <= n): every load is within w and x.
                unsafe {
                    while i + 32 <= n {
                        prefetch(wp.wrapping_add(i * $size + PREFETCH));
                        if $size == 4 {
                            prefetch(wp.wrapping_add(i * $size + PREFETCH + 64));
                        }
                        for (j, a) in a.iter_mut().enumerate() {
                            let k = i + 8 * j;
                            *a = _mm256_fmadd_ps($load(wp.add(k * $size)), _mm256_loadu_ps(xp.add(k)), *a);
                        }
                        i += 32;
                    }
                    while i + 8 <= n {
                        a[0] = _mm256_fmadd_ps($load(wp.add(i * $size)), _mm256_loadu_ps(xp.add(i)), a[0]);
                        i += 8;
                    }
                }
                let mut s = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
                for k in i..n {
                    s += $scalar(&w[k * $size..(k + 1) * $size]) * x[k];
                }
                s
            }
        };
    }

    dot_fn!(
        /// f32 row (little-endian bytes) . x.
        dot_f32, load_f32, 4, |b: &[u8]| f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    );
    dot_fn!(
        /// f16 row . x.
        dot_f16, load_f16, 2, |b: &[u8]| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
    );
    dot_fn!(
        /// bf16 row . x.
        dot_bf16, load_bf16, 2, |b: &[u8]| super::bf16_to_f32(u16::from_le_bytes([b[0], b[1]]))
    );

    /// q8_0 row (blocks of an f16 scale and 32 int8) . x: per block `d * sum(q * x)`, the
    /// int8 values converted to f32 in registers; blocks alternate between two accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dot_q8_0(w: &[u8], x: &[f32]) -> f32 {
        let nb = x.len() / 32;
        assert!(x.len() == nb * 32 && w.len() >= nb * 34);
        let (wp, xp) = (w.as_ptr(), x.as_ptr());
        let mut a = [_mm256_setzero_ps(); 2];
        for b in 0..nb {
            prefetch(wp.wrapping_add(b * 34 + PREFETCH));
            // SAFETY: block b is bytes 34b..34b + 34 of w and floats 32b..32b + 32 of x.
            unsafe {
                let (p, xb) = (wp.add(b * 34), xp.add(b * 32));
                let s0 = _mm256_mul_ps(load_i8(p.add(2)), _mm256_loadu_ps(xb));
                let s1 = _mm256_mul_ps(load_i8(p.add(10)), _mm256_loadu_ps(xb.add(8)));
                let s0 = _mm256_fmadd_ps(load_i8(p.add(18)), _mm256_loadu_ps(xb.add(16)), s0);
                let s1 = _mm256_fmadd_ps(load_i8(p.add(26)), _mm256_loadu_ps(xb.add(24)), s1);
                a[b & 1] = _mm256_fmadd_ps(splat_f16(p), _mm256_add_ps(s0, s1), a[b & 1]);
            }
        }
        hsum(_mm256_add_ps(a[0], a[1]))
    }

    /// `y += a * x` (one FMA per element).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        assert!(y.len() == n);
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let av = _mm256_set1_ps(a);
        let mut i = 0;
        // SAFETY: i + 8 <= n: 8 floats of x and y.
        unsafe {
            while i + 8 <= n {
                let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(xp.add(i)), _mm256_loadu_ps(yp.add(i)));
                _mm256_storeu_ps(yp.add(i), v);
                i += 8;
            }
        }
        for k in i..n {
            y[k] = a.mul_add(x[k], y[k]);
        }
    }

    macro_rules! dequant_fn {
        ($(#[$doc:meta])* $name:ident, $load:ident, $scalar:expr) => {
            $(#[$doc])*
            #[target_feature(enable = "avx2,fma,f16c")]
            pub fn $name(w: &[u8], out: &mut [f32]) {
                let n = out.len();
                assert!(w.len() >= 2 * n);
                let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
                let mut i = 0;
                // SAFETY: i + 8 <= n: 16 bytes of w and 8 floats of out.
                unsafe {
                    while i + 8 <= n {
                        _mm256_storeu_ps(op.add(i), $load(wp.add(2 * i)));
                        i += 8;
                    }
                }
                for k in i..n {
                    out[k] = $scalar(u16::from_le_bytes([w[2 * k], w[2 * k + 1]]));
                }
            }
        };
    }

    dequant_fn!(
        /// f16 row to f32.
        dequant_f16, load_f16, |h| f16::from_bits(h).to_f32()
    );
    dequant_fn!(
        /// bf16 row to f32.
        dequant_bf16, load_bf16, super::bf16_to_f32
    );

    /// q8_0 row to f32 (`q * d`, as ggml's `dequantize_row_q8_0`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub fn dequant_q8_0(w: &[u8], out: &mut [f32]) {
        let nb = out.len() / 32;
        assert!(out.len() == nb * 32 && w.len() >= nb * 34);
        let (wp, op) = (w.as_ptr(), out.as_mut_ptr());
        for b in 0..nb {
            // SAFETY: block b is bytes 34b..34b + 34 of w and floats 32b..32b + 32 of out.
            unsafe {
                let (p, o) = (wp.add(b * 34), op.add(b * 32));
                let d = splat_f16(p);
                for j in 0..4 {
                    _mm256_storeu_ps(o.add(8 * j), _mm256_mul_ps(load_i8(p.add(2 + 8 * j)), d));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant;

    fn encode(x: &[f32], ty: GgmlType) -> Vec<u8> {
        let mut out = Vec::new();
        quant::encode(x, x.len(), ty, &mut out).unwrap();
        out
    }

    #[test]
    fn kernels_agree_with_decoding() {
        let x: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let v: Vec<f32> = (0..96)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let mut scratch = vec![0f32; 96];
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
            let bytes = encode(&x, ty);
            let mut w = vec![0f32; 96];
            dequant_row(ty, &bytes, &mut w);
            let tol = if ty == GgmlType::F32 { 0.0 } else { 0.02 };
            for (a, b) in w.iter().zip(&x) {
                assert!((a - b).abs() <= tol * b.abs().max(1.0), "{ty:?} {a} {b}");
            }
            let want: f64 = w.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
            let got = dot_row(ty, &bytes, &v, &mut scratch);
            assert!((got as f64 - want).abs() < 1e-4, "{ty:?} {got} {want}");
        }
    }

    /// The AVX2 kernels against exact decoding and f64 dot products, over lengths with and
    /// without tails (skipped where the CPU lacks the features).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernels_agree_with_the_portable_ones() {
        if !simd() {
            eprintln!("no AVX2 / FMA / F16C here: skipped");
            return;
        }
        for n in [1, 7, 8, 9, 31, 32, 33, 64, 96, 100, 2048] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let v: Vec<f32> = (0..n).map(|i| ((i * 11 % 17) as f32 - 8.0) / 5.0).collect();
            for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0] {
                if ty == GgmlType::Q8_0 && n % 32 != 0 {
                    continue;
                }
                let bytes = encode(&x, ty);
                // Exact decoding, element by element.
                let want: Vec<f32> = match ty {
                    GgmlType::F32 => x.clone(),
                    GgmlType::F16 => bytes
                        .chunks_exact(2)
                        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                        .collect(),
                    GgmlType::BF16 => bytes
                        .chunks_exact(2)
                        .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                        .collect(),
                    _ => {
                        let mut w = vec![0f32; n];
                        crate::quant::q8_0::dequantize_row(&bytes, &mut w);
                        w
                    }
                };
                let mut got = vec![0f32; n];
                dequant_row(ty, &bytes, &mut got);
                assert_eq!(got, want, "{ty:?} n={n}");
                let exact: f64 = want
                    .iter()
                    .zip(&v)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let mut scratch = vec![0f32; n];
                let simd_dot = dot_row(ty, &bytes, &v, &mut scratch);
                let portable = dot_portable(&want, &v);
                let tol = 1e-5 * (n as f64).sqrt() * 10.0;
                assert!(
                    (simd_dot as f64 - exact).abs() < tol,
                    "{ty:?} n={n}: {simd_dot} vs {exact}"
                );
                assert!(
                    (portable as f64 - exact).abs() < tol,
                    "{ty:?} n={n}: {portable} vs {exact}"
                );
            }
            assert!((dot(&x, &v) - dot_portable(&x, &v)).abs() < 1e-4);
        }
    }
}

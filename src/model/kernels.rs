//! Row kernels, one per storage type: decode a stored row to f32, and dot a stored row with an
//! f32 vector. A new GGUF block type (Q4_0 .. Q6_K) needs only a `dequant_row` arm; `dot_row`
//! falls back to decode-then-dot, and may get a fused arm later for speed.
//!
//! Reductions have a fixed order (16 lanes, then a fixed tree), so a result never depends on
//! which thread computed it.

use crate::gguf::GgmlType;
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Storage types the forward pass can read.
pub fn supported(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0
    )
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
        other => panic!("no row kernel for {}", other.name()),
    }
}

/// `src` (one stored row of `ty`) dotted with `x`; `scratch` holds at least `x.len()` floats
/// for the types that are decoded first.
pub fn dot_row(ty: GgmlType, src: &[u8], x: &[f32], scratch: &mut [f32]) -> f32 {
    match ty {
        GgmlType::F32 => {
            if let Some(w) = cast::<f32>(src) {
                return dot(w, x);
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
    dot(s, x)
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
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
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
}

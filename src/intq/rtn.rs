//! Round to nearest, as compressed-tensors (llm-compressor's minmax observer) and GPTQ's
//! quantizer do it: symmetric scale `absmax / (2^(bits-1) - 0.5)` (7.5 at 4 bits, 127.5 at 8),
//! rounded to the scale's dtype (a zero scale becomes that dtype's epsilon); integers
//! `round_half_even(clamp(w / scale))` with the quotient rounded to the weight's dtype first,
//! since torch divides a bf16 weight by a bf16 scale in bf16.

use super::pack::QTensor;
use crate::hf::Dtype;
use rayon::prelude::*;

/// What the integers and scales of one weight must satisfy.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub bits: u32,
    pub group: usize,
    /// The dtype the scales are stored in (the model's, or f16 for GPTQ).
    pub scale_dt: Dtype,
    /// The dtype of the source weight.
    pub weight_dt: Dtype,
}

impl Spec {
    /// The quantized tensor of `rows x cols` integers `q` and their group `scales`.
    pub fn tensor(&self, rows: usize, cols: usize, q: Vec<i8>, scales: Vec<f32>) -> QTensor {
        QTensor {
            rows,
            cols,
            bits: self.bits,
            group: self.group,
            q,
            scales,
        }
    }
}

impl Spec {
    pub fn qmin(&self) -> f32 {
        -((1i32 << (self.bits - 1)) as f32)
    }
    pub fn qmax(&self) -> f32 {
        ((1i32 << (self.bits - 1)) - 1) as f32
    }
    /// `absmax / half_range` is the symmetric scale.
    pub fn half_range(&self) -> f32 {
        (self.qmax() - self.qmin()) / 2.0
    }
}

/// `v` rounded to the nearest value of `dt` (ties to even, as torch converts).
pub fn round_to(dt: Dtype, v: f32) -> f32 {
    match dt {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// torch.finfo(dt).eps: compressed-tensors' replacement for a zero scale.
fn eps(dt: Dtype) -> f32 {
    match dt {
        Dtype::F16 => 0.000_976_562_5,
        Dtype::BF16 => 0.007_812_5,
        _ => f32::EPSILON,
    }
}

/// The stored scale for a group whose largest |w| is `amax`, shrunk by `clip` (1.0: none).
pub fn scale(spec: &Spec, amax: f32, clip: f32) -> f32 {
    // torch computes clip * amax and the division in the scale tensor's dtype.
    let a = round_to(spec.scale_dt, clip * amax);
    let s = round_to(spec.scale_dt, a / spec.half_range());
    if s == 0.0 { eps(spec.scale_dt) } else { s }
}

/// The integer for `w` at scale `s`.
#[inline]
pub fn quant(spec: &Spec, w: f32, s: f32) -> i8 {
    let x = round_to(spec.weight_dt, w / s);
    x.clamp(spec.qmin(), spec.qmax()).round_ties_even() as i8
}

/// Quantizes `x` (one group) at scale `s` into `q`.
pub fn quant_group(spec: &Spec, x: &[f32], s: f32, q: &mut [i8]) {
    for (q, &w) in q.iter_mut().zip(x) {
        *q = quant(spec, w, s);
    }
}

pub fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Round to nearest of a `rows` x `cols` weight (row-major f32, exact values of the source).
pub fn rtn(spec: &Spec, w: &[f32], rows: usize, cols: usize) -> QTensor {
    per_group(spec, w, rows, cols, |_, x| scale(spec, absmax(x), 1.0))
}

/// Quantizes each group of each row with the scale `choose(group index in the row, values)`
/// picks (rows in parallel): the frame rtn and mse share.
pub fn per_group(
    spec: &Spec,
    w: &[f32],
    rows: usize,
    cols: usize,
    choose: impl Fn(usize, &[f32]) -> f32 + Sync,
) -> QTensor {
    let g = cols / spec.group;
    let mut q = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * g];
    q.par_chunks_mut(cols)
        .zip(scales.par_chunks_mut(g))
        .zip(w.par_chunks(cols))
        .for_each(|((q, s), w)| {
            for (j, ((q, s), x)) in q
                .chunks_mut(spec.group)
                .zip(s.iter_mut())
                .zip(w.chunks(spec.group))
                .enumerate()
            {
                *s = choose(j, x);
                quant_group(spec, x, *s, q);
            }
        });
    spec.tensor(rows, cols, q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(bits: u32, dt: Dtype) -> Spec {
        Spec {
            bits,
            group: 4,
            scale_dt: dt,
            weight_dt: dt,
        }
    }

    #[test]
    fn extremes_map_to_the_ends_and_ties_go_to_even() {
        let s = spec(4, Dtype::F32);
        // absmax 7.5 -> scale 1: -7.5 rounds to -8 (even), +7.5 to 8 and is clamped to 7;
        // 2.5 -> 2 and 3.5 -> 4 (half to even).
        let t = rtn(&s, &[-7.5, 7.5, 2.5, 3.5], 1, 4);
        assert_eq!((t.q, t.scales), (vec![-8, 7, 2, 4], vec![1.0]));
        let s8 = spec(8, Dtype::F32);
        let t = rtn(&s8, &[-127.5, 127.5, 0.5, -1.5], 1, 4);
        assert_eq!((t.q, t.scales), (vec![-128, 127, 0, -2], vec![1.0]));
    }

    #[test]
    fn scales_are_stored_values_and_zero_groups_get_eps() {
        let s = spec(4, Dtype::BF16);
        let t = rtn(&s, &[0.0; 4], 1, 4);
        assert_eq!((t.q, t.scales), (vec![0; 4], vec![0.0078125]));
        let t = rtn(&s, &[0.125, -0.375, 0.25, 0.0625], 1, 4);
        assert_eq!(t.scales[0], round_to(Dtype::BF16, 0.375 / 7.5));
        assert_ne!(t.scales[0], 0.375f32 / 7.5);
    }
}

//! The element-wise pieces, computed in f32 the way transformers computes them.

use super::kernels::dot;

/// Llama RMSNorm: `weight * (x * rsqrt(mean(x^2) + eps))`, in that order, as transformers'
/// `LlamaRMSNorm` on float32.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = dot(x, x) / x.len() as f32;
    let r = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * r);
    }
}

/// RMSNorm of each row of `x` (rows of `weight.len()` floats).
pub fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (o, r) in out
        .chunks_exact_mut(weight.len())
        .zip(x.chunks_exact(weight.len()))
    {
        rms_norm(r, weight, eps, o);
    }
    out
}

/// In-place softmax in f32 (max subtracted first, as torch does).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// SiLU, `x * sigmoid(x)`.
/// The residual connection: `x += y`, element by element.
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Rotary position embedding with Hugging Face's pairing: dimension i rotates with i + d/2
/// (`q * cos + rotate_half(q) * sin`).
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    /// transformers' default rope: `inv_freq = 1 / theta^(arange(0, d, 2) / d)`, every step
    /// in float32 (the exponent is an f32 quotient; the power is rounded to f32 once).
    pub fn new(head_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..head_dim / 2)
            .map(|i| {
                let e = (2 * i) as f32 / head_dim as f32;
                let p = (theta as f32 as f64).powf(e as f64) as f32;
                1.0f32 / p
            })
            .collect();
        Self { inv_freq }
    }

    /// cos and sin (d/2 values each) at position `pos`: the angle is `pos * inv_freq` in f32
    /// (transformers' float32 `inv_freq @ position_ids`), its cos / sin rounded to f32.
    pub fn cos_sin(&self, pos: usize) -> (Vec<f32>, Vec<f32>) {
        self.inv_freq
            .iter()
            .map(|&f| {
                let a = (pos as f32 * f) as f64;
                (a.cos() as f32, a.sin() as f32)
            })
            .unzip()
    }

    /// Rotates one head (d values) in place.
    pub fn apply(head: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = head.len() / 2;
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            // rotate_half(x) = cat(-x2, x1); negation is exact, so this is q*cos + (-x2)*sin.
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let r = Rope::new(8, 10000.0);
        let (c, s) = r.cos_sin(0);
        let mut h = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        Rope::apply(&mut h, &c, &s);
        assert_eq!(h, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let (c, s) = r.cos_sin(37);
        Rope::apply(&mut h, &c, &s);
        let n: f32 = h.iter().map(|v| v * v).sum();
        assert!((n - 204.0).abs() < 1e-3);
    }

    #[test]
    fn softmax_and_norm() {
        let mut x = [1.0f32, 2.0, 3.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
        let mut o = [0f32; 2];
        rms_norm(&[3.0, 4.0], &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert_eq!(o, [3.0 / r, 2.0 * (4.0 / r)]);
    }
}

//! Distances between two next-token distributions, computed in f64.

/// log softmax of `x`.
pub fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// KL(reference || candidate): the information lost by using the candidate's distribution.
/// Non-finite logits give infinity (never a pass), not NaN (which comparisons would ignore).
pub fn kl_divergence(reference: &[f32], candidate: &[f32]) -> f64 {
    let (p, q) = (log_softmax(reference), log_softmax(candidate));
    let kl = p
        .iter()
        .zip(&q)
        .map(|(a, b)| a.exp() * (a - b))
        .sum::<f64>();
    if kl.is_nan() {
        f64::INFINITY
    } else {
        kl.max(0.0)
    }
}

/// Index of the largest value; the first one on ties (as greedy samplers do).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// (max, mean) of |a - b|.
pub fn abs_error(a: &[f32], b: &[f32]) -> (f64, f64) {
    let mut max = 0f64;
    let mut sum = 0f64;
    for (x, y) in a.iter().zip(b) {
        let d = (*x as f64 - *y as f64).abs();
        // NaN would vanish in max(); count it as an infinite error.
        let d = if d.is_nan() { f64::INFINITY } else { d };
        max = max.max(d);
        sum += d;
    }
    (max, sum / a.len().max(1) as f64)
}

/// Number of identical tokens before the first divergence.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_and_positive_otherwise() {
        let a = [1.0f32, 2.0, 3.0];
        assert!(kl_divergence(&a, &a).abs() < 1e-12);
        // Shifting all logits leaves the distribution unchanged.
        assert!(kl_divergence(&a, &[11.0, 12.0, 13.0]).abs() < 1e-12);
        let k = kl_divergence(&a, &[3.0, 2.0, 1.0]);
        // p = softmax(1,2,3); KL(p||reverse(p)) computed by hand.
        let p: Vec<f64> = log_softmax(&a).iter().map(|v| v.exp()).collect();
        let want = p[0] * (p[0] / p[2]).ln() + p[2] * (p[2] / p[0]).ln();
        assert!((k - want).abs() < 1e-12, "{k} vs {want}");
    }

    #[test]
    fn argmax_prefix_and_errors() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, 1.0]), 1);
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(abs_error(&[1.0, 2.0], &[1.5, 2.0]), (0.5, 0.25));
        assert_eq!(abs_error(&[1.0, 2.0], &[f32::NAN, 2.0]).0, f64::INFINITY);
        assert_eq!(kl_divergence(&[1.0, 2.0], &[f32::NAN, 2.0]), f64::INFINITY);
    }
}

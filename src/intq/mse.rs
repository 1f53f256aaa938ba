//! Per-group clipping search: for each group, try scales `p * absmax / half_range` for p from
//! 1.0 down to 0.80 in steps of 0.01 and keep the one with the least squared error, weighted per
//! column by the mean squared activation of that input channel when calibration statistics are
//! given (what the error of that weight costs in the layer's output, to first order). p = 1.0 is
//! round to nearest, so the result is never worse than rtn on the (weighted) error.

use super::pack::QTensor;
use super::rtn::{Spec, absmax, per_group, quant, scale};

const STEPS: usize = 20;

/// `col_weight`: per-column importance (`cols` values), or None for plain squared error.
pub fn mse(
    spec: &Spec,
    w: &[f32],
    rows: usize,
    cols: usize,
    col_weight: Option<&[f32]>,
) -> QTensor {
    per_group(spec, w, rows, cols, |j, x| {
        let cw = col_weight.map(|c| &c[j * spec.group..(j + 1) * spec.group]);
        best_scale(spec, x, cw)
    })
}

fn best_scale(spec: &Spec, x: &[f32], cw: Option<&[f32]>) -> f32 {
    let amax = absmax(x);
    let mut best = (f64::INFINITY, 0f32);
    for i in 0..=STEPS {
        let s = scale(spec, amax, 1.0 - i as f32 / 100.0);
        let err: f64 = x
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let e = (v - s * quant(spec, v, s) as f32) as f64;
                e * e * cw.map_or(1.0, |c| c[k] as f64)
            })
            .sum();
        // Strictly less: ties keep the larger scale (rtn's when it is among the best).
        if err < best.0 {
            best = (err, s);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hf::Dtype;
    use crate::intq::rtn::rtn;

    fn err(t: &QTensor, w: &[f32]) -> f64 {
        let g = t.groups();
        w.iter()
            .enumerate()
            .map(|(i, &v)| {
                let (r, c) = (i / t.cols, i % t.cols);
                let d = v - t.q[i] as f32 * t.scales[r * g + c / t.group];
                (d * d) as f64
            })
            .sum()
    }

    #[test]
    fn never_worse_than_rtn_and_better_with_an_outlier() {
        let spec = Spec {
            bits: 4,
            group: 32,
            scale_dt: Dtype::F32,
            weight_dt: Dtype::F32,
        };
        // Gaussian-ish values with one outlier per row: clipping pays off.
        let (rows, cols) = (4, 64);
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|i| (((i * 7919) % 1000) as f32 / 1000.0 - 0.5) * 0.2)
            .collect();
        for r in 0..rows {
            w[r * cols + 3] = 0.25;
        }
        let (a, b) = (rtn(&spec, &w, rows, cols), mse(&spec, &w, rows, cols, None));
        assert!(
            err(&b, &w) < err(&a, &w),
            "{} vs {}",
            err(&b, &w),
            err(&a, &w)
        );
        // The search includes rtn's scale: equal or better on every input.
        let flat = vec![0.1f32; 64];
        assert_eq!(mse(&spec, &flat, 1, 64, None), rtn(&spec, &flat, 1, 64));
    }
}

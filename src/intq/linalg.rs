//! The dense linear algebra GPTQ needs, deterministic for any thread count (fixed task splits,
//! each task single-threaded): `H += XᵀX`, a blocked Cholesky, a triangular inverse, and the
//! upper Cholesky factor of `H⁻¹`.

use rayon::prelude::*;

/// Rows of H per accumulation task.
const ROWS: usize = 64;
/// Cholesky block size.
const NB: usize = 64;

/// The upper triangle of `h` (`c` x `c`, row-major) += Xᵀ X for `x` (`n` x `c`). H is
/// symmetric, so only columns `j >= i` are accumulated (half the work: for a 7168-wide down_proj
/// input this is most of GPTQ's per-token cost); read it with [`symmetric`].
pub fn add_xtx(h: &mut [f32], x: &[f32], n: usize, c: usize) {
    assert!(h.len() == c * c && x.len() == n * c);
    h.par_chunks_mut(ROWS * c).enumerate().for_each(|(t, dst)| {
        let m = dst.len() / c;
        let i0 = t * ROWS;
        // SAFETY: dst = H[i0..i0+m, i0..c] (row stride c); lhs = X[:, i0..i0+m]ᵀ is m x n read
        // from x with row stride 1 and column stride c; rhs = X[:, i0..c] is n x (c - i0) with
        // row stride c: all in bounds.
        unsafe {
            gemm::gemm(
                m,
                c - i0,
                n,
                dst.as_mut_ptr().add(i0),
                1,
                c as isize,
                true,
                x.as_ptr().add(i0),
                c as isize,
                1,
                x.as_ptr().add(i0),
                1,
                c as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// The full symmetric matrix `f * H` in f64 from the upper triangle [`add_xtx`] accumulated.
pub fn symmetric(h: &[f32], c: usize, f: f64) -> Vec<f64> {
    let mut out = vec![0f64; c * c];
    out.par_chunks_mut(c).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate() {
            let (a, b) = if j >= i { (i, j) } else { (j, i) };
            *v = h[a * c + b] as f64 * f;
        }
    });
    out
}

/// In-place lower Cholesky factor of the SPD `a` (`n` x `n`); the upper triangle is zeroed.
/// None when a pivot is not positive (not positive definite at this damping).
pub fn cholesky(a: &mut [f64], n: usize) -> Option<()> {
    let mut k0 = 0;
    while k0 < n {
        let kb = NB.min(n - k0);
        // Diagonal block, unblocked.
        for j in k0..k0 + kb {
            let mut d = a[j * n + j];
            for k in k0..j {
                d -= a[j * n + k] * a[j * n + k];
            }
            if d.is_nan() || d <= 0.0 {
                return None;
            }
            let d = d.sqrt();
            a[j * n + j] = d;
            for i in j + 1..k0 + kb {
                let mut s = a[i * n + j];
                for k in k0..j {
                    s -= a[i * n + k] * a[j * n + k];
                }
                a[i * n + j] = s / d;
            }
        }
        let (top, rest) = a.split_at_mut((k0 + kb) * n);
        let diag = &top[k0 * n..];
        // Panel: rows below solve L_ik L_kkᵀ = A_ik.
        rest.par_chunks_mut(n).for_each(|row| {
            for j in k0..k0 + kb {
                let mut s = row[j];
                for k in k0..j {
                    s -= row[k] * diag[(j - k0) * n + k];
                }
                row[j] = s / diag[(j - k0) * n + j];
            }
        });
        // Trailing update: A22 -= P Pᵀ (lower triangle and diagonal only are used later).
        let m = n - k0 - kb;
        if m > 0 {
            let panel: Vec<f64> = rest
                .chunks(n)
                .flat_map(|r| r[k0..k0 + kb].iter().copied())
                .collect();
            let c0 = k0 + kb;
            rest.par_chunks_mut(ROWS * n)
                .enumerate()
                .for_each(|(t, dst)| {
                    let rows = dst.len() / n;
                    let r0 = t * ROWS;
                    // Only columns up to the last row of this task are needed (lower triangle).
                    let cols = (r0 + rows).min(m);
                    // SAFETY: dst rows r0..r0+rows of the trailing block start at column c0 with
                    // row stride n; lhs = panel rows r0.. (kb wide), rhs = panelᵀ (kb x cols).
                    unsafe {
                        gemm::gemm(
                            rows,
                            cols,
                            kb,
                            dst.as_mut_ptr().add(c0),
                            1,
                            n as isize,
                            true,
                            panel.as_ptr().add(r0 * kb),
                            1,
                            kb as isize,
                            panel.as_ptr(),
                            kb as isize,
                            1,
                            1.0,
                            -1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                });
        }
        k0 += kb;
    }
    for i in 0..n {
        for j in i + 1..n {
            a[i * n + j] = 0.0;
        }
    }
    Some(())
}

/// The inverse X of the lower-triangular `l` (row-major), by block rows: with X known for the
/// first `i0` rows, `X[I, :i0] = -X_II (L[I, :i0] X[:i0, :i0])` is one GEMM (split in fixed
/// column chunks) and `X_II = L_II⁻¹` a small forward substitution.
pub fn lower_inverse(l: &[f64], n: usize) -> Vec<f64> {
    const CHUNK: usize = 256;
    let mut x = vec![0f64; n * n];
    let mut i0 = 0;
    while i0 < n {
        let ib = NB.min(n - i0);
        // X_II by forward substitution, column by column.
        let mut xii = vec![0f64; ib * ib];
        for j in 0..ib {
            for i in j..ib {
                let mut s = if i == j { 1.0 } else { 0.0 };
                for k in j..i {
                    s -= l[(i0 + i) * n + i0 + k] * xii[k * ib + j];
                }
                xii[i * ib + j] = s / l[(i0 + i) * n + i0 + i];
            }
        }
        if i0 > 0 {
            // S = L[I, :i0] X[:i0, :i0], then X[I, :i0] = -X_II S, per column chunk.
            let (done, rest) = x.split_at_mut(i0 * n);
            let cols: Vec<(usize, usize)> = (0..i0)
                .step_by(CHUNK)
                .map(|c| (c, CHUNK.min(i0 - c)))
                .collect();
            let blocks: Vec<Vec<f64>> = cols
                .par_iter()
                .map(|&(c0, cw)| {
                    let mut s = vec![0f64; ib * cw];
                    // SAFETY: s is ib x cw (row stride cw); lhs = L[i0.., c0..i0] (ib x (i0-c0),
                    // row stride n); rhs = X[c0..i0, c0..c0+cw] (row stride n): X is lower
                    // triangular, so rows above c0 contribute nothing to these columns.
                    unsafe {
                        gemm::gemm(
                            ib,
                            cw,
                            i0 - c0,
                            s.as_mut_ptr(),
                            1,
                            cw as isize,
                            false,
                            l.as_ptr().add(i0 * n + c0),
                            1,
                            n as isize,
                            done.as_ptr().add(c0 * n + c0),
                            1,
                            n as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    let mut out = vec![0f64; ib * cw];
                    for i in 0..ib {
                        for k in 0..=i {
                            let a = xii[i * ib + k];
                            for j in 0..cw {
                                out[i * cw + j] -= a * s[k * cw + j];
                            }
                        }
                    }
                    out
                })
                .collect();
            for (&(c0, cw), b) in cols.iter().zip(&blocks) {
                for i in 0..ib {
                    rest[i * n + c0..i * n + c0 + cw].copy_from_slice(&b[i * cw..(i + 1) * cw]);
                }
            }
        }
        for i in 0..ib {
            x[(i0 + i) * n + i0..(i0 + i) * n + i0 + ib]
                .copy_from_slice(&xii[i * ib..(i + 1) * ib]);
        }
        i0 += ib;
    }
    x
}

/// The upper-triangular U with Uᵀ U = H⁻¹. With J the order reversal, Cholesky of J H J = L L'ᵀ
/// gives U = J L⁻¹ J (one factorization and one triangular inverse; no explicit H⁻¹).
pub fn upper_chol_of_inverse(h: &[f64], n: usize) -> Option<Vec<f32>> {
    let mut r = vec![0f64; n * n];
    r.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let src = &h[(n - 1 - i) * n..(n - i) * n];
        for (d, s) in row.iter_mut().zip(src.iter().rev()) {
            *d = *s;
        }
    });
    cholesky(&mut r, n)?;
    let x = lower_inverse(&r, n);
    drop(r);
    // U[i][j] = X[n-1-i][n-1-j], kept in f32 for the GPTQ loop.
    let mut u = vec![0f32; n * n];
    u.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let src = &x[(n - 1 - i) * n..(n - i) * n];
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = src[n - 1 - j] as f32;
        }
    });
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd(n: usize) -> Vec<f64> {
        // XᵀX + I for a fixed pseudo-random X.
        let x: Vec<f32> = (0..3 * n * n)
            .map(|i| (((i * 7919 + 13) % 1009) as f32 / 1009.0) - 0.5)
            .collect();
        let mut h = vec![0f32; n * n];
        add_xtx(&mut h, &x, 3 * n, n);
        let mut h = symmetric(&h, n, 1.0);
        for i in 0..n {
            h[i * n + i] += 1.0;
        }
        h
    }

    #[test]
    fn ut_u_is_the_inverse() {
        for n in [5, 64, 150, 600] {
            let h = spd(n);
            let u = upper_chol_of_inverse(&h, n).unwrap();
            // (Uᵀ U) H = I.
            let mut hinv = vec![0f64; n * n];
            for i in 0..n {
                for j in 0..n {
                    hinv[i * n + j] = (0..n)
                        .map(|k| u[k * n + i] as f64 * u[k * n + j] as f64)
                        .sum();
                }
            }
            for i in 0..n {
                assert!(u[i * n + i] > 0.0);
                for j in 0..i {
                    assert_eq!(u[i * n + j], 0.0);
                }
                for j in 0..n {
                    let p: f64 = (0..n).map(|k| hinv[i * n + k] * h[k * n + j]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((p - want).abs() < 1e-4, "n={n} [{i},{j}] {p}");
                }
            }
        }
    }

    #[test]
    fn indefinite_matrices_are_refused() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(cholesky(&mut a, 2).is_none());
    }

    #[test]
    fn symmetric_xtx_is_the_full_product() {
        let (n, c) = (37, 150);
        let x: Vec<f32> = (0..n * c)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 17.0)
            .collect();
        let mut h = vec![0f32; c * c];
        add_xtx(&mut h, &x, n, c);
        add_xtx(&mut h, &x, n, c);
        let full = symmetric(&h, c, 0.5);
        for i in 0..c {
            for j in 0..c {
                let want: f64 = (0..n)
                    .map(|r| x[r * c + i] as f64 * x[r * c + j] as f64)
                    .sum();
                let got = full[i * c + j];
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "[{i},{j}] {got} {want}"
                );
            }
        }
    }
}

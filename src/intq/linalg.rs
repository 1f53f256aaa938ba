//! The dense linear algebra GPTQ needs, deterministic for any thread count (fixed task splits,
//! each task single-threaded): `H += XᵀX`, a blocked Cholesky, a triangular inverse, and the
//! upper Cholesky factor of `H⁻¹`.

use rayon::prelude::*;

/// Rows of H per accumulation task.
const ROWS: usize = 64;
/// Cholesky block size.
const NB: usize = 64;

/// `h` (`c` x `c`, row-major) += Xᵀ X for `x` (`n` x `c`).
pub fn add_xtx(h: &mut [f32], x: &[f32], n: usize, c: usize) {
    assert!(h.len() == c * c && x.len() == n * c);
    h.par_chunks_mut(ROWS * c).enumerate().for_each(|(t, dst)| {
        let m = dst.len() / c;
        let i0 = t * ROWS;
        // SAFETY: dst is m x c (row stride c); lhs = X[:, i0..i0+m]ᵀ is m x n read from x with
        // row stride 1 and column stride c; rhs = X is n x c with row stride c, all in bounds.
        unsafe {
            gemm::gemm(
                m,
                c,
                n,
                dst.as_mut_ptr(),
                1,
                c as isize,
                true,
                x.as_ptr().add(i0),
                c as isize,
                1,
                x.as_ptr(),
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

/// The inverse X of the lower-triangular `l`, transposed (`xt[j][i] = X[i][j]`), by forward
/// substitution on batches of unit columns (a batch shares each row of `l` it reads).
pub fn lower_inverse_t(l: &[f64], n: usize) -> Vec<f64> {
    const B: usize = 32;
    // Column-major batches: xt[j][i] = X[i][j].
    let mut xt = vec![0f64; n * n];
    xt.par_chunks_mut(B * n).enumerate().for_each(|(t, cols)| {
        let j0 = t * B;
        let nb = cols.len() / n;
        for i in j0..n {
            let row = &l[i * n..i * n + i];
            for b in 0..nb {
                let j = j0 + b;
                if i < j {
                    continue;
                }
                let x = &cols[b * n..(b + 1) * n];
                let s: f64 = row[j..i].iter().zip(&x[j..i]).map(|(a, b)| a * b).sum();
                let rhs = if i == j { 1.0 } else { 0.0 };
                cols[b * n + i] = (rhs - s) / l[i * n + i];
            }
        }
    });
    xt
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
    let xt = lower_inverse_t(&r, n);
    drop(r);
    // U[i][j] = X[n-1-i][n-1-j] = xt[n-1-j][n-1-i], kept in f32 for the GPTQ loop.
    let mut u = vec![0f32; n * n];
    u.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, v) in row.iter_mut().enumerate().skip(i) {
            *v = xt[(n - 1 - j) * n + (n - 1 - i)] as f32;
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
        let mut h: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        for i in 0..n {
            h[i * n + i] += 1.0;
        }
        h
    }

    #[test]
    fn ut_u_is_the_inverse() {
        for n in [5, 64, 150] {
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
}

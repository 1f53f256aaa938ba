//! A borrowed, typed view of one weight matrix as stored, and the matmul over it. Weights are
//! never converted to f32 as a whole: each task decodes only the rows it is working on.

use super::intmat::IntView;
use super::kernels;
use super::names::gguf_row_of_hf_row;
use crate::gguf::GgmlType;
use anyhow::{Result, ensure};
use rayon::prelude::*;

/// `rows` x `cols`, row-major (torch's `[out, in]`, GGUF's dims `{cols, rows}`), each row
/// `cols` elements of `ty`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    row_bytes: usize,
    data: &'a [u8],
    /// Some(n_head): rows are stored in llama.cpp's interleaved rotary order (GGUF attn_q and
    /// attn_k); reading row r returns the stored row holding Hugging Face's row r.
    unpermute_heads: Option<usize>,
    /// Some: integer weights (int4 / int8 with group scales); `ty`, `data` are unused then.
    pub int: Option<IntView<'a>>,
}

impl<'a> Mat<'a> {
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self> {
        ensure!(
            kernels::supported(ty),
            "{} weights are not supported by the forward pass yet",
            ty.name()
        );
        let row_bytes = ty.row_bytes(cols as u64)? as usize;
        ensure!(
            data.len() == rows * row_bytes,
            "{rows}x{cols} {} needs {} bytes, got {}",
            ty.name(),
            rows * row_bytes,
            data.len()
        );
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
            unpermute_heads: None,
            int: None,
        })
    }

    /// Integer weights (a compressed-tensors or GPTQ checkpoint), checked against the shape.
    pub fn new_int(rows: usize, cols: usize, view: IntView<'a>) -> Result<Self> {
        view.check(rows, cols)?;
        Ok(Self {
            ty: GgmlType::I32,
            rows,
            cols,
            row_bytes: 0,
            data: &[],
            unpermute_heads: None,
            int: Some(view),
        })
    }

    /// The storage type's name as verify reports it: `f16`, `q8_0`, `int4` ...
    pub fn storage_name(&self) -> String {
        match &self.int {
            Some(v) => format!("int{}", v.bits),
            None => self.ty.name().to_ascii_lowercase(),
        }
    }

    /// Reads the rows back in Hugging Face's half-split rotary order (see formats/gguf.md).
    pub fn unpermuted(self, n_head: usize) -> Result<Self> {
        ensure!(
            n_head > 0
                && self.rows.is_multiple_of(n_head)
                && (self.rows / n_head).is_multiple_of(2),
            "cannot un-permute {} rows in {n_head} heads",
            self.rows
        );
        Ok(Self {
            unpermute_heads: Some(n_head),
            ..self
        })
    }

    /// Rows `start..start + n` (one expert of a stacked GGUF tensor).
    pub fn slice_rows(self, start: usize, n: usize) -> Result<Self> {
        ensure!(
            self.unpermute_heads.is_none() && self.int.is_none(),
            "cannot slice a permuted or integer matrix"
        );
        ensure!(
            start + n <= self.rows,
            "rows {start}..{} of {}",
            start + n,
            self.rows
        );
        Ok(Self {
            rows: n,
            data: &self.data[start * self.row_bytes..(start + n) * self.row_bytes],
            ..self
        })
    }

    /// The stored bytes of (logical) row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let s = match self.unpermute_heads {
            Some(h) => gguf_row_of_hf_row(r, self.rows, h),
            None => r,
        };
        &self.data[s * self.row_bytes..(s + 1) * self.row_bytes]
    }

    /// Row `r` decoded to f32 (`out.len() == cols`).
    pub fn dequant_row(&self, r: usize, out: &mut [f32]) {
        if let Some(v) = &self.int {
            return v.dequant_cols(self.rows, self.cols, r, 0, out);
        }
        kernels::dequant_row(self.ty, self.row(r), out);
    }

    /// Columns `c0..c0 + out.len()` of row `r` decoded to f32; both ends on block boundaries.
    pub fn dequant_cols(&self, r: usize, c0: usize, out: &mut [f32]) {
        if let Some(v) = &self.int {
            return v.dequant_cols(self.rows, self.cols, r, c0, out);
        }
        let bytes = |c: usize| {
            self.ty
                .row_bytes(c as u64)
                .expect("column range is not block-aligned") as usize
        };
        let (b0, b1) = (bytes(c0), bytes(c0 + out.len()));
        kernels::dequant_row(self.ty, &self.row(r)[b0..b1], out);
    }

    /// The whole matrix as f32: only for small tensors (norms, tests).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequant_row(r, o);
        }
        out
    }
}

/// From this many positions on, decoding a block of rows once and running a GEMM over all
/// positions beats a dot product per (row, position).
const GEMM_MIN_POSITIONS: usize = 4;
/// Weight rows per GEMM task. Fixed (not derived from the thread count), so results are too.
const GEMM_ROWS: usize = 256;
/// Weight elements per dot-product task: enough work to amortise scheduling.
const DOT_TASK_ELEMS: usize = 1 << 15;

/// `x` is `n` positions of `w.cols` floats; returns `n` positions of `w.rows` floats
/// (`y[t][r] = w[r] . x[t]`), parallel over blocks of weight rows.
///
/// Fewer than [`GEMM_MIN_POSITIONS`] positions (generation): one fused dot product per
/// (row, position), straight from the stored bytes. More (a prompt): on x86-64 with AVX2 /
/// FMA / F16C the packed GEMM of `gemm.rs`; elsewhere blocks of rows decoded to f32 and the
/// `gemm` crate.
pub fn matmul(w: &Mat, x: &[f32], n: usize) -> Vec<f32> {
    matmul_on(kernels::simd(), w, x, n)
}

/// [`matmul`] with the SIMD kernels (`simd`, where the CPU has them) or the portable ones.
pub(crate) fn matmul_on(simd: bool, w: &Mat, x: &[f32], n: usize) -> Vec<f32> {
    let simd = simd && kernels::simd();
    let (rows, cols) = (w.rows, w.cols);
    let quantized_x;
    let x = match w.int.and_then(|v| v.act_bits) {
        Some(_) => {
            quantized_x = super::intmat::fake_quant_rows(x, n);
            &quantized_x[..]
        }
        None => x,
    };
    assert_eq!(x.len(), n * cols, "matmul: input is not {n} x {cols}");
    // Integer weights have no fused kernels (yet): decode blocks of rows, then a GEMM.
    let int = w.int.is_some();
    #[cfg(target_arch = "x86_64")]
    if simd && n >= GEMM_MIN_POSITIONS && !int {
        // SAFETY: simd is only true where kernels::simd() found AVX2, FMA and F16C.
        return unsafe { super::gemm::matmul(w, x, n) };
    }
    // Computed weight-row-major ([rows][n]) so that each task owns a contiguous slice.
    let mut yt = vec![0f32; rows * n];
    if n < GEMM_MIN_POSITIONS && !int {
        let task_rows = (DOT_TASK_ELEMS / cols.max(1)).max(1);
        yt.par_chunks_mut(task_rows * n).enumerate().for_each_init(
            || vec![0f32; cols],
            |scratch, (c, out)| {
                for (i, o) in out.chunks_exact_mut(n).enumerate() {
                    let row = w.row(c * task_rows + i);
                    for (t, o) in o.iter_mut().enumerate() {
                        *o = kernels::dot_row_on(
                            simd,
                            w.ty,
                            row,
                            &x[t * cols..(t + 1) * cols],
                            scratch,
                        );
                    }
                }
            },
        );
    } else {
        yt.par_chunks_mut(GEMM_ROWS * n).enumerate().for_each_init(
            || vec![0f32; GEMM_ROWS * cols],
            |block, (c, out)| {
                let m = out.len() / n;
                for i in 0..m {
                    w.dequant_row(c * GEMM_ROWS + i, &mut block[i * cols..(i + 1) * cols]);
                }
                gemm_block(&block[..m * cols], x, out, m, n, cols);
            },
        );
    }
    if n == 1 {
        return yt;
    }
    let mut y = vec![0f32; n * rows];
    for (r, col) in yt.chunks_exact(n).enumerate() {
        for (t, &v) in col.iter().enumerate() {
            y[t * rows + r] = v;
        }
    }
    y
}

/// out[m][n] = a[m][k] . b[n][k]^T, single-threaded (the caller parallelises).
fn gemm_block(a: &[f32], b: &[f32], out: &mut [f32], m: usize, n: usize, k: usize) {
    assert!(a.len() == m * k && b.len() == n * k && out.len() == m * n);
    // SAFETY: the asserts above bound every access: dst is m x n with row stride n, lhs m x k
    // with row stride k, rhs k x n read from b[n][k] (row stride 1, column stride k).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
        let mut y = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                y[t * rows + r] = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * x[t * cols + c] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    /// A weight matrix of `ty` and its exactly decoded f32 values.
    fn weights(ty: GgmlType, rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let mut bytes = Vec::new();
        crate::quant::encode(&w, cols, ty, &mut bytes).unwrap();
        let decoded = Mat::new(ty, rows, cols, &bytes).unwrap().to_f32();
        (bytes, decoded)
    }

    #[test]
    fn dot_and_gemm_paths_match_a_naive_product() {
        // Small, then with every edge of the packed GEMM: rows not a multiple of its 6-row
        // tile or 48-row task, columns spanning three 1024-column blocks (the last partial),
        // positions not a multiple of its 16-position panel.
        let shapes = [
            (GgmlType::F32, 150, 96, &[1, 3, 4, 9][..]),
            (GgmlType::F16, 101, 2080, &[1, 2, 4, 17, 33][..]),
            (GgmlType::Q8_0, 53, 2080, &[1, 3, 5, 16][..]),
            (GgmlType::BF16, 7, 64, &[1, 4][..]),
        ];
        for (ty, rows, cols, ns) in shapes {
            let (bytes, w) = weights(ty, rows, cols);
            let m = Mat::new(ty, rows, cols, &bytes).unwrap();
            for &n in ns {
                let x: Vec<f32> = (0..n * cols)
                    .map(|i| ((i * 7 % 13) as f32 - 6.0) / 3.0)
                    .collect();
                let want = naive(&w, &x, rows, cols, n);
                for simd in [false, true] {
                    let got = matmul_on(simd, &m, &x, n);
                    let tol = 1e-6 * cols as f32;
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < tol, "{ty:?} n={n} simd={simd}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let (rows, cols, n) = (300, 64, 7);
        let bytes: Vec<u8> = (0..rows * cols)
            .flat_map(|i| (((i * 17 % 29) as f32 - 14.0) / 9.0).to_le_bytes())
            .collect();
        let m = Mat::new(GgmlType::F32, rows, cols, &bytes).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|i| (i % 5) as f32 - 2.0).collect();
        let (qbytes, _) = weights(GgmlType::Q8_0, 101, 2080);
        let q = Mat::new(GgmlType::Q8_0, 101, 2080, &qbytes).unwrap();
        let qx: Vec<f32> = (0..21 * 2080).map(|i| (i % 11) as f32 - 5.0).collect();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    [false, true].map(|simd| {
                        (
                            matmul_on(simd, &m, &x, n),
                            matmul_on(simd, &m, &x[..cols], 1),
                            matmul_on(simd, &q, &qx, 21),
                        )
                    })
                })
        };
        assert_eq!(run(1), run(3));
    }
}

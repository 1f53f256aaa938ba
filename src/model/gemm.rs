//! The matmul over many positions (a prompt) on x86-64 with AVX2 and FMA: a packed GEMM that
//! decodes the stored weights a block at a time, as BLIS-style kernels do.
//!
//! - The positions are packed once per call into panels of [`NR`] (16) positions, k-major
//!   (`xp[panel][k][j] = x[panel * NR + j][k]`, zero past `n`).
//! - Each task owns [`MB`] weight rows. For each block of [`KC`] columns it decodes those rows'
//!   columns to f32 (an L2-sized block, whatever the storage type), then runs a 6 x 16 register
//!   tile (6 weight rows, 16 positions: 12 accumulators of 8 lanes) over every panel, with each
//!   weight broadcast from the decoded block and two panel vectors per column.
//! - The task's partial sums live in a per-thread tile (`[MB][panels * NR]`, carried from one
//!   column block to the next through memory, which is exact), scattered into `y[t][r]` at the
//!   end. While a block computes, the next block's stored bytes are prefetched.
//!
//! Every output element is one chain of FMAs over k = 0, 1, ..., cols - 1 in order, computed by
//! one thread: results do not depend on the thread count, the task size or the panel.

use super::mat::Mat;
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Positions per panel: two 8-lane vectors.
const NR: usize = 16;
/// Weight rows per register tile.
const MR: usize = 6;
/// Weight rows per task (a multiple of MR): fixed, not derived from the thread count.
const MB: usize = 48;
/// Columns decoded at a time: a multiple of every block size (32 for q8_0, 256 for k-quants).
const KC: usize = 1024;

/// A pointer that tasks share to write disjoint elements of one output.
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: each task writes only the elements of its own weight rows (see `matmul`).
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// The element `i` places on (a method, so that closures capture the whole `SyncPtr`).
    ///
    /// # Safety
    /// `i` must be within the allocation.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps i within the allocation.
        unsafe { self.0.add(i) }
    }
}

/// `y[t][r] = w[r] . x[t]` for `n` positions (`x` is `n * w.cols`, `y` is `n * w.rows`).
///
/// # Safety
/// The CPU must have AVX2 and FMA ([`super::kernels::simd`]).
pub unsafe fn matmul(w: &Mat, x: &[f32], n: usize) -> Vec<f32> {
    let (rows, k) = (w.rows, w.cols);
    assert!(n > 0 && x.len() == n * k);
    let panels = n.div_ceil(NR);
    let mut xp = vec![0f32; panels * k * NR];
    xp.par_chunks_mut(k * NR)
        .enumerate()
        .for_each(|(p, panel)| {
            let m = NR.min(n - p * NR);
            let xs = &x[p * NR * k..(p * NR + m) * k];
            for (c, out) in panel.chunks_exact_mut(NR).enumerate() {
                for (j, o) in out[..m].iter_mut().enumerate() {
                    *o = xs[j * k + c];
                }
            }
        });
    let mut y = vec![0f32; n * rows];
    let yp = SyncPtr(y.as_mut_ptr());
    let tstride = panels * NR;
    (0..rows.div_ceil(MB)).into_par_iter().for_each(|task| {
        SCRATCH.with_borrow_mut(|(wb, tile)| {
            // Both are fully written before they are read: stale contents do not matter.
            wb.resize(wb.len().max(MB * KC), 0.0);
            tile.resize(tile.len().max(MB * tstride), 0.0);
            let r0 = task * MB;
            let mb = MB.min(rows - r0);
            let mut c0 = 0;
            while c0 < k {
                let kc = KC.min(k - c0);
                for i in 0..mb {
                    w.dequant_cols(r0 + i, c0, &mut wb[i * kc..(i + 1) * kc]);
                }
                // While this block computes, fetch the next one's stored bytes a few cache
                // lines per tile, so that decoding it does not wait on memory.
                let mut next = Prefetch::new(w, r0, mb, c0 + kc, KC.min(k.saturating_sub(c0 + kc)));
                let per_tile = next.lines.div_ceil(panels * mb.div_ceil(MR));
                for p in 0..panels {
                    let xpanel = &xp[p * k * NR + c0 * NR..][..kc * NR];
                    let mut i = 0;
                    while i < mb {
                        let mr = MR.min(mb - i);
                        let a = &wb[i * kc..(i + mr) * kc];
                        let t =
                            &mut tile[i * tstride + p * NR..(i + mr - 1) * tstride + p * NR + NR];
                        // SAFETY: the caller checked the CPU features; the slices hold mr rows
                        // of kc weights, kc x NR panel values, and mr tile rows of NR.
                        unsafe {
                            match mr {
                                6 => tile_kernel::<6>(a, kc, xpanel, t, tstride, c0 == 0),
                                5 => tile_kernel::<5>(a, kc, xpanel, t, tstride, c0 == 0),
                                4 => tile_kernel::<4>(a, kc, xpanel, t, tstride, c0 == 0),
                                3 => tile_kernel::<3>(a, kc, xpanel, t, tstride, c0 == 0),
                                2 => tile_kernel::<2>(a, kc, xpanel, t, tstride, c0 == 0),
                                _ => tile_kernel::<1>(a, kc, xpanel, t, tstride, c0 == 0),
                            }
                        }
                        next.fetch(per_tile);
                        i += mr;
                    }
                }
                c0 += kc;
            }
            for t in 0..n {
                for i in 0..mb {
                    // SAFETY: t < n and r0 + i < rows: inside y. Only this task has rows
                    // r0..r0 + mb, so no other task writes these elements, and nothing reads
                    // y until every task is done.
                    unsafe { *yp.at(t * rows + r0 + i) = tile[i * tstride + t] };
                }
            }
        })
    });
    y
}

thread_local! {
    /// Each thread's decoded weight block and partial-sum tile, kept from call to call.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Tile rows `0..M` (row i at `t[i * tstride..][..NR]`) += `a[i][0..kc]` x panel (`kc` x NR),
/// starting from zero when `first`. One FMA chain per element, in column order.
#[target_feature(enable = "avx2,fma")]
fn tile_kernel<const M: usize>(
    a: &[f32],
    kc: usize,
    xp: &[f32],
    t: &mut [f32],
    tstride: usize,
    first: bool,
) {
    assert!(a.len() >= M * kc && xp.len() >= kc * NR && t.len() >= (M - 1) * tstride + NR);
    let (ap, bp, tp) = (a.as_ptr(), xp.as_ptr(), t.as_mut_ptr());
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    // SAFETY: the assert above bounds every access: a[i * kc + c] with i < M, c < kc;
    // xp[c * NR..c * NR + 16]; t[i * tstride..i * tstride + 16].
    unsafe {
        if !first {
            for (i, acc) in acc.iter_mut().enumerate() {
                acc[0] = _mm256_loadu_ps(tp.add(i * tstride));
                acc[1] = _mm256_loadu_ps(tp.add(i * tstride + 8));
            }
        }
        for c in 0..kc {
            let b0 = _mm256_loadu_ps(bp.add(c * NR));
            let b1 = _mm256_loadu_ps(bp.add(c * NR + 8));
            for (i, acc) in acc.iter_mut().enumerate() {
                let w = _mm256_broadcast_ss(&*ap.add(i * kc + c));
                acc[0] = _mm256_fmadd_ps(w, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(w, b1, acc[1]);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(tp.add(i * tstride), acc[0]);
            _mm256_storeu_ps(tp.add(i * tstride + 8), acc[1]);
        }
    }
}

/// The stored bytes of rows `r0..r0 + mb`, columns `c0..c0 + kc`, requested a few cache lines
/// at a time.
struct Prefetch<'a> {
    w: Mat<'a>,
    r0: usize,
    /// Byte offset of column c0 in a row, and cache lines per row.
    b0: usize,
    per_row: usize,
    /// Cache lines in all, and how many were requested.
    lines: usize,
    done: usize,
    /// The next line to request: row `r0 + r`, line `l`.
    r: usize,
    l: usize,
}

impl<'a> Prefetch<'a> {
    fn new(w: &Mat<'a>, r0: usize, mb: usize, c0: usize, kc: usize) -> Self {
        let bytes = |c: usize| w.ty.row_bytes(c as u64).unwrap_or(0) as usize;
        let (b0, b1) = (bytes(c0), bytes(c0 + kc));
        let per_row = (b1 - b0).div_ceil(64);
        Self {
            w: *w,
            r0,
            b0,
            per_row,
            lines: per_row * mb,
            done: 0,
            r: 0,
            l: 0,
        }
    }

    fn fetch(&mut self, n: usize) {
        let end = (self.done + n).min(self.lines);
        while self.done < end {
            let row = &self.w.row(self.r0 + self.r)[self.b0..];
            // SAFETY: the address is inside the row (the columns' bytes start at b0 and span
            // per_row lines); a prefetch is a hint that reads nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().add(self.l * 64).cast()) };
            self.done += 1;
            self.l += 1;
            if self.l == self.per_row {
                (self.r, self.l) = (self.r + 1, 0);
            }
        }
    }
}

//! Integer weights as the serving stacks store them (formats/int-safetensors.md): symmetric
//! int4 / int8 with one scale per group of columns, in three layouts. Rows are decoded on the
//! fly (`q * scale` in f32, which is what transformers computes for an f32 model); nothing is
//! expanded to f32 as a whole.

use super::kernels;
use crate::gguf::GgmlType;
use anyhow::{Result, ensure};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntLayout {
    /// compressed-tensors pack-quantized: int32 `[rows, cols*bits/32]`, values `q + 2^(bits-1)`,
    /// element `c` in word `c*bits/32` at bit `(c*bits) % 32`; scales `[rows, groups]`.
    Packed,
    /// compressed-tensors int-quantized: int8 `[rows, cols]`; scales `[rows, groups]`.
    Int8,
    /// GPTQ v1: int32 `[cols*bits/32, rows]` (the transpose of `Packed`); scales
    /// `[groups, rows]`; zero points fixed at `2^(bits-1)` (checked when the file is opened).
    GptqT,
}

/// A borrowed view of one integer weight matrix.
#[derive(Clone, Copy, Debug)]
pub struct IntView<'a> {
    pub layout: IntLayout,
    pub bits: u32,
    /// Columns per scale (`cols` for one scale per row).
    pub group: usize,
    pub q: &'a [u8],
    /// F32, F16 or BF16.
    pub scale_ty: GgmlType,
    pub scales: &'a [u8],
    /// Some(8): the inputs are fake-quantized to int8 per position first (compressed-tensors
    /// W8A8 with dynamic per-token activations), as transformers runs such a checkpoint.
    pub act_bits: Option<u32>,
}

/// Each position of `x` (`n` rows) rounded to int8 at scale `absmax / 127.5` and back, as
/// compressed-tensors' dynamic per-token `fake_quantize` does (in f32, ties to even).
pub fn fake_quant_rows(x: &[f32], n: usize) -> Vec<f32> {
    let cols = x.len() / n.max(1);
    let mut out = x.to_vec();
    for row in out.chunks_exact_mut(cols.max(1)) {
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.5;
        let s = if s == 0.0 { f32::EPSILON } else { s };
        for v in row.iter_mut() {
            *v = (*v / s).clamp(-128.0, 127.0).round_ties_even() * s;
        }
    }
    out
}

impl<'a> IntView<'a> {
    /// Checks the sizes of `q` and `scales` for a `rows` x `cols` matrix.
    pub fn check(&self, rows: usize, cols: usize) -> Result<()> {
        ensure!(
            self.bits == 4 || self.bits == 8,
            "{}-bit weights are not supported (4 or 8)",
            self.bits
        );
        ensure!(
            self.group > 0 && cols.is_multiple_of(self.group),
            "group size {} does not divide the row length {cols}",
            self.group
        );
        ensure!(
            matches!(
                self.scale_ty,
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16
            ),
            "scales of type {} are not supported",
            self.scale_ty.name()
        );
        let q_bytes = match self.layout {
            IntLayout::Int8 => {
                ensure!(self.bits == 8, "int-quantized weights must be 8-bit");
                rows * cols
            }
            _ => {
                ensure!(
                    (cols * self.bits as usize).is_multiple_of(32),
                    "row length {cols} does not fill whole int32 words at {} bits",
                    self.bits
                );
                rows * cols * self.bits as usize / 8
            }
        };
        ensure!(
            self.q.len() == q_bytes,
            "{rows}x{cols} int{} needs {q_bytes} bytes, got {}",
            self.bits,
            self.q.len()
        );
        let s_bytes = rows * (cols / self.group) * self.scale_ty.row_bytes(1)? as usize;
        ensure!(
            self.scales.len() == s_bytes,
            "{rows}x{cols} group {} needs {s_bytes} bytes of scales, got {}",
            self.group,
            self.scales.len()
        );
        Ok(())
    }

    /// The scale of (row r, group g) as f32.
    fn scale(&self, rows: usize, groups: usize, r: usize, g: usize) -> f32 {
        let i = match self.layout {
            IntLayout::GptqT => g * rows + r,
            _ => r * groups + g,
        };
        let es = match self.scale_ty {
            GgmlType::F32 => 4,
            _ => 2,
        };
        let mut v = [0f32];
        kernels::dequant_row(self.scale_ty, &self.scales[i * es..(i + 1) * es], &mut v);
        v[0]
    }

    /// Columns `c0..c0 + out.len()` of row `r` decoded to f32 (`c0` a multiple of 8).
    pub fn dequant_cols(&self, rows: usize, cols: usize, r: usize, c0: usize, out: &mut [f32]) {
        let groups = cols / self.group;
        let bits = self.bits as usize;
        let per_word = 32 / bits;
        let offset = 1i32 << (bits - 1);
        let mask = (1u32 << bits) - 1;
        let word = |kw: usize| -> u32 {
            let i = match self.layout {
                IntLayout::GptqT => kw * rows + r,
                _ => r * (cols / per_word) + kw,
            };
            u32::from_le_bytes(self.q[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
        };
        let mut c = c0;
        let end = c0 + out.len();
        while c < end {
            let g = c / self.group;
            let s = self.scale(rows, groups, r, g);
            let g_end = ((g + 1) * self.group).min(end);
            if self.layout == IntLayout::Int8 {
                for k in c..g_end {
                    out[k - c0] = self.q[r * cols + k] as i8 as f32 * s;
                }
            } else {
                let mut k = c;
                while k < g_end {
                    let w = word(k / per_word);
                    let first = k % per_word;
                    let n = (per_word - first).min(g_end - k);
                    for j in 0..n {
                        let v = ((w >> ((first + j) * bits)) & mask) as i32 - offset;
                        out[k - c0 + j] = v as f32 * s;
                    }
                    k += n;
                }
            }
            c = g_end;
        }
    }
}

//! Integer weights and their three on-disk layouts (formats/int-safetensors.md). One
//! [`QTensor`] is made by a method (rtn, mse, gptq) and then encoded for the chosen format, so
//! every format of the same method holds the same integers.

use crate::hf::Dtype;

/// A quantized Linear weight: `rows` x `cols` integers in `[-2^(bits-1), 2^(bits-1) - 1]` and
/// one scale per (row, group of `group` columns), each exactly representable in the scale dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct QTensor {
    pub rows: usize,
    pub cols: usize,
    pub bits: u32,
    pub group: usize,
    pub q: Vec<i8>,
    /// `[rows][cols / group]`.
    pub scales: Vec<f32>,
}

impl QTensor {
    pub fn groups(&self) -> usize {
        self.cols / self.group
    }

    /// Value `v` at bit `(c * bits) % 32` of word `c * bits / 32`, lowest bits first, offset
    /// by `2^(bits-1)`: compressed-tensors' `pack_to_int32` of a `[rows, cols]` int8 tensor.
    pub fn packed_rows(&self) -> Vec<u32> {
        let bits = self.bits as usize;
        let per = 32 / bits;
        let off = 1i32 << (bits - 1);
        self.q
            .chunks_exact(per)
            .map(|c| {
                c.iter().enumerate().fold(0u32, |w, (j, &v)| {
                    w | (((v as i32 + off) as u32) << (j * bits))
                })
            })
            .collect()
    }

    /// GPTQ's `qweight` `[cols * bits / 32, rows]`: the transpose of [`Self::packed_rows`].
    pub fn packed_gptq(&self) -> Vec<u32> {
        let p = self.packed_rows();
        let words = self.cols * self.bits as usize / 32;
        let mut t = vec![0u32; p.len()];
        for r in 0..self.rows {
            for k in 0..words {
                t[k * self.rows + r] = p[r * words + k];
            }
        }
        t
    }

    /// GPTQ's `qzeros` `[groups, rows * bits / 32]`: symmetric v1 stores zero - 1, so every
    /// word is `2^(bits-1) - 1` repeated (0x77777777 at 4 bits).
    pub fn gptq_zeros(&self) -> Vec<u32> {
        let bits = self.bits as usize;
        let word = (0..32 / bits).fold(0u32, |w, j| w | (((1u32 << (bits - 1)) - 1) << (j * bits)));
        vec![word; self.groups() * self.rows * bits / 32]
    }

    /// The scales transposed to GPTQ's `[groups, rows]`.
    pub fn scales_t(&self) -> Vec<f32> {
        let g = self.groups();
        let mut t = vec![0f32; self.scales.len()];
        for r in 0..self.rows {
            for j in 0..g {
                t[j * self.rows + r] = self.scales[r * g + j];
            }
        }
        t
    }
}

pub fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// f32 values (already representable in `dt`) as `dt`'s little-endian bytes.
pub fn float_bytes(v: &[f32], dt: Dtype) -> Vec<u8> {
    match dt {
        Dtype::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::BF16 => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bits: u32) -> QTensor {
        let (rows, cols) = (8, 16);
        let lo = -(1i32 << (bits - 1));
        let span = 1i32 << bits;
        QTensor {
            rows,
            cols,
            bits,
            group: 8,
            q: (0..rows * cols)
                .map(|i| (lo + (i as i32 * 5) % span) as i8)
                .collect(),
            scales: (0..rows * 2).map(|i| i as f32).collect(),
        }
    }

    #[test]
    fn packing_is_lowest_bits_first_with_offset() {
        let mut t = sample(4);
        t.q[..8].copy_from_slice(&[-8, -7, 0, 7, 1, 2, 3, 4]);
        // +8: 0, 1, 8, 15, 9, 10, 11, 12 from the lowest nibble up.
        assert_eq!(t.packed_rows()[0], 0xCBA9_F810);
        let mut t = sample(8);
        t.q[..4].copy_from_slice(&[-128, 127, 0, -1]);
        assert_eq!(t.packed_rows()[0], 0x7F80_FF00);
    }

    #[test]
    fn gptq_is_the_transpose() {
        for bits in [4, 8] {
            let t = sample(bits);
            let (p, g) = (t.packed_rows(), t.packed_gptq());
            let words = t.cols * bits as usize / 32;
            for r in 0..t.rows {
                for k in 0..words {
                    assert_eq!(g[k * t.rows + r], p[r * words + k]);
                }
            }
        }
        assert!(sample(4).gptq_zeros().iter().all(|&z| z == 0x7777_7777));
        assert!(sample(8).gptq_zeros().iter().all(|&z| z == 0x7F7F_7F7F));
        assert_eq!(sample(4).scales_t()[..3], [0.0, 2.0, 4.0]);
    }
}

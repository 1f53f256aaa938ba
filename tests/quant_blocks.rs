//! Our ggml block quantizers (src/quant) against ggml itself (current llama.cpp through
//! llama-cpp-sys-2): for Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (and Q8_0), with
//! and without an importance matrix, the quantized bytes must equal `ggml_quantize_chunk`'s and
//! our dequantization must equal ggml's `to_float` bit for bit. Inputs: real fixture weights,
//! a synthetic f32 model, and adversarial rows (zeros, outliers, constants, subnormals, tiny and
//! huge values, exact ties, mixed scales). Run with `cargo test --features oracle`.
//!
//! `cargo test --release --features oracle --test quant_blocks -- --ignored --nocapture speed`
//! prints quantization speed on a 7168x2048 matrix, ours vs ggml, one thread each.
#![cfg(feature = "oracle")]

use llmjp_convert::gguf::GgmlType;
use llmjp_convert::hf::Checkpoint;
use llmjp_convert::{oracle, quant, synth};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const TYPES: &[GgmlType] = &[
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

// ---------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        let u1 = (self.uniform() as f64).max(1e-12);
        let u2 = self.uniform() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn normal_row(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n).map(|_| rng.normal() * std).collect()
}

/// Named adversarial inputs: (name, values, row length). Row lengths are multiples of 256.
fn adversarial() -> Vec<(String, Vec<f32>, usize)> {
    let n = 512;
    let mut rng = Rng::new(42);
    let mut v: Vec<(String, Vec<f32>, usize)> = Vec::new();
    let mut add = |name: &str, x: Vec<f32>| {
        assert_eq!(x.len() % n, 0, "{name}");
        v.push((name.to_string(), x, n));
    };
    add("zeros", vec![0.0; n]);
    add("negative zeros", vec![-0.0; n]);
    for (i, big) in [1e4f32, -1e4, 3.0, -65504.0, 1e6].into_iter().enumerate() {
        let mut x = normal_row(&mut rng, 2 * n, 0.02);
        x[37 + 101 * i] = big;
        x[n + 300] = -big * 0.5;
        add(&format!("outlier {big:e}"), x);
    }
    for c in [0.5f32, -3.0, 1.0, 1e-3, 7.25] {
        add(&format!("constant {c}"), vec![c; n]);
    }
    // Constant per 16 and per 32 values, changing between sub-blocks.
    add(
        "constant per 16",
        (0..n).map(|i| ((i / 16) as f32 - 10.0) * 0.125).collect(),
    );
    add(
        "constant per 32",
        (0..n)
            .map(|i| (((i / 32) * 7 % 5) as f32 - 2.0) * 0.01)
            .collect(),
    );
    // Subnormals: 1/d overflows to inf, x * inf hits the x86 conversion edge cases.
    add(
        "subnormals",
        (0..n)
            .map(|_| f32::from_bits((rng.next_u64() as u32) & 0x807f_ffff))
            .collect(),
    );
    add(
        "subnormals and zeros",
        (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    f32::from_bits(((rng.next_u64() as u32) & 0x8000_ffff) | 1)
                } else {
                    0.0
                }
            })
            .collect(),
    );
    add(
        "smallest subnormal",
        (0..n)
            .map(|i| if i % 5 == 0 { -f32::from_bits(1) } else { 0.0 })
            .collect(),
    );
    add(
        "tiny normals",
        (0..n)
            .map(|_| rng.normal() * f32::MIN_POSITIVE * 4.0)
            .collect(),
    );
    add(
        "near FLT_MIN",
        (0..n)
            .map(|_| (1.0 + rng.uniform()) * f32::MIN_POSITIVE * (rng.normal().signum()))
            .collect(),
    );
    add("tiny 1e-20", normal_row(&mut rng, n, 1e-20));
    add("huge 1e30", normal_row(&mut rng, n, 1e30));
    add(
        "huge near FLT_MAX",
        (0..n)
            .map(|_| f32::MAX * (0.5 + 0.5 * rng.uniform()) * rng.normal().signum())
            .collect(),
    );
    add("huge 1e19 (x^2 overflows)", normal_row(&mut rng, n, 1e19));
    add("large 1e5", normal_row(&mut rng, n, 1e5));
    // Exact ties: multiples of 0.5 / 0.25 with a +-8 or +-16 anchor, so x / d lands on .5.
    add(
        "ties halves",
        (0..n)
            .map(|i| {
                if i % 32 == 0 {
                    -8.0
                } else {
                    (rng.below(33) as f32 - 16.0) * 0.5
                }
            })
            .collect(),
    );
    add(
        "ties quarters",
        (0..n)
            .map(|i| {
                if i % 16 == 0 {
                    16.0
                } else {
                    (rng.below(129) as f32 - 64.0) * 0.25
                }
            })
            .collect(),
    );
    add(
        "small integers",
        (0..n).map(|_| rng.below(9) as f32 - 4.0).collect(),
    );
    add(
        "integers 0..31",
        (0..n).map(|_| rng.below(32) as f32).collect(),
    );
    add(
        "mixed scales",
        (0..4 * n)
            .map(|i| {
                let e = ((i / 32) * 7919 % 13) as i32 - 6;
                rng.normal() * 10f32.powi(e)
            })
            .collect(),
    );
    add(
        "mixed scales per 16",
        (0..2 * n)
            .map(|i| {
                let e = ((i / 16) * 31 % 9) as i32 - 4;
                rng.normal() * 10f32.powi(e * 3)
            })
            .collect(),
    );
    add(
        "all positive",
        (0..n).map(|_| 0.5 + rng.uniform()).collect(),
    );
    add(
        "all negative",
        (0..n).map(|_| -0.1 - rng.uniform() * 0.01).collect(),
    );
    add(
        "sparse",
        (0..2 * n)
            .map(|_| {
                if rng.below(40) == 0 {
                    rng.normal()
                } else {
                    0.0
                }
            })
            .collect(),
    );
    add(
        "one nonzero per block",
        (0..n)
            .map(|i| if i % 32 == 5 { rng.normal() } else { 0.0 })
            .collect(),
    );
    add(
        "uniform",
        (0..4 * n).map(|_| rng.uniform() * 2.0 - 1.0).collect(),
    );
    add("gaussian", normal_row(&mut rng, 8 * n, 0.05));
    add(
        "heavy tails",
        (0..4 * n)
            .map(|_| {
                let g = rng.normal();
                g * g * g * 0.01
            })
            .collect(),
    );
    v
}

/// Named importance matrices for a row of `n`.
fn imatrices(n: usize, seed: u64) -> Vec<(&'static str, Vec<f32>)> {
    let mut rng = Rng::new(seed);
    vec![
        ("ones", vec![1.0; n]),
        (
            "random",
            (0..n).map(|_| (rng.normal() * 1.5).exp()).collect(),
        ),
        (
            "zeros in places",
            (0..n)
                .map(|i| {
                    if i % 7 == 0 || (i / 16) % 5 == 3 {
                        0.0
                    } else {
                        rng.uniform() + 0.01
                    }
                })
                .collect(),
        ),
        ("all zero", vec![0.0; n]),
        (
            "skewed",
            (0..n)
                .map(|i| {
                    if i % 13 == 0 {
                        1e6
                    } else {
                        1e-6 * rng.uniform()
                    }
                })
                .collect(),
        ),
        (
            "huge",
            (0..n).map(|_| 1e30 * (0.5 + rng.uniform())).collect(),
        ),
    ]
}

// ---------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------

fn oracle_id(ty: GgmlType) -> i32 {
    ty.id() as i32
}

/// Quantizes with both, compares bytes and then both dequantizations. Returns a description of
/// the first difference, if any.
fn compare(ty: GgmlType, x: &[f32], row_len: usize, im: Option<&[f32]>) -> Option<String> {
    let mut ours = Vec::new();
    quant::encode_with_imatrix(x, row_len, ty, im, &mut ours).unwrap();
    let theirs = oracle::ggml_quantize(oracle_id(ty), x, row_len, im).unwrap();
    assert_eq!(ours.len(), theirs.len(), "{} byte count", ty.name());
    let (be, bb) = ty.block();
    if ours != theirs {
        let nb = ours.len() / bb;
        let bad: Vec<usize> = (0..nb)
            .filter(|&b| ours[b * bb..(b + 1) * bb] != theirs[b * bb..(b + 1) * bb])
            .collect();
        let b = bad[0];
        let mut s = format!(
            "{} of {nb} blocks differ; first block {b}:\n  ours   {:02x?}\n  ggml   {:02x?}\n  input  {:?}",
            bad.len(),
            &ours[b * bb..(b + 1) * bb],
            &theirs[b * bb..(b + 1) * bb],
            &x[b * be..(b + 1) * be]
        );
        if let Some(im) = im {
            let c = (b * be) % row_len;
            let _ = write!(s, "\n  imatrix {:?}", &im[c..c + be]);
        }
        return Some(s);
    }
    let mut deq = vec![0f32; x.len()];
    quant::dequantize_row(ty, &ours, &mut deq).unwrap();
    let want = oracle::ggml_dequantize(oracle_id(ty), &theirs, x.len()).unwrap();
    for (i, (a, b)) in deq.iter().zip(&want).enumerate() {
        if a.to_bits() != b.to_bits() && !(a.is_nan() && b.is_nan()) {
            return Some(format!(
                "dequantized value {i} differs: ours {a:e} ({:#010x}), ggml {b:e} ({:#010x})",
                a.to_bits(),
                b.to_bits()
            ));
        }
    }
    None
}

/// Runs `compare` for every type, with no imatrix and each of `imatrices`, over named inputs;
/// panics with every failing case listed. Rows whose length is not a whole number of a type's
/// blocks are regrouped into rows of 256.
fn check_all(inputs: &[(String, Vec<f32>, usize)], with_imatrix: bool) -> usize {
    let mut failures = String::new();
    let mut n_cases = 0;
    for (name, x, row_len) in inputs {
        for &ty in TYPES {
            let (be, _) = ty.block();
            let row_len = if row_len.is_multiple_of(be) {
                *row_len
            } else {
                256
            };
            assert_eq!(x.len() % row_len, 0, "{name}");
            let ims: Vec<(&str, Option<Vec<f32>>)> = if with_imatrix {
                imatrices(row_len, row_len as u64 + name.len() as u64)
                    .into_iter()
                    .map(|(n, v)| (n, Some(v)))
                    .collect()
            } else {
                vec![("none", None)]
            };
            for (im_name, im) in &ims {
                n_cases += 1;
                if let Some(d) = compare(ty, x, row_len, im.as_deref()) {
                    let _ = writeln!(
                        failures,
                        "{} / {name} (rows of {row_len}) / imatrix {im_name}: {d}",
                        ty.name()
                    );
                }
            }
        }
    }
    assert!(failures.is_empty(), "differences from ggml:\n{failures}");
    n_cases
}

// ---------------------------------------------------------------------------
// Inputs from model files
// ---------------------------------------------------------------------------

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn synth_gqa() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("quant_blocks")
        .join("synth-gqa");
    if !dir.join("config.json").exists() {
        synth::write_model(&synth::Spec::preset("gqa").unwrap(), &dir, true).unwrap();
    }
    dir
}

/// Up to `max_rows` rows of each named tensor, as f32, with the tensor's row length.
fn tensor_rows(dir: &Path, names: &[&str], max_rows: usize) -> Vec<(String, Vec<f32>, usize)> {
    let ck = Checkpoint::open(dir).unwrap();
    names
        .iter()
        .map(|&name| {
            let t = ck
                .get(name)
                .unwrap_or_else(|| panic!("{}: no tensor {name}", dir.display()));
            let row_len = *t.shape.last().unwrap();
            let rows = (t.n_elements() / row_len).min(max_rows);
            let dsize = t.dtype.size();
            let bytes = &ck.bytes(t)[..rows * row_len * dsize];
            let mut x = vec![0f32; rows * row_len];
            quant::to_f32(bytes, t.dtype, &mut x).unwrap();
            // K-quants regroup into rows of 256: keep the total a multiple of that.
            let keep = x.len() / 256 * 256;
            assert!(keep > 0);
            x.truncate(keep);
            let row_len = if keep.is_multiple_of(row_len) {
                row_len
            } else {
                256
            };
            (format!("{}:{name}", dir.display()), x, row_len)
        })
        .collect()
}

fn fixture_inputs() -> Vec<(String, Vec<f32>, usize)> {
    let dir = manifest().join("fixtures/models/llmjp-jglue-tiny");
    tensor_rows(
        &dir,
        &[
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.self_attn.v_proj.weight",
            "model.layers.2.self_attn.o_proj.weight",
            "model.layers.3.mlp.gate_proj.weight",
            "model.layers.0.mlp.up_proj.weight",
            "model.layers.3.mlp.down_proj.weight",
            "lm_head.weight",
        ],
        64,
    )
}

fn synth_inputs() -> Vec<(String, Vec<f32>, usize)> {
    tensor_rows(
        &synth_gqa(),
        &[
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.mlp.gate_proj.weight",
        ],
        96,
    )
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn fixture_weights_match_ggml_without_imatrix() {
    let n = check_all(&fixture_inputs(), false);
    eprintln!("{n} cases byte-identical");
}

#[test]
fn fixture_weights_match_ggml_with_imatrix() {
    let n = check_all(&fixture_inputs(), true);
    eprintln!("{n} cases byte-identical");
}

#[test]
fn synth_weights_match_ggml() {
    let inputs = synth_inputs();
    let n = check_all(&inputs, false) + check_all(&inputs, true);
    eprintln!("{n} cases byte-identical");
}

#[test]
fn adversarial_rows_match_ggml_without_imatrix() {
    let n = check_all(&adversarial(), false);
    eprintln!("{n} cases byte-identical");
}

#[test]
fn adversarial_rows_match_ggml_with_imatrix() {
    let n = check_all(&adversarial(), true);
    eprintln!("{n} cases byte-identical");
}

/// One random 256-value block: a random distribution (Gaussian, uniform, sparse, constant,
/// integer grid, outliers, all one sign), at a random scale from 1e-40 to 1e36.
fn random_block(rng: &mut Rng) -> Vec<f32> {
    let scale = 10f32.powf(rng.uniform() * 76.0 - 40.0);
    let kind = rng.below(8);
    let c = rng.normal();
    (0..256)
        .map(|i| {
            let v = match kind {
                0 => rng.normal(),
                1 => rng.uniform() * 2.0 - 1.0,
                2 => {
                    if rng.below(10) == 0 {
                        rng.normal()
                    } else {
                        0.0
                    }
                }
                3 => c,
                4 => (rng.below(17) as f32 - 8.0) * 0.25,
                5 => {
                    if i == 17 {
                        c * 1000.0
                    } else {
                        rng.normal() * 0.01
                    }
                }
                6 => rng.uniform() + 0.001,
                _ => -(rng.normal().abs()),
            };
            v * scale
        })
        .collect()
}

/// Many random blocks, each with a random importance vector too: reaches the rarely taken
/// branches (empty sub-blocks, negative fitted scales, overflowing sums).
#[test]
fn random_blocks_match_ggml() {
    let mut rng = Rng::new(2024);
    let nblocks = 160;
    let x: Vec<f32> = (0..nblocks).flat_map(|_| random_block(&mut rng)).collect();
    let mut failures = String::new();
    for &ty in TYPES {
        if let Some(d) = compare(ty, &x, 256, None) {
            let _ = writeln!(failures, "{} no imatrix: {d}", ty.name());
        }
        for row in x.chunks_exact(256) {
            let kind = rng.below(4);
            let im: Vec<f32> = (0..256)
                .map(|_| match kind {
                    0 => rng.uniform(),
                    1 => (rng.normal() * 3.0).exp(),
                    2 => {
                        if rng.below(3) == 0 {
                            0.0
                        } else {
                            rng.uniform()
                        }
                    }
                    _ => 10f32.powf(rng.uniform() * 40.0 - 20.0),
                })
                .collect();
            if let Some(d) = compare(ty, row, 256, Some(&im)) {
                let _ = writeln!(failures, "{} imatrix kind {kind}: {d}", ty.name());
            }
        }
    }
    assert!(failures.is_empty(), "differences from ggml:\n{failures}");
}

/// Imatrix rows of a length that is a multiple of 32 but not 256 (legacy types only): the
/// per-row sigma2 covers the whole row.
#[test]
fn legacy_types_with_odd_row_lengths() {
    let mut rng = Rng::new(7);
    for row_len in [32usize, 96, 160, 4128] {
        let x = normal_row(&mut rng, row_len * 3, 0.03);
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
        ] {
            for (im_name, im) in imatrices(row_len, row_len as u64) {
                assert_eq!(
                    compare(ty, &x, row_len, Some(&im)),
                    None,
                    "{} rows of {row_len} imatrix {im_name}",
                    ty.name()
                );
            }
            assert_eq!(compare(ty, &x, row_len, None), None, "{}", ty.name());
        }
    }
}

/// Arbitrary block bytes (including f16 NaN/inf/subnormal scales): our decoding equals ggml's
/// `to_float`, bit for bit except that any NaN matches any NaN (the payload of a NaN result
/// depends on operand order, which neither compiler promises).
#[test]
fn random_blocks_dequantize_like_ggml() {
    let mut rng = Rng::new(99);
    let mut all = TYPES.to_vec();
    all.extend([GgmlType::F16, GgmlType::BF16, GgmlType::F32]);
    for ty in all {
        let (be, bb) = ty.block();
        let nblocks = 4096 / be.max(16) * 4;
        let mut bytes: Vec<u8> = (0..nblocks * bb).map(|_| rng.next_u64() as u8).collect();
        // Make some scales ordinary so most outputs are finite.
        if bb > 2 {
            for b in 0..nblocks {
                if b % 2 == 0 {
                    let at = match ty {
                        GgmlType::Q2K => bb - 4,
                        GgmlType::Q3K | GgmlType::Q6K => bb - 2,
                        _ => 0,
                    };
                    let h = 0x2000 + (rng.next_u64() as u16 & 0x1fff);
                    bytes[b * bb + at..b * bb + at + 2].copy_from_slice(&h.to_le_bytes());
                }
            }
        }
        let n = nblocks * be;
        let mut ours = vec![0f32; n];
        quant::dequantize_row(ty, &bytes, &mut ours).unwrap();
        let want = oracle::ggml_dequantize(oracle_id(ty), &bytes, n).unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{}: value {i}: ours {a:e} ggml {b:e}",
                ty.name()
            );
        }
    }
}

#[test]
fn rejects_partial_blocks_and_bad_imatrix() {
    let x = vec![0.5f32; 512];
    let mut out = Vec::new();
    assert!(quant::encode(&x, 128, GgmlType::Q4K, &mut out).is_err());
    assert!(quant::encode(&x, 48, GgmlType::Q4_0, &mut out).is_err());
    assert!(quant::encode(&x, 300, GgmlType::Q4_0, &mut out).is_err());
    assert!(
        quant::encode_with_imatrix(&x, 256, GgmlType::Q4K, Some(&[1.0; 255]), &mut out).is_err()
    );
    assert!(out.is_empty());
    let mut y = vec![0f32; 255];
    assert!(quant::dequantize_row(GgmlType::Q4K, &[0u8; 144], &mut y).is_err());
}

/// Quantization speed on a 7168x2048 f32 matrix (llm-jp-3-1.8b's ffn_down), one thread each.
#[test]
#[ignore]
fn speed() {
    let (rows, cols) = (2048usize, 7168usize);
    let mut rng = Rng::new(1);
    let x = normal_row(&mut rng, rows * cols, 0.02);
    let im: Vec<f32> = (0..cols).map(|_| (rng.normal() * 1.5).exp()).collect();
    eprintln!("type   imatrix   ours (s)   ggml (s)   ours/ggml   (best of 2, wall clock)");
    for &ty in TYPES {
        for imx in [None, Some(im.as_slice())] {
            let (mut t_ours, mut t_ggml) = (f64::MAX, f64::MAX);
            let mut ours = Vec::with_capacity(rows * cols);
            let mut theirs = Vec::new();
            for _ in 0..2 {
                ours.clear();
                let t0 = std::time::Instant::now();
                quant::encode_with_imatrix(&x, cols, ty, imx, &mut ours).unwrap();
                t_ours = t_ours.min(t0.elapsed().as_secs_f64());
                let t0 = std::time::Instant::now();
                theirs = oracle::ggml_quantize(oracle_id(ty), &x, cols, imx).unwrap();
                t_ggml = t_ggml.min(t0.elapsed().as_secs_f64());
            }
            assert!(ours == theirs, "{} differs", ty.name());
            eprintln!(
                "{:<6} {:<9} {t_ours:>8.3}   {t_ggml:>8.3}   {:>6.2}",
                ty.name(),
                if imx.is_some() { "yes" } else { "no" },
                t_ours / t_ggml
            );
        }
    }
}

//! `quantize`: llama-quantize's mixes, byte for byte.
//!
//! - Rule tables (no oracle): the per-tensor type choice for real llm-jp shapes (1.8b's 24
//!   layers, 172b's 38464-wide ffn_down, 8x1.8b's 8 experts, tied embeddings, --pure,
//!   overrides), so CI without llama.cpp still checks the rules.
//! - Bad input through the binary: one `error:` line, exit 1, no output left.
//! - Oracle (`--features oracle`): for every file type, on the dense (bf16), GQA (f32) and MoE
//!   (f16) synth fixtures and two wider fixtures whose rows take the K-quants' 256-blocks
//!   (a dense one with a 172b-like ffn_down that falls back, an 8-expert MoE), our output and
//!   llama.cpp's `llama_model_quantize` on the same input must be the same file: metadata,
//!   tensor table and every tensor's bytes. Also with an importance matrix (GGUF and legacy
//!   formats), --pure, type overrides, requantizing, a checkpoint directory as input, and any
//!   thread count.

mod common;

use common::{list, run, stderr, tmp};
use llmjp_convert::gguf::{GgmlType, GgufFile, Value};
use llmjp_convert::quantize::mix::{
    Choice, Ftype, MixParams, ModelInfo, TensorDesc, choose_types, llama_order, use_more_bits,
};
use llmjp_convert::{convert, synth};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------
// Rule tables
// ---------------------------------------------------------------------------

/// A llama-arch model's shapes. `ffn` per expert for MoE.
struct Shape {
    n_layer: usize,
    hidden: u64,
    q_rows: u64,
    kv_rows: u64,
    ffn: u64,
    vocab: u64,
    n_expert: u64,
    tied: bool,
}

/// The model's tensors (ggml dims), in llama.cpp's order.
fn model_tensors(s: Shape) -> Vec<TensorDesc> {
    let Shape {
        n_layer,
        hidden,
        q_rows,
        kv_rows,
        ffn,
        vocab,
        n_expert,
        tied,
    } = s;
    let d = |name: String, dims: &[u64]| TensorDesc {
        name,
        dims: dims.to_vec(),
        ty: if dims.len() == 1 || (n_expert > 0 && dims == [hidden, n_expert]) {
            GgmlType::F32
        } else {
            GgmlType::BF16
        },
    };
    let mut v = vec![
        d("token_embd.weight".into(), &[hidden, vocab]),
        d("output_norm.weight".into(), &[hidden]),
    ];
    if !tied {
        v.push(d("output.weight".into(), &[hidden, vocab]));
    }
    for i in 0..n_layer {
        let b = format!("blk.{i}");
        v.push(d(format!("{b}.attn_norm.weight"), &[hidden]));
        v.push(d(format!("{b}.attn_q.weight"), &[hidden, q_rows]));
        v.push(d(format!("{b}.attn_k.weight"), &[hidden, kv_rows]));
        v.push(d(format!("{b}.attn_v.weight"), &[hidden, kv_rows]));
        v.push(d(format!("{b}.attn_output.weight"), &[q_rows, hidden]));
        v.push(d(format!("{b}.ffn_norm.weight"), &[hidden]));
        if n_expert == 0 {
            v.push(d(format!("{b}.ffn_gate.weight"), &[hidden, ffn]));
            v.push(d(format!("{b}.ffn_up.weight"), &[hidden, ffn]));
            v.push(d(format!("{b}.ffn_down.weight"), &[ffn, hidden]));
        } else {
            v.push(d(format!("{b}.ffn_gate_inp.weight"), &[hidden, n_expert]));
            v.push(d(
                format!("{b}.ffn_gate_exps.weight"),
                &[hidden, ffn, n_expert],
            ));
            v.push(d(
                format!("{b}.ffn_up_exps.weight"),
                &[hidden, ffn, n_expert],
            ));
            v.push(d(
                format!("{b}.ffn_down_exps.weight"),
                &[ffn, hidden, n_expert],
            ));
        }
    }
    v.sort_by(|a, b| llama_order(&a.name, &b.name));
    v
}

fn types_of(model: &ModelInfo, p: &MixParams, t: &[TensorDesc]) -> Vec<(String, GgmlType)> {
    let c: Vec<Choice> = choose_types(model, p, t).unwrap();
    t.iter()
        .map(|t| t.name.clone())
        .zip(c.iter().map(|c| c.ty))
        .collect()
}

fn ty(types: &[(String, GgmlType)], name: &str) -> GgmlType {
    types
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
        .1
}

/// llm-jp-3-1.8b: 24 layers, 2048 wide, ffn 7168, 16 heads.
fn llmjp_1_8b(tied: bool) -> (ModelInfo, Vec<TensorDesc>) {
    (
        ModelInfo::new(24, 16, 16, 0),
        model_tensors(Shape {
            n_layer: 24,
            hidden: 2048,
            q_rows: 2048,
            kv_rows: 2048,
            ffn: 7168,
            vocab: 99584,
            n_expert: 0,
            tied,
        }),
    )
}

#[test]
fn rules_use_more_bits_24_layers() {
    let more: Vec<i64> = (0..24).filter(|&i| use_more_bits(i, 24)).collect();
    assert_eq!(more, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
    let more8: Vec<i64> = (0..8).filter(|&i| use_more_bits(i, 8)).collect();
    assert_eq!(more8, [0, 3, 6, 7]);
}

#[test]
fn rules_dense_24_layers() {
    use GgmlType::*;
    let (m, t) = llmjp_1_8b(false);
    let more = [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23];
    // Q4_K_M and Q5_K_M: attn_v and ffn_down get Q6_K in the use_more_bits layers.
    for (f, base) in [(Ftype::Q4KM, Q4K), (Ftype::Q5KM, Q5K)] {
        let ty_ = types_of(&m, &MixParams::new(f), &t);
        for i in 0..24 {
            let want = if more.contains(&i) { Q6K } else { base };
            assert_eq!(
                ty(&ty_, &format!("blk.{i}.attn_v.weight")),
                want,
                "{f:?} {i}"
            );
            assert_eq!(
                ty(&ty_, &format!("blk.{i}.ffn_down.weight")),
                want,
                "{f:?} {i}"
            );
            for other in ["attn_q", "attn_k", "attn_output", "ffn_gate", "ffn_up"] {
                assert_eq!(ty(&ty_, &format!("blk.{i}.{other}.weight")), base);
            }
            assert_eq!(ty(&ty_, &format!("blk.{i}.attn_norm.weight")), F32);
        }
        assert_eq!(ty(&ty_, "output.weight"), Q6K);
        assert_eq!(ty(&ty_, "token_embd.weight"), base);
        assert_eq!(ty(&ty_, "output_norm.weight"), F32);
    }
    // Q3_K_M: attn_v Q5_K for the first two, Q4_K after; ffn_down Q5_K below n/16, else
    // Q4_K; attn_output Q4_K; the rest Q3_K.
    let q3m = types_of(&m, &MixParams::new(Ftype::Q3KM), &t);
    for i in 0..24 {
        let v = if i < 2 { Q5K } else { Q4K };
        assert_eq!(ty(&q3m, &format!("blk.{i}.attn_v.weight")), v);
        let d = if i < 24 / 16 { Q5K } else { Q4K };
        assert_eq!(ty(&q3m, &format!("blk.{i}.ffn_down.weight")), d);
        assert_eq!(ty(&q3m, &format!("blk.{i}.attn_output.weight")), Q4K);
        assert_eq!(ty(&q3m, &format!("blk.{i}.ffn_up.weight")), Q3K);
    }
    // Q4_K_S: attn_v Q5_K for the first four; ffn_down Q5_K for the first n/8.
    let q4s = types_of(&m, &MixParams::new(Ftype::Q4KS), &t);
    for i in 0..24 {
        assert_eq!(
            ty(&q4s, &format!("blk.{i}.attn_v.weight")),
            if i < 4 { Q5K } else { Q4K }
        );
        assert_eq!(
            ty(&q4s, &format!("blk.{i}.ffn_down.weight")),
            if i < 3 { Q5K } else { Q4K }
        );
    }
    // Q2_K: MHA (n_gqa 1) attn_v Q3_K, ffn_down Q3_K, attn_output Q3_K, rest Q2_K.
    let q2 = types_of(&m, &MixParams::new(Ftype::Q2K), &t);
    assert_eq!(ty(&q2, "blk.7.attn_v.weight"), Q3K);
    assert_eq!(ty(&q2, "blk.7.ffn_down.weight"), Q3K);
    assert_eq!(ty(&q2, "blk.7.attn_output.weight"), Q3K);
    assert_eq!(ty(&q2, "blk.7.attn_q.weight"), Q2K);
    assert_eq!(ty(&q2, "output.weight"), Q6K);
    // Q6_K and Q8_0: one type, output stays Q8_0 for Q8_0.
    let q6 = types_of(&m, &MixParams::new(Ftype::Q6K), &t);
    assert!(q6.iter().all(|(n, t)| *t == Q6K || n.contains("norm")));
    let q8 = types_of(&m, &MixParams::new(Ftype::Q8_0), &t);
    assert!(q8.iter().all(|(n, t)| *t == Q8_0 || n.contains("norm")));
    // Q4_0 has no rules, except ffn_down's first n/8 layers with an imatrix.
    let q40 = types_of(&m, &MixParams::new(Ftype::Q4_0), &t);
    assert_eq!(ty(&q40, "blk.0.ffn_down.weight"), Q4_0);
    assert_eq!(ty(&q40, "output.weight"), Q6K);
    let mut p = MixParams::new(Ftype::Q4_0);
    p.has_imatrix = true;
    let q40i = types_of(&m, &p, &t);
    for i in 0..24 {
        let want = if i < 3 { Q4_1 } else { Q4_0 };
        assert_eq!(ty(&q40i, &format!("blk.{i}.ffn_down.weight")), want);
    }
    // F16: everything quantizable becomes F16, norms stay F32.
    let f16 = types_of(&m, &MixParams::new(Ftype::F16), &t);
    assert!(f16.iter().all(|(n, t)| *t == F16 || n.contains("norm")));
}

#[test]
fn rules_172b_ffn_down_falls_back() {
    use GgmlType::*;
    // llm-jp-3-172b: 96 layers, hidden 12288, ffn 38464 (= 150.25 x 256), 96 heads, 16 kv.
    let m = ModelInfo::new(96, 96, 16, 0);
    let t = model_tensors(Shape {
        n_layer: 96,
        hidden: 12288,
        q_rows: 12288,
        kv_rows: 2048,
        ffn: 38464,
        vocab: 99840,
        n_expert: 0,
        tied: false,
    });
    let q4m = types_of(&m, &MixParams::new(Ftype::Q4KM), &t);
    let c = choose_types(&m, &MixParams::new(Ftype::Q4KM), &t).unwrap();
    for i in 0..96i64 {
        let name = format!("blk.{i}.ffn_down.weight");
        // Q6_K -> Q8_0 where more bits, Q4_K -> Q5_0 elsewhere.
        let want = if use_more_bits(i, 96) { Q8_0 } else { Q5_0 };
        assert_eq!(ty(&q4m, &name), want, "{name}");
        let k = t.iter().position(|x| x.name == name).unwrap();
        assert!(c[k].fallback);
        // gate/up have 12288-long rows: no fallback.
        assert_eq!(ty(&q4m, &format!("blk.{i}.ffn_up.weight")), Q4K);
    }
    assert_eq!(ty(&q4m, "output.weight"), Q6K);
    // Q2_K: GQA 6 gives attn_v Q4_K; ffn_down Q3_K falls back to Q4_0.
    let q2 = types_of(&m, &MixParams::new(Ftype::Q2K), &t);
    assert_eq!(ty(&q2, "blk.0.attn_v.weight"), Q4K);
    assert_eq!(ty(&q2, "blk.0.ffn_down.weight"), Q4_0);
    // Q5_K_S: Q5_K -> Q5_1; Q6_K: Q6_K -> Q8_0; Q8_0 and Q4_0 fit (38464 = 1202 x 32).
    let q5s = types_of(&m, &MixParams::new(Ftype::Q5KS), &t);
    assert_eq!(ty(&q5s, "blk.50.ffn_down.weight"), Q5_1);
    let q6 = types_of(&m, &MixParams::new(Ftype::Q6K), &t);
    assert_eq!(ty(&q6, "blk.50.ffn_down.weight"), Q8_0);
    let q40 = types_of(&m, &MixParams::new(Ftype::Q4_0), &t);
    assert_eq!(ty(&q40, "blk.50.ffn_down.weight"), Q4_0);
    // A row that is not even a multiple of 32 ends in F16.
    let odd = vec![TensorDesc {
        name: "blk.0.ffn_down.weight".into(),
        dims: vec![100, 64],
        ty: BF16,
    }];
    let c = choose_types(
        &ModelInfo::new(1, 1, 1, 0),
        &MixParams::new(Ftype::Q4KM),
        &odd,
    )
    .unwrap();
    assert_eq!((c[0].ty, c[0].fallback), (F16, true));
}

#[test]
fn rules_moe_8_experts() {
    use GgmlType::*;
    // llm-jp-3-8x1.8b: 24 layers, 8 experts.
    let m = ModelInfo::new(24, 16, 16, 8);
    let t = model_tensors(Shape {
        n_layer: 24,
        hidden: 2048,
        q_rows: 2048,
        kv_rows: 2048,
        ffn: 7168,
        vocab: 99584,
        n_expert: 8,
        tied: false,
    });
    for f in [
        Ftype::Q2K,
        Ftype::Q3KS,
        Ftype::Q3KM,
        Ftype::Q4KS,
        Ftype::Q4KM,
    ] {
        let ty_ = types_of(&m, &MixParams::new(f), &t);
        for i in 0..24 {
            assert_eq!(ty(&ty_, &format!("blk.{i}.attn_v.weight")), Q8_0, "{f:?}");
            assert_eq!(ty(&ty_, &format!("blk.{i}.attn_k.weight")), Q8_0, "{f:?}");
            assert_eq!(
                ty(&ty_, &format!("blk.{i}.attn_output.weight")),
                Q5K,
                "{f:?}"
            );
            assert_eq!(ty(&ty_, &format!("blk.{i}.ffn_gate_inp.weight")), F32);
        }
    }
    let q4m = types_of(&m, &MixParams::new(Ftype::Q4KM), &t);
    for i in 0..24 {
        let want = if use_more_bits(i, 24) { Q6K } else { Q4K };
        assert_eq!(ty(&q4m, &format!("blk.{i}.ffn_down_exps.weight")), want);
        assert_eq!(ty(&q4m, &format!("blk.{i}.ffn_gate_exps.weight")), Q4K);
    }
    // Q3_K_L and Q5_K_M keep their own attn_output (no 8-expert bump) but attn_v/k go Q8_0.
    let q3l = types_of(&m, &MixParams::new(Ftype::Q3KL), &t);
    assert_eq!(ty(&q3l, "blk.3.attn_output.weight"), Q3K);
    assert_eq!(ty(&q3l, "blk.3.attn_v.weight"), Q8_0);
    // The 8-expert bump also applies to Q6_K and Q8_0 files.
    let q6 = types_of(&m, &MixParams::new(Ftype::Q6K), &t);
    assert_eq!(ty(&q6, "blk.3.attn_v.weight"), Q8_0);
}

#[test]
fn rules_tied_pure_and_overrides() {
    use GgmlType::*;
    // Tied embeddings: token_embd takes output.weight's rule.
    let (m, t) = llmjp_1_8b(true);
    let q4m = types_of(&m, &MixParams::new(Ftype::Q4KM), &t);
    assert_eq!(ty(&q4m, "token_embd.weight"), Q6K);
    let (m, t) = llmjp_1_8b(false);
    // --pure: the default type everywhere, output included.
    let mut p = MixParams::new(Ftype::Q4KM);
    p.pure = true;
    let pure = types_of(&m, &p, &t);
    assert!(pure.iter().all(|(n, t)| *t == Q4K || n.contains("norm")));
    // --output-tensor-type / --token-embedding-type win over everything.
    let mut p = MixParams::new(Ftype::Q4KM);
    p.output_tensor_type = Some(Q8_0);
    p.token_embedding_type = Some(F16);
    let o = types_of(&m, &p, &t);
    assert_eq!(ty(&o, "output.weight"), Q8_0);
    assert_eq!(ty(&o, "token_embd.weight"), F16);
    // --tensor-type: a matching tensor skips the rules, and does not advance the attn_v
    // counter, so use_more_bits shifts by one for the later layers.
    let mut p = MixParams::new(Ftype::Q4KM);
    p.add_tensor_type(r"blk\.0\.attn_v=q8_0").unwrap();
    p.add_tensor_type("ATTN_Q=q5_k").unwrap();
    let o = types_of(&m, &p, &t);
    assert_eq!(ty(&o, "blk.0.attn_v.weight"), Q8_0);
    assert_eq!(ty(&o, "blk.3.attn_v.weight"), Q6K); // counter 2: more bits
    assert_eq!(ty(&o, "blk.5.attn_v.weight"), Q4K); // counter 4
    assert_eq!(ty(&o, "blk.6.attn_v.weight"), Q6K); // counter 5
    assert_eq!(ty(&o, "blk.9.attn_q.weight"), Q5K);
    // Q2_K_S: Q2_K tensors need an importance matrix; token_embd and output do not.
    let c = choose_types(&m, &MixParams::new(Ftype::Q2KS), &t).unwrap();
    for (t, c) in t.iter().zip(&c) {
        assert_eq!(
            c.requires_imatrix,
            c.ty == Q2K && t.name != "token_embd.weight",
            "{}",
            t.name
        );
    }
}

// ---------------------------------------------------------------------------
// Bad input through the binary
// ---------------------------------------------------------------------------

/// The dense synth fixture as a bf16 GGUF (and q8_0), made once per test run by the binary.
fn cli_fixture() -> &'static (PathBuf, PathBuf) {
    static F: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    F.get_or_init(|| {
        let d = common::tmp_keep("cli-fixture");
        common::synth("dense", &d.join("model"));
        let bf16 = d.join("dense.gguf");
        let q8 = d.join("dense-q8_0.gguf");
        for (out, t) in [(&bf16, "auto"), (&q8, "q8_0")] {
            let o = run([
                "-q",
                "to-gguf",
                d.join("model").to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
                "--outtype",
                t,
            ]);
            assert!(o.status.success(), "{}", stderr(&o));
        }
        (bf16, q8)
    })
}

/// Runs `quantize INPUT -o DIR/out.gguf ARGS` and checks the failure: exit 1, one `error:`
/// line naming each phrase, nothing left in DIR but `keep`.
fn fails(name: &str, input: &Path, args: &[&str], phrases: &[&str], keep: &[&str]) -> String {
    let d = tmp(name);
    for k in keep {
        std::fs::write(d.join(k), b"existing").unwrap();
    }
    let out = d.join("out.gguf");
    let mut a = vec![
        "-q",
        "quantize",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let o = run(&a);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{name}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: {err}");
    assert!(lines[0].starts_with("error: "), "{name}: {err}");
    for p in phrases {
        assert!(lines[0].contains(p), "{name}: {p:?} not in {err}");
    }
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    let left: Vec<String> = list(&d)
        .into_iter()
        .filter(|n| !n.ends_with(".dat") && !n.ends_with(".imatrix.gguf"))
        .collect();
    assert_eq!(left, want, "{name}: leftovers");
    for k in keep {
        assert_eq!(std::fs::read(d.join(k)).unwrap(), b"existing");
    }
    eprintln!("{name}: {}", lines[0]);
    lines[0].to_string()
}

/// A legacy `.dat` importance matrix.
fn write_dat(path: &Path, entries: &[(&str, Vec<f32>)]) {
    let mut b = Vec::new();
    b.extend_from_slice(&(entries.len() as i32).to_le_bytes());
    for (name, v) in entries {
        b.extend_from_slice(&(name.len() as i32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&1i32.to_le_bytes());
        b.extend_from_slice(&(v.len() as i32).to_le_bytes());
        v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
    }
    b.extend_from_slice(&7i32.to_le_bytes());
    b.extend_from_slice(&4i32.to_le_bytes());
    b.extend_from_slice(b"test");
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_input() {
    let (bf16, q8) = cli_fixture();
    fails(
        "unknown-type",
        bf16,
        &["-t", "Q9_K"],
        &["unknown quantization type", "Q9_K", "Q4_K_M"],
        &[],
    );
    fails(
        "unknown-tensor-type",
        bf16,
        &["-t", "Q4_K_M", "--output-tensor-type", "iq4_nl"],
        &["--output-tensor-type", "iq4_nl"],
        &[],
    );
    fails(
        "requantize",
        q8,
        &["-t", "Q4_K_M"],
        &["already quantized", "Q8_0", "--allow-requantize"],
        &[],
    );
    fails(
        "exists",
        bf16,
        &["-t", "Q4_K_M"],
        &["output exists", "--force"],
        &["out.gguf"],
    );
    // Importance matrices: NaN, a tensor this model does not have, wrong sizes.
    let d = tmp("imatrix-files");
    let nan = d.join("nan.dat");
    let mut v = vec![1.0f32; 64];
    v[5] = f32::NAN;
    write_dat(&nan, &[("blk.0.attn_q.weight", v)]);
    fails(
        "imatrix-nan",
        bf16,
        &["-t", "Q4_K_M", "--imatrix", nan.to_str().unwrap()],
        &["non-finite", "blk.0.attn_q.weight"],
        &[],
    );
    let other = d.join("other.dat");
    write_dat(
        &other,
        &[
            ("blk.0.attn_q.weight", vec![1.0; 64]),
            ("blk.7.attn_q.weight", vec![1.0; 64]),
        ],
    );
    fails(
        "imatrix-other-model",
        bf16,
        &["-t", "Q4_K_M", "--imatrix", other.to_str().unwrap()],
        &["blk.7.attn_q.weight", "another model"],
        &[],
    );
    let size = d.join("size.dat");
    write_dat(&size, &[("blk.0.attn_q.weight", vec![1.0; 128])]);
    fails(
        "imatrix-size",
        bf16,
        &["-t", "Q4_K_M", "--imatrix", size.to_str().unwrap()],
        &["blk.0.attn_q.weight", "128 values", "another model"],
        &[],
    );
    fails(
        "imatrix-garbage",
        bf16,
        &[
            "-t",
            "Q4_K_M",
            "--imatrix",
            bf16.with_extension("gguf.sha256").to_str().unwrap(),
        ],
        &["importance matrix"],
        &[],
    );
    // Q2_K_S without an importance matrix (on rows that take Q2_K's 256-blocks).
    fails(
        "needs-imatrix",
        fixture(Fixture::WideDense),
        &["-t", "Q2_K_S"],
        &["needs an importance matrix"],
        &[],
    );
    // With --allow-requantize the q8_0 file quantizes; the checksum is written beside it.
    let d = tmp("requantize-ok");
    let out = d.join("out.gguf");
    let o = run([
        "-q",
        "quantize",
        q8.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-t",
        "q4_k_m",
        "--allow-requantize",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(list(&d), ["out.gguf", "out.gguf.sha256"]);
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.get("general.file_type"), Some(&Value::U32(15)));
}

/// Same bytes whatever the thread count, and a checkpoint directory gives the same file as
/// its GGUF.
#[test]
fn deterministic_and_directory_input() {
    let (bf16, _) = cli_fixture();
    let d = tmp("threads");
    let mut sums = Vec::new();
    for (threads, input) in [
        ("1", bf16.clone()),
        ("2", bf16.clone()),
        ("3", bf16.parent().unwrap().join("model")),
    ] {
        let out = d.join(format!("t{threads}.gguf"));
        let o = run([
            "-q",
            "--threads",
            threads,
            "quantize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-t",
            "Q4_K_M",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        sums.push(std::fs::read(&out).unwrap());
    }
    assert!(sums[0] == sums[1], "thread count changed the bytes");
    assert!(sums[0] == sums[2], "directory input differs from its GGUF");
}

// ---------------------------------------------------------------------------
// Shared fixtures (library calls; converted once per run)
// ---------------------------------------------------------------------------

fn fixture_root() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("quantize_mix-fixtures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A synth spec converted to GGUF in `outtype`, once per test run.
fn convert_spec(
    key: &str,
    spec: &synth::Spec,
    outtype: convert::OutType,
    small_vocab: bool,
) -> PathBuf {
    let dir = fixture_root().join(key);
    let out = fixture_root().join(format!("{key}.gguf"));
    synth::write_model(spec, &dir, true).unwrap();
    if small_vocab {
        // The first spec.vocab pieces of the llm-jp tokenizer (specials and byte pieces come
        // first), so that the embeddings stay small.
        let mut tj: serde_json::Value = serde_json::from_slice(synth::TOKENIZER_JSON).unwrap();
        let v = tj["model"]["vocab"].as_array_mut().unwrap();
        v.truncate(spec.vocab);
        std::fs::write(dir.join("tokenizer.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
    }
    let opts = convert::Options {
        outtype,
        force: true,
        checksum: false,
        ..Default::default()
    };
    convert::to_gguf(&dir, &out, &opts).unwrap();
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "oracle"), allow(dead_code))]
enum Fixture {
    /// dense preset, bf16 GGUF.
    Dense,
    /// gqa preset (f32 checkpoint), F32 GGUF.
    Gqa,
    /// moe preset, converted to F16.
    Moe,
    /// 8 layers, 256 wide, ffn 288 (ffn_down rows fall back, as 172b's), GQA 4, bf16.
    WideDense,
    /// 4 layers, 256 wide, 8 experts of ffn 256, GQA 2, f16.
    WideMoe,
}

fn fixture(f: Fixture) -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    static G: OnceLock<PathBuf> = OnceLock::new();
    static M: OnceLock<PathBuf> = OnceLock::new();
    static WD: OnceLock<PathBuf> = OnceLock::new();
    static WM: OnceLock<PathBuf> = OnceLock::new();
    use convert::OutType;
    use llmjp_convert::hf::Dtype;
    let p = |n: &str| synth::Spec::preset(n).unwrap();
    match f {
        Fixture::Dense => {
            D.get_or_init(|| convert_spec("dense", &p("dense"), OutType::Auto, false))
        }
        Fixture::Gqa => G.get_or_init(|| convert_spec("gqa", &p("gqa"), OutType::F32, false)),
        Fixture::Moe => M.get_or_init(|| convert_spec("moe", &p("moe"), OutType::F16, false)),
        Fixture::WideDense => WD.get_or_init(|| {
            let s = synth::Spec {
                n_layer: 8,
                hidden: 256,
                n_head: 4,
                n_head_kv: 1,
                ffn: 288,
                vocab: 512,
                seed: 31,
                ..p("dense")
            };
            convert_spec("wide-dense", &s, OutType::Auto, true)
        }),
        Fixture::WideMoe => WM.get_or_init(|| {
            let s = synth::Spec {
                n_layer: 4,
                vocab: 512,
                dtype: Dtype::F16,
                seed: 32,
                branch_scale: 1.0,
                ..p("wide-moe")
            };
            convert_spec("wide-moe", &s, OutType::Auto, true)
        }),
    }
}

#[cfg(feature = "oracle")]
mod oracle {
    use super::*;
    use llmjp_convert::gguf::{GgufWriter, TensorInfo};
    use llmjp_convert::oracle_quant::{KvOverride, QuantizeParams, model_quantize};
    use llmjp_convert::quantize::{self, mix};
    use std::time::Instant;

    /// Every file type we offer.
    const MIXES: &[&str] = &[
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S",
        "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "F16", "BF16", "F32",
    ];

    fn out_dir(name: &str) -> PathBuf {
        let d = fixture_root().join("out").join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The first difference between two GGUF files, or None when they are the same bytes.
    fn diff(ours: &Path, theirs: &Path) -> Option<String> {
        let a = std::fs::read(ours).unwrap();
        let b = std::fs::read(theirs).unwrap();
        if a == b {
            return None;
        }
        let fa = GgufFile::open(ours).unwrap();
        let fb = GgufFile::open(theirs).unwrap();
        let ka: Vec<&str> = fa.kv.iter().map(|(k, _)| k.as_str()).collect();
        let kb: Vec<&str> = fb.kv.iter().map(|(k, _)| k.as_str()).collect();
        if ka != kb {
            return Some(format!(
                "metadata keys differ:\n ours   {ka:?}\n theirs {kb:?}"
            ));
        }
        for ((k, va), (_, vb)) in fa.kv.iter().zip(&fb.kv) {
            if va != vb {
                return Some(format!(
                    "metadata {k} differs: ours {} theirs {}",
                    va.summary(),
                    vb.summary()
                ));
            }
        }
        let ta: Vec<_> = fa.tensors.iter().map(|t| &t.info).collect();
        let tb: Vec<_> = fb.tensors.iter().map(|t| &t.info).collect();
        if ta.len() != tb.len() {
            return Some(format!("{} tensors vs {}", ta.len(), tb.len()));
        }
        let mut out = Vec::new();
        for (x, y) in ta.iter().zip(&tb) {
            if x != y {
                out.push(format!(
                    "tensor {} {:?} {} vs {} {:?} {}",
                    x.name,
                    x.dims,
                    x.ty.name(),
                    y.name,
                    y.dims,
                    y.ty.name()
                ));
            }
        }
        if !out.is_empty() {
            return Some(format!("tensor tables differ:\n{}", out.join("\n")));
        }
        for (x, y) in fa.tensors.iter().zip(&fb.tensors) {
            let (da, db) = (fa.data(x), fb.data(y));
            if da != db {
                let at = da.iter().zip(db).position(|(p, q)| p != q).unwrap_or(0);
                out.push(format!(
                    "data of {} ({}) differs from byte {at} of {}",
                    x.info.name,
                    x.info.ty.name(),
                    da.len()
                ));
            }
        }
        if !out.is_empty() {
            return Some(out.join("\n"));
        }
        Some(format!(
            "same metadata, tables and data, but the files differ ({} vs {} bytes)",
            a.len(),
            b.len()
        ))
    }

    /// One comparison: ours (library) and llama.cpp's, same input and options.
    struct Case<'a> {
        tag: String,
        input: &'a Path,
        opts: quantize::Options,
        params: QuantizeParams,
    }

    impl<'a> Case<'a> {
        fn new(input: &'a Path, mix: &str) -> Self {
            let f = mix::Ftype::parse(mix).unwrap();
            Case {
                tag: mix.to_string(),
                input,
                opts: quantize::Options {
                    force: true,
                    checksum: false,
                    ..quantize::Options::new(mix)
                },
                params: QuantizeParams::new(f.id()),
            }
        }

        /// Runs both; returns an error line when they differ.
        fn run(&self, dir: &Path) -> Result<(), String> {
            let ours = dir.join(format!("{}.ours.gguf", self.tag));
            let theirs = dir.join(format!("{}.llama.gguf", self.tag));
            let t0 = Instant::now();
            quantize::quantize(self.input, &ours, &self.opts)
                .map_err(|e| format!("{}: ours failed: {e:#}", self.tag))?;
            let t1 = Instant::now();
            model_quantize(self.input, &theirs, &self.params)
                .map_err(|e| format!("{}: llama.cpp failed: {e:#}", self.tag))?;
            eprintln!(
                "  {}: ours {:.2}s, llama.cpp {:.2}s",
                self.tag,
                (t1 - t0).as_secs_f64(),
                t1.elapsed().as_secs_f64()
            );
            let r = match diff(&ours, &theirs) {
                None => Ok(()),
                Some(d) => Err(format!("{}: {d}", self.tag)),
            };
            if r.is_ok() {
                let _ = std::fs::remove_file(&ours);
                let _ = std::fs::remove_file(&theirs);
            }
            r
        }
    }

    fn run_all(name: &str, cases: &[Case]) {
        let dir = out_dir(name);
        let t = Instant::now();
        let failures: Vec<String> = cases.iter().filter_map(|c| c.run(&dir).err()).collect();
        eprintln!(
            "{name}: {} cases, {} identical, {:.1}s",
            cases.len(),
            cases.len() - failures.len(),
            t.elapsed().as_secs_f64()
        );
        assert!(
            failures.is_empty(),
            "{name}: {} of {} differ from llama-quantize:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    fn all_mixes(f: Fixture) {
        let input = fixture(f);
        let cases: Vec<Case> = MIXES.iter().map(|m| Case::new(input, m)).collect();
        run_all(&format!("{f:?}"), &cases);
    }

    #[test]
    fn oracle_mixes_dense() {
        all_mixes(Fixture::Dense);
    }

    #[test]
    fn oracle_mixes_gqa() {
        all_mixes(Fixture::Gqa);
    }

    #[test]
    fn oracle_mixes_moe() {
        all_mixes(Fixture::Moe);
    }

    #[test]
    fn oracle_mixes_wide_dense() {
        all_mixes(Fixture::WideDense);
    }

    #[test]
    fn oracle_mixes_wide_moe() {
        all_mixes(Fixture::WideMoe);
    }

    /// --pure, --output-tensor-type, --token-embedding-type, --tensor-type, and a q8_0 input
    /// requantized.
    #[test]
    fn oracle_options() {
        let wd = fixture(Fixture::WideDense);
        let mut cases = Vec::new();
        for m in ["Q4_K_M", "Q3_K_S", "Q6_K"] {
            let mut c = Case::new(wd, m);
            c.tag = format!("{m}-pure");
            c.opts.pure = true;
            c.params.pure = true;
            cases.push(c);
        }
        let mut c = Case::new(wd, "Q4_K_M");
        c.tag = "Q4_K_M-out-emb".into();
        c.opts.output_tensor_type = Some("q8_0".into());
        c.opts.token_embedding_type = Some("Q3_K".into());
        c.params.output_tensor_type = Some(8);
        c.params.token_embedding_type = Some(11);
        cases.push(c);
        let mut c = Case::new(wd, "Q4_K_M");
        c.tag = "Q4_K_M-tensor-type".into();
        c.opts.tensor_types = vec![r"blk\.0\.attn_v=q8_0".into(), "FFN_UP=q5_1".into()];
        c.params.tensor_types = vec![(r"blk\.0\.attn_v".into(), 8), ("ffn_up".into(), 7)];
        cases.push(c);
        let mut c = Case::new(wd, "F16");
        c.tag = "F16-out-q6k".into();
        c.opts.output_tensor_type = Some("q6_k".into());
        c.params.output_tensor_type = Some(14);
        cases.push(c);
        // A Q8_0 GGUF of the MoE preset, requantized.
        fixture(Fixture::Moe);
        let q8 = fixture_root().join("moe-q8_0.gguf");
        convert::to_gguf(
            &fixture_root().join("moe"),
            &q8,
            &convert::Options {
                outtype: convert::OutType::Q8_0,
                force: true,
                checksum: false,
                ..Default::default()
            },
        )
        .unwrap();
        for m in ["Q4_K_M", "Q8_0", "F16"] {
            let mut c = Case::new(&q8, m);
            c.tag = format!("{m}-requant");
            c.opts.allow_requantize = true;
            c.params.allow_requantize = true;
            cases.push(c);
        }
        run_all("options", &cases);
    }

    /// A big model, on demand: `LLMJP_QUANTIZE_INPUT=model.gguf [LLMJP_QUANTIZE_TYPES=Q4_K_M,Q6_K]
    /// cargo test --release --features oracle --test quantize_mix -- --ignored big_model`
    /// (e.g. the `synth 1.8b` model converted with to-gguf: every row takes 256-blocks there).
    #[test]
    #[ignore]
    fn oracle_big_model() {
        let input =
            PathBuf::from(std::env::var("LLMJP_QUANTIZE_INPUT").expect("LLMJP_QUANTIZE_INPUT"));
        let types = std::env::var("LLMJP_QUANTIZE_TYPES").unwrap_or_else(|_| "Q4_K_M".into());
        let cases: Vec<Case> = types
            .split(',')
            .map(|m| {
                let mut c = Case::new(&input, m);
                c.tag = format!("big-{m}");
                c
            })
            .collect();
        run_all("big", &cases);
    }

    /// Deterministic importance sums and counts for every weight llama-imatrix records (all
    /// quantizable ones but token_embd and output), one row per expert; one expert of each MoE
    /// tensor saw no activations.
    fn imatrix_data(input: &Path) -> Vec<(String, Vec<f32>, Vec<f32>)> {
        let f = GgufFile::open(input).unwrap();
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let mut out = Vec::new();
        for t in &f.tensors {
            let n = &t.info.name;
            if !mix::allows_quantization(n, &t.info.dims)
                || n == "token_embd.weight"
                || n == "output.weight"
            {
                continue;
            }
            let ne0 = t.info.dims[0] as usize;
            let n_mat = t.info.dims.get(2).copied().unwrap_or(1) as usize;
            // Heavy-tailed column importance, as real activations have.
            let sums: Vec<f32> = (0..ne0 * n_mat)
                .map(|_| {
                    let u = next();
                    (1.0 + 40.0 * u * u * u * u) * (0.5 + next())
                })
                .collect();
            let counts: Vec<f32> = (0..n_mat)
                .map(|e| {
                    if n_mat > 1 && e == 3 {
                        0.0
                    } else {
                        (1 + (next() * 50.0) as u32) as f32
                    }
                })
                .collect();
            out.push((n.clone(), sums, counts));
        }
        out
    }

    /// llama-quantize's values: sums / count per expert row, 1 where the count is 0.
    fn imatrix_values(data: &[(String, Vec<f32>, Vec<f32>)]) -> Vec<(String, Vec<f32>)> {
        data.iter()
            .map(|(n, sums, counts)| {
                let ne0 = sums.len() / counts.len();
                let v = sums
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| {
                        let c = counts[i / ne0];
                        if c > 0.0 { s / c } else { 1.0 }
                    })
                    .collect();
                (n.clone(), v)
            })
            .collect()
    }

    fn write_imatrix_gguf(path: &Path, data: &[(String, Vec<f32>, Vec<f32>)]) {
        let kv = vec![
            ("general.type".to_string(), Value::String("imatrix".into())),
            (
                "imatrix.datasets".to_string(),
                Value::ArrString(vec!["calibration.txt".into()]),
            ),
            ("imatrix.chunk_count".to_string(), Value::U32(17)),
            ("imatrix.chunk_size".to_string(), Value::U32(512)),
        ];
        let mut infos = Vec::new();
        for (n, sums, counts) in data {
            let n_mat = counts.len() as u64;
            infos.push(TensorInfo {
                name: format!("{n}.in_sum2"),
                dims: vec![sums.len() as u64 / n_mat, n_mat],
                ty: GgmlType::F32,
            });
            infos.push(TensorInfo {
                name: format!("{n}.counts"),
                dims: vec![1, n_mat],
                ty: GgmlType::F32,
            });
        }
        let f = std::fs::File::create(path).unwrap();
        let mut w = GgufWriter::new(std::io::BufWriter::new(f), &kv, &infos).unwrap();
        for (_, sums, counts) in data {
            for v in [sums, counts] {
                w.begin_tensor().unwrap();
                let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write(&b).unwrap();
                w.end_tensor().unwrap();
            }
        }
        w.finish().unwrap();
    }

    /// Legacy format: the sums with their call count (dense models only: one count per entry).
    fn write_imatrix_dat(path: &Path, data: &[(String, Vec<f32>, Vec<f32>)]) {
        let mut b = Vec::new();
        b.extend_from_slice(&(data.len() as i32).to_le_bytes());
        for (n, sums, counts) in data {
            assert_eq!(counts.len(), 1);
            b.extend_from_slice(&(n.len() as i32).to_le_bytes());
            b.extend_from_slice(n.as_bytes());
            b.extend_from_slice(&(counts[0] as i32).to_le_bytes());
            b.extend_from_slice(&(sums.len() as i32).to_le_bytes());
            sums.iter()
                .for_each(|x| b.extend_from_slice(&x.to_le_bytes()));
        }
        b.extend_from_slice(&17i32.to_le_bytes());
        b.extend_from_slice(&(b"calibration.txt".len() as i32).to_le_bytes());
        b.extend_from_slice(b"calibration.txt");
        std::fs::write(path, b).unwrap();
    }

    /// What llama-quantize adds to the metadata for an importance matrix.
    fn imatrix_kv(file: &str, n: usize) -> Vec<(String, KvOverride)> {
        imatrix_kv_of(file, n, "calibration.txt", 17)
    }

    fn imatrix_kv_of(
        file: &str,
        n: usize,
        dataset: &str,
        chunks: i64,
    ) -> Vec<(String, KvOverride)> {
        vec![
            ("quantize.imatrix.file".into(), KvOverride::Str(file.into())),
            (
                "quantize.imatrix.dataset".into(),
                KvOverride::Str(dataset.into()),
            ),
            (
                "quantize.imatrix.entries_count".into(),
                KvOverride::Int(n as i64),
            ),
            (
                "quantize.imatrix.chunks_count".into(),
                KvOverride::Int(chunks),
            ),
        ]
    }

    const IMATRIX_MIXES: &[&str] = &[
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L",
        "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K",
    ];

    /// For the legacy format (only the reader differs) and the MoE fixture (per-expert
    /// slices), fewer mixes: between them every block type is quantized with the matrix, and
    /// Q4_0's and Q2_K_S's imatrix-only rules are exercised.
    const IMATRIX_MIXES_SHORT: &[&str] = &[
        "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q2_K_S", "Q3_K_S", "Q4_K_M", "Q5_K_M", "Q6_K",
    ];

    fn imatrix_cases(f: Fixture, legacy: bool, mixes: &[&str]) {
        let input = fixture(f);
        let data = imatrix_data(input);
        let dir = out_dir(&format!("imatrix-{f:?}"));
        let path = dir.join(if legacy { "im.dat" } else { "im.imatrix.gguf" });
        if legacy {
            write_imatrix_dat(&path, &data);
        } else {
            write_imatrix_gguf(&path, &data);
        }
        let values = imatrix_values(&data);
        let arg = path.to_str().unwrap().to_string();
        let cases: Vec<Case> = mixes
            .iter()
            .map(|m| {
                let mut c = Case::new(input, m);
                c.tag = format!("{m}-imatrix");
                c.opts.imatrix = Some(path.clone());
                c.params.imatrix = Some(values.clone());
                c.params.kv_overrides = imatrix_kv(&arg, values.len());
                c
            })
            .collect();
        run_all(
            &format!("imatrix-{f:?}-{}", if legacy { "dat" } else { "gguf" }),
            &cases,
        );
    }

    /// An importance matrix computed by `llmjp-convert imatrix` (our forward pass over the
    /// built-in calibration text), read back as llama-quantize reads it and handed to
    /// llama_model_quantize: both quantizers write the same bytes with it, and ggml's own GGUF
    /// reader parses the file with llama-imatrix's keys and tensor layout.
    #[test]
    fn oracle_computed_imatrix_wide_moe() {
        use llmjp_convert::imatrix;
        use llmjp_convert::quantize::imatrix::Imatrix;
        let input = fixture(Fixture::WideMoe);
        let dir = out_dir("computed-imatrix");
        let path = dir.join("computed.imatrix.gguf");
        let opts = imatrix::Options {
            chunk_size: 64,
            chunks: Some(3),
            force: true,
            quiet: true,
            ..Default::default()
        };
        let s = imatrix::run(input, &path, &opts).unwrap();
        assert_eq!(s.chunks, 3);

        let g = llmjp_convert::oracle::gguf_summary(&path).unwrap();
        let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
        assert!(
            names.contains(&"blk.0.ffn_down_exps.weight.in_sum2"),
            "{names:?}"
        );
        assert!(names.contains(&"blk.3.attn_q.weight.counts"), "{names:?}");
        for key in [
            "general.type",
            "imatrix.datasets",
            "imatrix.chunk_count",
            "imatrix.chunk_size",
        ] {
            assert!(g.get(key).is_some(), "ggml does not see {key}");
        }

        let m = Imatrix::load(&path).unwrap();
        let values: Vec<(String, Vec<f32>)> = m.entries.clone().into_iter().collect();
        let arg = path.to_str().unwrap().to_string();
        let cases: Vec<Case> = ["Q2_K", "Q3_K_S", "Q4_K_M", "Q5_0"]
            .iter()
            .map(|mix| {
                let mut c = Case::new(input, mix);
                c.tag = format!("{mix}-computed-imatrix");
                c.opts.imatrix = Some(path.clone());
                c.params.imatrix = Some(values.clone());
                c.params.kv_overrides =
                    imatrix_kv_of(&arg, values.len(), &s.dataset, s.chunks as i64);
                c
            })
            .collect();
        run_all("computed-imatrix", &cases);
    }

    #[test]
    fn oracle_imatrix_wide_dense_gguf() {
        imatrix_cases(Fixture::WideDense, false, IMATRIX_MIXES);
    }

    #[test]
    fn oracle_imatrix_wide_dense_legacy() {
        imatrix_cases(Fixture::WideDense, true, &["Q4_0", "Q2_K_S", "Q4_K_M"]);
    }

    #[test]
    fn oracle_imatrix_wide_moe_gguf() {
        imatrix_cases(Fixture::WideMoe, false, IMATRIX_MIXES_SHORT);
    }
}

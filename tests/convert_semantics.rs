//! What to-gguf writes, checked tensor by tensor against the checkpoint it came from, with our
//! own reader: names, shapes, types, the Q/K permutation, expert stacking, the tokenizer
//! metadata, and that the bytes do not depend on the thread count.

use half::{bf16, f16};
use llmjp_convert::convert::{self, OutType, permuted_source_row};
use llmjp_convert::gguf::{GgmlType, GgufFile, Value};
use llmjp_convert::hf::{Checkpoint, ModelConfig};
use llmjp_convert::quant;
use llmjp_convert::synth;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn fixture(preset: &str) -> PathBuf {
    static LOCK: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _g = LOCK.get_or_init(Default::default).lock().unwrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("semantics")
        .join(preset);
    if !dir.join("config.json").exists() {
        synth::write_model(&synth::Spec::preset(preset).unwrap(), &dir, true).unwrap();
    }
    dir
}

fn convert_to(dir: &Path, outtype: OutType, tag: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("semantics")
        .join(format!(
            "{}-{tag}.gguf",
            dir.file_name().unwrap().to_string_lossy()
        ));
    let opts = convert::Options {
        outtype,
        force: true,
        checksum: false,
        ..Default::default()
    };
    convert::to_gguf(dir, &out, &opts).unwrap();
    out
}

fn src_rows(ck: &Checkpoint, name: &str) -> (Vec<f32>, usize) {
    let t = ck.get(name).unwrap_or_else(|| panic!("{name}"));
    let mut x = vec![0f32; t.n_elements()];
    quant::to_f32(ck.bytes(t), t.dtype, &mut x).unwrap();
    (x, *t.shape.last().unwrap())
}

fn gguf_f32(g: &GgufFile, name: &str) -> Vec<f32> {
    let t = g.tensor(name).unwrap_or_else(|| panic!("{name} missing"));
    let b = g.data(t);
    match t.info.ty {
        GgmlType::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        GgmlType::F16 => b
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        GgmlType::BF16 => b
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes(c.try_into().unwrap()).to_f32())
            .collect(),
        GgmlType::Q8_0 => {
            let mut v = vec![0f32; b.len() / 34 * 32];
            quant::q8_0::dequantize_row(b, &mut v);
            v
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn u32_of(g: &GgufFile, k: &str) -> u64 {
    g.get(k)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{k}"))
}

/// Checks every GGUF tensor of an f32 conversion against its source, element for element.
fn check_f32_conversion(preset: &str) {
    let dir = fixture(preset);
    let cfg = ModelConfig::load(&dir).unwrap();
    let ck = Checkpoint::open(&dir).unwrap();
    let g = GgufFile::open(&convert_to(&dir, OutType::F32, "f32")).unwrap();

    assert_eq!(
        g.get("general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(u32_of(&g, "llama.block_count"), cfg.n_layer as u64);
    assert_eq!(u32_of(&g, "llama.embedding_length"), cfg.hidden as u64);
    assert_eq!(u32_of(&g, "llama.feed_forward_length"), cfg.ffn as u64);
    assert_eq!(u32_of(&g, "llama.attention.head_count"), cfg.n_head as u64);
    assert_eq!(
        u32_of(&g, "llama.attention.head_count_kv"),
        cfg.n_head_kv as u64
    );
    assert_eq!(
        u32_of(&g, "llama.rope.dimension_count"),
        cfg.head_dim as u64
    );
    assert_eq!(u32_of(&g, "llama.vocab_size"), 99584);
    assert_eq!(
        g.get("llama.attention.key_length").and_then(Value::as_u64),
        cfg.head_dim_explicit.then_some(cfg.head_dim as u64)
    );
    assert_eq!(
        g.get("llama.expert_count").and_then(Value::as_u64),
        (cfg.n_expert > 0).then_some(cfg.n_expert as u64)
    );
    assert_eq!(
        g.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-5))
    );
    assert_eq!(g.get("general.file_type").and_then(Value::as_u64), Some(0));

    let (emb, _) = src_rows(&ck, "model.embed_tokens.weight");
    assert_eq!(gguf_f32(&g, "token_embd.weight"), emb);
    assert_eq!(
        g.tensor("token_embd.weight").unwrap().info.dims,
        vec![cfg.hidden as u64, 99584]
    );
    let (head, _) = src_rows(&ck, "lm_head.weight");
    assert_eq!(gguf_f32(&g, "output.weight"), head);

    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}.");
        let b = format!("blk.{i}.");
        for (hf, gg, heads) in [
            ("self_attn.q_proj", "attn_q", Some(cfg.n_head)),
            ("self_attn.k_proj", "attn_k", Some(cfg.n_head_kv)),
            ("self_attn.v_proj", "attn_v", None),
            ("self_attn.o_proj", "attn_output", None),
        ] {
            let (src, row) = src_rows(&ck, &format!("{p}{hf}.weight"));
            let got = gguf_f32(&g, &format!("{b}{gg}.weight"));
            let n_rows = src.len() / row;
            for r in 0..n_rows {
                let sr = heads.map_or(r, |h| permuted_source_row(r, n_rows, h));
                assert_eq!(
                    &got[r * row..(r + 1) * row],
                    &src[sr * row..(sr + 1) * row],
                    "{b}{gg} row {r}"
                );
            }
        }
        for (hf, gg) in [
            ("input_layernorm", "attn_norm"),
            ("post_attention_layernorm", "ffn_norm"),
        ] {
            assert_eq!(
                gguf_f32(&g, &format!("{b}{gg}.weight")),
                src_rows(&ck, &format!("{p}{hf}.weight")).0
            );
            assert_eq!(
                g.tensor(&format!("{b}{gg}.weight")).unwrap().info.ty,
                GgmlType::F32
            );
        }
        if cfg.n_expert == 0 {
            for (hf, gg) in [
                ("gate_proj", "ffn_gate"),
                ("up_proj", "ffn_up"),
                ("down_proj", "ffn_down"),
            ] {
                assert_eq!(
                    gguf_f32(&g, &format!("{b}{gg}.weight")),
                    src_rows(&ck, &format!("{p}mlp.{hf}.weight")).0
                );
            }
        } else {
            let router = g.tensor(&format!("{b}ffn_gate_inp.weight")).unwrap();
            assert_eq!(router.info.ty, GgmlType::F32);
            assert_eq!(
                router.info.dims,
                vec![cfg.hidden as u64, cfg.n_expert as u64]
            );
            for (w, gg) in [
                ("w1", "ffn_gate_exps"),
                ("w2", "ffn_down_exps"),
                ("w3", "ffn_up_exps"),
            ] {
                let got = gguf_f32(&g, &format!("{b}{gg}.weight"));
                let t = g.tensor(&format!("{b}{gg}.weight")).unwrap();
                assert_eq!(t.info.dims[2], cfg.n_expert as u64);
                let per = got.len() / cfg.n_expert;
                for e in 0..cfg.n_expert {
                    let src =
                        src_rows(&ck, &format!("{p}block_sparse_moe.experts.{e}.{w}.weight")).0;
                    assert_eq!(&got[e * per..(e + 1) * per], &src[..], "{b}{gg} expert {e}");
                }
            }
        }
    }
}

#[test]
fn f32_dense_matches_checkpoint() {
    check_f32_conversion("dense");
}

#[test]
fn f32_gqa_matches_checkpoint() {
    check_f32_conversion("gqa");
}

#[test]
fn f32_moe_matches_checkpoint() {
    check_f32_conversion("moe");
}

#[test]
fn f32_sharded_matches_checkpoint() {
    check_f32_conversion("sharded");
}

#[test]
fn permutation_is_the_llama_cpp_one() {
    // Head of 8 rows: HF halves (0 1 2 3 | 4 5 6 7) interleave to 0 4 1 5 2 6 3 7.
    let rows: Vec<usize> = (0..16).map(|r| permuted_source_row(r, 16, 2)).collect();
    assert_eq!(
        rows,
        vec![0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]
    );
}

#[test]
fn sixteen_bit_and_q8_0_outputs_encode_the_source() {
    let dir = fixture("dense"); // bf16 weights
    let ck = Checkpoint::open(&dir).unwrap();
    let (src, _) = src_rows(&ck, "model.layers.0.mlp.down_proj.weight");
    let bf = GgufFile::open(&convert_to(&dir, OutType::BF16, "bf16")).unwrap();
    assert_eq!(
        gguf_f32(&bf, "blk.0.ffn_down.weight"),
        src,
        "bf16 -> bf16 must be exact"
    );
    assert_eq!(
        bf.get("general.file_type").and_then(Value::as_u64),
        Some(32)
    );
    let auto = GgufFile::open(&convert_to(&dir, OutType::Auto, "auto")).unwrap();
    assert_eq!(
        auto.tensor("blk.0.ffn_down.weight").unwrap().info.ty,
        GgmlType::BF16
    );
    let h = GgufFile::open(&convert_to(&dir, OutType::F16, "f16")).unwrap();
    let want: Vec<f32> = src.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
    assert_eq!(gguf_f32(&h, "blk.0.ffn_down.weight"), want);
    assert_eq!(
        h.tensor("blk.0.attn_norm.weight").unwrap().info.ty,
        GgmlType::F32
    );
    let q = GgufFile::open(&convert_to(&dir, OutType::Q8_0, "q8_0")).unwrap();
    assert_eq!(
        q.tensor("blk.0.ffn_down.weight").unwrap().info.ty,
        GgmlType::Q8_0
    );
    let got = gguf_f32(&q, "blk.0.ffn_down.weight");
    // Half a step of rounding, plus the f16 rounding of the scale (2^-11 relative) times 127.
    for (blk_src, blk_got) in src.chunks(32).zip(got.chunks(32)) {
        let amax = blk_src.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (a, b) in blk_src.iter().zip(blk_got) {
            assert!(
                (a - b).abs() <= amax / 127.0 * (0.5 + 127.0 / 2048.0) + 1e-6,
                "{a} vs {b}"
            );
        }
    }
    assert_eq!(q.get("general.file_type").and_then(Value::as_u64), Some(7));
}

#[test]
fn q8_0_rounds_like_ggml() {
    // amax 127 gives d = 1 exactly: 0.5 and -2.5 must round away from zero (C roundf), which
    // round-half-to-even would get wrong.
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = -2.5;
    x[3] = 1.5;
    let mut out = Vec::new();
    quant::q8_0::quantize_row(&x, &mut out);
    assert_eq!(out.len(), 34);
    assert_eq!(
        u16::from_le_bytes([out[0], out[1]]),
        f16::from_f32(1.0).to_bits()
    );
    assert_eq!(&out[2..6], &[127u8, 1, (-3i8) as u8, 2]);
    let mut zeros = Vec::new();
    quant::q8_0::quantize_row(&[0f32; 32], &mut zeros);
    assert_eq!(zeros, vec![0u8; 34]);
}

#[test]
fn tokenizer_metadata_is_what_llama_cpp_needs() {
    let dir = fixture("dense");
    let g = GgufFile::open(&convert_to(&dir, OutType::F32, "f32")).unwrap();
    let Some(Value::ArrString(tokens)) = g.get("tokenizer.ggml.tokens") else {
        panic!("tokens")
    };
    let Some(Value::ArrI32(types)) = g.get("tokenizer.ggml.token_type") else {
        panic!("types")
    };
    let Some(Value::ArrF32(scores)) = g.get("tokenizer.ggml.scores") else {
        panic!("scores")
    };
    assert_eq!(
        (tokens.len(), types.len(), scores.len()),
        (99584, 99584, 99584)
    );
    assert_eq!(&tokens[..3], &["<unk>", "<s>", "</s>"]);
    assert_eq!(types[0], 2, "<unk> is UNKNOWN");
    assert!(
        types[1..8].iter().all(|&t| t == 3),
        "special tokens are CONTROL"
    );
    assert_eq!(tokens[8], "<0x00>");
    assert_eq!(tokens[18], "<0x0A>");
    assert!(
        types[8..264].iter().all(|&t| t == 6),
        "byte pieces are BYTE"
    );
    assert!(types[264..99574].iter().all(|&t| t == 1));
    assert_eq!(tokens[99574], "[PAD99574]");
    assert!(
        types[99574..].iter().all(|&t| t == 5),
        "padding rows are UNUSED"
    );
    let tj: serde_json::Value = serde_json::from_slice(synth::TOKENIZER_JSON).unwrap();
    let vocab = tj["model"]["vocab"].as_array().unwrap();
    for i in [264usize, 1000, 52757, 99573] {
        assert_eq!(tokens[i], vocab[i][0].as_str().unwrap());
        assert_eq!(scores[i], vocab[i][1].as_f64().unwrap() as f32);
    }
    for (k, v) in [
        ("bos", 1),
        ("eos", 2),
        ("unknown", 0),
        ("padding", 4),
        ("seperator", 6),
        ("cls", 5),
        ("mask", 3),
    ] {
        assert_eq!(
            u32_of(&g, &format!("tokenizer.ggml.{k}_token_id")),
            v,
            "{k}"
        );
    }
    assert_eq!(
        g.get("tokenizer.ggml.add_bos_token"),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        g.get("tokenizer.ggml.add_eos_token"),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        g.get("tokenizer.ggml.model").unwrap().as_str(),
        Some("llama")
    );
    let tc: serde_json::Value = serde_json::from_slice(synth::TOKENIZER_CONFIG_JSON).unwrap();
    assert_eq!(
        g.get("tokenizer.chat_template").unwrap().as_str(),
        tc["chat_template"].as_str()
    );
    assert_eq!(
        g.get("tokenizer.huggingface.json")
            .unwrap()
            .as_str()
            .map(str::as_bytes),
        Some(synth::TOKENIZER_JSON)
    );

    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("semantics/no-hf-json.gguf");
    let opts = convert::Options {
        outtype: OutType::F16,
        hf_tokenizer_json: false,
        force: true,
        ..Default::default()
    };
    convert::to_gguf(&dir, &out, &opts).unwrap();
    let g2 = GgufFile::open(&out).unwrap();
    assert!(g2.get("tokenizer.huggingface.json").is_none());
    assert!(g2.get("tokenizer.ggml.tokens").is_some());
    // The checksum sidecar is sha256sum's format and matches the file.
    let side = std::fs::read_to_string(format!("{}.sha256", out.display())).unwrap();
    let sha = llmjp_convert::output::sha256_file(&out).unwrap();
    assert_eq!(side, format!("{sha}  no-hf-json.gguf\n"));
}

fn convert_with_threads(dir: &Path, outtype: OutType, threads: usize, tag: &str) -> Vec<u8> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let out = pool.install(|| convert_to(dir, outtype, tag));
    std::fs::read(out).unwrap()
}

#[test]
fn output_bytes_do_not_depend_on_threads_or_runs() {
    for preset in ["moe", "sharded"] {
        let dir = fixture(preset);
        for outtype in [OutType::F16, OutType::Q8_0] {
            let a = convert_with_threads(&dir, outtype, 1, "t1");
            let b = convert_with_threads(&dir, outtype, 2, "t2");
            let c = convert_with_threads(&dir, outtype, 2, "t2b");
            assert!(
                a == b && b == c,
                "{preset} {outtype:?}: output differs between runs"
            );
        }
    }
}

#[test]
fn synth_is_deterministic() {
    let spec = synth::Spec::preset("gqa").unwrap();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("semantics");
    let (a, b) = (base.join("synth-a"), base.join("synth-b"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| synth::write_model(&spec, &a, true).unwrap());
    synth::write_model(&spec, &b, true).unwrap();
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}

#[test]
fn fixtures_are_the_ones_the_references_were_made_from() {
    // The transformers reference logits in fixtures/reference were computed on models generated
    // by `synth`; if the generator changed, those references would silently stop applying.
    for preset in ["dense", "gqa", "moe", "sharded"] {
        let dir = fixture(preset);
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("fixtures/reference/synth-{preset}.json"));
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        for (file, sha) in r["weights_sha256"].as_object().unwrap() {
            let got = llmjp_convert::output::sha256_file(&dir.join(file)).unwrap();
            assert_eq!(&got, sha.as_str().unwrap(), "{preset}/{file}");
        }
    }
}

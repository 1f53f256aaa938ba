//! `imatrix` through the real binary: the file has llama-imatrix's layout; its first layer's
//! sums equal ones computed here independently from the checkpoint (embedding rows, RMSNorm)
//! and the HF tokenizer; MoE experts get per-expert slices and counts that add up to the
//! routed rows; quantize uses it; bad input is refused with nothing written.
//! (tests/quantize_mix.rs shows with the oracle that llama_model_quantize writes the same bytes
//! with our file and that ggml's GGUF reader parses it.)

mod common;

use common::{run, stderr, synth, tmp};
use llmjp_convert::gguf::GgufFile;
use std::path::{Path, PathBuf};

fn trained() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llmjp-jglue-tiny")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/ja-jnli-2000.txt")
}

fn f32s(g: &GgufFile, name: &str) -> Vec<f32> {
    let t = g.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
    g.data(t)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn imatrix(model: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "-q".to_string(),
        "imatrix".into(),
        model.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(&args)
}

/// A bf16 safetensors tensor as f32 rows.
fn bf16_tensor(st: &safetensors::SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(2)
        .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
        .collect()
}

#[test]
fn sums_match_an_independent_computation_and_the_layout_is_llama_imatrix() {
    let dir = tmp("trained");
    let out = dir.join("im.gguf");
    let (chunk, chunks) = (128usize, 3usize);
    let o = imatrix(
        &trained(),
        &out,
        &[
            "--text",
            corpus().to_str().unwrap(),
            "--chunk-size",
            "128",
            "--chunks",
            "3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let g = GgufFile::open(&out).unwrap();
    let s = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(s("general.type").as_str(), Some("imatrix"));
    assert_eq!(s("imatrix.chunk_count").as_u64(), Some(chunks as u64));
    assert_eq!(s("imatrix.chunk_size").as_u64(), Some(chunk as u64));
    // Every blk weight of the 4-layer model, three tensors each, names sorted.
    let names: Vec<&str> = g.tensors.iter().map(|t| t.info.name.as_str()).collect();
    assert_eq!(names.len(), 4 * 7 * 3, "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    let bases: Vec<&str> = names
        .chunks(3)
        .map(|c| c[0].strip_suffix(".in_sum2").unwrap())
        .collect();
    let mut bs = bases.clone();
    bs.sort();
    assert_eq!(bases, bs, "entries are in name order");
    for (c, b) in names.chunks(3).zip(&bases) {
        assert_eq!(c[1], format!("{b}.counts"));
        assert_eq!(c[2], format!("{b}.in_sum"));
    }
    let t = g.tensor("blk.0.attn_q.weight.in_sum2").unwrap();
    assert_eq!(t.info.dims, [128, 1]);
    assert_eq!(
        g.tensor("blk.0.ffn_down.weight.in_sum2").unwrap().info.dims,
        [384, 1]
    );
    assert_eq!(
        g.tensor("blk.0.attn_q.weight.counts").unwrap().info.dims,
        [1, 1]
    );
    for l in 0..4 {
        let c = f32s(&g, &format!("blk.{l}.ffn_down.weight.counts"));
        assert_eq!(c, [(chunk * chunks) as f32]);
        // Q, K and V read the same normalised input, gate and up too.
        let q = f32s(&g, &format!("blk.{l}.attn_q.weight.in_sum2"));
        assert_eq!(q, f32s(&g, &format!("blk.{l}.attn_k.weight.in_sum2")));
        assert_eq!(q, f32s(&g, &format!("blk.{l}.attn_v.weight.in_sum2")));
        assert_eq!(
            f32s(&g, &format!("blk.{l}.ffn_gate.weight.in_sum")),
            f32s(&g, &format!("blk.{l}.ffn_up.weight.in_sum"))
        );
    }

    // Layer 0's attention input, from scratch: tokenize with BOS, cut into chunks, each
    // starting with BOS; x = RMSNorm(embedding row) * attn_norm gain.
    let tok = tokenizers::Tokenizer::from_file(trained().join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(corpus()).unwrap();
    let ids = tok.encode(text.as_str(), true).unwrap().get_ids().to_vec();
    assert_eq!(ids[0], 1, "BOS first");
    let bytes = std::fs::read(trained().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let emb = bf16_tensor(&st, "model.embed_tokens.weight");
    let gain = bf16_tensor(&st, "model.layers.0.input_layernorm.weight");
    let h = 128;
    let (mut sum, mut sum2) = (vec![0f64; h], vec![0f64; h]);
    for c in 0..chunks {
        for (i, &id) in ids[c * chunk..(c + 1) * chunk].iter().enumerate() {
            let id = if i == 0 { 1 } else { id } as usize;
            let e = &emb[id * h..(id + 1) * h];
            let ms = e.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / h as f64;
            let r = 1.0 / (ms + 1e-5).sqrt();
            for j in 0..h {
                let x = e[j] as f64 * r * gain[j] as f64;
                sum[j] += x;
                sum2[j] += x * x;
            }
        }
    }
    let got2 = f32s(&g, "blk.0.attn_q.weight.in_sum2");
    let got = f32s(&g, "blk.0.attn_q.weight.in_sum");
    for j in 0..h {
        assert!(
            (got2[j] as f64 - sum2[j]).abs() <= 1e-4 * sum2[j].abs() + 1e-6,
            "in_sum2[{j}]: {} vs {}",
            got2[j],
            sum2[j]
        );
        let scale = sum2[j].sqrt() * (chunk * chunks) as f64;
        assert!(
            (got[j] as f64 - sum[j]).abs() <= 1e-5 * scale.sqrt() + 1e-4 * sum[j].abs(),
            "in_sum[{j}]: {} vs {}",
            got[j],
            sum[j]
        );
    }
}

#[test]
fn moe_experts_get_per_expert_slices_and_the_file_drives_quantize() {
    let dir = tmp("moe");
    let model = dir.join("wide-moe");
    synth("wide-moe", &model);
    let out = dir.join("im.gguf");
    let o = imatrix(&model, &out, &["--chunk-size", "64", "--chunks", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let g = GgufFile::open(&out).unwrap();
    let rows = 64.0 * 4.0;
    for l in 0..2 {
        for w in ["ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"] {
            let name = format!("blk.{l}.{w}.weight");
            let t = g.tensor(&format!("{name}.in_sum2")).unwrap();
            assert_eq!(t.info.dims, [256, 8], "{name}");
            let counts = f32s(&g, &format!("{name}.counts"));
            assert_eq!(counts.len(), 8);
            // Top-2 routing: every row reaches two experts.
            assert_eq!(counts.iter().sum::<f32>(), 2.0 * rows, "{name}: {counts:?}");
            assert!(
                counts.iter().filter(|&&c| c > 0.0).count() >= 4,
                "{counts:?}"
            );
        }
        assert_eq!(
            f32s(&g, &format!("blk.{l}.ffn_gate_inp.weight.counts")),
            [rows]
        );
    }

    // The importance matrix changes what quantize writes, and quantize records it.
    let q = |name: &str, extra: &[&str]| {
        let p = dir.join(name);
        let mut args = vec![
            "-q".to_string(),
            "quantize".into(),
            model.display().to_string(),
            "-o".into(),
            p.display().to_string(),
            "--type".into(),
            "Q3_K_S".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        p
    };
    let plain = q("plain.gguf", &[]);
    let with = q("with.gguf", &["--imatrix", out.to_str().unwrap()]);
    let (a, b) = (
        GgufFile::open(&plain).unwrap(),
        GgufFile::open(&with).unwrap(),
    );
    let t = "blk.0.ffn_down_exps.weight";
    assert_ne!(
        a.data(a.tensor(t).unwrap()),
        b.data(b.tensor(t).unwrap()),
        "the importance matrix is used"
    );
    assert_eq!(
        b.get("quantize.imatrix.chunks_count")
            .and_then(|v| v.as_u64()),
        Some(4)
    );
}

#[test]
fn bad_input_is_refused_and_nothing_is_written() {
    let dir = tmp("bad");
    let short = dir.join("short.txt");
    std::fs::write(&short, "短すぎる校正テキスト。").unwrap();
    let out = dir.join("im.gguf");
    let o = imatrix(&trained(), &out, &["--text", short.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("fewer than one chunk"), "{err}");
    assert!(!out.exists());

    std::fs::write(&out, b"keep").unwrap();
    let o = imatrix(&trained(), &out, &["--chunks", "1", "--chunk-size", "32"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");

    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

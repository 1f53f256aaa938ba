#![cfg(feature = "oracle")]
//! Smoke tests of the llama.cpp oracle itself (no converter needed).

use std::path::Path;

use llmjp_convert::oracle::{self, Model, ggml_type};

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

#[test]
fn q8_0_layout_matches_reference() {
    let n_per_row = 64;
    let rows = 3;
    let mut src = values(n_per_row * rows, 7, 3.0);
    src[5] = -7.5; // a negative absmax in the first block
    src[40] = 0.0; // keep a zero around
    for v in &mut src[96..128] {
        *v = 0.0; // an all-zero block
    }

    assert_eq!(oracle::ggml_type_size(ggml_type::Q8_0).unwrap(), 34);
    assert_eq!(oracle::ggml_blck_size(ggml_type::Q8_0).unwrap(), 32);
    assert_eq!(oracle::ggml_row_size(ggml_type::Q8_0, 64).unwrap(), 68);
    assert_eq!(oracle::ggml_type_name(ggml_type::Q8_0).unwrap(), "q8_0");

    let q = oracle::ggml_quantize(ggml_type::Q8_0, &src, n_per_row, None).unwrap();
    assert_eq!(q.len(), src.len() / 32 * 34);

    for (b, (block, xs)) in q.chunks_exact(34).zip(src.chunks_exact(32)).enumerate() {
        let amax = xs.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let d_bits = u16::from_le_bytes([block[0], block[1]]);
        assert_eq!(d_bits, half::f16::from_f32(d).to_bits(), "block {b} scale");
        assert_eq!(d_bits, oracle::f32_to_f16_bits(d), "block {b} scale (ggml)");
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for (j, (&qv, &x)) in block[2..].iter().zip(xs).enumerate() {
            assert_eq!(qv as i8, (x * id).round() as i8, "block {b} value {j}");
        }
    }
}

#[test]
fn type_info_and_bad_input_are_errors() {
    assert_eq!(oracle::ggml_row_size(ggml_type::Q4_K, 256).unwrap(), 144);
    assert_eq!(oracle::ggml_row_size(ggml_type::Q6_K, 512).unwrap(), 420);
    assert_eq!(oracle::ggml_row_size(ggml_type::F16, 10).unwrap(), 20);
    assert!(oracle::ggml_row_size(ggml_type::Q8_0, 33).is_err());
    assert!(oracle::ggml_type_size(4).is_err()); // removed Q4_2
    assert!(oracle::ggml_type_size(-1).is_err());
    assert!(oracle::ggml_type_size(1000).is_err());

    let src = values(64, 1, 1.0);
    assert!(oracle::ggml_quantize(ggml_type::Q8_0, &src, 48, None).is_err()); // 64 % 48
    assert!(oracle::ggml_quantize(ggml_type::Q8_0, &src, 0, None).is_err());
    assert!(oracle::ggml_quantize(ggml_type::Q4_K, &src, 64, None).is_err()); // blck 256
    assert!(oracle::ggml_quantize(ggml_type::Q8_K, &src, 64, None).is_err()); // not producible
    assert!(oracle::ggml_quantize(ggml_type::Q8_0, &src, 64, Some(&[1.0; 3])).is_err());
    assert!(oracle::ggml_quantize(ggml_type::IQ2_XXS, &values(256, 1, 1.0), 256, None).is_err());

    // F16 through the quantizer is plain conversion.
    let h = oracle::ggml_quantize(ggml_type::F16, &[1.0, -2.5], 2, None).unwrap();
    assert_eq!(h, [0x00, 0x3c, 0x00, 0xc1]);
    assert_eq!(oracle::f16_bits_to_f32(0x3c00), 1.0);

    // An imatrix is accepted for K-quants.
    let src = values(512, 3, 1.0);
    let im: Vec<f32> = (0..256).map(|i| 1.0 + i as f32 / 256.0).collect();
    let q = oracle::ggml_quantize(ggml_type::Q4_K, &src, 256, Some(&im)).unwrap();
    assert_eq!(q.len(), 2 * 144);

    assert_eq!(oracle::argmax(&[1.0, 3.0, f32::NAN, 3.0]), Some(1));
    assert_eq!(oracle::argmax(&[f32::NAN]), None);
}

#[test]
fn missing_file_is_an_error_and_logs_are_captured() {
    let _guard = oracle::lock();
    let _ = oracle::take_logs();
    let path = Path::new("/nonexistent/oracle/definitely-missing.gguf");

    let err = Model::load(path).unwrap_err();
    let logs = oracle::take_logs();
    eprintln!("load error: {err:#}");
    assert!(!logs.is_empty(), "llama.cpp logged nothing");
    assert!(
        logs.iter().any(|l| l.starts_with("[ERROR]")),
        "no error line in {logs:?}"
    );

    let err = oracle::gguf_summary(path).unwrap_err();
    eprintln!("gguf error: {err:#}");
    assert!(!oracle::take_logs().is_empty());

    // Not a GGUF file at all.
    let dir = std::env::temp_dir().join(format!("oracle_smoke_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.gguf");
    std::fs::write(&junk, b"definitely not a gguf file").unwrap();
    assert!(oracle::gguf_summary(&junk).is_err());
    assert!(Model::load(&junk).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_probe_model_if_present() {
    let path = Path::new("/tmp/oracle_probe/tiny.gguf");
    if !path.exists() {
        eprintln!("{} absent, skipping", path.display());
        return;
    }
    let summary = oracle::gguf_summary(path).unwrap();
    eprintln!(
        "gguf v{} alignment {} data_offset {}: {} kvs, {} tensors",
        summary.version,
        summary.alignment,
        summary.data_offset,
        summary.kvs.len(),
        summary.tensors.len()
    );
    for t in summary.tensors.iter().take(5) {
        eprintln!("  {t:?}");
    }

    let mut model = Model::load(path).unwrap();
    let info = model.vocab_info();
    eprintln!("{info:#?}");
    eprintln!(
        "chat template: {:?}",
        model.chat_template().map(|t| t.len())
    );

    let ids = [1, 100, 200];
    match model.last_logits(&ids) {
        Ok(logits) => {
            assert_eq!(logits.len(), model.n_vocab());
            assert!(logits.iter().all(|x| x.is_finite()));
            eprintln!("logits[..8] = {:?}", &logits[..logits.len().min(8)]);
            eprintln!("argmax = {:?}", oracle::argmax(&logits));
            let again = model.last_logits(&ids).unwrap();
            assert_eq!(logits, again, "cache not cleared between calls");
            let generated = model.greedy(&ids, 4).unwrap();
            eprintln!("greedy = {generated:?}");
            assert_eq!(Some(generated[0] as usize), oracle::argmax(&logits));
        }
        Err(e) => eprintln!("last_logits({ids:?}) failed: {e:#}"),
    }
    assert!(model.last_logits(&[]).is_err());
    assert!(model.last_logits(&[-1]).is_err());
    assert!(model.last_logits(&[info.n_vocab]).is_err());
    eprintln!(
        "tokenize: {:?}",
        model.tokenize("こんにちは world", true, false)
    );
}

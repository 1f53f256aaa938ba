//! `quantize --type int4|int8` through the real binary: every fixture's int8 passes verify in
//! every format (our forward pass reading the packed weights), damaged packed weights fail it,
//! the GPTQ layout is the transpose of the compressed-tensors one, outputs do not depend on the
//! thread count, and bad input gives one error line, exit 1 and no output directory.

mod common;

use common::{dir_digest, list, run, stderr, stdout, synth, tmp};
use llmjp_convert::hf::Checkpoint;
use std::path::{Path, PathBuf};

fn trained() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llmjp-jglue-tiny")
}

/// Runs `quantize MODEL -o OUT --type TY EXTRA...`, asserting success.
fn quantize(model: &Path, out: &Path, ty: &str, extra: &[&str]) {
    let mut args: Vec<String> = vec![
        "-q".into(),
        "quantize".into(),
        model.display().to_string(),
        "-o".into(),
        out.display().to_string(),
        "--type".into(),
        ty.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
}

/// Runs verify; returns (exit code, stdout + stderr, JSON report).
fn verify(reference: &Path, candidate: &Path, extra: &[&str]) -> (i32, String, serde_json::Value) {
    let json = candidate.with_extension("report.json");
    let mut args: Vec<String> = vec![
        "-q".into(),
        "verify".into(),
        reference.display().to_string(),
        candidate.display().to_string(),
        "-n".into(),
        "8".into(),
        "--parity-cost-lines".into(),
        "1".into(),
        "--no-hash".into(),
        "--force".into(),
        "--json".into(),
        json.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&args);
    let report = std::fs::read(&json)
        .map(|b| serde_json::from_slice(&b).expect("report is JSON"))
        .unwrap_or(serde_json::Value::Null);
    (
        o.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&o), stderr(&o)),
        report,
    )
}

/// The fixtures: the trained model (group 128) and the synth presets (hidden 64: group 32).
fn fixtures(root: &Path) -> Vec<(String, PathBuf, &'static str)> {
    let mut v = vec![("trained".to_string(), trained(), "128")];
    for p in ["dense", "gqa", "moe", "sharded"] {
        let d = root.join(p);
        synth(p, &d);
        v.push((p.to_string(), d, "32"));
    }
    v
}

fn int8_passes(format: &str, name: &str) {
    let root = tmp(name);
    for (fx, model, group) in fixtures(&root) {
        let out = root.join(format!("{fx}-int8"));
        let g = if format == "int-quantized" {
            "channel"
        } else {
            group
        };
        quantize(
            &model,
            &out,
            "int8",
            &["--format", format, "--group-size", g],
        );
        let (code, text, r) = verify(&model, &out, &["--thresholds-for", "int8"]);
        assert_eq!(code, 0, "{fx} {format}: {text}");
        // The report counts the Linear weights as int8: the candidate was read as integers.
        assert!(
            r["candidate"]["storage_elements"]["int8"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{fx} {format}: {}",
            r["candidate"]
        );
        assert!(
            r["overall"]["mean_kl"].as_f64().unwrap() > 0.0,
            "{fx}: lossless?"
        );
    }
}

#[test]
fn int8_rtn_compressed_tensors_of_every_fixture_passes_verify() {
    int8_passes("compressed-tensors", "int8-ct");
}

#[test]
fn int8_rtn_w8a8_of_every_fixture_passes_verify() {
    int8_passes("int-quantized", "int8-w8a8");
}

#[test]
fn int8_rtn_gptq_of_every_fixture_passes_verify() {
    int8_passes("gptq", "int8-gptq");
}

/// XORs every packed word of one layer's q_proj: verify must notice.
#[test]
fn damaged_packed_weights_fail_verify() {
    let root = tmp("damaged");
    let out = root.join("int4");
    quantize(&trained(), &out, "int4", &[]);
    let (code, text, _) = verify(&trained(), &out, &["--thresholds-for", "int4"]);
    assert_eq!(code, 0, "{text}");
    let ck = Checkpoint::open(&out).unwrap();
    let t = ck
        .get("model.layers.1.self_attn.q_proj.weight_packed")
        .unwrap()
        .clone();
    let file = ck.shards[t.shard].path.clone();
    drop(ck);
    let mut bytes = std::fs::read(&file).unwrap();
    for b in &mut bytes[t.start..t.end] {
        *b ^= 0x88;
    }
    std::fs::write(&file, bytes).unwrap();
    let (code, text, _) = verify(&trained(), &out, &["--thresholds-for", "int4"]);
    assert_eq!(code, 3, "{text}");
}

fn i32s(ck: &Checkpoint, name: &str) -> (Vec<u32>, Vec<usize>) {
    let t = ck.get(name).unwrap_or_else(|| panic!("no {name}"));
    let v = ck
        .bytes(t)
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (v, t.shape.clone())
}

/// On an f16 model (scales f16 in both formats) the same integers land in both layouts:
/// qweight is weight_packed transposed, qzeros all 0x77777777, scales equal, g_idx k / 32.
#[test]
fn gptq_is_the_transpose_of_compressed_tensors() {
    let root = tmp("transpose");
    let model = root.join("sharded");
    synth("sharded", &model);
    let (ct, gp) = (root.join("ct"), root.join("gptq"));
    quantize(&model, &ct, "int4", &["--group-size", "32"]);
    quantize(
        &model,
        &gp,
        "int4",
        &["--group-size", "32", "--format", "gptq"],
    );
    assert_eq!(
        list(&ct)
            .iter()
            .filter(|f| f.ends_with(".safetensors"))
            .count(),
        3
    );
    let (c, g) = (
        Checkpoint::open(&ct).unwrap(),
        Checkpoint::open(&gp).unwrap(),
    );
    let mut n = 0;
    for name in c.tensors.keys().filter(|n| n.ends_with(".weight_packed")) {
        let base = name.strip_suffix(".weight_packed").unwrap();
        let (p, ps) = i32s(&c, name);
        let (q, qs) = i32s(&g, &format!("{base}.qweight"));
        let (rows, words) = (ps[0], ps[1]);
        assert_eq!(qs, vec![words, rows], "{base}");
        for r in 0..rows {
            for k in 0..words {
                assert_eq!(q[k * rows + r], p[r * words + k], "{base} [{r}, {k}]");
            }
        }
        let (z, _) = i32s(&g, &format!("{base}.qzeros"));
        assert!(
            !z.is_empty() && z.iter().all(|&z| z == 0x7777_7777),
            "{base}"
        );
        let (gi, _) = i32s(&g, &format!("{base}.g_idx"));
        assert!(gi.iter().enumerate().all(|(k, &v)| v as usize == k / 32));
        let sc = c.get(&format!("{base}.weight_scale")).unwrap();
        let sg = g.get(&format!("{base}.scales")).unwrap();
        let groups = sg.shape[0];
        let (a, b) = (c.bytes(sc), g.bytes(sg));
        for r in 0..rows {
            for j in 0..groups {
                assert_eq!(
                    a[(r * groups + j) * 2..][..2],
                    b[(j * rows + r) * 2..][..2],
                    "{base} scale [{r}, {j}]"
                );
            }
        }
        n += 1;
    }
    assert_eq!(n, 3 * 7, "every Linear");
    // Everything else is copied byte for byte.
    let src = Checkpoint::open(&model).unwrap();
    for name in [
        "model.embed_tokens.weight",
        "lm_head.weight",
        "model.norm.weight",
    ] {
        assert_eq!(
            c.bytes(c.get(name).unwrap()),
            src.bytes(src.get(name).unwrap())
        );
    }
}

#[test]
fn output_does_not_depend_on_the_thread_count() {
    let root = tmp("threads");
    let model = root.join("moe");
    synth("moe", &model);
    for method in ["rtn", "mse"] {
        let digests: Vec<String> = ["1", "2", "3"]
            .iter()
            .map(|t| {
                let out = root.join(format!("{method}-{t}"));
                quantize(
                    &model,
                    &out,
                    "int4",
                    &["--threads", t, "--method", method, "--group-size", "32"],
                );
                dir_digest(&out)
            })
            .collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "{method}");
    }
}

/// Exit 1, one `error:` line naming `phrases`, nothing written beside the output.
fn fails(name: &str, model: &Path, extra: &[&str], phrases: &[&str]) {
    let root = tmp(name);
    let out = root.join("out");
    let before = dir_digest(model);
    let mut args: Vec<String> = vec![
        "quantize".into(),
        model.display().to_string(),
        "-o".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{name}: {err}");
    assert!(stdout(&o).is_empty(), "{name}");
    let line = err.strip_suffix('\n').unwrap_or(&err);
    assert!(
        line.starts_with("error: ") && !line.contains('\n'),
        "{name}: {err}"
    );
    for p in phrases {
        assert!(line.contains(p), "{name}: {p:?} not in {line}");
    }
    assert!(list(&root).is_empty(), "{name}: left {:?}", list(&root));
    assert_eq!(dir_digest(model), before, "{name}: the input changed");
}

#[test]
fn group_size_not_dividing_the_rows_is_refused() {
    fails(
        "bad-group",
        &trained(),
        &["--type", "int4", "--group-size", "96"],
        &["--group-size 96", "row length 128"],
    );
}

#[test]
fn an_already_quantized_checkpoint_is_refused() {
    let root = tmp("requant-src");
    let q = root.join("q");
    quantize(&trained(), &q, "int4", &[]);
    fails("requant", &q, &["--type", "int4"], &["already quantized"]);
    let g = root.join("g");
    quantize(&trained(), &g, "int8", &["--format", "gptq"]);
    // Without its quantization_config the tensors still give it away.
    let cfg = g.join("config.json");
    let mut j: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    j.as_object_mut().unwrap().remove("quantization_config");
    std::fs::write(&cfg, j.to_string()).unwrap();
    fails(
        "requant-gptq",
        &g,
        &["--type", "int8"],
        &["already quantized", "qweight"],
    );
}

#[test]
fn bad_option_combinations_are_refused() {
    fails(
        "w8a8-int4",
        &trained(),
        &["--type", "int4", "--format", "int-quantized"],
        &["int8 only"],
    );
    fails(
        "bad-format",
        &trained(),
        &["--type", "int8", "--format", "awq"],
        &["--format"],
    );
    fails(
        "imatrix-int",
        &trained(),
        &["--type", "int8", "--imatrix", "x.dat"],
        &["--imatrix"],
    );
}

#[test]
fn an_existing_output_needs_force() {
    let root = tmp("exists");
    let out = root.join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), "x").unwrap();
    let o = run([
        "quantize".as_ref(),
        trained().as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--type".as_ref(),
        "int8".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(list(&root), vec!["out".to_string()]);
    assert_eq!(list(&out), vec!["keep".to_string()]);
}

fn calib_file(root: &Path) -> PathBuf {
    let p = root.join("calib.txt");
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/ja-jcommonsenseqa-2000.txt");
    std::fs::copy(src, &p).unwrap();
    p
}

/// `eval-quant` on held-out text (8 x 256 tokens of the last 1000 JNLI lines): (mean KL,
/// perplexity increase).
fn held_out(root: &Path, candidate: &Path) -> (f64, f64) {
    let text = root.join("heldout.txt");
    if !text.exists() {
        let jnli = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/ja-jnli-2000.txt"),
        )
        .unwrap();
        let lines: Vec<&str> = jnli.lines().collect();
        std::fs::write(&text, lines[lines.len() - 1000..].join("\n")).unwrap();
    }
    let o = run([
        "-q".as_ref(),
        "eval-quant".as_ref(),
        trained().as_os_str(),
        candidate.as_os_str(),
        "--text".as_ref(),
        text.as_os_str(),
        "--samples".as_ref(),
        "8".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let f = |k: &str| j[k].as_f64().unwrap();
    (f("mean_kl"), f("ppl_candidate") - f("ppl_reference"))
}

/// On the trained model int4 GPTQ beats round to nearest and mse on held-out text: lower mean
/// KL and a smaller perplexity increase. Calibration: verify's mixed sample and JCommonsenseQA.
#[test]
fn gptq_beats_rtn_and_mse_on_the_trained_model() {
    let root = tmp("gptq-trained");
    let calib = root.join("calib.txt");
    let m = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = [
        std::fs::read_to_string(m.join("src/verify/sample.txt")).unwrap(),
        std::fs::read_to_string(m.join("fixtures/corpus/ja-jcommonsenseqa-2000.txt")).unwrap(),
    ]
    .concat();
    std::fs::write(&calib, text).unwrap();
    let c = calib.display().to_string();
    let cal = ["--calibration", &c, "--samples", "32", "--seq-len", "256"];
    let mut r = Vec::new();
    for method in ["rtn", "mse", "gptq"] {
        let out = root.join(method);
        let extra: Vec<&str> = if method == "rtn" {
            vec![]
        } else {
            [&["--method", method][..], &cal[..]].concat()
        };
        quantize(&trained(), &out, "int4", &extra);
        r.push(held_out(&root, &out));
    }
    eprintln!(
        "int4 held-out (mean KL, ppl increase): rtn {:?} mse {:?} gptq {:?}",
        r[0], r[1], r[2]
    );
    for i in 0..2 {
        assert!(r[2].0 < 0.5 * r[i].0, "gptq KL {:?} vs {:?}", r[2], r[i]);
        assert!(
            r[2].1 < r[i].1,
            "gptq ppl increase {:?} vs {:?}",
            r[2],
            r[i]
        );
    }
}

/// GPTQ's output does not depend on the thread count either (MoE: experts with few tokens).
#[test]
fn gptq_is_deterministic_and_handles_moe() {
    let root = tmp("gptq-moe");
    let model = root.join("moe");
    synth("moe", &model);
    let calib = calib_file(&root);
    let c = calib.display().to_string();
    let digests: Vec<String> = ["1", "2"]
        .iter()
        .map(|t| {
            let out = root.join(format!("gptq-{t}"));
            let args = [
                "--threads",
                t,
                "--method",
                "gptq",
                "--calibration",
                &c,
                "--samples",
                "4",
                "--seq-len",
                "64",
                "--group-size",
                "32",
                "--format",
                "gptq",
            ];
            quantize(&model, &out, "int4", &args);
            dir_digest(&out)
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
    let (code, text, _) = verify(&model, &root.join("gptq-1"), &["--thresholds-for", "int8"]);
    assert!(code == 0 || code == 3, "{text}");
}

#[test]
fn too_short_calibration_is_refused() {
    let root = tmp("short-calib-src");
    let f = root.join("short.txt");
    std::fs::write(&f, "短い文です。\n").unwrap();
    let f = f.display().to_string();
    for method in ["gptq", "mse"] {
        fails(
            &format!("short-calib-{method}"),
            &trained(),
            &["--type", "int4", "--method", method, "--calibration", &f],
            &["tokens", "--samples 128 x --seq-len 512 needs 65536"],
        );
    }
}

/// int8 rtn loses at most twice what GGUF Q8_0 loses, on held-out text (mean KL).
#[test]
fn int8_rtn_is_within_twice_q8_0() {
    let root = tmp("int8-vs-q8_0");
    let (gguf, int8) = (root.join("q8_0.gguf"), root.join("int8"));
    let o = run([
        "-q".as_ref(),
        "to-gguf".as_ref(),
        trained().as_os_str(),
        "-o".as_ref(),
        gguf.as_os_str(),
        "--outtype".as_ref(),
        "q8_0".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    quantize(&trained(), &int8, "int8", &[]);
    let (q8, i8) = (held_out(&root, &gguf).0, held_out(&root, &int8).0);
    eprintln!("held-out mean KL: q8_0 {q8:.3e}, int8 rtn {i8:.3e}");
    assert!(i8 > 0.0 && i8 < 2.0 * q8, "int8 {i8} vs q8_0 {q8}");
}

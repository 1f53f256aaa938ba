//! `verify` and `generate` through the real binary: lossless conversions of every fixture pass,
//! deliberately damaged files fail with the failing metric named, mismatched models are refused
//! before any compute, and the JSON report holds what a release needs to archive.

mod common;

use common::{BIN, run, stderr, stdout, synth, tmp};
use llmjp_convert::convert::{self, OutType};
use llmjp_convert::gguf::{GgufFile, GgufWriter, TensorInfo, Value};
use llmjp_convert::model::names::gguf_row_of_hf_row;
use serde_json::Value as J;
use std::path::{Path, PathBuf};

fn trained() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llmjp-jglue-tiny")
}

fn to_gguf(model: &Path, out: &Path, outtype: OutType, permute_qk: bool) {
    let opts = convert::Options {
        outtype,
        force: true,
        quiet: true,
        checksum: false,
        permute_qk,
        ..Default::default()
    };
    convert::to_gguf(model, out, &opts).unwrap_or_else(|e| panic!("{}: {e:#}", model.display()));
}

/// Copies a GGUF, letting `kv` edit the metadata and `data` edit each tensor's bytes.
fn rewrite(
    src: &Path,
    dst: &Path,
    kv: impl Fn(&mut Vec<(String, Value)>),
    data: impl Fn(&TensorInfo, &mut Vec<u8>),
) {
    let g = GgufFile::open(src).unwrap();
    let mut meta = g.kv.clone();
    kv(&mut meta);
    let infos: Vec<TensorInfo> = g.tensors.iter().map(|t| t.info.clone()).collect();
    let f = std::io::BufWriter::new(std::fs::File::create(dst).unwrap());
    let mut w = GgufWriter::new(f, &meta, &infos).unwrap();
    for t in &g.tensors {
        w.begin_tensor().unwrap();
        let mut bytes = g.data(t).to_vec();
        data(&t.info, &mut bytes);
        w.write(&bytes).unwrap();
        w.end_tensor().unwrap();
    }
    w.finish().unwrap();
}

/// Runs verify with short settings; returns (exit code, stdout, stderr, JSON report).
fn verify(
    reference: &Path,
    candidate: &Path,
    dir: &Path,
    extra: &[&str],
) -> (i32, String, String, J) {
    let json = dir.join(format!(
        "{}.report.json",
        candidate.file_name().unwrap().to_string_lossy()
    ));
    let mut args: Vec<String> = vec![
        "-q".into(),
        "verify".into(),
        reference.display().to_string(),
        candidate.display().to_string(),
        "--json".into(),
        json.display().to_string(),
        "--force".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = run(&args);
    let report = std::fs::read(&json)
        .ok()
        .map(|b| serde_json::from_slice(&b).expect("report is JSON"))
        .unwrap_or(J::Null);
    (
        o.status.code().unwrap_or(-1),
        stdout(&o),
        stderr(&o),
        report,
    )
}

const FAST: &[&str] = &["-n", "8", "--parity-cost-lines", "1", "--no-hash"];

fn failed_checks(report: &J) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["pass"] == J::Bool(false))
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// Fails, exits 3, and names at least one logit metric (not only the metadata check).
fn assert_metric_failure(code: i32, err: &str, report: &J, what: &str) {
    assert_eq!(
        code, 3,
        "{what}: expected exit 3 (verify failed), stderr: {err}"
    );
    assert_eq!(report["pass"], J::Bool(false), "{what}");
    let failed = failed_checks(report);
    let metrics = [
        "max_abs_error",
        "mean_kl",
        "max_kl",
        "top1_agreement",
        "greedy_agreement",
    ];
    assert!(
        failed.iter().any(|f| metrics.contains(&f.as_str())),
        "{what}: no logit metric failed: {failed:?}"
    );
    assert_eq!(err.lines().count(), 1, "{what}: one-line error: {err}");
    assert!(err.starts_with("error: verify failed: "), "{what}: {err}");
    for f in &failed {
        assert!(err.contains(f.as_str()), "{what}: {f} not named in {err}");
    }
}

#[test]
fn f32_and_f16_of_every_fixture_pass() {
    let dir = tmp("pass");
    let mut models = vec![("trained".to_string(), trained())];
    for p in ["dense", "gqa", "moe", "sharded"] {
        let d = dir.join(p);
        synth(p, &d);
        models.push((p.to_string(), d));
    }
    for (name, model) in &models {
        for (t, label) in [(OutType::F32, "f32"), (OutType::F16, "f16")] {
            let out = dir.join(format!("{name}.{label}.gguf"));
            to_gguf(model, &out, t, true);
            let (code, out_text, err, r) = verify(model, &out, &dir, FAST);
            assert_eq!(code, 0, "{name} {label}: {err}\n{out_text}");
            assert_eq!(r["pass"], J::Bool(true));
            assert_eq!(r["thresholds"]["for_type"], label, "{name}");
            assert_eq!(r["candidate"]["storage"], label, "{name}");
            let o = &r["overall"];
            assert!(o["positions"].as_u64().unwrap() > 50, "{name} {label}");
            assert_eq!(o["top1_agreement"], 1.0, "{name} {label}");
            assert_eq!(o["greedy_agreement"], 1.0, "{name} {label}");
            if label == "f32" {
                // The f32 GGUF holds the checkpoint's values exactly.
                assert!(o["max_abs_error"].as_f64().unwrap() < 1e-4, "{name}: {o}");
            }
            assert!(out_text.contains("PASS"), "{out_text}");
        }
    }
}

#[test]
fn bf16_and_q8_0_of_every_fixture_pass_their_limits() {
    let dir = tmp("lossy");
    let mut models = vec![("trained".to_string(), trained())];
    for p in ["gqa", "moe"] {
        let d = dir.join(p);
        synth(p, &d);
        models.push((p.to_string(), d));
    }
    for (name, model) in &models {
        for (t, label) in [(OutType::BF16, "bf16"), (OutType::Q8_0, "q8_0")] {
            let out = dir.join(format!("{name}.{label}.gguf"));
            to_gguf(model, &out, t, true);
            let (code, out_text, err, r) = verify(model, &out, &dir, FAST);
            assert_eq!(code, 0, "{name} {label}: {err}\n{out_text}");
            assert_eq!(r["thresholds"]["for_type"], label, "{name}");
        }
    }
}

#[test]
fn swapped_qk_permutation_fails() {
    let dir = tmp("qk");
    // Every Q and K left in Hugging Face's order (the classic converter bug), f16.
    for (name, model) in [
        ("trained", trained()),
        ("gqa", {
            let d = dir.join("gqa");
            synth("gqa", &d);
            d
        }),
    ] {
        let out = dir.join(format!("{name}.noperm.f16.gguf"));
        to_gguf(&model, &out, OutType::F16, false);
        let (code, _, err, r) = verify(&model, &out, &dir, FAST);
        assert_metric_failure(code, &err, &r, &format!("{name} without Q/K permutation"));
        // The mean KL alone is far over f16's limit.
        assert!(
            r["overall"]["mean_kl"].as_f64().unwrap() > 1e-3,
            "{name}: {}",
            r["overall"]
        );
    }
    // One tensor: blk.1.attn_k of the dense fixture un-permuted, f32 (strict limits).
    let d = dir.join("dense");
    synth("dense", &d);
    let good = dir.join("dense.f32.gguf");
    to_gguf(&d, &good, OutType::F32, true);
    let bad = dir.join("dense.k1.f32.gguf");
    let g = GgufFile::open(&good).unwrap();
    let n_head_kv = g
        .get("llama.attention.head_count_kv")
        .and_then(|v| v.as_u64())
        .unwrap() as usize;
    rewrite(
        &good,
        &bad,
        |_| {},
        |t, bytes| {
            if t.name == "blk.1.attn_k.weight" {
                let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
                let rb = cols * 4;
                let src = bytes.clone();
                for r in 0..rows {
                    let s = gguf_row_of_hf_row(r, rows, n_head_kv);
                    bytes[r * rb..(r + 1) * rb].copy_from_slice(&src[s * rb..(s + 1) * rb]);
                }
            }
        },
    );
    let (code, _, err, r) = verify(&d, &bad, &dir, FAST);
    assert_metric_failure(code, &err, &r, "dense with blk.1.attn_k un-permuted");
    // The control: the untouched file passes.
    let (code, _, err, _) = verify(&d, &good, &dir, FAST);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn wrong_rms_eps_fails() {
    let dir = tmp("eps");
    let good = dir.join("trained.f32.gguf");
    to_gguf(&trained(), &good, OutType::F32, true);
    // 1e-6 instead of llm-jp's 1e-5: a plausible slip.
    let bad = dir.join("trained.eps.f32.gguf");
    rewrite(
        &good,
        &bad,
        |kv| {
            for (k, v) in kv.iter_mut() {
                if k == "llama.attention.layer_norm_rms_epsilon" {
                    *v = Value::F32(1e-6);
                }
            }
        },
        |_, _| {},
    );
    let (code, _, err, r) = verify(&trained(), &bad, &dir, FAST);
    assert_metric_failure(code, &err, &r, "rms eps 1e-6");
    assert!(failed_checks(&r).contains(&"metadata".to_string()));
    assert!(err.contains("rms_eps"), "{err}");
    // Only the metric checks: still fails without the metadata check's help.
    let metric_failed: Vec<String> = failed_checks(&r)
        .into_iter()
        .filter(|c| c != "metadata")
        .collect();
    assert!(!metric_failed.is_empty());
}

#[test]
fn scrambled_expert_order_fails() {
    let dir = tmp("experts");
    let d = dir.join("moe");
    synth("moe", &d);
    let good = dir.join("moe.f16.gguf");
    to_gguf(&d, &good, OutType::F16, true);
    // Experts 0 and 1 swapped in every layer's gate/up/down (consistently), router untouched:
    // each expert is intact, but the router sends tokens to the wrong one.
    let bad = dir.join("moe.swapped.f16.gguf");
    rewrite(
        &good,
        &bad,
        |_| {},
        |t, bytes| {
            if t.name.contains("_exps.") {
                let n_exp = t.dims[2] as usize;
                let per = bytes.len() / n_exp;
                let (a, b) = bytes.split_at_mut(per);
                a.swap_with_slice(&mut b[..per]);
            }
        },
    );
    let (code, _, err, r) = verify(&d, &bad, &dir, FAST);
    assert_metric_failure(code, &err, &r, "MoE with experts 0 and 1 swapped");
}

#[test]
fn nan_weights_in_the_candidate_fail_every_metric() {
    let dir = tmp("nan");
    let good = dir.join("trained.f32.gguf");
    to_gguf(&trained(), &good, OutType::F32, true);
    // A GGUF from elsewhere may hold NaN (ours refuses to write one): one NaN in a layer-0
    // weight poisons every logit after the token that reads it.
    let bad = dir.join("trained.nan.f32.gguf");
    rewrite(
        &good,
        &bad,
        |_| {},
        |t, bytes| {
            if t.name == "blk.0.attn_v.weight" {
                bytes[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
        },
    );
    let (code, _, err, r) = verify(&trained(), &bad, &dir, FAST);
    assert_metric_failure(code, &err, &r, "NaN weight");
    // NaN must not vanish into a max() or a clamp: it reads as an infinite error.
    let o = &r["overall"];
    assert!(
        o["max_abs_error"].is_null()
            || o["max_abs_error"].as_f64().is_some_and(|v| v.is_infinite()),
        "{o}"
    );
    assert!(failed_checks(&r).contains(&"mean_kl".to_string()));
}

#[test]
fn mismatched_models_are_refused_before_compute() {
    let dir = tmp("mismatch");
    let (dense, gqa, moe) = (dir.join("dense"), dir.join("gqa"), dir.join("moe"));
    synth("dense", &dense);
    synth("gqa", &gqa);
    synth("moe", &moe);
    let gqa_gguf = dir.join("gqa.gguf");
    to_gguf(&gqa, &gqa_gguf, OutType::F16, true);
    let moe_gguf = dir.join("moe.gguf");
    to_gguf(&moe, &moe_gguf, OutType::F16, true);
    for (reference, candidate, want) in [
        (&dense, &gqa_gguf, "key/value heads"),
        (&dense, &moe_gguf, "experts"),
        (&moe, &gqa_gguf, "architecture"),
    ] {
        let json = dir.join("r.json");
        let o = run([
            "-q",
            "verify",
            &reference.display().to_string(),
            &candidate.display().to_string(),
            "--json",
            &json.display().to_string(),
            "--force",
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("not the reference's model") && err.contains(want),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        // Nothing ran, so nothing was written.
        assert!(stdout(&o).is_empty() && !json.exists());
    }
    // A vocabulary mismatch: the GGUF's vocab_size edited.
    let good = dir.join("dense.gguf");
    to_gguf(&dense, &good, OutType::F16, true);
    let bad = dir.join("dense.vocab.gguf");
    rewrite(
        &good,
        &bad,
        |kv| {
            for (k, v) in kv.iter_mut() {
                if k == "llama.vocab_size" {
                    *v = Value::U32(32000);
                }
            }
        },
        |_, _| {},
    );
    let o = run([
        "-q",
        "verify",
        &dense.display().to_string(),
        &bad.display().to_string(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("vocabulary size 32000 (reference 99584)"),
        "{err}"
    );
}

#[test]
fn report_is_complete_and_archivable() {
    let dir = tmp("report");
    let model = trained();
    let out = dir.join("trained.q8_0.gguf");
    to_gguf(&model, &out, OutType::Q8_0, true);
    let prompts = dir.join("prompts.txt");
    std::fs::write(
        &prompts,
        "吾輩は猫である。\nchat:富士山について説明してください。\n",
    )
    .unwrap();
    let corpus = dir.join("corpus.txt");
    let lines: Vec<String> = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus/ja-jnli-2000.txt"),
    )
    .unwrap()
    .lines()
    .take(40)
    .map(str::to_string)
    .collect();
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let (code, text, err, r) = verify(
        &model,
        &out,
        &dir,
        &[
            "--prompts",
            &prompts.display().to_string(),
            "--corpus",
            &corpus.display().to_string(),
            "-n",
            "8",
            "--parity-cost-lines",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}\n{text}");
    assert_eq!(r["tool"]["name"], "llmjp-convert");
    assert_eq!(r["tool"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["thresholds"]["for_type"], "q8_0");
    assert!(r["thresholds"]["mean_kl"].as_f64().is_some());
    // sha256 of every input file, as sha256sum would give it.
    let files = r["candidate"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(
        files[0]["sha256"].as_str().unwrap(),
        llmjp_convert::output::sha256_file(&out).unwrap()
    );
    let ref_files: Vec<&str> = r["reference"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        ref_files.iter().any(|p| p.ends_with("model.safetensors")),
        "{ref_files:?}"
    );
    assert!(
        ref_files.iter().any(|p| p.ends_with("tokenizer.json")),
        "{ref_files:?}"
    );
    // The two prompts of the file, the second chat-templated (so it starts with the template's
    // system text after <s>).
    let ps = r["prompts"].as_array().unwrap();
    assert_eq!(ps.len(), 2);
    assert_eq!(
        (ps[0]["chat"].as_bool(), ps[1]["chat"].as_bool()),
        (Some(false), Some(true))
    );
    assert!(ps[1]["tokens"].as_u64().unwrap() > ps[0]["tokens"].as_u64().unwrap() + 10);
    for p in ps {
        for k in [
            "max_abs_error",
            "mean_abs_error",
            "mean_kl",
            "max_kl",
            "top1_agreement",
            "greedy_agreement",
        ] {
            assert!(p[k].as_f64().is_some(), "{k} missing in {p}");
        }
    }
    // q8_0 is lossy: the errors are there, and small.
    let kl = r["overall"]["mean_kl"].as_f64().unwrap();
    assert!(kl > 0.0 && kl < 5e-3, "{kl}");
    // Tokenizer section over the given corpus, with the cost measured on 3 differing lines.
    let t = &r["tokenizer"];
    assert_eq!(t["lines"], 40);
    assert!(t["lines_differ"].as_u64().unwrap() > 0);
    assert_eq!(t["embedded_hf_identical"], true);
    assert_eq!(t["cost"]["lines"], 3);
    assert!(t["examples"].as_array().unwrap().len() <= 5);
    // An existing report is not overwritten without --force.
    let json = dir.join("trained.q8_0.gguf.report.json");
    let o = run([
        "-q",
        "verify",
        &model.display().to_string(),
        &out.display().to_string(),
        "--json",
        &json.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("exists"), "{}", stderr(&o));
}

#[test]
fn thresholds_can_be_overridden() {
    let dir = tmp("override");
    let model = trained();
    let out = dir.join("trained.q8_0.gguf");
    to_gguf(&model, &out, OutType::Q8_0, true);
    // Holding a q8_0 file to f32's limits fails it.
    let (code, _, err, r) = verify(
        &model,
        &out,
        &dir,
        &[FAST, &["--thresholds-for", "f32"]].concat(),
    );
    assert_metric_failure(code, &err, &r, "q8_0 held to f32 limits");
    let (code, _, err, _) = verify(
        &model,
        &out,
        &dir,
        &[FAST, &["--threshold", "mean_kl=1e-12"]].concat(),
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("mean_kl"), "{err}");
    let o = run(["verify", "a", "b", "--threshold", "bogus=1"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn generate_matches_transformers_greedy() {
    let r: J = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference/llmjp-jglue-tiny.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let dir = tmp("generate");
    let gguf = dir.join("trained.f32.gguf");
    to_gguf(&trained(), &gguf, OutType::F32, true);
    for p in r["prompts"].as_array().unwrap() {
        // Stop-at-eos greedy, as transformers' generate with eos_token_id.
        let want: Vec<u64> = p["greedy_eos"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .filter(|&id| id != 2)
            .collect();
        let text = if p["chat"] == J::Bool(true) {
            "自然言語処理とは何か".to_string()
        } else {
            p["text"].as_str().unwrap().to_string()
        };
        for model in [trained(), gguf.clone()] {
            let mut args = vec![
                "generate".to_string(),
                model.display().to_string(),
                "-p".into(),
                text.clone(),
                "-n".into(),
                "16".into(),
                "--ids".into(),
            ];
            if p["chat"] == J::Bool(true) {
                args.push("--chat".into());
            }
            let o = run(&args);
            let err = stderr(&o);
            assert!(o.status.success(), "{err}");
            let ids_line = |prefix: &str| -> Vec<u64> {
                let l = err
                    .lines()
                    .find(|l| l.starts_with(prefix))
                    .unwrap_or_else(|| panic!("no {prefix} in {err}"));
                let inner = &l[l.find('[').unwrap() + 1..l.rfind(']').unwrap()];
                inner
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse().unwrap())
                    .collect()
            };
            let prompt_ids: Vec<u64> = p["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(
                ids_line("prompt ids"),
                prompt_ids,
                "{}: {text}",
                model.display()
            );
            assert_eq!(
                ids_line("generated ids"),
                want,
                "{}: {text}",
                model.display()
            );
            // The printed text is the decoded continuation.
            let shown = stdout(&o);
            let want_text = p["greedy_eos_text"].as_str().unwrap().replace("</s>", "");
            assert_eq!(shown.trim_end_matches('\n'), want_text, "{text}");
        }
    }
    let _ = BIN;
}

/// Quantizes `model` with `mix` (straight from the checkpoint, as llama-quantize would from
/// its GGUF) into `dir/NAME.MIX.gguf`.
fn quantize_to(model: &Path, name: &str, mix: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{name}.{mix}.gguf"));
    let o = run([
        "-q",
        "quantize",
        &model.display().to_string(),
        "-o",
        &out.display().to_string(),
        "--type",
        mix,
        "--force",
    ]);
    assert!(o.status.success(), "quantize {name} {mix}: {}", stderr(&o));
    out
}

const MIXES: &[(&str, &str)] = &[
    ("Q8_0", "q8_0"),
    ("Q6_K", "q6_k"),
    ("Q5_K_M", "q5_k"),
    ("Q5_0", "q5_0"),
    ("Q4_K_M", "q4_k"),
    ("Q4_0", "q4_0"),
    ("Q3_K_M", "q3_k"),
    ("Q2_K", "q2_k"),
];

/// Every mix of the 256-wide fixtures (whose rows take the K-quants' blocks), read by the
/// forward pass block by block, passes its type's limits; so do the trained model's
/// (128 wide: its K-quant mixes fall back to Q5_0 / Q5_1 / Q8_0 rows, as llama-quantize's do).
#[test]
fn quantized_fixtures_pass_their_types_limits() {
    let dir = tmp("quantized");
    let mut models = vec![("trained".to_string(), trained())];
    for p in ["wide", "wide-moe"] {
        let d = dir.join(p);
        synth(p, &d);
        models.push((p.to_string(), d));
    }
    let mut table = String::new();
    let mut failures = Vec::new();
    for (name, model) in &models {
        for &(mix, dominant) in MIXES {
            // The trained model's K-quant mixes all fall back to the same few row types.
            if name == "trained" && !["Q8_0", "Q5_K_M", "Q4_0"].contains(&mix) {
                continue;
            }
            let q = quantize_to(model, name, mix, &dir);
            let (code, out_text, err, r) = verify(model, &q, &dir, FAST);
            let o = &r["overall"];
            table += &format!(
                "{name} {mix} {} mean_kl {:.3e} top1 {:.3}\n",
                r["thresholds"]["for_type"],
                o["mean_kl"].as_f64().unwrap_or(f64::NAN),
                o["top1_agreement"].as_f64().unwrap_or(f64::NAN)
            );
            if code != 0 {
                failures.push(format!("{name} {mix}: {err}\n{out_text}"));
            }
            if name != "trained" {
                assert_eq!(r["thresholds"]["for_type"], dominant, "{name} {mix}");
            }
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A K-quant decoder bug shows: the Q4_K blocks of a Q4_K_M file with their 4-bit halves
/// swapped (low and high nibbles, a classic unpacking mistake), and its Q6_K tensors with the
/// high bits (qh) cleared, each fail with a logit metric named, while the file itself passes.
#[test]
fn damaged_k_quant_blocks_fail() {
    use llmjp_convert::gguf::GgmlType;
    let dir = tmp("damaged-kquant");
    let model = dir.join("wide");
    synth("wide", &model);
    let good = quantize_to(&model, "wide", "Q4_K_M", &dir);
    let (code, _, err, _) = verify(&model, &good, &dir, FAST);
    assert_eq!(code, 0, "the undamaged file passes: {err}");

    let swapped = dir.join("nibbles-swapped.gguf");
    rewrite(
        &good,
        &swapped,
        |_| {},
        |t, bytes| {
            if t.ty == GgmlType::Q4K {
                // Block: d, dmin (f16 each), 12 scale bytes, then 128 bytes of packed 4-bit values.
                for block in bytes.chunks_exact_mut(144) {
                    for b in &mut block[16..] {
                        *b = b.rotate_left(4);
                    }
                }
            }
        },
    );
    let (code, _, err, r) = verify(&model, &swapped, &dir, FAST);
    assert_metric_failure(code, &err, &r, "Q4_K nibbles swapped");
    let o = &r["overall"];
    eprintln!("nibbles swapped: {o}");

    let no_high_bits = dir.join("q6k-qh-cleared.gguf");
    rewrite(
        &good,
        &no_high_bits,
        |_| {},
        |t, bytes| {
            if t.ty == GgmlType::Q6K {
                // Block: 128 bytes of low 4 bits, 64 of high 2 bits, 16 scales, d.
                for block in bytes.chunks_exact_mut(210) {
                    block[128..192].fill(0);
                }
            }
        },
    );
    let (code, _, err, r) = verify(&model, &no_high_bits, &dir, FAST);
    assert_metric_failure(code, &err, &r, "Q6_K high bits cleared");
    eprintln!("qh cleared: {}", r["overall"]);
}

//! Bad input to `to-gguf`, through the real binary: every case must exit with status 1 (not
//! 101, a panic) and exactly one `error: ` line on stderr naming the problem, leave no output
//! (nor checksum, nor `.partial` temporary) behind, and leave the input byte for byte as it was.
//!
//! Each corruption is made with a helper that the positive controls also run without the
//! corruption (an identity rewrite, a finite value written back), so a case fails because of
//! its corruption and not because of the helper.

mod common;

use common::{dir_digest, list, run, stderr, stdout, synth, tmp};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

const SHARD1: &str = "model-00001-of-00003.safetensors";
const SHARD2: &str = "model-00002-of-00003.safetensors";
const SHARD3: &str = "model-00003-of-00003.safetensors";

/// One test's model directory and output location, in a fresh directory.
struct Case {
    model: PathBuf,
    out_dir: PathBuf,
    out: PathBuf,
    /// The test's directory (~31 MB), held only so that it is removed when the case drops
    /// (see `common::tmp`).
    _owned_root: Option<common::Scratch>,
}

impl Case {
    /// `tmp(name)/model` holds the synth preset; the output goes to `tmp(name)/out/model.gguf`.
    fn new(name: &str, preset: &str) -> Self {
        let root = tmp(name);
        let model = root.join("model");
        synth(preset, &model);
        let out_dir = root.join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("model.gguf");
        Case {
            model,
            out_dir,
            out,
            _owned_root: Some(root),
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.model.join(name)
    }

    /// The same model, converted to `out`; `out_dir` is the directory checked for leftovers.
    fn with_output(&self, out_dir: &Path, out: PathBuf) -> Case {
        Case {
            model: self.model.clone(),
            out_dir: out_dir.to_path_buf(),
            out,
            _owned_root: None,
        }
    }

    /// Runs `to-gguf MODEL -o OUT EXTRA...`.
    fn convert(&self, extra: &[&str]) -> std::process::Output {
        let mut args: Vec<&std::ffi::OsStr> =
            vec!["to-gguf".as_ref(), self.model.as_os_str(), "-o".as_ref()];
        args.push(self.out.as_os_str());
        args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
        run(args)
    }

    /// Converts and checks a clean failure: status 1, empty stdout, one `error: ` line on stderr
    /// containing every phrase in `phrases`, no output, checksum or temporary, and the input
    /// unchanged. Returns the error line.
    fn fails(&self, phrases: &[&str]) -> String {
        self.fails_with(&[], phrases)
    }

    fn fails_with(&self, extra: &[&str], phrases: &[&str]) -> String {
        let before = dir_digest(&self.model);
        let out_before = list(&self.out_dir);
        let o = self.convert(extra);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(1),
            "want exit status 1 (101 is a panic); stderr:\n{err}"
        );
        assert!(
            stdout(&o).is_empty(),
            "stdout should be empty on failure: {}",
            stdout(&o)
        );
        let line = err
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("stderr does not end in a newline: {err:?}"));
        assert!(!line.contains('\n'), "stderr is not one line:\n{err}");
        assert!(
            line.starts_with("error: "),
            "stderr does not start with `error: `: {line}"
        );
        for p in phrases {
            assert!(
                line.contains(p),
                "error line does not mention {p:?}: {line}"
            );
        }
        assert_eq!(
            list(&self.out_dir),
            out_before,
            "the output directory changed: {line}"
        );
        assert!(
            !list(&self.out_dir).iter().any(|n| n.contains(".partial")),
            "a temporary was left behind"
        );
        assert_eq!(dir_digest(&self.model), before, "the input changed");
        eprintln!("{} -> {line}", self.model.parent().unwrap().display());
        line.to_string()
    }

    /// Converts and checks success: status 0, the GGUF and its checksum written, no temporary
    /// left, the input unchanged.
    fn succeeds(&self, extra: &[&str]) {
        let before = dir_digest(&self.model);
        let o = self.convert(extra);
        assert!(o.status.success(), "conversion failed: {}", stderr(&o));
        assert!(stderr(&o).is_empty(), "unexpected stderr: {}", stderr(&o));
        let bytes = std::fs::read(&self.out).expect("output written");
        assert_eq!(&bytes[..4], b"GGUF");
        let side = std::fs::read_to_string(self.out.with_extension("gguf.sha256"))
            .expect("checksum written");
        assert!(side.ends_with("  model.gguf\n"), "{side}");
        assert!(
            !list(&self.out_dir).iter().any(|n| n.contains(".partial")),
            "a temporary was left behind"
        );
        assert_eq!(dir_digest(&self.model), before, "the input changed");
    }
}

// ---- corruption helpers ----

/// Rewrites a safetensors file's JSON header with `f`, keeping the data section as it is. The
/// 8-byte length field is recomputed (the JSON is padded with spaces to a multiple of 8, as
/// the writer does); data offsets are relative to the data section, so they stay valid.
fn rewrite_header(path: &Path, f: impl FnOnce(&mut Map<String, Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    f(header.as_object_mut().unwrap());
    let mut j = serde_json::to_vec(&header).unwrap();
    while !j.len().is_multiple_of(8) {
        j.push(b' ');
    }
    let mut out = (j.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&j);
    out.extend_from_slice(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

/// A tensor's header entry, for reading.
fn header_entry(path: &Path, name: &str) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .get(name)
        .unwrap_or_else(|| panic!("{name} not in {}", path.display()))
        .clone()
}

/// `[start, end]` of a tensor's data_offsets.
fn offsets(entry: &Value) -> (u64, u64) {
    let o = entry["data_offsets"].as_array().unwrap();
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

/// Overwrites the `elem`th 16-bit element of tensor `name` with `bits` (little-endian).
fn poke_u16(path: &Path, name: &str, elem: usize, bits: u16) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let (s, e) = offsets(&header_entry(path, name));
    let at = 8 + n + s as usize + 2 * elem;
    assert!(
        at + 2 <= 8 + n + e as usize,
        "element {elem} is outside {name}"
    );
    bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Edits a JSON file (config.json, the index) in place.
fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut j: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut j);
    std::fs::write(path, serde_json::to_string_pretty(&j).unwrap()).unwrap();
}

/// Cuts a file down to `len` bytes.
fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    assert!(
        len < f.metadata().unwrap().len(),
        "{} is not longer than {len}",
        path.display()
    );
    f.set_len(len).unwrap();
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

// ---- positive controls: the same helpers, without the corruption ----

#[test]
fn control_dense_converts() {
    let c = Case::new("control_dense", "dense");
    let st = c.file("model.safetensors");
    let entry = header_entry(&st, "model.layers.1.mlp.down_proj.weight");
    rewrite_header(&st, |_| {});
    rewrite_header(&st, |h| {
        // Re-insert an entry unchanged, as the corrupting rewrites do with changed ones.
        h.insert("model.layers.1.mlp.down_proj.weight".into(), entry.clone());
    });
    poke_u16(&st, "model.layers.1.mlp.down_proj.weight", 100, 0x3F80); // bf16 1.0
    edit_json(&c.file("config.json"), |_| {});
    c.succeeds(&[]);
}

#[test]
fn control_sharded_converts() {
    let c = Case::new("control_sharded", "sharded");
    rewrite_header(&c.file(SHARD2), |_| {});
    edit_json(&c.file("model.safetensors.index.json"), |_| {});
    c.succeeds(&[]);
}

// ---- 1. a shard missing ----

#[test]
fn missing_shard() {
    let c = Case::new("missing_shard", "sharded");
    std::fs::remove_file(c.file(SHARD2)).unwrap();
    c.fails(&[SHARD2, "missing", "model.safetensors.index.json"]);
}

// ---- 2. truncated shards ----

#[test]
fn truncated_shard_data() {
    let c = Case::new("truncated_shard_data", "sharded");
    let p = c.file(SHARD2);
    truncate(&p, file_len(&p) - 4096);
    c.fails(&[SHARD2, "past the end", "truncated"]);
}

#[test]
fn truncated_shard_inside_header() {
    let c = Case::new("truncated_shard_header", "sharded");
    let p = c.file(SHARD2);
    let n = u64::from_le_bytes(std::fs::read(&p).unwrap()[..8].try_into().unwrap());
    truncate(&p, 8 + n / 2);
    c.fails(&[SHARD2, "header length", "truncated"]);
}

#[test]
fn truncated_shard_inside_length_field() {
    let c = Case::new("truncated_shard_length", "sharded");
    truncate(&c.file(SHARD3), 5);
    c.fails(&[SHARD3, "too short for a header"]);
}

#[test]
fn empty_shard() {
    let c = Case::new("empty_shard", "sharded");
    truncate(&c.file(SHARD1), 0);
    c.fails(&[SHARD1, "0 bytes", "too short"]);
}

#[test]
fn header_not_json() {
    let c = Case::new("header_not_json", "dense");
    let p = c.file("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8] = b'#';
    std::fs::write(&p, bytes).unwrap();
    c.fails(&["model.safetensors", "not valid JSON"]);
}

// ---- 3. overlapping data_offsets ----

#[test]
fn overlapping_offsets_identical() {
    let c = Case::new("overlap_identical", "dense");
    let st = c.file("model.safetensors");
    let a = header_entry(&st, "model.layers.0.input_layernorm.weight");
    rewrite_header(&st, |h| {
        h.insert(
            "model.layers.0.post_attention_layernorm.weight".into(),
            a.clone(),
        );
    });
    c.fails(&[
        "model.safetensors",
        "overlap",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.post_attention_layernorm.weight",
    ]);
}

#[test]
fn overlapping_offsets_partial() {
    let c = Case::new("overlap_partial", "dense");
    let st = c.file("model.safetensors");
    // Slide a tensor 64 bytes into its neighbour; the span (and so the size check) stays right.
    let e = header_entry(&st, "model.layers.0.mlp.up_proj.weight");
    let (s, end) = offsets(&e);
    let neighbour_end = offsets(&header_entry(&st, "model.layers.0.mlp.gate_proj.weight")).1;
    assert_eq!(
        neighbour_end, s,
        "fixture layout changed: gate_proj should precede up_proj"
    );
    rewrite_header(&st, |h| {
        h["model.layers.0.mlp.up_proj.weight"]["data_offsets"] = json!([s - 64, end - 64]);
    });
    c.fails(&[
        "model.safetensors",
        "overlap",
        "model.layers.0.mlp.up_proj.weight",
    ]);
}

// ---- 4. offsets past the end of the file ----

#[test]
fn offsets_past_end() {
    let c = Case::new("offsets_past_end", "dense");
    let st = c.file("model.safetensors");
    let n = u64::from_le_bytes(std::fs::read(&st).unwrap()[..8].try_into().unwrap());
    let data_len = file_len(&st) - 8 - n;
    rewrite_header(&st, |h| {
        h["model.norm.weight"]["data_offsets"] = json!([data_len - 64, data_len + 64]);
    });
    c.fails(&["model.safetensors", "model.norm.weight", "past the end"]);
}

#[test]
fn reversed_offsets() {
    let c = Case::new("reversed_offsets", "dense");
    let st = c.file("model.safetensors");
    let (s, e) = offsets(&header_entry(&st, "model.norm.weight"));
    rewrite_header(&st, |h| {
        h["model.norm.weight"]["data_offsets"] = json!([e, s]);
    });
    c.fails(&["model.safetensors", "model.norm.weight", "reversed"]);
}

// ---- 5. a header that lies about a shape ----

#[test]
fn shape_disagrees_with_offsets() {
    let c = Case::new("shape_lie", "dense");
    let st = c.file("model.safetensors");
    rewrite_header(&st, |h| {
        h["model.norm.weight"]["shape"] = json!([65]);
    });
    c.fails(&[
        "model.safetensors",
        "model.norm.weight",
        "[65]",
        "needs 130",
    ]);
}

#[test]
fn shape_transposed() {
    // Same byte count, so the header is self-consistent; config.json catches it.
    let c = Case::new("shape_transposed", "dense");
    let st = c.file("model.safetensors");
    rewrite_header(&st, |h| {
        h["model.layers.1.mlp.gate_proj.weight"]["shape"] = json!([64, 128]);
    });
    c.fails(&[
        "model.layers.1.mlp.gate_proj.weight",
        "[64, 128]",
        "config.json",
        "[128, 64]",
    ]);
}

#[test]
fn huge_shape_overflows() {
    let c = Case::new("huge_shape", "dense");
    let st = c.file("model.safetensors");
    rewrite_header(&st, |h| {
        h["model.norm.weight"]["shape"] = json!([u64::MAX / 2, 4]);
    });
    c.fails(&["model.safetensors", "model.norm.weight", "overflow"]);
}

// ---- 6. the index names a tensor its shard does not hold ----

#[test]
fn index_names_absent_tensor() {
    let c = Case::new("index_absent_tensor", "sharded");
    edit_json(&c.file("model.safetensors.index.json"), |j| {
        j["weight_map"]["model.layers.0.self_attn.extra.weight"] = json!(SHARD2);
    });
    c.fails(&[
        "model.safetensors.index.json",
        "model.layers.0.self_attn.extra.weight",
        SHARD2,
        "does not contain",
    ]);
}

#[test]
fn index_puts_tensor_in_wrong_shard() {
    let c = Case::new("index_wrong_shard", "sharded");
    edit_json(&c.file("model.safetensors.index.json"), |j| {
        j["weight_map"]["model.norm.weight"] = json!(SHARD1);
    });
    c.fails(&[
        "model.safetensors.index.json",
        "model.norm.weight",
        SHARD1,
        SHARD2,
    ]);
}

#[test]
fn tensor_in_two_shards() {
    let c = Case::new("tensor_in_two_shards", "sharded");
    // Shard 3 (lm_head alone) now declares model.norm.weight instead, which shard 2 also has.
    rewrite_header(&c.file(SHARD3), |h| {
        let mut e = h
            .remove("lm_head.weight")
            .expect("fixture has lm_head in shard 3");
        e["shape"] = json!([64]);
        e["data_offsets"] = json!([0, 128]);
        h.insert("model.norm.weight".into(), e);
    });
    c.fails(&["model.norm.weight", "in both", SHARD2, SHARD3]);
}

#[test]
fn index_shard_name_escapes_directory() {
    let c = Case::new("index_escape", "sharded");
    edit_json(&c.file("model.safetensors.index.json"), |j| {
        j["weight_map"]["model.norm.weight"] = json!("../model-00002-of-00003.safetensors");
    });
    c.fails(&["model.safetensors.index.json", "not a plain file name"]);
}

#[test]
fn index_not_json() {
    let c = Case::new("index_not_json", "sharded");
    std::fs::write(c.file("model.safetensors.index.json"), "{\"weight_map\": {").unwrap();
    c.fails(&["model.safetensors.index.json", "invalid JSON"]);
}

// ---- 7. unknown architecture ----

#[test]
fn unknown_architecture() {
    let c = Case::new("unknown_arch", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["architectures"] = json!(["GPT2LMHeadModel"]);
    });
    c.fails(&["config.json", "unknown architecture", "GPT2LMHeadModel"]);
}

#[test]
fn config_not_json() {
    let c = Case::new("config_not_json", "dense");
    std::fs::write(c.file("config.json"), "{\"architectures\": [").unwrap();
    c.fails(&["config.json", "invalid JSON"]);
}

#[test]
fn config_missing() {
    let c = Case::new("config_missing", "dense");
    std::fs::remove_file(c.file("config.json")).unwrap();
    c.fails(&["config.json", "cannot read"]);
}

#[test]
fn config_field_wrong_type() {
    let c = Case::new("config_wrong_type", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["hidden_size"] = json!("64");
    });
    c.fails(&["config.json", "hidden_size", "not a positive integer"]);
}

// ---- 8. config shapes that disagree with the tensors ----

#[test]
fn config_intermediate_size_disagrees() {
    let c = Case::new("cfg_ffn", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["intermediate_size"] = json!(256);
    });
    c.fails(&[
        "mlp.gate_proj.weight",
        "[128, 64]",
        "config.json",
        "[256, 64]",
    ]);
}

#[test]
fn config_vocab_size_disagrees() {
    let c = Case::new("cfg_vocab", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["vocab_size"] = json!(99585);
    });
    c.fails(&["vocab_size", "99585", "model.embed_tokens.weight", "99584"]);
}

#[test]
fn config_vocab_size_message_is_plain() {
    let c = Case::new("cfg_vocab_plain", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["vocab_size"] = json!(99585);
    });
    let line = c.fails(&["vocab_size", "99585", "model.embed_tokens.weight", "99584"]);
    assert!(
        !line.contains("Some("),
        "Rust Option debug output in a user message: {line}"
    );
}

#[test]
fn config_kv_heads_disagree() {
    let c = Case::new("cfg_kv_heads", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["num_key_value_heads"] = json!(2);
    });
    c.fails(&[
        "self_attn.k_proj.weight",
        "[64, 64]",
        "config.json",
        "[32, 64]",
    ]);
}

#[test]
fn config_kv_heads_not_a_divisor() {
    let c = Case::new("cfg_kv_heads_divisor", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["num_key_value_heads"] = json!(3);
    });
    c.fails(&["config.json", "num_key_value_heads 3"]);
}

#[test]
fn config_fewer_layers_leaves_tensors_over() {
    let c = Case::new("cfg_fewer_layers", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["num_hidden_layers"] = json!(1);
    });
    c.fails(&["unexpected tensor", "model.layers.1.", "config.json"]);
}

// ---- 9. a missing tensor ----

#[test]
fn config_more_layers_than_tensors() {
    let c = Case::new("cfg_more_layers", "dense");
    edit_json(&c.file("config.json"), |j| {
        j["num_hidden_layers"] = json!(3);
    });
    c.fails(&["missing tensor", "model.layers.2."]);
}

#[test]
fn tensor_removed_from_shard_and_index() {
    let c = Case::new("tensor_removed", "sharded");
    let name = "model.layers.1.mlp.up_proj.weight";
    rewrite_header(&c.file(SHARD2), |h| {
        h.remove(name).expect("fixture has the tensor in shard 2");
    });
    edit_json(&c.file("model.safetensors.index.json"), |j| {
        j["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove(name)
            .expect("in the index");
    });
    c.fails(&["missing tensor", name]);
}

#[test]
fn lm_head_missing_untied() {
    let c = Case::new("lm_head_missing", "sharded");
    std::fs::remove_file(c.file(SHARD3)).unwrap();
    edit_json(&c.file("model.safetensors.index.json"), |j| {
        j["weight_map"]
            .as_object_mut()
            .unwrap()
            .remove("lm_head.weight")
            .expect("in the index");
    });
    c.fails(&["missing tensor lm_head.weight", "tied"]);
}

#[test]
fn no_weights_at_all() {
    let c = Case::new("no_weights", "dense");
    std::fs::remove_file(c.file("model.safetensors")).unwrap();
    c.fails(&["no model.safetensors"]);
}

// ---- 10. an existing output ----

#[test]
fn existing_output_needs_force() {
    let c = Case::new("existing_output", "dense");
    let precious = b"not a gguf, but someone's file".to_vec();
    std::fs::write(&c.out, &precious).unwrap();
    c.fails(&["model.gguf", "exists", "--force"]);
    assert_eq!(
        std::fs::read(&c.out).unwrap(),
        precious,
        "the existing output was changed"
    );
    c.succeeds(&["--force"]);
}

#[test]
fn output_is_a_directory() {
    let c = Case::new("output_is_dir", "dense");
    std::fs::create_dir(&c.out).unwrap();
    c.fails_with(&["--force"], &["model.gguf", "is a directory"]);
}

#[test]
fn output_is_an_input_file() {
    let c = Case::new("output_is_input", "dense");
    for name in ["model.safetensors", "config.json", "tokenizer.json"] {
        let c = c.with_output(&c.model, c.file(name));
        c.fails_with(&["--force"], &[name, "overwrite the input"]);
    }
}

#[test]
fn output_into_the_model_directory_is_allowed() {
    // Writing beside the checkpoint is common (llama.cpp's converter does it by default).
    let c = Case::new("output_in_model_dir", "dense");
    let c = c.with_output(&c.model, c.file("model.gguf"));
    let o = c.convert(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.convert(&["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// ---- 11. non-finite weights ----

#[test]
fn nan_weight() {
    let c = Case::new("nan_weight", "dense");
    // Element 300 of a [64, 128] tensor is row 2.
    poke_u16(
        &c.file("model.safetensors"),
        "model.layers.1.mlp.down_proj.weight",
        300,
        0x7FC0,
    );
    c.fails(&[
        "model.layers.1.mlp.down_proj.weight",
        "NaN",
        "row 2",
        "damaged",
    ]);
}

#[test]
fn infinite_weight_in_last_tensor() {
    // The last tensor: everything before it has already been written to the temporary.
    let c = Case::new("inf_weight", "dense");
    poke_u16(
        &c.file("model.safetensors"),
        "lm_head.weight",
        64 * 99583,
        0xFF80,
    ); // bf16 -inf, last row
    c.fails(&["lm_head.weight", "inf", "row 99583"]);
}

// ---- 12. an unsupported dtype ----

#[test]
fn unsupported_dtype_i8() {
    let c = Case::new("dtype_i8", "dense");
    let st = c.file("model.safetensors");
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (s, _) = offsets(&header_entry(&st, name));
    rewrite_header(&st, |h| {
        // Same shape, one byte per element (the rest of the old span becomes an unused gap).
        h[name]["dtype"] = json!("I8");
        h[name]["data_offsets"] = json!([s, s + 64 * 64]);
    });
    c.fails(&[name, "I8", "quantized"]);
}

#[test]
fn unknown_dtype_string() {
    let c = Case::new("dtype_unknown", "dense");
    let st = c.file("model.safetensors");
    rewrite_header(&st, |h| {
        h["model.norm.weight"]["dtype"] = json!("F8_E4M3");
    });
    c.fails(&[
        "model.safetensors",
        "model.norm.weight",
        "F8_E4M3",
        "not supported",
        "quantized",
    ]);
}

// ---- 13. output into a directory that does not exist ----

#[test]
fn output_directory_missing() {
    let c = Case::new("out_dir_missing", "dense");
    let root = c.out_dir.parent().unwrap().to_path_buf();
    let c = c.with_output(&root, root.join("nope").join("sub").join("model.gguf"));
    c.fails(&["nope/sub", "does not exist"]);
}

// ---- 14. disk full ----

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: "2m", "64k", bytes) on `dir`, or returns None
    /// (with a note) where mounting is not allowed.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let o = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            Ok(o) => {
                eprintln!(
                    "note: cannot mount a tmpfs ({}); disk-full case skipped",
                    stderr(&o).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("note: cannot run mount ({e}); disk-full case skipped");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Converts the dense fixture onto a fresh tmpfs of `size` and checks a clean failure whose
/// line contains `phrases`, or success if `phrases` is None. Returns false if no tmpfs could
/// be mounted.
fn convert_onto_tmpfs(c: &Case, name: &str, size: &str, phrases: Option<&[&str]>) -> bool {
    let mnt = c.out_dir.join(name);
    let Some(_fs) = Tmpfs::mount(&mnt, size) else {
        return false;
    };
    let c = c.with_output(&mnt, mnt.join("model.gguf"));
    match phrases {
        Some(p) => {
            let line = c.fails(p);
            eprintln!("{size} tmpfs -> {line}");
            assert!(
                list(&mnt).is_empty(),
                "left behind on a full disk: {:?}",
                list(&mnt)
            );
        }
        None => c.succeeds(&[]),
    }
    true
}

#[test]
fn disk_full() {
    let c = Case::new("disk_full", "dense");
    // Control: the same fixture onto a tmpfs big enough for it (the output is ~34 MB).
    if !convert_onto_tmpfs(&c, "big", "64m", None) {
        return;
    }
    // Full while writing tensors (the ~8.8 MB header is partly buffered).
    convert_onto_tmpfs(
        &c,
        "tensors",
        "2m",
        Some(&["model.gguf", "No space left on device"]),
    );
    // Full while writing the header itself.
    convert_onto_tmpfs(
        &c,
        "header",
        "64k",
        Some(&["model.gguf", "No space left on device"]),
    );
}

#[test]
fn disk_full_at_checksum() {
    let c = Case::new("disk_full_checksum", "dense");
    // Learn the output's size, then give the tmpfs exactly the pages the GGUF needs, so that
    // only the checksum file does not fit.
    let probe = c.out_dir.join("probe.gguf");
    let o = run([
        "to-gguf".as_ref(),
        c.model.as_os_str(),
        "-o".as_ref(),
        probe.as_os_str(),
        "--no-checksum".as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let size = file_len(&probe).div_ceil(4096) * 4096;
    std::fs::remove_file(&probe).unwrap();
    convert_onto_tmpfs(
        &c,
        "exact",
        &size.to_string(),
        Some(&["model.gguf.sha256", "No space left on device"]),
    );
}

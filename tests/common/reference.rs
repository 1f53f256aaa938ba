//! The transformers reference outputs in fixtures/reference (made by
//! scripts/make_reference.py): per model, the prompts' ids, last-position logits, and greedy
//! generations.

use std::path::Path;

/// The reference models: the bundled trained model and the synth presets (`synth-<preset>`).
pub const MODELS: &[&str] = &[
    "llmjp-jglue-tiny",
    "synth-dense",
    "synth-gqa",
    "synth-moe",
    "synth-sharded",
];

pub struct Prompt {
    pub ids: Vec<u32>,
    /// transformers' last-position logits (f32, CPU).
    pub logits: Vec<f32>,
    pub argmax: u32,
    /// Top-1 minus top-2 logit: how near a tie the argmax is.
    pub margin: f32,
    /// 16 greedy tokens, eos ignored.
    pub greedy: Vec<u32>,
    /// Greedy tokens up to and including eos.
    pub greedy_eos: Vec<u32>,
}

impl Prompt {
    /// The ids as llama.cpp's C API takes them.
    pub fn ids_i32(&self) -> Vec<i32> {
        self.ids.iter().map(|&i| i as i32).collect()
    }
}

/// Loads `fixtures/reference/<name>.json` and its logits file.
pub fn load(name: &str) -> Vec<Prompt> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/reference");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let raw = std::fs::read(dir.join(j["logits_file"].as_str().unwrap())).unwrap();
    let all: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let v = j["vocab_size"].as_u64().unwrap() as usize;
    let ids = |x: &serde_json::Value| -> Vec<u32> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect()
    };
    j["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let logits = all[i * v..(i + 1) * v].to_vec();
            let mut s = logits.clone();
            s.sort_by(|a, b| b.total_cmp(a));
            Prompt {
                ids: ids(&p["ids"]),
                argmax: p["argmax"].as_u64().unwrap() as u32,
                margin: s[0] - s[1],
                logits,
                greedy: ids(&p["greedy"]),
                greedy_eos: ids(&p["greedy_eos"]),
            }
        })
        .collect()
}

//! Rough speed of the reference forward pass (not a correctness test; ignored by default):
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo test --release --test forward_bench -- --ignored --nocapture
//! # plus a 1.8b-shaped model (`llmjp-convert synth 1.8b -o DIR`):
//! LLMJP_BENCH_MODEL=DIR RAYON_NUM_THREADS=2 cargo test --release --test forward_bench -- --ignored --nocapture
//! ```

use llmjp_convert::model::{Logits, Model, argmax};
use llmjp_convert::synth;
use std::path::{Path, PathBuf};
use std::time::Instant;

const PROMPT: usize = 128;
const NEW: usize = 32;

/// Prompt processing of PROMPT tokens, then NEW greedy single-token steps.
fn bench(label: &str, path: &Path) {
    let t = Instant::now();
    let mut m = Model::open(path).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    // Deterministic ids spread over the vocabulary.
    let ids: Vec<u32> = (0..PROMPT as u32)
        .map(|i| 1 + (i * 7919) % (m.config().vocab as u32 - 1))
        .collect();
    // Warm-up: fault in the memory-mapped weights and start the thread pool.
    m.forward(&ids[..8], Logits::Last).unwrap();
    for &id in &ids[8..16] {
        m.forward(&[id], Logits::Last).unwrap();
    }
    m.reset();
    let t = Instant::now();
    let mut logits = m.forward(&ids, Logits::Last).unwrap();
    let pp = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..NEW {
        logits = m.forward(&[argmax(&logits)], Logits::Last).unwrap();
    }
    let tg = t.elapsed().as_secs_f64();
    eprintln!(
        "{label:10} threads {}: open {open_s:.2} s; prompt {PROMPT} tok {pp:.3} s ({:.1} tok/s); \
         generate {NEW} tok {tg:.3} s ({:.2} tok/s)",
        rayon::current_num_threads(),
        PROMPT as f64 / pp,
        NEW as f64 / tg
    );
}

fn synth_dir(preset: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("forward-bench")
        .join(preset);
    synth::write_model(&synth::Spec::preset(preset).unwrap(), &dir, true).unwrap();
    dir
}

#[test]
#[ignore]
fn speed() {
    // The first model timed in a process runs several times slower on this machine, whatever
    // the model and however long its own warm-up; a throwaway pass keeps that out of the numbers.
    bench("(warm-up)", &synth_dir("dense"));
    for preset in ["dense", "moe"] {
        bench(preset, &synth_dir(preset));
    }
    if let Ok(dir) = std::env::var("LLMJP_BENCH_MODEL") {
        bench("model", Path::new(&dir));
    }
}

/// GFLOP/s of one ffn-sized bf16 matmul (7168 x 2048, as llm-jp-3-1.8b) over 1 and 128
/// positions.
#[test]
#[ignore]
fn matmul_speed() {
    use llmjp_convert::gguf::GgmlType;
    use llmjp_convert::model::{Mat, matmul};
    let (rows, cols) = (7168, 2048);
    let bytes: Vec<u8> = (0..rows * cols)
        .flat_map(|i| half::bf16::from_f32(((i % 97) as f32 - 48.0) / 480.0).to_le_bytes())
        .collect();
    let w = Mat::new(GgmlType::BF16, rows, cols, &bytes).unwrap();
    for n in [1, 128] {
        let x: Vec<f32> = (0..n * cols).map(|i| (i % 13) as f32 / 13.0).collect();
        matmul(&w, &x, n);
        let reps = if n == 1 { 50 } else { 5 };
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(matmul(&w, &x, n));
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        eprintln!(
            "matmul bf16 {rows}x{cols} x {n:3} positions: {:.2} ms, {:.1} GFLOP/s, {:.1} GB/s of weights",
            s * 1e3,
            2.0 * (rows * cols * n) as f64 / s / 1e9,
            (rows * cols * 2) as f64 / s / 1e9
        );
    }
}

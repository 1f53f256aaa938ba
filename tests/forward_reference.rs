//! Our reference forward pass (src/model) against transformers' outputs in fixtures/reference
//! (CPU float32 last-position logits and 16-token greedy generations), on the original
//! safetensors and on the GGUF files we write; with the feature `oracle`, also against
//! llama.cpp on the same GGUF.

mod common;

use llmjp_convert::convert::{self, OutType};
use llmjp_convert::model::{Logits, Model, argmax};
use llmjp_convert::synth;
use llmjp_convert::verify::metrics::kl_divergence;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What "matches transformers" means for f32 weights: the largest |logit difference| over
/// the whole vocabulary.
const F32_TOL: f32 = 1e-3;

/// Reference top-1 minus top-2 below this is a near-tie that a lossy file may swap (random
/// synth weights give margins down to 0.03); lossless files must match every argmax.
const NEAR_TIE: f32 = 0.1;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("forward");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Files made by this test process (so stale files from an older converter are never used).
static MADE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Runs `make(path)` once per process for `path`; tests run in parallel and share fixtures.
/// `make` must not call `once` (the lock is held while it runs).
fn once(path: PathBuf, make: impl FnOnce(&Path)) -> PathBuf {
    let mut g = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if g.get_or_insert_with(HashSet::new).insert(path.clone()) {
        make(&path);
    }
    path
}

/// The checkpoint directory of a reference model (synth presets generated on first use).
fn model_dir(name: &str) -> PathBuf {
    match name.strip_prefix("synth-") {
        Some(preset) => once(tmp().join(name), |dir| {
            synth::write_model(&synth::Spec::preset(preset).unwrap(), dir, true).unwrap()
        }),
        None => manifest().join("fixtures/models").join(name),
    }
}

fn gguf(name: &str, outtype: OutType) -> PathBuf {
    let out = tmp().join(format!("{name}.{outtype:?}.gguf"));
    // Outside `once`: its lock is not re-entrant.
    let dir = model_dir(name);
    once(out, |out| {
        let opts = convert::Options {
            outtype,
            force: true,
            checksum: false,
            hf_tokenizer_json: false,
            ..Default::default()
        };
        convert::to_gguf(&dir, out, &opts).unwrap();
    })
}

use common::reference::{self, MODELS, Prompt};

fn reference(name: &str) -> Vec<Prompt> {
    reference::load(name)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Last-position logits of every reference prompt.
fn all_logits(m: &mut Model, refs: &[Prompt]) -> Vec<Vec<f32>> {
    refs.iter()
        .map(|p| m.logits_last(&p.ids).unwrap())
        .collect()
}

/// Asserts the f32 contract on one model source: logits within F32_TOL, the same argmax and
/// the same greedy tokens as transformers. Returns (max abs error, our logits).
fn check_exact(label: &str, m: &mut Model, refs: &[Prompt]) -> (f32, Vec<Vec<f32>>) {
    let logits = all_logits(m, refs);
    let mut worst = 0f32;
    for (i, (p, got)) in refs.iter().zip(&logits).enumerate() {
        let d = max_abs(got, &p.logits);
        worst = worst.max(d);
        assert!(d < F32_TOL, "{label} prompt {i}: max |dlogit| {d}");
        assert_eq!(argmax(got), p.argmax, "{label} prompt {i}: argmax");
        let g = m.generate_greedy(&p.ids, p.greedy.len(), None).unwrap();
        assert_eq!(g, p.greedy, "{label} prompt {i}: greedy (eos ignored)");
        let eos = m.config().eos;
        let g = m.generate_greedy(&p.ids, p.greedy.len(), eos).unwrap();
        assert_eq!(g, p.greedy_eos, "{label} prompt {i}: greedy (stop at eos)");
    }
    (worst, logits)
}

#[test]
fn safetensors_match_transformers() {
    for name in MODELS {
        let refs = reference(name);
        let mut m = Model::open(&model_dir(name)).unwrap();
        let (worst, _) = check_exact(name, &mut m, &refs);
        eprintln!("safetensors {name:18} max |dlogit| {worst:.2e}, argmax 5/5, greedy 5/5");
    }
}

#[test]
fn f32_gguf_matches_transformers_and_the_checkpoint_bit_for_bit() {
    for name in MODELS {
        let refs = reference(name);
        let mut m = Model::open(&gguf(name, OutType::F32)).unwrap();
        let (worst, got) = check_exact(name, &mut m, &refs);
        // The GGUF holds the checkpoint's values widened exactly, and its Q/K rows are read
        // back in HF order, so the arithmetic is the same as on the safetensors.
        let mut ck = Model::open(&model_dir(name)).unwrap();
        assert_eq!(
            m.config(),
            ck.config(),
            "{name}: GGUF metadata vs config.json"
        );
        assert_eq!(
            got,
            all_logits(&mut ck, &refs),
            "{name}: f32 GGUF vs safetensors"
        );
        eprintln!("f32 GGUF    {name:18} max |dlogit| {worst:.2e}, identical to safetensors");
    }
}

#[test]
fn reduced_precision_ggufs_stay_close() {
    // (outtype, bound on the mean KL over prompts, on the max |dlogit|)
    let cases = [
        (OutType::F16, 1e-4, 0.05),
        (OutType::BF16, 2e-3, 0.25),
        (OutType::Q8_0, 5e-3, 0.35),
    ];
    for (outtype, kl_bound, abs_bound) in cases {
        for name in MODELS {
            let refs = reference(name);
            let mut m = Model::open(&gguf(name, outtype)).unwrap();
            let logits = all_logits(&mut m, &refs);
            let (mut worst, mut mean_kl, mut agree) = (0f32, 0f64, 0);
            for (i, (p, got)) in refs.iter().zip(&logits).enumerate() {
                worst = worst.max(max_abs(got, &p.logits));
                mean_kl += kl_divergence(&p.logits, got) / refs.len() as f64;
                let same = argmax(got) == p.argmax;
                agree += same as usize;
                assert!(
                    same || p.margin < NEAR_TIE,
                    "{name} {outtype:?} prompt {i}: argmax differs with margin {}",
                    p.margin
                );
            }
            eprintln!(
                "{outtype:?} GGUF {name:18} max |dlogit| {worst:.2e}, mean KL {mean_kl:.2e}, argmax {agree}/{}",
                refs.len()
            );
            assert!(mean_kl < kl_bound, "{name} {outtype:?}: mean KL {mean_kl}");
            assert!(
                worst < abs_bound,
                "{name} {outtype:?}: max |dlogit| {worst}"
            );
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for name in ["synth-moe", "synth-gqa"] {
        let refs = reference(name);
        let ids = &refs.last().unwrap().ids;
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut m = Model::open(&model_dir(name)).unwrap();
                let mut out = m.forward(ids, Logits::All).unwrap();
                out.extend(m.forward(&[5, 6], Logits::All).unwrap());
                out.extend(m.forward(&[7], Logits::Last).unwrap());
                out
            })
        };
        let one = run(1);
        assert_eq!(one, run(2), "{name}: 1 vs 2 threads");
        assert_eq!(one, run(3), "{name}: 1 vs 3 threads");
    }
}

#[test]
fn cached_decoding_matches_a_full_recompute() {
    // Logits of every position from one batch equal those from the prompt plus one-token steps
    // up to float rounding (the two paths use different matmul kernels).
    let name = "synth-gqa";
    let ids = &reference(name)[3].ids;
    let mut m = Model::open(&model_dir(name)).unwrap();
    let all = m.forward(ids, Logits::All).unwrap();
    let v = m.config().vocab;
    m.reset();
    let split = ids.len() / 2;
    let mut steps = m.forward(&ids[..split], Logits::All).unwrap();
    for &id in &ids[split..] {
        steps.extend(m.forward(&[id], Logits::Last).unwrap());
    }
    assert_eq!(m.n_past(), ids.len());
    for t in 0..ids.len() {
        let d = max_abs(&all[t * v..(t + 1) * v], &steps[t * v..(t + 1) * v]);
        assert!(d < 1e-4, "position {t}: {d}");
    }
}

#[test]
fn bad_ids_are_errors_and_leave_the_model_usable() {
    let mut m = Model::open(&model_dir("synth-dense")).unwrap();
    let v = m.config().vocab as u32;
    assert!(m.logits_last(&[1, v]).is_err());
    assert!(m.logits_last(&[]).is_err());
    assert_eq!(m.n_past(), 0);
    let refs = reference("synth-dense");
    let got = m.logits_last(&refs[0].ids).unwrap();
    assert!(max_abs(&got, &refs[0].logits) < F32_TOL);
}

#[cfg(feature = "oracle")]
#[test]
fn f32_gguf_matches_llama_cpp() {
    use llmjp_convert::oracle;
    for name in MODELS {
        let path = gguf(name, OutType::F32);
        let refs = reference(name);
        let ours = all_logits(&mut Model::open(&path).unwrap(), &refs);
        let mut lc = oracle::Model::load(&path).unwrap();
        let mut worst = 0f32;
        for (i, (p, ours)) in refs.iter().zip(&ours).enumerate() {
            let ids: Vec<i32> = p.ids.iter().map(|&i| i as i32).collect();
            let theirs = lc.last_logits(&ids).unwrap();
            let d = max_abs(ours, &theirs);
            worst = worst.max(d);
            assert!(d < F32_TOL, "{name} prompt {i}: ours vs llama.cpp {d}");
        }
        eprintln!("llama.cpp   {name:18} max |ours - llama.cpp| {worst:.2e}");
    }
}

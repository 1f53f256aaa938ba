//! Speed of the reference forward pass (not correctness tests; all ignored by default).
//!
//! ```sh
//! # Ours against llama.cpp on the same GGUFs, pp128 and gen32 (what bench/forward.sh runs):
//! LLMJP_BENCH_GGUF="A.gguf B.gguf" cargo test --release --features oracle --test forward_bench \
//!     -- --ignored --exact vs_llama_cpp --nocapture
//! # Ours alone on small synthetic models (and LLMJP_BENCH_MODEL=DIR_OR_GGUF, if set):
//! RAYON_NUM_THREADS=2 cargo test --release --test forward_bench speed -- --ignored --nocapture
//! # GFLOP/s of one matmul per weight type (LLMJP_BENCH_TYPES="bf16 f16 q8_0"):
//! RAYON_NUM_THREADS=2 cargo test --release --test forward_bench matmul_speed -- --ignored --nocapture
//! # For profiling: prompt_only / generate_only on LLMJP_BENCH_MODEL.
//! ```
//!
//! `LLMJP_NO_SIMD=1` makes the forward pass use its portable kernels instead of AVX2.

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

/// GFLOP/s of ffn-sized matmuls (7168 x 2048 and 2048 x 7168, as llm-jp-3-1.8b) over 1 and
/// 128 positions, for each weight type the forward pass reads.
#[test]
#[ignore]
fn matmul_speed() {
    use llmjp_convert::gguf::GgmlType;
    use llmjp_convert::model::{Mat, matmul};
    let types = std::env::var("LLMJP_BENCH_TYPES").unwrap_or("bf16 f16 q8_0".into());
    for (rows, cols) in [(7168, 2048), (2048, 7168)] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i % 97) as f32 - 48.0) / 480.0)
            .collect();
        for ty in types.split_whitespace() {
            let ty = match ty {
                "bf16" => GgmlType::BF16,
                "f16" => GgmlType::F16,
                "q8_0" => GgmlType::Q8_0,
                "f32" => GgmlType::F32,
                other => panic!("type {other}?"),
            };
            let mut bytes = Vec::new();
            llmjp_convert::quant::encode(&w, cols, ty, &mut bytes).unwrap();
            let m = Mat::new(ty, rows, cols, &bytes).unwrap();
            for n in [1, 128] {
                let x: Vec<f32> = (0..n * cols).map(|i| (i % 13) as f32 / 13.0).collect();
                matmul(&m, &x, n);
                let reps = if n == 1 { 50 } else { 5 };
                // The fastest repetition: the least disturbed by other load on the machine.
                let s = (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(matmul(&m, &x, n));
                        t.elapsed().as_secs_f64()
                    })
                    .fold(f64::INFINITY, f64::min);
                eprintln!(
                    "matmul {:5} {rows}x{cols} x {n:3} positions: {:7.2} ms, {:6.1} GFLOP/s, {:5.1} GB/s of weights",
                    ty.name(),
                    s * 1e3,
                    2.0 * (rows * cols * n) as f64 / s / 1e9,
                    bytes.len() as f64 / s / 1e9
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Ours against llama.cpp on the same GGUF, in one process (bench/forward.sh)
// ---------------------------------------------------------------------------

/// llama.cpp, driven directly through `llama-cpp-sys-2` so that a prompt and each generated
/// token are separate, timeable `llama_decode` calls. Settings are llama.cpp's defaults (as
/// `llama-cli` / `llama-bench` use them: mmap, flash attention "auto", f16 KV cache, weight
/// repacking) except the context (512), the batch (512, so 128 tokens are one batch) and the
/// threads ([`oracle::N_THREADS`] for both prompt and generation).
#[cfg(feature = "oracle")]
mod llama {
    use llama_cpp_sys_2 as sys;
    use llmjp_convert::oracle;
    use std::ffi::CString;
    use std::path::Path;
    use std::ptr::NonNull;

    pub struct Llama {
        model: NonNull<sys::llama_model>,
        ctx: NonNull<sys::llama_context>,
        n_vocab: usize,
        _guard: oracle::OracleGuard,
    }

    impl Drop for Llama {
        fn drop(&mut self) {
            // SAFETY: both came from llama.cpp and are freed once, the context first.
            unsafe {
                sys::llama_free(self.ctx.as_ptr());
                sys::llama_model_free(self.model.as_ptr());
            }
        }
    }

    impl Llama {
        pub fn load(path: &Path) -> Llama {
            let guard = oracle::lock();
            let c = CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: plain structs by value; `c` outlives the call.
            let model = unsafe {
                let mut mp = sys::llama_model_default_params();
                mp.n_gpu_layers = 0;
                sys::llama_model_load_from_file(c.as_ptr(), mp)
            };
            let model = NonNull::new(model).expect("llama.cpp failed to load the model");
            // SAFETY: valid model; plain params.
            let ctx = unsafe {
                let mut cp = sys::llama_context_default_params();
                cp.n_ctx = 512;
                cp.n_batch = 512;
                cp.n_ubatch = 512;
                cp.n_seq_max = 1;
                cp.n_threads = oracle::N_THREADS;
                cp.n_threads_batch = oracle::N_THREADS;
                cp.no_perf = true;
                sys::llama_init_from_model(model.as_ptr(), cp)
            };
            let ctx = NonNull::new(ctx).expect("llama.cpp failed to create a context");
            // SAFETY: valid model; the vocab lives as long as the model.
            let n_vocab = unsafe {
                sys::llama_vocab_n_tokens(sys::llama_model_get_vocab(model.as_ptr())) as usize
            };
            Llama {
                model,
                ctx,
                n_vocab,
                _guard: guard,
            }
        }

        /// Empties the KV cache.
        pub fn clear(&mut self) {
            // SAFETY: valid context; its memory handle.
            unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ctx.as_ptr()), true) };
        }

        /// Decodes `ids` as one batch after what is in the cache; returns the argmax of the
        /// last position's logits (the only ones computed).
        pub fn decode(&mut self, ids: &[u32]) -> u32 {
            let mut toks: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            // SAFETY: `toks` outlives the call; a batch from llama_batch_get_one asks for the
            // last position's logits, which stay valid until the next decode.
            let logits = unsafe {
                let batch = sys::llama_batch_get_one(toks.as_mut_ptr(), toks.len() as i32);
                let rc = sys::llama_decode(self.ctx.as_ptr(), batch);
                assert_eq!(rc, 0, "llama_decode failed");
                let p = sys::llama_get_logits_ith(self.ctx.as_ptr(), -1);
                assert!(!p.is_null());
                std::slice::from_raw_parts(p, self.n_vocab)
            };
            llmjp_convert::model::argmax(logits)
        }
    }
}

/// One engine under test: a prompt batch, then single tokens after it.
#[cfg(feature = "oracle")]
trait Engine {
    fn clear(&mut self);
    fn decode(&mut self, ids: &[u32]) -> u32;
}

#[cfg(feature = "oracle")]
impl Engine for llama::Llama {
    fn clear(&mut self) {
        llama::Llama::clear(self)
    }
    fn decode(&mut self, ids: &[u32]) -> u32 {
        llama::Llama::decode(self, ids)
    }
}

#[cfg(feature = "oracle")]
struct Ours<'p> {
    m: Model,
    pool: &'p rayon::ThreadPool,
}

#[cfg(feature = "oracle")]
impl Engine for Ours<'_> {
    fn clear(&mut self) {
        self.m.reset()
    }
    fn decode(&mut self, ids: &[u32]) -> u32 {
        let m = &mut self.m;
        self.pool
            .install(|| argmax(&m.forward(ids, Logits::Last).unwrap()))
    }
}

/// pp: PROMPT tokens as one batch from an empty cache; gen: then NEW single-token steps,
/// each feeding back the argmax. Returns (pp seconds, gen seconds, generated ids).
#[cfg(feature = "oracle")]
fn pp_gen(e: &mut dyn Engine, ids: &[u32]) -> (f64, f64, Vec<u32>) {
    e.clear();
    let t = Instant::now();
    let mut next = e.decode(ids);
    let pp = t.elapsed().as_secs_f64();
    let mut out = vec![next];
    let t = Instant::now();
    for _ in 0..NEW {
        next = e.decode(&[next]);
        out.push(next);
    }
    (pp, t.elapsed().as_secs_f64(), out)
}

#[cfg(feature = "oracle")]
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// tok/s: median, min and max over the repetitions, from per-run seconds.
#[cfg(feature = "oracle")]
fn rates(tokens: usize, secs: &[f64]) -> (f64, f64, f64) {
    let r: Vec<f64> = secs.iter().map(|s| tokens as f64 / s).collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    (median(&r), lo, hi)
}

/// Prompt processing (pp128) and generation (gen32) tok/s of our forward pass and of llama.cpp
/// on the same GGUF files, both with [`oracle::N_THREADS`] threads, in one process. Each
/// engine is loaded and warmed up once per file, then the two alternate (ours first on even
/// repetitions, llama.cpp first on odd ones) LLMJP_BENCH_REPS times (default 3); medians are
/// reported. `bench/forward.sh` runs it on the 1.8b-shaped model.
///
/// LLMJP_BENCH_GGUF: space-separated GGUF paths (required; the label is the file name).
/// LLMJP_BENCH_CHECKPOINT: optionally, a checkpoint directory timed with ours only (bf16).
/// LLMJP_BENCH_OUT: optionally, a file that receives the table too.
#[cfg(feature = "oracle")]
#[test]
#[ignore]
fn vs_llama_cpp() {
    use llmjp_convert::oracle;
    use std::fmt::Write as _;

    let ggufs = std::env::var("LLMJP_BENCH_GGUF").expect("set LLMJP_BENCH_GGUF");
    let reps: usize = std::env::var("LLMJP_BENCH_REPS")
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or(3);
    let threads = oracle::N_THREADS as usize;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut table = format!(
        "{threads} threads each; pp{PROMPT}: one batch of {PROMPT} tokens, logits of the last; \
         gen{NEW}: {NEW} single-token steps after it; tok/s median (min-max) of {reps}; \
         ratio: ours / llama.cpp, of the medians and of the best runs\n\
         {:<28} {:<6} {:>22} {:>22} {:>7} {:>5}\n",
        "model", "test", "ours tok/s", "llama.cpp tok/s", "ratio", "best"
    );
    let row = |table: &mut String,
               label: &str,
               test: &str,
               ours: (f64, f64, f64),
               theirs: Option<(f64, f64, f64)>| {
        let cell = |(m, lo, hi): (f64, f64, f64)| format!("{m:.2} ({lo:.2}-{hi:.2})");
        let (t, ratio, best) = match theirs {
            Some(t) => (
                cell(t),
                format!("{:.2}", ours.0 / t.0),
                format!("{:.2}", ours.2 / t.2),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let line = format!(
            "{label:<28} {test:<6} {:>22} {t:>22} {ratio:>7} {best:>5}",
            cell(ours)
        );
        eprintln!("{line}");
        writeln!(table, "{line}").unwrap();
    };

    for path in ggufs.split_whitespace().map(Path::new) {
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        eprintln!("{label}: loading ...");
        let mut ours = Ours {
            m: Model::open(path).unwrap(),
            pool: &pool,
        };
        let mut theirs = llama::Llama::load(path);
        let vocab = ours.m.config().vocab as u32;
        let ids: Vec<u32> = (0..PROMPT as u32)
            .map(|i| 1 + (i * 7919) % (vocab - 1))
            .collect();
        // Warm-up: fault the mapped weights in, start the thread pools, let llama.cpp repack.
        for e in [&mut ours as &mut dyn Engine, &mut theirs] {
            e.clear();
            e.decode(&ids[..16]);
            for &id in &ids[16..20] {
                e.decode(&[id]);
            }
        }
        let (mut o, mut l) = (Vec::new(), Vec::new());
        let mut same = None;
        for r in 0..reps {
            let (a, b) = if r % 2 == 0 {
                let a = pp_gen(&mut ours, &ids);
                (a, pp_gen(&mut theirs, &ids))
            } else {
                let b = pp_gen(&mut theirs, &ids);
                (pp_gen(&mut ours, &ids), b)
            };
            eprintln!(
                "  rep {r}: ours pp {:.3} s gen {:.3} s; llama.cpp pp {:.3} s gen {:.3} s",
                a.0, a.1, b.0, b.1
            );
            // Both engines are deterministic: the first repetition says it all.
            same.get_or_insert_with(|| a.2.iter().zip(&b.2).take_while(|(x, y)| x == y).count());
            o.push(a);
            l.push(b);
        }
        let secs = |v: &[(f64, f64, Vec<u32>)], pp: bool| -> Vec<f64> {
            v.iter().map(|x| if pp { x.0 } else { x.1 }).collect()
        };
        for (test, pp, n) in [
            (format!("pp{PROMPT}"), true, PROMPT),
            (format!("gen{NEW}"), false, NEW),
        ] {
            let ours = rates(n, &secs(&o, pp));
            let theirs = rates(n, &secs(&l, pp));
            row(&mut table, &label, &test, ours, Some(theirs));
        }
        writeln!(
            table,
            "{:<28} the first {} of the {} greedy ids equal llama.cpp's",
            "",
            same.unwrap_or(0),
            NEW + 1
        )
        .unwrap();
    }

    if let Some(dir) = std::env::var("LLMJP_BENCH_CHECKPOINT")
        .ok()
        .filter(|s| !s.is_empty())
    {
        let path = Path::new(&dir);
        let label = format!("{} (bf16)", path.file_name().unwrap().to_string_lossy());
        let mut ours = Ours {
            m: Model::open(path).unwrap(),
            pool: &pool,
        };
        let vocab = ours.m.config().vocab as u32;
        let ids: Vec<u32> = (0..PROMPT as u32)
            .map(|i| 1 + (i * 7919) % (vocab - 1))
            .collect();
        ours.clear();
        ours.decode(&ids[..16]);
        let runs: Vec<_> = (0..reps).map(|_| pp_gen(&mut ours, &ids)).collect();
        let secs =
            |pp: bool| -> Vec<f64> { runs.iter().map(|x| if pp { x.0 } else { x.1 }).collect() };
        row(
            &mut table,
            &label,
            &format!("pp{PROMPT}"),
            rates(PROMPT, &secs(true)),
            None,
        );
        row(
            &mut table,
            &label,
            &format!("gen{NEW}"),
            rates(NEW, &secs(false)),
            None,
        );
    }

    print!("{table}");
    if let Some(out) = std::env::var("LLMJP_BENCH_OUT")
        .ok()
        .filter(|s| !s.is_empty())
    {
        std::fs::write(out, &table).unwrap();
    }
}

/// The profiling tests' model (LLMJP_BENCH_MODEL) and step count (LLMJP_BENCH_STEPS, else
/// `default_steps`); None when no model is named.
fn profiling_setup(default_steps: usize) -> Option<(Model, usize)> {
    let Ok(dir) = std::env::var("LLMJP_BENCH_MODEL") else {
        eprintln!("set LLMJP_BENCH_MODEL");
        return None;
    };
    let steps = std::env::var("LLMJP_BENCH_STEPS")
        .ok()
        .map(|s| s.parse().unwrap())
        .unwrap_or(default_steps);
    Some((Model::open(Path::new(&dir)).unwrap(), steps))
}

/// Generation alone (for profiling): a short prompt, then LLMJP_BENCH_STEPS (default 64)
/// single-token steps on LLMJP_BENCH_MODEL, printing tok/s every 16 steps.
#[test]
#[ignore]
fn generate_only() {
    let Some((mut m, steps)) = profiling_setup(64) else {
        return;
    };
    let mut logits = m.forward(&[1, 2, 3, 4], Logits::Last).unwrap();
    let mut t = Instant::now();
    for i in 1..=steps {
        logits = m.forward(&[argmax(&logits)], Logits::Last).unwrap();
        if i % 16 == 0 {
            eprintln!(
                "steps {}..{i}: {:.2} tok/s",
                i - 16,
                16.0 / t.elapsed().as_secs_f64()
            );
            t = Instant::now();
        }
    }
}

/// Prompt processing alone (for profiling): LLMJP_BENCH_STEPS (default 4) batches of 128
/// tokens on LLMJP_BENCH_MODEL, each from an empty cache.
#[test]
#[ignore]
fn prompt_only() {
    let Some((mut m, steps)) = profiling_setup(4) else {
        return;
    };
    let vocab = m.config().vocab as u32;
    let ids: Vec<u32> = (0..PROMPT as u32)
        .map(|i| 1 + (i * 7919) % (vocab - 1))
        .collect();
    for _ in 0..steps {
        let t = Instant::now();
        m.logits_last(&ids).unwrap();
        eprintln!(
            "pp{PROMPT}: {:.2} tok/s",
            PROMPT as f64 / t.elapsed().as_secs_f64()
        );
    }
}

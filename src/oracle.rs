//! Test oracle: a small safe wrapper over llama.cpp (through `llama-cpp-sys-2`).
//!
//! Tests use it as the independent reference for what llama.cpp does with the
//! GGUF files we write: whether they load, how they tokenize, which logits they
//! produce, how ggml quantizes a row, and how ggml's own GGUF reader sees them.
//!
//! Concurrency: llama.cpp's logger is process-global and the machine is small,
//! so every entry point takes a process-wide *reentrant* lock ([`lock`]).
//! A [`Model`] holds that lock for its whole lifetime, so only one thread at a
//! time can have oracle models loaded (the same thread may load several).
//! A test that wants to see exactly the log lines of its own calls holds an
//! [`OracleGuard`] (or a [`Model`]) while calling [`take_logs`].
//! Do not wait, while holding a `Model` or guard, on another thread that uses
//! the oracle: it would deadlock.
//!
//! Set `LLMJP_ORACLE_LOG=1` to also echo llama.cpp's log to stderr.

use std::ffi::{CStr, CString, c_char, c_void};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::{Condvar, Mutex, MutexGuard, Once, OnceLock, PoisonError};
use std::thread::{self, ThreadId};

use anyhow::{Context, Result, anyhow, bail, ensure};
use llama_cpp_sys_2 as sys;

/// `ggml_type` values, as stored in GGUF tensor infos.
pub mod ggml_type {
    pub const F32: i32 = 0;
    pub const F16: i32 = 1;
    pub const Q4_0: i32 = 2;
    pub const Q4_1: i32 = 3;
    pub const Q5_0: i32 = 6;
    pub const Q5_1: i32 = 7;
    pub const Q8_0: i32 = 8;
    pub const Q8_1: i32 = 9;
    pub const Q2_K: i32 = 10;
    pub const Q3_K: i32 = 11;
    pub const Q4_K: i32 = 12;
    pub const Q5_K: i32 = 13;
    pub const Q6_K: i32 = 14;
    pub const Q8_K: i32 = 15;
    pub const IQ2_XXS: i32 = 16;
    pub const IQ2_XS: i32 = 17;
    pub const IQ3_XXS: i32 = 18;
    pub const IQ1_S: i32 = 19;
    pub const IQ4_NL: i32 = 20;
    pub const IQ3_S: i32 = 21;
    pub const IQ2_S: i32 = 22;
    pub const IQ4_XS: i32 = 23;
    pub const IQ1_M: i32 = 29;
    pub const BF16: i32 = 30;
    pub const TQ1_0: i32 = 34;
    pub const TQ2_0: i32 = 35;
}

/// `llama_token_attr` bit flags, as returned by [`Model::token_attr`].
pub mod token_attr {
    pub const UNDEFINED: i32 = 0;
    pub const UNKNOWN: i32 = 1 << 0;
    pub const UNUSED: i32 = 1 << 1;
    pub const NORMAL: i32 = 1 << 2;
    pub const CONTROL: i32 = 1 << 3;
    pub const USER_DEFINED: i32 = 1 << 4;
    pub const BYTE: i32 = 1 << 5;
    pub const NORMALIZED: i32 = 1 << 6;
    pub const LSTRIP: i32 = 1 << 7;
    pub const RSTRIP: i32 = 1 << 8;
    pub const SINGLE_WORD: i32 = 1 << 9;
}

/// `llama_vocab_type` values, as returned in [`VocabInfo::vocab_type`].
pub mod vocab_type {
    pub const NONE: i32 = 0;
    pub const SPM: i32 = 1;
    pub const BPE: i32 = 2;
    pub const WPM: i32 = 3;
    pub const UGM: i32 = 4;
    pub const RWKV: i32 = 5;
}

/// `gguf_type` values, as returned in [`GgufKv::ty`].
pub mod gguf_type {
    pub const UINT8: i32 = 0;
    pub const INT8: i32 = 1;
    pub const UINT16: i32 = 2;
    pub const INT16: i32 = 3;
    pub const UINT32: i32 = 4;
    pub const INT32: i32 = 5;
    pub const FLOAT32: i32 = 6;
    pub const BOOL: i32 = 7;
    pub const STRING: i32 = 8;
    pub const ARRAY: i32 = 9;
    pub const UINT64: i32 = 10;
    pub const INT64: i32 = 11;
    pub const FLOAT64: i32 = 12;
}

/// Context size used for every oracle model.
pub const N_CTX: u32 = 512;
/// Logical and physical batch size used for every oracle model.
pub const N_BATCH: u32 = 512;
/// Threads used for decoding.
pub const N_THREADS: i32 = 2;

/// Most log entries kept when nobody drains them with [`take_logs`].
const MAX_LOG_ENTRIES: usize = 100_000;

// ---------------------------------------------------------------------------
// Global state: init, logging, lock
// ---------------------------------------------------------------------------

static INIT: Once = Once::new();
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOG_ECHO: OnceLock<bool> = OnceLock::new();

struct LockState {
    owner: Option<ThreadId>,
    depth: usize,
}

static LOCK: Mutex<LockState> = Mutex::new(LockState {
    owner: None,
    depth: 0,
});
static LOCK_CV: Condvar = Condvar::new();

fn logs() -> MutexGuard<'static, Vec<String>> {
    LOGS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn level_name(level: sys::ggml_log_level) -> &'static str {
    match level {
        sys::GGML_LOG_LEVEL_NONE => "NONE",
        sys::GGML_LOG_LEVEL_DEBUG => "DEBUG",
        sys::GGML_LOG_LEVEL_INFO => "INFO",
        sys::GGML_LOG_LEVEL_WARN => "WARN",
        sys::GGML_LOG_LEVEL_ERROR => "ERROR",
        sys::GGML_LOG_LEVEL_CONT => "CONT",
        _ => "?",
    }
}

/// Log callback installed into llama.cpp and ggml. Must never unwind.
unsafe extern "C" fn log_callback(
    level: sys::ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        if text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a valid NUL-terminated string that lives
        // for the duration of the call.
        let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        if *LOG_ECHO.get_or_init(|| std::env::var_os("LLMJP_ORACLE_LOG").is_some()) {
            eprint!("{text}");
        }
        let mut logs = logs();
        // A CONT entry continues the previous message; so does a message whose
        // predecessor did not end its line yet.
        let continues =
            level == sys::GGML_LOG_LEVEL_CONT || logs.last().is_some_and(|l| !l.ends_with('\n'));
        match logs.last_mut() {
            Some(last) if continues => last.push_str(&text),
            _ => {
                if logs.len() >= MAX_LOG_ENTRIES {
                    logs.drain(..MAX_LOG_ENTRIES / 2);
                }
                logs.push(format!("[{}] {}", level_name(level), text));
            }
        }
    });
}

/// One-time process-wide initialization: installs the log capture, then runs
/// `llama_backend_init`. Called implicitly by every entry point.
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: `log_callback` is a valid `extern "C"` function for the
        // whole program; the user data pointer is unused. Called once, before
        // any other llama.cpp call of ours.
        unsafe { sys::llama_log_set(Some(log_callback), ptr::null_mut()) };
        // SAFETY: plain global initialization, done once.
        unsafe { sys::llama_backend_init() };
    });
}

/// Drains the captured llama.cpp / ggml log, one entry per message, each
/// prefixed with its level (`"[INFO] ..."`, `"[ERROR] ..."`), trailing newline
/// kept. Hold an [`OracleGuard`] or [`Model`] to be sure that the lines come
/// from your own calls only.
pub fn take_logs() -> Vec<String> {
    std::mem::take(&mut *logs())
}

fn log_mark() -> usize {
    logs().len()
}

/// The log entries appended since `mark`, joined, for error messages.
fn logs_since(mark: usize) -> String {
    let logs = logs();
    let start = mark.min(logs.len());
    let lines: Vec<&str> = logs[start..]
        .iter()
        .map(|l| l.trim_end())
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "(no llama.cpp log)".to_owned()
    } else {
        lines.join(" | ")
    }
}

/// Proof of exclusive use of the oracle by the current thread (reentrant).
/// Not `Send`: it must be dropped on the thread that took it.
pub struct OracleGuard {
    _not_send: PhantomData<*const ()>,
}

impl std::fmt::Debug for OracleGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OracleGuard")
    }
}

/// Takes the process-wide oracle lock (reentrant for the current thread) and
/// makes sure the backend is initialized.
pub fn lock() -> OracleGuard {
    let me = thread::current().id();
    let mut st = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match st.owner {
            None => {
                st.owner = Some(me);
                st.depth = 1;
                break;
            }
            Some(owner) if owner == me => {
                st.depth += 1;
                break;
            }
            Some(_) => st = LOCK_CV.wait(st).unwrap_or_else(PoisonError::into_inner),
        }
    }
    drop(st);
    init();
    OracleGuard {
        _not_send: PhantomData,
    }
}

impl Drop for OracleGuard {
    fn drop(&mut self) {
        let mut st = LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        st.depth = st.depth.saturating_sub(1);
        if st.depth == 0 {
            st.owner = None;
            LOCK_CV.notify_one();
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn cstr_lossy(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: callers pass NUL-terminated strings owned by llama.cpp / ggml
    // that stay alive during this call.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn path_cstring(path: &Path) -> Result<CString> {
    let s = path
        .to_str()
        .with_context(|| format!("path is not valid UTF-8: {}", path.display()))?;
    CString::new(s).with_context(|| format!("path contains a NUL byte: {}", path.display()))
}

/// Calls an `snprintf`-like llama.cpp getter (`f(buf, buf_size) -> len`,
/// negative when absent) and returns the full string.
fn read_sized_string(mut f: impl FnMut(*mut c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    for _ in 0..2 {
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        let n = usize::try_from(n).ok()?;
        if n < buf.len() {
            buf.truncate(n);
            return Some(String::from_utf8_lossy(&buf).into_owned());
        }
        buf = vec![0u8; n + 1];
    }
    None
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// Vocabulary and shape information, as llama.cpp understood the file.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabInfo {
    pub n_vocab: i32,
    /// `llama_vocab_type` (see [`vocab_type`]).
    pub vocab_type: i32,
    /// Special token ids; `-1` (`LLAMA_TOKEN_NULL`) when not set.
    pub bos: i32,
    pub eos: i32,
    pub eot: i32,
    pub sep: i32,
    pub nl: i32,
    pub pad: i32,
    pub mask: i32,
    /// `tokenizer.ggml.unknown_token_id` from the metadata (llama.h has no
    /// getter for it).
    pub unk: Option<i32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
    pub n_embd: i32,
    pub n_layer: i32,
    pub n_head: i32,
    pub n_head_kv: i32,
    pub n_ctx_train: i32,
    /// `llama_rope_type` (-1 none, 0 norm, 2 neox, ...).
    pub rope_type: i32,
    /// `llama_ftype` recorded/guessed for the file.
    pub ftype: i32,
    pub n_params: u64,
    pub model_size: u64,
    /// `llama_model_desc`, e.g. `"llama 1B Q8_0"`.
    pub desc: String,
}

/// A model and context loaded by llama.cpp, CPU only, F32 KV cache, no flash
/// attention. Holds the oracle lock while alive.
pub struct Model {
    model: NonNull<sys::llama_model>,
    ctx: NonNull<sys::llama_context>,
    vocab: NonNull<sys::llama_vocab>,
    n_vocab: i32,
    n_ctx: u32,
    n_batch: u32,
    // Dropped after `Drop::drop` has freed the context and model.
    _guard: OracleGuard,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("n_vocab", &self.n_vocab)
            .field("n_ctx", &self.n_ctx)
            .field("n_batch", &self.n_batch)
            .finish_non_exhaustive()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: both pointers came from llama.cpp, are non-null and are
        // freed exactly once here, the context before its model.
        unsafe {
            sys::llama_free(self.ctx.as_ptr());
            sys::llama_model_free(self.model.as_ptr());
        }
    }
}

impl Model {
    /// Loads a GGUF file: CPU only (`n_gpu_layers` 0), no mmap, tensor data
    /// validated (`check_tensors`), context of [`N_CTX`] tokens, batch
    /// [`N_BATCH`], [`N_THREADS`] threads, F32 K and V cache, flash attention
    /// disabled, embeddings off.
    pub fn load(path: &Path) -> Result<Model> {
        let guard = lock();
        let cpath = path_cstring(path)?;
        let mark = log_mark();

        // SAFETY: returns a plain struct by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = 0;
        mp.load_mode = sys::LLAMA_LOAD_MODE_NONE;
        mp.check_tensors = true;
        mp.progress_callback = None;

        // SAFETY: `cpath` is a valid C string for the call; params are valid.
        let model = unsafe { sys::llama_model_load_from_file(cpath.as_ptr(), mp) };
        let Some(model) = NonNull::new(model) else {
            bail!(
                "llama.cpp failed to load {}: {}",
                path.display(),
                logs_since(mark)
            );
        };

        // SAFETY: returns a plain struct by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = N_CTX;
        cp.n_batch = N_BATCH;
        cp.n_ubatch = N_BATCH;
        cp.n_seq_max = 1;
        cp.n_threads = N_THREADS;
        cp.n_threads_batch = N_THREADS;
        cp.type_k = sys::GGML_TYPE_F32;
        cp.type_v = sys::GGML_TYPE_F32;
        cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_DISABLED;
        cp.embeddings = false;
        cp.offload_kqv = false;
        cp.op_offload = false;
        cp.swa_full = true;
        cp.no_perf = true;

        // SAFETY: `model` is a valid model pointer; params are valid.
        let ctx = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        let Some(ctx) = NonNull::new(ctx) else {
            // SAFETY: the model was loaded above and is not used afterwards.
            unsafe { sys::llama_model_free(model.as_ptr()) };
            bail!(
                "llama.cpp failed to create a context for {}: {}",
                path.display(),
                logs_since(mark)
            );
        };

        // SAFETY: valid model / context pointers.
        let (vocab, n_ctx, n_batch) = unsafe {
            (
                sys::llama_model_get_vocab(model.as_ptr()),
                sys::llama_n_ctx(ctx.as_ptr()),
                sys::llama_n_batch(ctx.as_ptr()),
            )
        };
        // From here on, `Drop for Model` frees the context and model.
        let mut m = Model {
            model,
            ctx,
            vocab: NonNull::dangling(),
            n_vocab: 0,
            n_ctx,
            n_batch,
            _guard: guard,
        };
        m.vocab = NonNull::new(vocab.cast_mut()).context("llama.cpp model has no vocab")?;
        // SAFETY: the vocab pointer is valid while the model lives.
        m.n_vocab = unsafe { sys::llama_vocab_n_tokens(m.vocab()) };
        ensure!(m.n_vocab > 0, "llama.cpp model has an empty vocab");
        Ok(m)
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        self.vocab.as_ptr()
    }

    fn model(&self) -> *const sys::llama_model {
        self.model.as_ptr()
    }

    /// Number of tokens in the vocabulary (= logits per position).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab as usize
    }

    /// Context size actually used by llama.cpp.
    pub fn n_ctx(&self) -> usize {
        self.n_ctx as usize
    }

    fn valid_id(&self, id: i32) -> bool {
        (0..self.n_vocab).contains(&id)
    }

    fn check_ids(&self, ids: &[i32]) -> Result<()> {
        if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| !self.valid_id(id)) {
            bail!(
                "token id {id} at index {i} is out of range (n_vocab {})",
                self.n_vocab
            );
        }
        Ok(())
    }

    fn clear_memory(&mut self) {
        // SAFETY: valid context; the memory handle belongs to it.
        unsafe {
            let mem = sys::llama_get_memory(self.ctx.as_ptr());
            if !mem.is_null() {
                sys::llama_memory_clear(mem, true);
            }
        }
    }

    /// Decodes `ids` (already validated) at positions `pos0..`, sequence 0,
    /// requesting logits for the last token only.
    fn decode_at(&mut self, ids: &[i32], pos0: usize) -> Result<()> {
        ensure!(!ids.is_empty(), "cannot decode an empty token sequence");
        ensure!(
            ids.len() <= self.n_batch as usize,
            "{} tokens exceed the batch size {}",
            ids.len(),
            self.n_batch
        );
        ensure!(
            pos0 + ids.len() <= self.n_ctx as usize,
            "positions {}..{} exceed the context size {}",
            pos0,
            pos0 + ids.len(),
            self.n_ctx
        );
        let n = ids.len();
        let mut token = ids.to_vec();
        let mut pos: Vec<i32> = (pos0..pos0 + n).map(|p| p as i32).collect();
        let mut n_seq_id = vec![1i32; n];
        let mut seq0 = vec![0i32; n];
        let mut seq_id: Vec<*mut i32> = seq0.iter_mut().map(ptr::from_mut).collect();
        let mut logits = vec![0i8; n];
        logits[n - 1] = 1;
        let batch = sys::llama_batch {
            n_tokens: n as i32,
            token: token.as_mut_ptr(),
            embd: ptr::null_mut(),
            pos: pos.as_mut_ptr(),
            n_seq_id: n_seq_id.as_mut_ptr(),
            seq_id: seq_id.as_mut_ptr(),
            logits: logits.as_mut_ptr(),
        };
        let mark = log_mark();
        // SAFETY: all batch arrays have `n` elements and outlive the call;
        // llama_decode copies what it needs.
        let rc = unsafe { sys::llama_decode(self.ctx.as_ptr(), batch) };
        ensure!(rc == 0, "llama_decode returned {rc}: {}", logs_since(mark));
        Ok(())
    }

    /// Logits of the last output of the last decode.
    fn last_logits_slice(&self) -> Result<&[f32]> {
        // SAFETY: valid context; -1 selects the last output row.
        let p = unsafe { sys::llama_get_logits_ith(self.ctx.as_ptr(), -1) };
        ensure!(!p.is_null(), "llama.cpp returned no logits");
        // SAFETY: a logits row holds n_vocab floats and stays valid until the
        // next decode, which needs `&mut self`.
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab as usize) })
    }

    /// Clears the KV cache, decodes `ids` as one batch from position 0 and
    /// returns the `n_vocab` logits of the last token.
    pub fn last_logits(&mut self, ids: &[i32]) -> Result<Vec<f32>> {
        self.check_ids(ids)?;
        self.clear_memory();
        self.decode_at(ids, 0)?;
        Ok(self.last_logits_slice()?.to_vec())
    }

    /// Greedy continuation: argmax (first index on ties, NaN ignored) fed
    /// back one token at a time. Returns up to `n_new` new ids; stops after
    /// the first end-of-generation token (`llama_vocab_is_eog`), which is
    /// included in the result.
    pub fn greedy(&mut self, ids: &[i32], n_new: usize) -> Result<Vec<i32>> {
        self.check_ids(ids)?;
        ensure!(!ids.is_empty(), "greedy needs a non-empty prompt");
        ensure!(
            ids.len() + n_new <= self.n_ctx as usize,
            "prompt {} + {n_new} new tokens exceed the context size {}",
            ids.len(),
            self.n_ctx
        );
        self.clear_memory();
        let mut out = Vec::with_capacity(n_new);
        if n_new == 0 {
            return Ok(out);
        }
        self.decode_at(ids, 0)?;
        loop {
            let tok = argmax(self.last_logits_slice()?).context("all logits are NaN")? as i32;
            out.push(tok);
            // SAFETY: valid vocab; `tok` is within 0..n_vocab.
            let eog = unsafe { sys::llama_vocab_is_eog(self.vocab(), tok) };
            if eog || out.len() == n_new {
                return Ok(out);
            }
            self.decode_at(&[tok], ids.len() + out.len() - 1)?;
        }
    }

    /// Vocabulary, special tokens and hyper-parameters as llama.cpp read them.
    pub fn vocab_info(&self) -> VocabInfo {
        let v = self.vocab();
        let m = self.model();
        // SAFETY: valid vocab / model pointers; these getters only read.
        unsafe {
            VocabInfo {
                n_vocab: self.n_vocab,
                vocab_type: sys::llama_vocab_type(v) as i32,
                bos: sys::llama_vocab_bos(v),
                eos: sys::llama_vocab_eos(v),
                eot: sys::llama_vocab_eot(v),
                sep: sys::llama_vocab_sep(v),
                nl: sys::llama_vocab_nl(v),
                pad: sys::llama_vocab_pad(v),
                mask: sys::llama_vocab_mask(v),
                unk: self
                    .meta_str("tokenizer.ggml.unknown_token_id")
                    .and_then(|s| s.trim().parse().ok()),
                add_bos: sys::llama_vocab_get_add_bos(v),
                add_eos: sys::llama_vocab_get_add_eos(v),
                add_sep: sys::llama_vocab_get_add_sep(v),
                n_embd: sys::llama_model_n_embd(m),
                n_layer: sys::llama_model_n_layer(m),
                n_head: sys::llama_model_n_head(m),
                n_head_kv: sys::llama_model_n_head_kv(m),
                n_ctx_train: sys::llama_model_n_ctx_train(m),
                rope_type: sys::llama_model_rope_type(m) as i32,
                ftype: sys::llama_model_ftype(m) as i32,
                n_params: sys::llama_model_n_params(m),
                model_size: sys::llama_model_size(m),
                desc: read_sized_string(|buf, len| sys::llama_model_desc(m, buf, len))
                    .unwrap_or_default(),
            }
        }
    }

    /// The vocabulary entry text (e.g. `"▁foo"`, `"<0x0A>"`); empty for an
    /// out-of-range id.
    pub fn token_text(&self, id: i32) -> String {
        if !self.valid_id(id) {
            return String::new();
        }
        // SAFETY: valid vocab, id in range; returns a string owned by vocab.
        cstr_lossy(unsafe { sys::llama_vocab_get_text(self.vocab(), id) }).unwrap_or_default()
    }

    /// The vocabulary score (SPM/UGM log-prob, BPE rank-derived); NaN for an
    /// out-of-range id.
    pub fn token_score(&self, id: i32) -> f32 {
        if !self.valid_id(id) {
            return f32::NAN;
        }
        // SAFETY: valid vocab, id in range.
        unsafe { sys::llama_vocab_get_score(self.vocab(), id) }
    }

    /// `llama_token_attr` bit flags (see [`token_attr`]); -1 for an
    /// out-of-range id. llama.cpp derives these from the GGUF `token_type`
    /// array (NORMAL=1 -> 4, UNKNOWN=2 -> 1, CONTROL=3 -> 8,
    /// USER_DEFINED=4 -> 16, UNUSED=5 -> 2, BYTE=6 -> 32) and may add bits.
    pub fn token_attr(&self, id: i32) -> i32 {
        if !self.valid_id(id) {
            return -1;
        }
        // SAFETY: valid vocab, id in range.
        unsafe { sys::llama_vocab_get_attr(self.vocab(), id) as i32 }
    }

    /// Whether llama.cpp treats the token as end-of-generation.
    pub fn is_eog(&self, id: i32) -> bool {
        // SAFETY: valid vocab, id in range.
        self.valid_id(id) && unsafe { sys::llama_vocab_is_eog(self.vocab(), id) }
    }

    /// Whether llama.cpp treats the token as a control token.
    pub fn is_control(&self, id: i32) -> bool {
        // SAFETY: valid vocab, id in range.
        self.valid_id(id) && unsafe { sys::llama_vocab_is_control(self.vocab(), id) }
    }

    /// `llama_tokenize`. `add_special` adds BOS/EOS as configured by the
    /// file; `parse_special` lets special-token text map to special tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<i32>> {
        let len = i32::try_from(text.len()).context("text too long to tokenize")?;
        let mut buf = vec![0i32; text.len() + 8];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).context("token buffer too large")?;
            // SAFETY: `text` has `len` bytes; `buf` has `cap` slots.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    buf.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n == i32::MIN {
                bail!("llama_tokenize overflowed");
            }
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf = vec![0i32; n.unsigned_abs() as usize];
        }
        bail!("llama_tokenize kept asking for a larger buffer")
    }

    /// `llama_token_to_piece`: the bytes the token detokenizes to (`special`
    /// renders control tokens).
    pub fn token_piece(&self, id: i32, special: bool) -> Result<Vec<u8>> {
        ensure!(self.valid_id(id), "token id {id} out of range");
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).context("piece buffer too large")?;
            // SAFETY: valid vocab, id in range; `buf` has `cap` bytes.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab(),
                    id,
                    buf.as_mut_ptr().cast(),
                    cap,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        bail!("llama_token_to_piece kept asking for a larger buffer")
    }

    /// `llama_detokenize` (lossy UTF-8).
    pub fn detokenize(
        &self,
        ids: &[i32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Result<String> {
        self.check_ids(ids)?;
        let n_tokens = i32::try_from(ids.len()).context("too many tokens")?;
        let mut buf = vec![0u8; ids.len() * 8 + 16];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).context("text buffer too large")?;
            // SAFETY: `ids` has `n_tokens` valid ids; `buf` has `cap` bytes.
            let n = unsafe {
                sys::llama_detokenize(
                    self.vocab(),
                    ids.as_ptr(),
                    n_tokens,
                    buf.as_mut_ptr().cast(),
                    cap,
                    remove_special,
                    unparse_special,
                )
            };
            if n == i32::MIN {
                bail!("llama_detokenize overflowed");
            }
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf = vec![0u8; n.unsigned_abs() as usize];
        }
        bail!("llama_detokenize kept asking for a larger buffer")
    }

    /// A metadata value rendered as a string by llama.cpp
    /// (`llama_model_meta_val_str`); `None` if absent. Arrays are rendered
    /// in llama.cpp's abbreviated form.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let m = self.model();
        // SAFETY: valid model and key; `buf` has `len` bytes.
        read_sized_string(|buf, len| unsafe {
            sys::llama_model_meta_val_str(m, key.as_ptr(), buf, len)
        })
    }

    /// All metadata (key, value-as-string) pairs that llama.cpp kept.
    pub fn meta_all(&self) -> Vec<(String, String)> {
        let m = self.model();
        // SAFETY: valid model.
        let count = unsafe { sys::llama_model_meta_count(m) };
        (0..count)
            .filter_map(|i| {
                // SAFETY: valid model, index in range; `buf` has `len` bytes.
                let k = read_sized_string(|buf, len| unsafe {
                    sys::llama_model_meta_key_by_index(m, i, buf, len)
                })?;
                // SAFETY: as above.
                let v = read_sized_string(|buf, len| unsafe {
                    sys::llama_model_meta_val_str_by_index(m, i, buf, len)
                })?;
                Some((k, v))
            })
            .collect()
    }

    /// The default chat template (`llama_model_chat_template(model, NULL)`).
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: valid model; NULL name selects the default template. The
        // returned string is owned by the model.
        cstr_lossy(unsafe { sys::llama_model_chat_template(self.model(), ptr::null()) })
    }
}

/// Index of the largest value, first one on ties, NaN ignored (as llama.cpp's
/// greedy sampler, which keeps the first strict maximum).
pub fn argmax(xs: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in xs.iter().enumerate() {
        if x.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if x <= b => {}
            _ => best = Some((i, x)),
        }
    }
    best.map(|(i, _)| i)
}

// ---------------------------------------------------------------------------
// ggml quantization and type info (no model needed)
// ---------------------------------------------------------------------------

fn check_type(ty: i32) -> Result<sys::ggml_type> {
    ensure!(
        (0..sys::GGML_TYPE_COUNT as i32).contains(&ty),
        "ggml type {ty} out of range"
    );
    let t = ty as sys::ggml_type;
    // SAFETY: `t` is in range of ggml's type table.
    let blck = unsafe { sys::ggml_blck_size(t) };
    ensure!(blck > 0, "ggml type {ty} has been removed from ggml");
    Ok(t)
}

/// `ggml_type_name`, e.g. `"q8_0"`.
pub fn ggml_type_name(ty: i32) -> Result<String> {
    let t = check_type(ty)?;
    // SAFETY: valid type; returns a static string.
    cstr_lossy(unsafe { sys::ggml_type_name(t) }).context("ggml_type_name returned NULL")
}

/// Bytes per block of the type.
pub fn ggml_type_size(ty: i32) -> Result<usize> {
    let t = check_type(ty)?;
    // SAFETY: valid type.
    Ok(unsafe { sys::ggml_type_size(t) })
}

/// Elements per block of the type.
pub fn ggml_blck_size(ty: i32) -> Result<usize> {
    let t = check_type(ty)?;
    // SAFETY: valid type.
    Ok(unsafe { sys::ggml_blck_size(t) } as usize)
}

/// Bytes of a row of `n` elements (`n` must be a multiple of the block size).
pub fn ggml_row_size(ty: i32, n: usize) -> Result<usize> {
    let t = check_type(ty)?;
    let blck = ggml_blck_size(ty)?;
    ensure!(
        n.is_multiple_of(blck),
        "{n} elements are not a multiple of the block size {blck} of ggml type {ty}"
    );
    let n = i64::try_from(n).context("row too long")?;
    // SAFETY: valid type; n is a multiple of the block size.
    Ok(unsafe { sys::ggml_row_size(t, n) })
}

/// Whether `ggml_quantize_chunk` refuses to quantize this type without an
/// importance matrix.
pub fn ggml_quantize_requires_imatrix(ty: i32) -> Result<bool> {
    let t = check_type(ty)?;
    // SAFETY: valid type.
    Ok(unsafe { sys::ggml_quantize_requires_imatrix(t) })
}

/// Types that `ggml_quantize_chunk` can produce.
const QUANTIZABLE: &[i32] = &[
    0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23, 29, 30, 34, 35, 39,
    40, 41, 42,
];

/// Quantizes `src` (rows of `n_per_row` values) to ggml type `ty` with
/// `ggml_quantize_chunk`, exactly as llama.cpp's quantizer would (including
/// the imatrix-weighted search when `imatrix` is given: one weight per
/// column, `n_per_row` values). Returns `rows * ggml_row_size(ty, n_per_row)`
/// bytes.
pub fn ggml_quantize(
    ty: i32,
    src: &[f32],
    n_per_row: usize,
    imatrix: Option<&[f32]>,
) -> Result<Vec<u8>> {
    let t = check_type(ty)?;
    ensure!(
        QUANTIZABLE.contains(&ty),
        "ggml_quantize_chunk cannot produce ggml type {ty}"
    );
    ensure!(n_per_row > 0, "n_per_row must be positive");
    ensure!(
        src.len().is_multiple_of(n_per_row),
        "{} values are not a whole number of rows of {n_per_row}",
        src.len()
    );
    let row_size = ggml_row_size(ty, n_per_row)?;
    let rows = src.len() / n_per_row;
    if let Some(im) = imatrix {
        ensure!(
            im.len() == n_per_row,
            "imatrix has {} values, expected n_per_row = {n_per_row}",
            im.len()
        );
    } else {
        ensure!(
            !ggml_quantize_requires_imatrix(ty)?,
            "ggml type {ty} requires an importance matrix"
        );
    }
    let _guard = lock();
    let mut dst = vec![0u8; rows * row_size];
    if rows == 0 {
        return Ok(dst);
    }
    let im_ptr = imatrix.map_or(ptr::null(), <[f32]>::as_ptr);
    // SAFETY: `src` holds rows * n_per_row floats, `dst` rows * row_size
    // bytes, the imatrix (if any) n_per_row floats; the type is supported
    // and n_per_row is a multiple of its block size.
    let written = unsafe {
        sys::ggml_quantize_init(t);
        sys::ggml_quantize_chunk(
            t,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            rows as i64,
            n_per_row as i64,
            im_ptr,
        )
    };
    ensure!(
        written == dst.len(),
        "ggml_quantize_chunk wrote {written} bytes, expected {}",
        dst.len()
    );
    Ok(dst)
}

/// ggml's own f32 -> f16 conversion (round to nearest even), as raw bits.
pub fn f32_to_f16_bits(x: f32) -> u16 {
    init();
    // SAFETY: pure conversion.
    unsafe { sys::ggml_fp32_to_fp16(x) }
}

/// ggml's own f16 -> f32 conversion.
pub fn f16_bits_to_f32(h: u16) -> f32 {
    init();
    // SAFETY: pure conversion.
    unsafe { sys::ggml_fp16_to_fp32(h) }
}

// ---------------------------------------------------------------------------
// GGUF reader (ggml's gguf.cpp)
// ---------------------------------------------------------------------------

/// A metadata value as ggml's GGUF reader parsed it.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Array of strings.
    StrArray(Vec<String>),
    /// Array of numbers / bools: element `gguf_type` and the raw
    /// little-endian element bytes.
    Array {
        elem_type: i32,
        len: usize,
        data: Vec<u8>,
    },
}

/// One metadata key/value pair.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufKv {
    pub key: String,
    /// `gguf_type` of the value (see [`gguf_type`]); `ARRAY` for arrays.
    pub ty: i32,
    pub value: GgufValue,
}

/// One tensor info.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    pub name: String,
    /// `ggml_type`.
    pub ty: i32,
    /// Offset relative to the start of the data section.
    pub offset: usize,
    /// Dimensions, ggml order (ne[0] = contiguous); trailing 1s trimmed,
    /// at least one entry.
    pub ne: Vec<i64>,
    /// Data size in bytes.
    pub size: usize,
}

/// What ggml's GGUF reader saw in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufSummary {
    pub version: u32,
    pub alignment: usize,
    /// Absolute file offset of the tensor data section.
    pub data_offset: usize,
    pub kvs: Vec<GgufKv>,
    pub tensors: Vec<GgufTensor>,
}

impl GgufSummary {
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.kvs.iter().find(|kv| kv.key == key).map(|kv| &kv.value)
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// `GGML_MAX_DIMS` (a macro, not in the bindings).
const GGML_MAX_DIMS: usize = 4;

struct GgufCtx(NonNull<sys::gguf_context>);

impl Drop for GgufCtx {
    fn drop(&mut self) {
        // SAFETY: pointer from gguf_init_from_file, freed once.
        unsafe { sys::gguf_free(self.0.as_ptr()) };
    }
}

fn gguf_elem_size(ty: i32) -> Option<usize> {
    Some(match ty {
        gguf_type::UINT8 | gguf_type::INT8 | gguf_type::BOOL => 1,
        gguf_type::UINT16 | gguf_type::INT16 => 2,
        gguf_type::UINT32 | gguf_type::INT32 | gguf_type::FLOAT32 => 4,
        gguf_type::UINT64 | gguf_type::INT64 | gguf_type::FLOAT64 => 8,
        _ => return None,
    })
}

/// Reads a GGUF file's header with ggml's reader (`gguf_init_from_file`,
/// `no_alloc`), which validates the structure: magic, version, KV types,
/// duplicate keys / tensor names, tensor types and shapes, and that tensor
/// offsets are the aligned running sums of the tensor sizes. It does not read
/// the tensor data (use [`Model::load`], which checks it, for that).
pub fn gguf_summary(path: &Path) -> Result<GgufSummary> {
    let _guard = lock();
    let cpath = path_cstring(path)?;
    let mark = log_mark();
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: ptr::null_mut(),
    };
    // SAFETY: valid C string and params; returns NULL on failure.
    let ctx = unsafe { sys::gguf_init_from_file(cpath.as_ptr(), params) };
    let ctx = GgufCtx(NonNull::new(ctx).ok_or_else(|| {
        anyhow!(
            "ggml's GGUF reader rejected {}: {}",
            path.display(),
            logs_since(mark)
        )
    })?);
    let c = ctx.0.as_ptr().cast_const();

    // SAFETY (whole block): `c` is a valid context; every index passed is in
    // range and every typed getter is called only for a matching type, so no
    // GGML_ASSERT can fire. Returned strings and data are owned by `c`, which
    // outlives their use here.
    unsafe {
        let mut kvs = Vec::new();
        let n_kv = sys::gguf_get_n_kv(c);
        for i in 0..n_kv {
            let key = cstr_lossy(sys::gguf_get_key(c, i)).unwrap_or_default();
            let ty = sys::gguf_get_kv_type(c, i) as i32;
            let value = match ty {
                gguf_type::UINT8 => GgufValue::U8(sys::gguf_get_val_u8(c, i)),
                gguf_type::INT8 => GgufValue::I8(sys::gguf_get_val_i8(c, i)),
                gguf_type::UINT16 => GgufValue::U16(sys::gguf_get_val_u16(c, i)),
                gguf_type::INT16 => GgufValue::I16(sys::gguf_get_val_i16(c, i)),
                gguf_type::UINT32 => GgufValue::U32(sys::gguf_get_val_u32(c, i)),
                gguf_type::INT32 => GgufValue::I32(sys::gguf_get_val_i32(c, i)),
                gguf_type::FLOAT32 => GgufValue::F32(sys::gguf_get_val_f32(c, i)),
                gguf_type::BOOL => GgufValue::Bool(sys::gguf_get_val_bool(c, i)),
                gguf_type::STRING => {
                    GgufValue::Str(cstr_lossy(sys::gguf_get_val_str(c, i)).unwrap_or_default())
                }
                gguf_type::UINT64 => GgufValue::U64(sys::gguf_get_val_u64(c, i)),
                gguf_type::INT64 => GgufValue::I64(sys::gguf_get_val_i64(c, i)),
                gguf_type::FLOAT64 => GgufValue::F64(sys::gguf_get_val_f64(c, i)),
                gguf_type::ARRAY => {
                    let elem_type = sys::gguf_get_arr_type(c, i) as i32;
                    let len = sys::gguf_get_arr_n(c, i);
                    if elem_type == gguf_type::STRING {
                        GgufValue::StrArray(
                            (0..len)
                                .map(|j| {
                                    cstr_lossy(sys::gguf_get_arr_str(c, i, j)).unwrap_or_default()
                                })
                                .collect(),
                        )
                    } else if let Some(es) = gguf_elem_size(elem_type) {
                        let p = sys::gguf_get_arr_data(c, i).cast::<u8>();
                        let data = if p.is_null() || len == 0 {
                            Vec::new()
                        } else {
                            std::slice::from_raw_parts(p, len * es).to_vec()
                        };
                        GgufValue::Array {
                            elem_type,
                            len,
                            data,
                        }
                    } else {
                        bail!("key {key}: unsupported array element type {elem_type}");
                    }
                }
                other => bail!("key {key}: unsupported gguf type {other}"),
            };
            kvs.push(GgufKv { key, ty, value });
        }

        let mut tensors = Vec::new();
        let n_tensors = sys::gguf_get_n_tensors(c);
        for i in 0..n_tensors {
            let name = cstr_lossy(sys::gguf_get_tensor_name(c, i)).unwrap_or_default();
            let ne_p = sys::gguf_get_tensor_ne(c, i);
            let mut ne = if ne_p.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(ne_p, GGML_MAX_DIMS).to_vec()
            };
            while ne.len() > 1 && ne.last() == Some(&1) {
                ne.pop();
            }
            tensors.push(GgufTensor {
                name,
                ty: sys::gguf_get_tensor_type(c, i) as i32,
                offset: sys::gguf_get_tensor_offset(c, i),
                ne,
                size: sys::gguf_get_tensor_size(c, i),
            });
        }

        Ok(GgufSummary {
            version: sys::gguf_get_version(c),
            alignment: sys::gguf_get_alignment(c),
            data_offset: sys::gguf_get_data_offset(c),
            kvs,
            tensors,
        })
    }
}

// ---------------------------------------------------------------------------
// ggml dequantization (type traits `to_float`)
// ---------------------------------------------------------------------------

/// Decodes `bytes` (whole blocks of ggml type `ty`) into `n` floats with ggml's own
/// `to_float` from `ggml_get_type_traits` (`dequantize_row_*`, `ggml_fp16_to_fp32_row`, ...).
/// F32 has no `to_float` in ggml and is copied.
pub fn ggml_dequantize(ty: i32, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let t = check_type(ty)?;
    let row_size = ggml_row_size(ty, n)?;
    ensure!(
        bytes.len() == row_size,
        "{} bytes of ggml type {ty}, expected {row_size} for {n} values",
        bytes.len()
    );
    if ty == ggml_type::F32 {
        return Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect());
    }
    let _guard = lock();
    // SAFETY: valid type; ggml returns a pointer into its static type table.
    let traits = unsafe { sys::ggml_get_type_traits(t) };
    ensure!(!traits.is_null(), "no type traits for ggml type {ty}");
    // SAFETY: non-null pointer to a static table entry.
    let to_float =
        unsafe { (*traits).to_float }.ok_or_else(|| anyhow!("ggml type {ty} has no to_float"))?;
    let mut out = vec![0f32; n];
    if n == 0 {
        return Ok(out);
    }
    let k = i64::try_from(n).context("too many values")?;
    // SAFETY: `bytes` holds exactly the blocks of `n` values of this type, `out` has room for
    // `n` floats, and `n` is a multiple of the block size (checked by ggml_row_size).
    unsafe { to_float(bytes.as_ptr().cast(), out.as_mut_ptr(), k) };
    Ok(out)
}

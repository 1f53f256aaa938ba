//! Test oracle for `quantize`: llama.cpp's own `llama_model_quantize` (what the llama-quantize
//! tool calls), through llama-cpp-sys-2, under the oracle lock.
//!
//! The importance matrix goes in as llama-quantize hands it over: a list of (tensor name,
//! values) with the values already averaged (sums / counts), one slice per expert for expert
//! tensors. llama-quantize's file readers are not part of the library, so the caller computes
//! the values; the metadata that llama-quantize adds about the matrix goes in as KV overrides
//! ([`KvOverride`]), exactly as the tool passes it.

use crate::oracle;
use anyhow::{Context, Result, bail, ensure};
use llama_cpp_sys_2 as sys;
use std::ffi::{CString, c_char};
use std::path::Path;
use std::ptr;

/// A metadata value set on the output (`--override-kv`; llama-quantize also uses these for
/// `quantize.imatrix.*`). Integers are written as u32, as llama.cpp's quantizer does.
#[derive(Clone, Debug, PartialEq)]
pub enum KvOverride {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// At most 127 bytes.
    Str(String),
}

/// `llama_model_quantize_params`, the parts we use.
#[derive(Clone, Debug)]
pub struct QuantizeParams {
    /// `llama_ftype` number.
    pub ftype: u32,
    /// Worker threads (<= 0: all cores).
    pub nthread: i32,
    pub pure: bool,
    pub allow_requantize: bool,
    /// `ggml_type` numbers.
    pub output_tensor_type: Option<i32>,
    pub token_embedding_type: Option<i32>,
    /// `--tensor-type` (pattern, ggml_type), pattern already lowercased as the tool does.
    pub tensor_types: Vec<(String, i32)>,
    /// (tensor name, per-column importance, per expert for 3-D tensors).
    pub imatrix: Option<Vec<(String, Vec<f32>)>>,
    pub kv_overrides: Vec<(String, KvOverride)>,
}

impl QuantizeParams {
    pub fn new(ftype: u32) -> Self {
        Self {
            ftype,
            nthread: 2,
            pure: false,
            allow_requantize: false,
            output_tensor_type: None,
            token_embedding_type: None,
            tensor_types: Vec::new(),
            imatrix: None,
            kv_overrides: Vec::new(),
        }
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).with_context(|| format!("{s:?} contains a NUL byte"))
}

fn path_cstring(p: &Path) -> Result<CString> {
    cstring(
        p.to_str()
            .with_context(|| format!("path is not valid UTF-8: {}", p.display()))?,
    )
}

fn fill(dst: &mut [c_char; 128], s: &str) -> Result<()> {
    ensure!(s.len() < 128, "{s:?} is longer than 127 bytes");
    ensure!(!s.as_bytes().contains(&0), "{s:?} contains a NUL byte");
    for (d, &b) in dst.iter_mut().zip(s.as_bytes()) {
        *d = b as c_char;
    }
    dst[s.len()] = 0;
    Ok(())
}

/// Quantizes `input` into `output` with llama.cpp. On failure the error carries llama.cpp's
/// error log lines.
pub fn model_quantize(input: &Path, output: &Path, p: &QuantizeParams) -> Result<()> {
    let _guard = oracle::lock();
    let cin = path_cstring(input)?;
    let cout = path_cstring(output)?;

    // Everything the params point to lives until the call returns.
    let im_names: Vec<CString>;
    let mut im_items: Vec<sys::llama_model_imatrix_data> = Vec::new();
    if let Some(im) = &p.imatrix {
        im_names = im.iter().map(|(n, _)| cstring(n)).collect::<Result<_>>()?;
        for ((_, v), n) in im.iter().zip(&im_names) {
            im_items.push(sys::llama_model_imatrix_data {
                name: n.as_ptr(),
                data: v.as_ptr(),
                size: v.len(),
            });
        }
        im_items.push(sys::llama_model_imatrix_data {
            name: ptr::null(),
            data: ptr::null(),
            size: 0,
        });
    }
    let mut kvo: Vec<sys::llama_model_kv_override> = Vec::new();
    for (k, v) in &p.kv_overrides {
        // SAFETY: a plain C struct (integers, arrays and a union of them): all-zero is valid.
        let mut o: sys::llama_model_kv_override = unsafe { std::mem::zeroed() };
        fill(&mut o.key, k)?;
        match v {
            KvOverride::Int(i) => {
                o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_INT;
                o.__bindgen_anon_1.val_i64 = *i;
            }
            KvOverride::Float(f) => {
                o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_FLOAT;
                o.__bindgen_anon_1.val_f64 = *f;
            }
            KvOverride::Bool(b) => {
                o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_BOOL;
                o.__bindgen_anon_1.val_bool = *b;
            }
            KvOverride::Str(s) => {
                o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_STR;
                let mut buf = [0 as c_char; 128];
                fill(&mut buf, s)?;
                o.__bindgen_anon_1.val_str = buf;
            }
        }
        kvo.push(o);
    }
    if !kvo.is_empty() {
        // The terminator: an empty key.
        // SAFETY: as above.
        kvo.push(unsafe { std::mem::zeroed() });
    }
    let tt_patterns: Vec<CString> = p
        .tensor_types
        .iter()
        .map(|(pat, _)| cstring(pat))
        .collect::<Result<_>>()?;
    let mut tto: Vec<sys::llama_model_tensor_override> = p
        .tensor_types
        .iter()
        .zip(&tt_patterns)
        .map(|((_, ty), c)| sys::llama_model_tensor_override {
            pattern: c.as_ptr(),
            type_: *ty as sys::ggml_type,
        })
        .collect();
    if !tto.is_empty() {
        tto.push(sys::llama_model_tensor_override {
            pattern: ptr::null(),
            type_: sys::GGML_TYPE_COUNT,
        });
    }

    // SAFETY: returns a plain struct by value.
    let mut params = unsafe { sys::llama_model_quantize_default_params() };
    params.nthread = p.nthread;
    params.ftype = p.ftype as sys::llama_ftype;
    params.pure_ = p.pure;
    params.allow_requantize = p.allow_requantize;
    if let Some(t) = p.output_tensor_type {
        params.output_tensor_type = t as sys::ggml_type;
    }
    if let Some(t) = p.token_embedding_type {
        params.token_embedding_type = t as sys::ggml_type;
    }
    if !im_items.is_empty() {
        params.imatrix = im_items.as_ptr();
    }
    if !kvo.is_empty() {
        params.kv_overrides = kvo.as_ptr();
    }
    if !tto.is_empty() {
        params.tt_overrides = tto.as_ptr();
    }
    oracle::take_logs();
    // SAFETY: valid C strings; `params` and every array it points to (each terminated as
    // llama.cpp expects) outlive the call; the oracle lock serializes llama.cpp use.
    let rc = unsafe { sys::llama_model_quantize(cin.as_ptr(), cout.as_ptr(), &params) };
    let logs = oracle::take_logs();
    if rc != 0 {
        let errors: Vec<&str> = logs
            .iter()
            .filter(|l| l.starts_with("[ERROR]"))
            .map(|l| l.trim_end())
            .collect();
        bail!(
            "llama_model_quantize({} -> {}) failed: {}",
            input.display(),
            output.display(),
            if errors.is_empty() {
                "(no error logged)".to_string()
            } else {
                errors.join(" | ")
            }
        );
    }
    Ok(())
}

//! llama.cpp's `tokenizer.ggml.model = "llama"` (SPM) tokenizer, reimplemented from
//! `llama-vocab.cpp` (llama-cpp-sys-2 0.1.161): `llama_vocab::impl::load` (token attributes,
//! the special-token cache), `tokenizer_st_partition`, the SPM branch of
//! `llama_vocab::impl::tokenize` and `llm_tokenizer_spm_session`.
//!
//! What llama.cpp does with a text, and so what this module does:
//!
//! 1. **Special-token partition.** Every token whose attribute is CONTROL, USER_DEFINED or
//!    UNKNOWN is a "special" token, tried longest text first. Each occurrence of its text in a
//!    not yet partitioned piece of the input splits that piece around it and becomes that token.
//!    With `parse_special == false` the CONTROL and UNKNOWN ones are skipped (USER_DEFINED tokens
//!    are always matched).
//! 2. **Per text fragment:** a space is prepended when `add_space_prefix` is set (default true
//!    for SPM) and the fragment is the first one or follows a special token, then every `' '`
//!    becomes `"▁"`.
//! 3. **Bigram merging.** The fragment is split into UTF-8 characters; every adjacent pair whose
//!    concatenation is a vocabulary entry goes into a priority queue keyed by that entry's score,
//!    ties broken by the leftmost position. The best pair is merged, its new neighbours are
//!    queued, and stale pairs are skipped, until the queue is empty. This is a greedy merge, not
//!    SentencePiece's Viterbi search, hence the differences from HF's Unigram model.
//! 4. **Output.** Each remaining symbol is its vocabulary id if its text is in the vocabulary
//!    (whatever the token's type), otherwise its bytes as `<0xXX>` byte tokens.
//! 5. `<s>` first when `add_special && add_bos`, `</s>` last when `add_special && add_eos`.
//!
//! Points where we knowingly differ from llama.cpp, none of which an llm-jp GGUF can reach:
//! - llama.cpp sorts the special tokens with the unstable `std::sort` by length; libstdc++'s
//!   sort is an insertion sort (stable) up to 16 elements, which we reproduce with a stable sort
//!   (ties in id order). With more than 16 special tokens, equal-length ones may be tried in a
//!   different order; that only matters when two equal-length special texts overlap in the input.
//! - Where llama.cpp aborts (`GGML_ASSERT`, an uncaught `std::out_of_range`: BOS/EOS requested
//!   but absent, a byte with no `<0xXX>` token, duplicate token texts) we return an error.
//! - The text-based attribute fix-ups (EOG tokens forced to CONTROL, gpt-oss and harmony tokens
//!   made USER_DEFINED, gemma4/plamo `</s>` made NORMAL, phi-3 RSTRIP, `<mask>`/`[MASK]` LSTRIP)
//!   are reproduced; the FIM token ids, which only feed the EOG set used by the gemma4/plamo
//!   rule, are not read.
//! - The `rev_merge` map of `llm_tokenizer_spm_session::resegment` is not kept: only vocabulary
//!   texts are ever merged, so a symbol missing from the vocabulary is always a single, never
//!   merged, character, which `rev_merge` (keyed by vocabulary texts) cannot contain.

use crate::gguf::{GgufFile, Value};
use crate::vocab::{Vocab, token_type};
use anyhow::{Context, Result, bail, ensure};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

/// llama.cpp's `llama_token_attr` bit flags.
pub mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1 << 0;
    pub const UNUSED: u32 = 1 << 1;
    pub const NORMAL: u32 = 1 << 2;
    pub const CONTROL: u32 = 1 << 3;
    pub const USER_DEFINED: u32 = 1 << 4;
    pub const BYTE: u32 = 1 << 5;
    pub const NORMALIZED: u32 = 1 << 6;
    pub const LSTRIP: u32 = 1 << 7;
    pub const RSTRIP: u32 = 1 << 8;
    pub const SINGLE_WORD: u32 = 1 << 9;
}

/// The attribute llama.cpp gives a GGUF `token_type` value.
pub fn attr_of_token_type(ty: i32) -> u32 {
    match ty {
        token_type::UNKNOWN => attr::UNKNOWN,
        token_type::UNUSED => attr::UNUSED,
        token_type::NORMAL => attr::NORMAL,
        token_type::CONTROL => attr::CONTROL,
        token_type::USER_DEFINED => attr::USER_DEFINED,
        token_type::BYTE => attr::BYTE,
        _ => attr::UNDEFINED,
    }
}

/// What llama.cpp reads from a GGUF file for an SPM vocabulary. `None` means the key is absent
/// and llama.cpp's default applies.
#[derive(Clone, Debug, Default)]
pub struct SpmParams {
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (empty: all 0).
    pub scores: Vec<f32>,
    /// `tokenizer.ggml.token_type` (empty: all NORMAL).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id` (default 1).
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id` (default 2).
    pub eos: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (default: found by text).
    pub eot: Option<u32>,
    /// `tokenizer.ggml.eom_token_id` (default: found by text).
    pub eom: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (default true for SPM).
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (default false for SPM).
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix` (default true for SPM).
    pub add_space_prefix: Option<bool>,
    /// `general.name` (llama.cpp sets per-token strip flags for phi-3 / modern-bert names).
    pub model_name: Option<String>,
    /// `tokenizer.ggml.pre`.
    pub tokenizer_pre: Option<String>,
    /// `general.architecture`.
    pub architecture: Option<String>,
}

impl SpmParams {
    /// Reads the tokenizer keys of a GGUF file; refuses a tokenizer model other than `"llama"`.
    pub fn from_gguf_file(g: &GgufFile) -> Result<Self> {
        let model = g
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .context("no tokenizer.ggml.model")?;
        ensure!(
            model == "llama",
            "tokenizer.ggml.model is {model:?}, not \"llama\" (SPM)"
        );
        let tokens = match g.get("tokenizer.ggml.tokens") {
            Some(Value::ArrString(t)) => t.clone(),
            Some(_) => bail!("tokenizer.ggml.tokens is not a string array"),
            None => bail!("no tokenizer.ggml.tokens"),
        };
        let scores = match g.get("tokenizer.ggml.scores") {
            Some(Value::ArrF32(s)) => s.clone(),
            Some(Value::ArrI32(s)) => s.iter().map(|&x| x as f32).collect(),
            Some(_) => bail!("tokenizer.ggml.scores is neither f32[] nor i32[]"),
            None => Vec::new(),
        };
        let token_types = match g.get("tokenizer.ggml.token_type") {
            Some(Value::ArrI32(t)) => t.clone(),
            Some(_) => bail!("tokenizer.ggml.token_type is not i32[]"),
            None => Vec::new(),
        };
        let id = |key: &str| -> Option<u32> {
            g.get(key)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        let flag = |key: &str| -> Option<bool> {
            match g.get(key) {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            }
        };
        let string = |key: &str| g.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            tokens,
            scores,
            token_types,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            eot: id("tokenizer.ggml.eot_token_id"),
            eom: id("tokenizer.ggml.eom_token_id"),
            add_bos: flag("tokenizer.ggml.add_bos_token"),
            add_eos: flag("tokenizer.ggml.add_eos_token"),
            add_space_prefix: flag("tokenizer.ggml.add_space_prefix"),
            model_name: string("general.name"),
            tokenizer_pre: string("tokenizer.ggml.pre"),
            architecture: string("general.architecture"),
        })
    }

    /// What our converter writes into a GGUF for this vocabulary (see formats/gguf.md).
    pub fn from_vocab(v: &Vocab) -> Self {
        Self {
            tokens: v.tokens.clone(),
            scores: v.scores.clone(),
            token_types: v.types.clone(),
            bos: v.bos,
            eos: v.eos,
            add_bos: Some(v.add_bos),
            add_eos: Some(v.add_eos),
            architecture: Some("llama".to_string()),
            tokenizer_pre: Some("default".to_string()),
            ..Self::default()
        }
    }
}

/// Token texts llama.cpp takes for end-of-turn tokens when `eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Token texts llama.cpp treats as end-of-generation (and forces to CONTROL).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// gpt-oss tokens llama.cpp always makes USER_DEFINED.
const GPT_OSS_USER_DEFINED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// llama.cpp's SPM tokenizer over one vocabulary.
#[derive(Clone, Debug)]
pub struct LlamaSpmTokenizer {
    texts: Vec<String>,
    scores: Vec<f32>,
    attrs: Vec<u32>,
    text_to_id: HashMap<Box<[u8]>, u32>,
    /// llama.cpp's `cache_special_tokens`: CONTROL / USER_DEFINED / UNKNOWN ids, longest first.
    special_tokens: Vec<u32>,
    byte_tokens: [Option<u32>; 256],
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
}

/// A piece of input after the special-token partition.
#[derive(Clone, Debug, PartialEq)]
enum Fragment {
    /// Bytes of the input not (yet) matched by a special token.
    Text(Range<usize>),
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Byte length of the UTF-8 sequence a lead byte starts (llama.cpp's `unicode_len_utf8`:
/// continuation and invalid bytes count as 1).
fn utf8_len(lead: u8) -> usize {
    match lead >> 4 {
        0xC | 0xD => 2,
        0xE => 3,
        0xF => 4,
        _ => 1,
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl LlamaSpmTokenizer {
    /// From a GGUF file's tokenizer keys.
    pub fn from_gguf(path: &Path) -> Result<Self> {
        Self::from_gguf_file(&GgufFile::open(path)?)
    }

    /// From an opened GGUF file's tokenizer keys.
    pub fn from_gguf_file(g: &GgufFile) -> Result<Self> {
        Self::from_params(SpmParams::from_gguf_file(g)?)
            .with_context(|| format!("{}: tokenizer", g.path.display()))
    }

    /// From the vocabulary our converter would write (no GGUF needed).
    pub fn from_vocab(v: &Vocab) -> Result<Self> {
        Self::from_params(SpmParams::from_vocab(v))
    }

    /// Builds the vocabulary as `llama_vocab::impl::load` does for
    /// `tokenizer.ggml.model = "llama"`.
    pub fn from_params(p: SpmParams) -> Result<Self> {
        let n = p.tokens.len();
        ensure!(n > 0, "empty vocabulary");
        ensure!(
            u32::try_from(n).is_ok_and(|n| n < i32::MAX as u32),
            "vocabulary too large"
        );
        ensure!(
            p.scores.is_empty() || p.scores.len() >= n,
            "{} scores for {n} tokens",
            p.scores.len()
        );
        ensure!(
            p.token_types.is_empty() || p.token_types.len() >= n,
            "{} token types for {n} tokens",
            p.token_types.len()
        );

        let mut texts = p.tokens;
        let mut text_to_id = HashMap::with_capacity(n);
        let mut attrs = Vec::with_capacity(n);
        let mut scores = Vec::with_capacity(n);
        for (i, text) in texts.iter_mut().enumerate() {
            if text.is_empty() {
                *text = format!("[EMPTY_{i}]");
            }
            let bytes: Box<[u8]> = text.as_bytes().into();
            if text_to_id.insert(bytes, i as u32).is_some() {
                bail!("token text {text:?} appears twice (llama.cpp refuses such a vocabulary)");
            }
            scores.push(p.scores.get(i).copied().unwrap_or(0.0));
            attrs.push(
                p.token_types
                    .get(i)
                    .map_or(attr::NORMAL, |&t| attr_of_token_type(t)),
            );
        }

        // Special ids: a default out of range is disabled; a key out of range keeps the default.
        let resolve = |default: Option<u32>, key: Option<u32>| -> Option<u32> {
            let default = default.filter(|&d| (d as usize) < n);
            match key {
                Some(k) if (k as usize) < n => Some(k),
                _ => default,
            }
        };
        let bos = resolve(Some(1), p.bos);
        let eos = resolve(Some(2), p.eos);
        let mut eot = resolve(None, p.eot);
        let mut eom = resolve(None, p.eom);

        let id_of = |t: &str| text_to_id.get(t.as_bytes()).copied();
        // Auto-detected end-of-turn / end-of-message tokens (llama.cpp walks an unordered map, so
        // which candidate it picks is unspecified; all of them are EOG texts, made CONTROL below).
        if eot.is_none() {
            eot = EOT_TEXTS.iter().filter_map(|t| id_of(t)).min();
        }
        if eom.is_none() {
            eom = id_of("<|eom_id|>");
        }
        // Control tokens whose text contains "unused" are also UNUSED.
        for (a, t) in attrs.iter_mut().zip(&texts) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }
        // End-of-generation tokens by text, forced to CONTROL.
        let mut eog: HashSet<u32> = HashSet::new();
        for id in EOG_TEXTS.iter().filter_map(|t| id_of(t)) {
            eog.insert(id);
            attrs[id as usize] |= attr::CONTROL;
        }
        for id in GPT_OSS_USER_DEFINED.iter().filter_map(|t| id_of(t)) {
            attrs[id as usize] = attr::USER_DEFINED;
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        let eog_find =
            |eog: &HashSet<u32>, t: &str| eog.iter().copied().find(|&id| texts[id as usize] == t);
        // harmony / solar-open: "<|end|>" is not EOG there but a user-defined token.
        if let Some(end) = eog_find(&eog, "<|end|>") {
            let has = |t: &str| eog_find(&eog, t).is_some();
            let call = has("<|call|>") || has("<|calls|>");
            if call && (has("<|return|>") || has("<|flush|>")) {
                eog.remove(&end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        // gemma4 / plamo: "</s>" is a normal token.
        let marker = eog_find(&eog, "<|tool_response>").or(eog_find(&eog, "<|plamo:eos|>"));
        if let (Some(_), Some(s)) = (marker, eog_find(&eog, "</s>")) {
            attrs[s as usize] = attr::NORMAL;
        }

        let mut special_tokens: Vec<u32> = (0..n as u32)
            .filter(|&id| {
                attrs[id as usize] & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        special_tokens.sort_by_key(|&id| std::cmp::Reverse(texts[id as usize].len()));

        // Per-model strip flags, chosen by name.
        let lower = |s: &Option<String>| s.as_deref().unwrap_or("").to_lowercase();
        let contains_any = |s: &str, subs: &[&str]| subs.iter().any(|x| s.contains(x));
        let name = lower(&p.model_name);
        let pre = p.tokenizer_pre.clone().unwrap_or_default();
        let arch = p.architecture.clone().unwrap_or_default();
        let set = |attrs: &mut Vec<u32>, text: &str, flag: u32, on: bool| {
            if let Some(id) = id_of(text) {
                let a = &mut attrs[id as usize];
                *a = if on { *a | flag } else { *a & !flag };
            }
        };
        if contains_any(
            &pre,
            &["jina-v2-de", "jina-v2-es", "jina-v2-code", "mmbert"],
        ) || contains_any(&arch, &["nomic-bert-moe", "jina-bert-v3"])
        {
            set(&mut attrs, "<mask>", attr::LSTRIP, true);
        } else if contains_any(&name, &["phi-3", "phi3"]) {
            for &id in &special_tokens {
                attrs[id as usize] |= attr::RSTRIP;
            }
            set(&mut attrs, "</s>", attr::RSTRIP, true);
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                set(&mut attrs, t, attr::RSTRIP, false);
            }
        } else if contains_any(&name, &["modern-bert"]) {
            set(&mut attrs, "[MASK]", attr::LSTRIP, true);
        }

        let mut byte_tokens = [None; 256];
        for (b, slot) in byte_tokens.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            *slot = id_of(&hex).or_else(|| text_to_id.get(&[b as u8][..]).copied());
        }

        Ok(Self {
            texts,
            scores,
            attrs,
            text_to_id,
            special_tokens,
            byte_tokens,
            bos,
            eos,
            add_bos: p.add_bos.unwrap_or(true),
            add_eos: p.add_eos.unwrap_or(false),
            add_space_prefix: p.add_space_prefix.unwrap_or(true),
        })
    }

    /// `llama_tokenize(vocab, text, ..., add_special, parse_special)`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.tokenize_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// As [`Self::tokenize`], for any bytes (llama.cpp does not require valid UTF-8).
    pub fn tokenize_bytes(
        &self,
        text: &[u8],
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>> {
        let fragments = self.partition(text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 2 + 2);
        if add_special && self.add_bos {
            out.push(
                self.bos
                    .context("add_bos is set but there is no BOS token (llama.cpp would abort)")?,
            );
        }
        // The first fragment gets the dummy-prefix space, as does every one after a special token.
        let mut prev_special = true;
        for fragment in &fragments {
            match fragment {
                Fragment::Text(range) => {
                    let mut s = Vec::with_capacity(range.len() + 3);
                    if self.add_space_prefix && prev_special {
                        s.push(b' ');
                    }
                    s.extend_from_slice(&text[range.clone()]);
                    let escaped = escape_whitespace(&s);
                    self.merge_session(&escaped, &mut out)?;
                    prev_special = false;
                }
                Fragment::Token(id) => {
                    out.push(*id);
                    prev_special = true;
                }
            }
        }
        if add_special && self.add_eos {
            out.push(
                self.eos
                    .context("add_eos is set but there is no EOS token (llama.cpp would abort)")?,
            );
        }
        Ok(out)
    }

    /// `tokenizer_st_partition`: splits the input around the special tokens' texts, trying the
    /// longest special token first, each over all fragments not yet matched.
    fn partition(&self, text: &[u8], parse_special: bool) -> Vec<Fragment> {
        let mut fragments = if text.is_empty() {
            Vec::new()
        } else {
            vec![Fragment::Text(0..text.len())]
        };
        for &id in &self.special_tokens {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let pattern = self.texts[id as usize].as_bytes();
            let mut next = Vec::with_capacity(fragments.len());
            for fragment in fragments {
                match fragment {
                    Fragment::Text(range) => {
                        split_on_special(text, range, pattern, id, a, &mut next);
                    }
                    token => next.push(token),
                }
            }
            fragments = next;
        }
        fragments
    }

    /// One `llm_tokenizer_spm_session::tokenize` call on an escaped text fragment.
    fn merge_session(&self, text: &[u8], out: &mut Vec<u32>) -> Result<()> {
        let mut symbols = Vec::new();
        let mut offset = 0;
        while offset < text.len() {
            let len = utf8_len(text[offset]).min(text.len() - offset);
            let index = symbols.len();
            symbols.push(Symbol {
                prev: index.checked_sub(1),
                next: (offset + len < text.len()).then_some(index + 1),
                start: offset,
                len,
            });
            offset += len;
        }

        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.try_add_bigram(text, &symbols, Some(right - 1), Some(right), &mut queue);
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (bigram.left, bigram.right);
            // Skip a pair whose symbols changed since it was queued.
            if symbols[l].len == 0
                || symbols[r].len == 0
                || symbols[l].len + symbols[r].len != bigram.size
            {
                continue;
            }
            // Merge the right symbol into the left one and unlink it.
            symbols[l].len += symbols[r].len;
            symbols[r].len = 0;
            symbols[l].next = symbols[r].next;
            if let Some(after) = symbols[r].next {
                symbols[after].prev = Some(l);
            }
            let (prev, next) = (symbols[l].prev, symbols[l].next);
            self.try_add_bigram(text, &symbols, prev, Some(l), &mut queue);
            self.try_add_bigram(text, &symbols, Some(l), next, &mut queue);
        }

        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let s = &symbols[i];
            let piece = &text[s.start..s.start + s.len];
            if let Some(&id) = self.text_to_id.get(piece) {
                out.push(id);
            } else {
                // Not in the vocabulary (then it is a single character): its bytes.
                for &b in piece {
                    out.push(self.byte_tokens[b as usize].with_context(|| {
                        format!("no <0x{b:02X}> byte token (llama.cpp would abort)")
                    })?);
                }
            }
            at = s.next;
        }
        Ok(())
    }

    fn try_add_bigram(
        &self,
        text: &[u8],
        symbols: &[Symbol],
        left: Option<usize>,
        right: Option<usize>,
        queue: &mut BinaryHeap<Bigram>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let start = symbols[left].start;
        let size = symbols[left].len + symbols[right].len;
        if let Some(&id) = self.text_to_id.get(&text[start..start + size]) {
            queue.push(Bigram {
                left,
                right,
                score: self.scores[id as usize],
                size,
            });
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    /// The vocabulary text of `id` (`"▁foo"`, `"<0x0A>"`, `"<s>"`).
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary text.
    pub fn token_to_id(&self, text: &str) -> Option<u32> {
        self.text_to_id.get(text.as_bytes()).copied()
    }

    /// The score of `id`.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// llama.cpp's attribute bits of `id` (see [`attr`]), after its text-based fix-ups.
    pub fn token_attr(&self, id: u32) -> Option<u32> {
        self.attrs.get(id as usize).copied()
    }

    /// The special tokens in the order the partition tries them.
    pub fn special_tokens(&self) -> &[u32] {
        &self.special_tokens
    }

    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.add_eos
    }

    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
}

/// Splits `range` of `text` around every occurrence of a special token's text, left to right,
/// appending the pieces to `out` (the loop body of `tokenizer_st_partition`).
fn split_on_special(
    text: &[u8],
    range: Range<usize>,
    pattern: &[u8],
    id: u32,
    token_attr: u32,
    out: &mut Vec<Fragment>,
) {
    let (mut start, end) = (range.start, range.end);
    loop {
        let Some(found) = find_bytes(&text[start..end], pattern) else {
            out.push(Fragment::Text(start..end));
            return;
        };
        let at = start + found;
        let mut left_end = at;
        if token_attr & attr::LSTRIP != 0 {
            while left_end > start && c_isspace(text[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > start {
            out.push(Fragment::Text(start..left_end));
        }
        out.push(Fragment::Token(id));
        let mut right = at + pattern.len();
        if right >= end {
            return;
        }
        if token_attr & attr::RSTRIP != 0 {
            while right < end && c_isspace(text[right]) {
                right += 1;
            }
        }
        if right == end {
            return;
        }
        start = right;
    }
}

/// `llama_escape_whitespace`: every `' '` becomes `"▁"` (U+2581).
fn escape_whitespace(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 2);
    for &b in text {
        if b == b' ' {
            out.extend_from_slice("\u{2581}".as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// One UTF-8 character, or a run of merged ones, of a fragment (`llm_symbol`).
#[derive(Clone, Copy, Debug)]
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    start: usize,
    /// Byte length; 0 once merged into the symbol on its left.
    len: usize,
}

/// A candidate merge of two adjacent symbols (`llm_bigram_spm`).
#[derive(Clone, Copy, Debug)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the merged text when queued.
    size: usize,
}

/// The queue pops the highest score first and, among equal scores, the leftmost pair
/// (`llm_bigram_spm::comparator`). Scores compare as C++ floats do: -0.0 equals 0.0, and a NaN
/// compares equal to everything.
impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: `<unk> <s> </s>`, the 256 byte tokens, then `extra` (text, score).
    fn toy(extra: &[(&str, f32)]) -> LlamaSpmTokenizer {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut scores = vec![0.0, 0.0, 0.0];
        let mut types = vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
        ];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
            types.push(token_type::BYTE);
        }
        for (t, s) in extra {
            tokens.push(t.to_string());
            scores.push(*s);
            types.push(token_type::NORMAL);
        }
        LlamaSpmTokenizer::from_params(SpmParams {
            tokens,
            scores,
            token_types: types,
            ..SpmParams::default()
        })
        .unwrap()
    }

    fn pieces(t: &LlamaSpmTokenizer, text: &str, add: bool, special: bool) -> Vec<String> {
        t.tokenize(text, add, special)
            .unwrap()
            .into_iter()
            .map(|id| t.piece(id).unwrap().to_string())
            .collect()
    }

    #[test]
    fn greedy_merge_is_not_viterbi() {
        // Viterbi takes "▁ab" + "c" (-1 + -1); the greedy merge joins "bc" (-0.5) first, which
        // leaves "▁a" + "bc" (-5 + -0.5).
        let t = toy(&[
            ("▁", -3.0),
            ("a", -3.0),
            ("b", -3.0),
            ("c", -1.0),
            ("▁a", -5.0),
            ("▁ab", -1.0),
            ("bc", -0.5),
        ]);
        assert_eq!(pieces(&t, "abc", true, false), ["<s>", "▁a", "bc"]);
    }

    #[test]
    fn ties_go_to_the_leftmost_pair() {
        let t = toy(&[("a", -5.0), ("aa", -1.0)]);
        assert_eq!(
            pieces(&t, "aaa", false, false),
            ["<0xE2>", "<0x96>", "<0x81>", "aa", "a"]
        );
    }

    #[test]
    fn specials_and_byte_fallback() {
        let t = toy(&[("▁", -1.0), ("x", -1.0)]);
        assert_eq!(
            pieces(&t, "x<s>x", false, true),
            ["▁", "x", "<s>", "▁", "x"]
        );
        assert_eq!(pieces(&t, "\n", false, false), ["▁", "<0x0A>"]);
        assert!(t.tokenize("", true, false).unwrap() == [1]);
        assert!(t.tokenize("", false, false).unwrap().is_empty());
    }
}

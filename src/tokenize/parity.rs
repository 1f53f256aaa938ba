//! How differently two tokenizers split a corpus: typically HF (the Unigram model the checkpoint
//! was trained with) against llama.cpp's SPM merge (what a GGUF with `tokenizer.ggml.model =
//! "llama"` gets).
//!
//! Figures, over the lines of a corpus, each encoded with special tokens (so `<s>` included):
//! - `line_share`: lines whose ids differ / lines;
//! - `token_share`: 1 - (sum over lines of the longest common subsequence of the two id lists)
//!   / (sum over lines of the longer list's length): the share of token positions that do not
//!   line up, 0 for identical output;
//! - `differing_line_token_share`: HF tokens that sit in differing lines / all HF tokens (the
//!   cruder "how much text is affected").

use super::hf::HfTokenizer;
use super::llama_spm::LlamaSpmTokenizer;
use anyhow::{Context, Result};
use std::fmt;

/// One line that the two tokenizers split differently.
#[derive(Clone, Debug)]
pub struct LineDiff {
    /// 0-based line number.
    pub line: usize,
    pub text: String,
    pub hf_ids: Vec<u32>,
    pub llama_ids: Vec<u32>,
    pub hf_pieces: Vec<String>,
    pub llama_pieces: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ParityReport {
    pub lines: usize,
    pub lines_differ: usize,
    /// Ids over all lines.
    pub hf_tokens: usize,
    pub llama_tokens: usize,
    /// HF ids in the lines that differ.
    pub hf_tokens_in_differing_lines: usize,
    /// Sum over lines of the longest common subsequence of the two id lists.
    pub aligned_matches: usize,
    /// Sum over lines of max(HF length, llama length).
    pub aligned_total: usize,
    /// The first differing lines, at most the number asked for.
    pub examples: Vec<LineDiff>,
}

impl ParityReport {
    /// Share of lines whose ids differ.
    pub fn line_share(&self) -> f64 {
        ratio(self.lines_differ, self.lines)
    }

    /// 1 - LCS-aligned matches / max length, summed over lines.
    pub fn token_share(&self) -> f64 {
        1.0 - ratio(self.aligned_matches, self.aligned_total)
    }

    /// Share of HF tokens that are in differing lines.
    pub fn differing_line_token_share(&self) -> f64 {
        ratio(self.hf_tokens_in_differing_lines, self.hf_tokens)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl fmt::Display for ParityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} lines differ ({:.1}%); tokens misaligned {:.2}% (LCS over {} positions); \
             {:.1}% of HF tokens in differing lines; {} HF / {} llama tokens",
            self.lines_differ,
            self.lines,
            100.0 * self.line_share(),
            100.0 * self.token_share(),
            self.aligned_total,
            100.0 * self.differing_line_token_share(),
            self.hf_tokens,
            self.llama_tokens,
        )?;
        for e in &self.examples {
            writeln!(f, "  line {}: {:?}", e.line + 1, e.text)?;
            writeln!(f, "    HF    {}", e.hf_pieces.join(" "))?;
            writeln!(f, "    llama {}", e.llama_pieces.join(" "))?;
        }
        Ok(())
    }
}

/// Length of the longest common subsequence of two id lists.
pub fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diag = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// Lines as scripts/make_reference.py reads a corpus: split on `'\n'` only, a final empty line
/// dropped, one trailing `'\r'` removed.
pub fn corpus_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect()
}

/// Compares two encoders over `lines`. `hf` / `llama` give the ids of a line; `hf_piece` /
/// `llama_piece` render an id for the examples; at most `max_examples` differing lines are kept.
pub fn compare(
    lines: &[&str],
    mut hf: impl FnMut(&str) -> Result<Vec<u32>>,
    mut llama: impl FnMut(&str) -> Result<Vec<u32>>,
    hf_piece: impl Fn(u32) -> String,
    llama_piece: impl Fn(u32) -> String,
    max_examples: usize,
) -> Result<ParityReport> {
    let mut r = ParityReport {
        lines: lines.len(),
        ..ParityReport::default()
    };
    for (i, &text) in lines.iter().enumerate() {
        let a = hf(text).with_context(|| format!("line {}", i + 1))?;
        let b = llama(text).with_context(|| format!("line {}", i + 1))?;
        r.hf_tokens += a.len();
        r.llama_tokens += b.len();
        r.aligned_total += a.len().max(b.len());
        if a == b {
            r.aligned_matches += a.len();
            continue;
        }
        r.lines_differ += 1;
        r.hf_tokens_in_differing_lines += a.len();
        r.aligned_matches += lcs_len(&a, &b);
        if r.examples.len() < max_examples {
            r.examples.push(LineDiff {
                line: i,
                text: text.to_string(),
                hf_pieces: a.iter().map(|&id| hf_piece(id)).collect(),
                llama_pieces: b.iter().map(|&id| llama_piece(id)).collect(),
                hf_ids: a,
                llama_ids: b,
            });
        }
    }
    Ok(r)
}

/// HF (`add_special_tokens = true`) against our llama.cpp SPM tokenizer (`add_special = true`,
/// `parse_special = false`, as `llama-cli` tokenizes a prompt's user text) over `lines`.
pub fn hf_vs_llama(
    hf: &HfTokenizer,
    llama: &LlamaSpmTokenizer,
    lines: &[&str],
    max_examples: usize,
) -> Result<ParityReport> {
    compare(
        lines,
        |t| hf.encode(t, true),
        |t| llama.tokenize(t, true, false),
        |id| hf.piece(id),
        |id| llama.piece(id).unwrap_or("?").to_string(),
        max_examples,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs() {
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[1, 3, 4]), 3);
        assert_eq!(lcs_len(&[], &[1]), 0);
        assert_eq!(lcs_len(&[1, 5, 6, 2], &[1, 7, 2]), 2);
    }

    #[test]
    fn lines() {
        assert_eq!(corpus_lines("a\nb\r\n\nc\n"), ["a", "b", "", "c"]);
        assert_eq!(corpus_lines(""), Vec::<&str>::new());
    }

    #[test]
    fn figures() {
        let lines = ["x", "y"];
        let r = compare(
            &lines,
            |t| Ok(if t == "x" { vec![1, 2, 3] } else { vec![1, 4] }),
            |t| {
                Ok(if t == "x" {
                    vec![1, 2, 3]
                } else {
                    vec![1, 5, 6]
                })
            },
            |id| id.to_string(),
            |id| id.to_string(),
            5,
        )
        .unwrap();
        assert_eq!((r.lines, r.lines_differ), (2, 1));
        assert_eq!((r.aligned_matches, r.aligned_total), (4, 6));
        assert!((r.token_share() - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.differing_line_token_share() - 0.4).abs() < 1e-12);
        assert_eq!(r.examples.len(), 1);
    }
}

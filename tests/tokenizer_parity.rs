//! The tokenizer seen three ways on the bundled corpora (fixtures/corpus):
//! - HF (`src/tokenize/hf.rs`) reproduces transformers' ids
//!   (fixtures/reference/tokenizer_corpus.json), from tokenizer.json and from a GGUF's
//!   `tokenizer.huggingface.json` alike;
//! - our llama.cpp SPM implementation (`src/tokenize/llama_spm.rs`) gives llama.cpp's own ids
//!   (feature `oracle`) on every corpus line and on hand-written edge cases;
//! - how often the two disagree (REFERENCE.md: about 19% of JCommonsenseQA lines, 46% of JNLI).
//!
//! Run `cargo test --features oracle --test tokenizer_parity -- --nocapture` to see the figures.

use llmjp_convert::convert::{self, OutType};
use llmjp_convert::tokenize::{HfTokenizer, LlamaSpmTokenizer, corpus_lines, hf_vs_llama};
use llmjp_convert::vocab::Vocab;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const CORPORA: [&str; 2] = ["ja-jcommonsenseqa-2000.txt", "ja-jnli-2000.txt"];

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    manifest().join("fixtures/models/llmjp-jglue-tiny")
}

/// The trained tiny model converted to Q8_0 by our converter, once per test binary.
fn gguf() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tokenizer_parity");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("llmjp-jglue-tiny.q8_0.gguf");
        convert::to_gguf(
            &model_dir(),
            &out,
            &convert::Options {
                outtype: OutType::Q8_0,
                force: true,
                checksum: false,
                ..Default::default()
            },
        )
        .unwrap();
        out
    })
}

fn hf() -> &'static HfTokenizer {
    static T: OnceLock<HfTokenizer> = OnceLock::new();
    T.get_or_init(|| HfTokenizer::from_model_dir(&model_dir()).unwrap())
}

fn spm() -> &'static LlamaSpmTokenizer {
    static T: OnceLock<LlamaSpmTokenizer> = OnceLock::new();
    T.get_or_init(|| LlamaSpmTokenizer::from_gguf(gguf()).unwrap())
}

fn corpus(name: &str) -> String {
    std::fs::read_to_string(manifest().join("fixtures/corpus").join(name)).unwrap()
}

fn pieces(ids: &[u32]) -> Vec<&str> {
    ids.iter().map(|&id| spm().piece(id).unwrap()).collect()
}

/// Hand-written inputs: spaces, newlines, mixed scripts, byte fallback, special-token texts,
/// long runs.
fn edge_cases() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        " ",
        "  ",
        "   ",
        " a",
        "   leading spaces",
        "trailing spaces   ",
        "a  b   c    d",
        " 日本語 ",
        "\n",
        "\n\n",
        "a\nb",
        "\nあ",
        "あ\n",
        " \n ",
        "\r\n",
        "\t",
        "tab\tseparated\tvalues",
        "a\u{0}b",
        "自然言語処理とは何か",
        "人差し指",
        "日本語 English mixed テキスト 123 です。",
        "Hello, world! How are you?",
        "fn main() { println!(\"こんにちは\"); }",
        "東京タワーの高さは333mです",
        "ＡＢＣ１２３",
        "ｱｲｳｴｵ",
        "①②③",
        "〜〜〜",
        "😀",
        "👍🏽 いいね",
        "👨‍👩‍👧",
        "𠮷野家",
        "㐂",
        "龘",
        "e\u{301}",
        "\u{feff}BOM",
        "\u{7f}\u{1}",
        "▁",
        "▁▁a",
        "<s>",
        "</s>",
        "<s>こんにちは</s>",
        "a<s>b",
        " <s> ",
        "<s><s>",
        "<<s>>",
        "</s</s>>",
        "<unk>",
        "<MASK|LLM-jp>",
        "<EOD|LLM-jp>テキスト<PAD|LLM-jp>",
        "<0x0A>",
        "[PAD99580]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("あ".repeat(1000));
    v.push("ー".repeat(513));
    v.push("a".repeat(2000));
    v.push(" ".repeat(300));
    v.push("ab".repeat(700));
    v.push("日本".repeat(400));
    v.push("😀".repeat(100));
    v
}

#[test]
fn hf_reproduces_transformers_ids() {
    let path = manifest().join("fixtures/reference/tokenizer_corpus.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let tj = std::fs::read(model_dir().join("tokenizer.json")).unwrap();
    let sha: String = Sha256::digest(&tj)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        reference["tokenizer_json_sha256"].as_str(),
        Some(sha.as_str()),
        "the reference was made with another tokenizer.json"
    );
    for name in CORPORA {
        let text = corpus(name);
        let lines = corpus_lines(&text);
        let expected = reference["files"][name].as_array().unwrap();
        assert_eq!(lines.len(), expected.len(), "{name}: line count");
        for (i, (line, exp)) in lines.iter().zip(expected).enumerate() {
            let exp: Vec<u32> = serde_json::from_value(exp.clone()).unwrap();
            let got = hf().encode(line, true).unwrap();
            assert_eq!(got, exp, "{name} line {}: {line:?}", i + 1);
        }
    }
    // REFERENCE.md section 2.
    assert_eq!(
        hf().encode("自然言語処理とは何か", true).unwrap(),
        [1, 52757, 75849, 66692, 78455, 99244]
    );
}

#[test]
fn hf_from_gguf_equals_hf_from_tokenizer_json() {
    let from_gguf = HfTokenizer::from_gguf(gguf()).unwrap();
    let edge = edge_cases();
    let mut n = 0;
    for name in CORPORA {
        let text = corpus(name);
        let lines = corpus_lines(&text);
        for line in lines.iter().copied().chain(edge.iter().map(String::as_str)) {
            for add in [true, false] {
                assert_eq!(
                    from_gguf.encode(line, add).unwrap(),
                    hf().encode(line, add).unwrap(),
                    "{line:?} add_special_tokens={add}"
                );
                n += 1;
            }
        }
    }
    assert!(n > 8000);
}

#[test]
fn spm_from_vocab_equals_spm_from_gguf() {
    let vocab = Vocab::load(&model_dir(), spm().n_tokens()).unwrap();
    let from_vocab = LlamaSpmTokenizer::from_vocab(&vocab).unwrap();
    let text = corpus(CORPORA[1]);
    for line in corpus_lines(&text)
        .into_iter()
        .take(300)
        .chain(edge_cases().iter().map(String::as_str))
    {
        assert_eq!(
            from_vocab.tokenize(line, true, true).unwrap(),
            spm().tokenize(line, true, true).unwrap(),
            "{line:?}"
        );
    }
}

#[test]
fn reference_example_splits_as_documented() {
    // REFERENCE.md: `人差し指` -> HF `▁ 人差し指`, llama.cpp `▁人 差し 指`.
    let hf_ids = hf().encode("人差し指", true).unwrap();
    assert_eq!(pieces(&hf_ids), ["<s>", "▁", "人差し指"]);
    let llama_ids = spm().tokenize("人差し指", true, false).unwrap();
    assert_eq!(pieces(&llama_ids), ["<s>", "▁人", "差し", "指"]);
    // No newline piece: "\n" is the byte token <0x0A> (id 18) on both sides.
    assert_eq!(
        spm().tokenize("\n", false, false).unwrap(),
        [spm().token_to_id("▁").unwrap(), 18]
    );
}

#[test]
fn parity_figures_on_the_corpora() {
    // (file, REFERENCE.md's share of differing lines, accepted range)
    let expected = [
        (CORPORA[0], 0.19, 0.15..0.23),
        (CORPORA[1], 0.46, 0.41..0.51),
    ];
    for (name, about, range) in expected {
        let text = corpus(name);
        let lines = corpus_lines(&text);
        let r = hf_vs_llama(hf(), spm(), &lines, 5).unwrap();
        println!("{name} (REFERENCE.md: about {:.0}%):\n{r}", about * 100.0);
        assert_eq!(r.lines, 2000);
        assert!(
            range.contains(&r.line_share()),
            "{name}: {:.2}% of lines differ, expected about {:.0}%",
            100.0 * r.line_share(),
            about * 100.0
        );
        assert!(r.token_share() > 0.0 && r.token_share() < r.line_share());
        assert!(r.differing_line_token_share() >= r.token_share());
        assert_eq!(r.examples.len(), 5);
    }
}

#[cfg(feature = "oracle")]
mod oracle {
    use super::*;
    use llmjp_convert::oracle;

    fn llama_cpp(m: &oracle::Model, text: &str, add: bool, special: bool) -> Vec<u32> {
        m.tokenize(text, add, special)
            .unwrap()
            .into_iter()
            .map(|id| u32::try_from(id).unwrap())
            .collect()
    }

    /// Every corpus line, as llama.cpp tokenizes a prompt (add_special, no special parsing), and
    /// with special parsing too.
    #[test]
    fn spm_matches_llama_cpp_on_every_corpus_line() {
        let m = oracle::Model::load(gguf()).unwrap();
        let mut checked = 0;
        // The two JGLUE corpora and verify's built-in parity sample.
        let sample = llmjp_convert::verify::tokenizer::BUILTIN_CORPUS;
        let texts: Vec<(&str, String)> = CORPORA
            .iter()
            .map(|n| (*n, corpus(n)))
            .chain([("verify built-in sample", sample.to_string())])
            .collect();
        for (name, text) in &texts {
            for (i, line) in corpus_lines(text).into_iter().enumerate() {
                for special in [false, true] {
                    let want = llama_cpp(&m, line, true, special);
                    let got = spm().tokenize(line, true, special).unwrap();
                    assert_eq!(
                        pieces(&got),
                        pieces(&want),
                        "{name} line {} {line:?} parse_special={special}",
                        i + 1
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 8000 + 2 * corpus_lines(sample).len());
    }

    #[test]
    fn spm_matches_llama_cpp_on_edge_cases() {
        let m = oracle::Model::load(gguf()).unwrap();
        let info = m.vocab_info();
        assert_eq!(info.vocab_type, oracle::vocab_type::SPM);
        assert_eq!(info.add_bos, spm().add_bos());
        assert_eq!(info.add_eos, spm().add_eos());
        assert_eq!(m.n_vocab(), spm().n_tokens());
        for id in 0..spm().n_tokens() as u32 {
            assert_eq!(
                m.token_attr(id as i32) as u32,
                spm().token_attr(id).unwrap(),
                "attributes of token {id}"
            );
        }
        for text in edge_cases() {
            for add in [true, false] {
                for special in [true, false] {
                    let want = llama_cpp(&m, &text, add, special);
                    let got = spm().tokenize(&text, add, special).unwrap();
                    assert_eq!(
                        pieces(&got),
                        pieces(&want),
                        "{text:?} add_special={add} parse_special={special}"
                    );
                }
            }
        }
        // The special-token texts are matched whole only with parse_special.
        let with = llama_cpp(&m, "a<s>b</s>", true, true);
        assert_eq!(pieces(&with), ["<s>", "▁a", "<s>", "▁b", "</s>"]);
        let without = spm().tokenize("a<s>b</s>", true, false).unwrap();
        assert_eq!(without.iter().filter(|&&id| id == 1 || id == 2).count(), 1);
    }
}

//! The built-in verification prompts: Japanese (llm-jp's main language), English and code,
//! each plain and, for the instruct format, chat-templated.

pub struct PromptSpec {
    pub name: &'static str,
    pub text: &'static str,
    /// Render through the model's chat template as a user turn.
    pub chat: bool,
}

pub const BUILTIN: &[PromptSpec] = &[
    PromptSpec {
        name: "ja-definition",
        text: "自然言語処理とは何か",
        chat: false,
    },
    PromptSpec {
        name: "ja-scene",
        text: "皿の上に、料理がたくさん盛り付けられています。",
        chat: false,
    },
    PromptSpec {
        name: "ja-news",
        text: "東京都は、来年度から公立学校の給食費を無償化する方針を明らかにした。対象となるのは",
        chat: false,
    },
    PromptSpec {
        name: "ja-qa",
        text: "日本で一番高い山は何ですか？",
        chat: true,
    },
    PromptSpec {
        name: "ja-instruct",
        text: "自然言語処理とは何か",
        chat: true,
    },
    PromptSpec {
        name: "en-plain",
        text: "The quick brown fox jumps over the lazy dog.",
        chat: false,
    },
    PromptSpec {
        name: "en-instruct",
        text: "Explain what a tokenizer does in one sentence.",
        chat: true,
    },
    PromptSpec {
        name: "code-python",
        text: "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        chat: false,
    },
];

/// Reads a prompts file: one prompt per line; a line starting with `chat:` is chat-templated.
pub fn parse_file(text: &str) -> Vec<(String, String, bool)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match l.strip_prefix("chat:") {
            Some(rest) => (
                format!("line{}", i + 1),
                rest.trim_start().to_string(),
                true,
            ),
            None => (format!("line{}", i + 1), l.to_string(), false),
        })
        .collect()
}

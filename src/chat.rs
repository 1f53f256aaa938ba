//! Chat templates rendered as transformers does: jinja2 with trim_blocks and lstrip_blocks,
//! Python string methods (minijinja-contrib's pycompat), `raise_exception`, and a `tojson`
//! that neither escapes HTML nor sorts keys.

use anyhow::{Context, Result, anyhow};
use minijinja::{Environment, Error, ErrorKind, Value};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

fn tojson(v: Value, indent: Option<usize>) -> Result<Value, Error> {
    let j: serde_json::Value = serde_json::to_value(&v)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let s = match indent {
        Some(n) => {
            let pad = vec![b' '; n];
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut out = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&j, &mut ser)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            String::from_utf8(out).unwrap_or_default()
        }
        None => serde_json::to_string(&j).unwrap_or_default(),
    };
    Ok(Value::from_safe_string(s))
}

/// Renders `template` for `messages`, with the special-token strings transformers passes.
pub fn render(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos: &str,
    eos: &str,
) -> Result<String> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| anyhow!("{e}"))?,
    );
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_filter("tojson", tojson);
    env.add_template("chat", template)
        .context("chat template does not parse")?;
    let ctx = minijinja::context! {
        messages => Value::from(minijinja::value::Serde(messages)),
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| anyhow!("chat template failed to render: {e}"))
}

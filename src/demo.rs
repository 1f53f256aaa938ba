//! `demo`: the main job on a built-in default. Converts the bundled trained tiny llm-jp model
//! (or, when the binary runs away from its source tree, a generated one) to GGUF in its own
//! 16-bit type and in Q8_0, verifies both against the original, and shows the reports.

use crate::convert::{self, OutType};
use crate::{inspect, verify};
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn bundled_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/llmjp-jglue-tiny")
}

pub fn run(out_dir: &Path, quiet: bool) -> Result<String> {
    std::fs::create_dir_all(out_dir)?;
    let mut model = bundled_model();
    let mut log = String::new();
    if !model.join("config.json").exists() {
        model = out_dir.join("synth-dense");
        crate::synth::write_model(&crate::synth::Spec::preset("dense")?, &model, true)?;
        log.push_str(&format!(
            "bundled model not found; generated {}\n",
            model.display()
        ));
    }
    log.push_str(&format!("model: {}\n", model.display()));
    for outtype in [OutType::Auto, OutType::Q8_0] {
        let out = out_dir.join(format!(
            "llmjp-jglue-tiny.{}.gguf",
            format!("{outtype:?}").to_lowercase()
        ));
        let opts = convert::Options {
            outtype,
            force: true,
            quiet,
            ..Default::default()
        };
        let r = convert::to_gguf(&model, &out, &opts)?;
        log.push_str(&format!(
            "wrote {} ({}, {} tensors, {} bytes, {:.2}s)\n  sha256 {}\n",
            r.output.display(),
            r.outtype,
            r.tensors,
            r.bytes,
            r.seconds,
            r.sha256
        ));
    }
    let first = out_dir.join("llmjp-jglue-tiny.auto.gguf");
    let summary = inspect::inspect(&first, false, 6)?;
    log.push('\n');
    log.push_str(&summary);
    let mut all_pass = true;
    for name in ["auto", "q8_0"] {
        let cand = out_dir.join(format!("llmjp-jglue-tiny.{name}.gguf"));
        let opts = verify::Options {
            quiet,
            ..Default::default()
        };
        let r = verify::verify(&model, &cand, &opts)?;
        let json = out_dir.join(format!("llmjp-jglue-tiny.{name}.verify.json"));
        verify::report::write_json(&r, &json)?;
        log.push_str(&format!(
            "\n== verify {} against {} ==\n{r}report: {}\n",
            cand.display(),
            model.display(),
            json.display()
        ));
        all_pass &= r.pass;
    }
    anyhow::ensure!(all_pass, "{log}\ndemo: a verification failed");
    Ok(log)
}

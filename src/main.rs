use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use llmjp_convert::{convert, demo, inspect, synth};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "llmjp-convert",
    version,
    about = "Convert LLM-jp Hugging Face checkpoints to GGUF, and prove nothing was lost"
)]
struct Cli {
    /// Worker threads (default: all cores). Output bytes do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Convert a Hugging Face llm-jp checkpoint (safetensors + tokenizer.json) to GGUF.
    ToGguf {
        /// Model directory: config.json, model.safetensors or shards + index, tokenizer.json.
        model_dir: PathBuf,
        /// Output GGUF file.
        #[arg(short, long)]
        output: PathBuf,
        /// f32, f16, bf16, q8_0, or auto (the checkpoint's own 16-bit type).
        #[arg(long, default_value = "auto")]
        outtype: convert::OutType,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
        /// Do not embed tokenizer.json as tokenizer.huggingface.json.
        #[arg(long)]
        no_hf_tokenizer_json: bool,
        /// Do not write OUTPUT.sha256 beside the output.
        #[arg(long)]
        no_checksum: bool,
        /// general.name (default: the model directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the header, metadata and tensor table of a GGUF file or a safetensors checkpoint.
    Inspect {
        /// A .gguf file, a .safetensors file, or a model directory.
        path: PathBuf,
        #[arg(long)]
        json: bool,
        /// Array items shown per metadata key.
        #[arg(long, default_value_t = 8)]
        max_items: usize,
    },
    /// Convert the bundled tiny llm-jp model and show what was written.
    Demo {
        /// Where the outputs go.
        #[arg(long, default_value = "demo-out")]
        out_dir: PathBuf,
    },
    /// Write a deterministic llm-jp-shaped checkpoint with random weights (test fixtures, benchmarks).
    Synth {
        /// dense, gqa, moe, sharded or 1.8b.
        preset: String,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long)]
        force: bool,
        /// Override the preset's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn run(cli: Cli) -> Result<()> {
    let quiet = cli.quiet;
    match cli.cmd {
        Cmd::ToGguf {
            model_dir,
            output,
            outtype,
            force,
            no_hf_tokenizer_json,
            no_checksum,
            name,
            json,
        } => {
            let opts = convert::Options {
                outtype,
                hf_tokenizer_json: !no_hf_tokenizer_json,
                force,
                quiet,
                checksum: !no_checksum,
                name,
                permute_qk: true,
            };
            let r = convert::to_gguf(&model_dir, &output, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}: {} tensors, {}, {} bytes in {:.2}s\nsha256 {}",
                    r.output.display(),
                    r.tensors,
                    r.outtype,
                    r.bytes,
                    r.seconds,
                    r.sha256
                );
            }
        }
        Cmd::Inspect {
            path,
            json,
            max_items,
        } => print!("{}", inspect::inspect(&path, json, max_items)?),
        Cmd::Demo { out_dir } => print!("{}", demo::run(&out_dir, quiet)?),
        Cmd::Synth {
            preset,
            output,
            force,
            seed,
        } => {
            let mut spec = synth::Spec::preset(&preset)?;
            if let Some(s) = seed {
                spec.seed = s;
            }
            synth::write_model_with_progress(&spec, &output, force, quiet)?;
            if !quiet {
                eprintln!("wrote {} ({preset})", output.display());
            }
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let result = (|| -> Result<()> {
        if let Some(n) = cli.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                .build_global()
                .context("cannot start the thread pool")?;
        }
        run(cli)
    })();
    if let Err(e) = result {
        // One line: the chain of contexts joined by ": ".
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

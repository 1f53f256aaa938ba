use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use llmjp_convert::model::Device;
use llmjp_convert::prompt::TokenizerKind;
use llmjp_convert::{
    bench, convert, demo, generate, imatrix, inspect, intq, quantize, synth, verify,
};
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
    /// Quantize a GGUF (or a checkpoint directory, converted in memory) with llama-quantize's
    /// mixes (the output is byte-identical to llama-quantize's); or, with --type int4|int8, a
    /// checkpoint directory to a compressed-tensors or GPTQ checkpoint directory.
    Quantize {
        /// A GGUF file (F32/F16/BF16; quantized ones need --allow-requantize) or a checkpoint
        /// directory.
        input: PathBuf,
        /// Output GGUF file (a directory for int4/int8).
        #[arg(short, long)]
        output: PathBuf,
        /// A llama-quantize type: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q2_K_S, Q3_K_S, Q3_K_M,
        /// Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, F16, BF16, F32 (Q3_K, Q4_K, Q5_K are
        /// the _M mixes), or its number; or int4 / int8 (safetensors, formats/int-safetensors.md).
        #[arg(long = "type", short = 't')]
        ty: String,
        /// int4/int8: compressed-tensors (pack-quantized, default), int-quantized (W8A8) or gptq.
        #[arg(long)]
        format: Option<String>,
        /// int4/int8: rtn (default), mse or gptq.
        #[arg(long)]
        method: Option<String>,
        /// int4/int8: columns per scale (default 128), or channel.
        #[arg(long, allow_hyphen_values = true)]
        group_size: Option<String>,
        /// int4/int8: calibration text, one sample per line (default: a built-in sample).
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// int4/int8: calibration sequences.
        #[arg(long, default_value_t = 128)]
        samples: usize,
        /// int4/int8: tokens per calibration sequence.
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        /// int4/int8: render calibration lines through the chat template.
        #[arg(long)]
        chat: bool,
        /// Importance matrix (llama-imatrix's GGUF or legacy .dat format).
        #[arg(long)]
        imatrix: Option<PathBuf>,
        /// The type's block type for every quantizable tensor: no mix rules.
        #[arg(long)]
        pure: bool,
        /// Type of output.weight (e.g. q8_0, q6_K, f16).
        #[arg(long)]
        output_tensor_type: Option<String>,
        /// Type of token_embd.weight.
        #[arg(long)]
        token_embedding_type: Option<String>,
        /// REGEX=TYPE: tensors whose name matches get TYPE (first match wins). Repeatable.
        #[arg(long = "tensor-type")]
        tensor_types: Vec<String>,
        /// Accept an input that is already quantized (decoded to f32, then re-quantized).
        #[arg(long)]
        allow_requantize: bool,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
        /// Do not write OUTPUT.sha256 beside the output.
        #[arg(long)]
        no_checksum: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Held-out quality of a quantized model against its original: perplexity of both, mean
    /// KL and top-1 agreement over every position of SAMPLES x SEQ_LEN tokens of TEXT (JSON).
    EvalQuant {
        /// The original checkpoint directory.
        reference: PathBuf,
        /// The quantized model (any format the forward pass reads).
        candidate: PathBuf,
        /// Text, one sample per line.
        #[arg(long)]
        text: PathBuf,
        #[arg(long, default_value_t = 16)]
        samples: usize,
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
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
    /// Greedy generation from a checkpoint directory or a GGUF file.
    Generate {
        /// A GGUF file or a checkpoint directory.
        model: PathBuf,
        #[arg(short, long)]
        prompt: String,
        /// Render the prompt through the model's chat template as a user turn.
        #[arg(long)]
        chat: bool,
        #[arg(short = 'n', long, default_value_t = 64)]
        max_new_tokens: usize,
        /// hf: the ids the model was trained on; llama: the ids llama.cpp would use (GGUF).
        #[arg(long, default_value = "hf")]
        tokenizer: TokenizerKind,
        /// Also print the prompt's and the generated token ids (stderr).
        #[arg(long)]
        ids: bool,
        /// Where the forward pass runs: cpu, cuda (a build with --features cuda) or auto.
        #[arg(long, default_value = "cpu")]
        device: Device,
    },
    /// Compare a converted or quantized model with its original; exit 3 when a check fails.
    Verify {
        /// The original: a checkpoint directory (or any model generate can read).
        reference: PathBuf,
        /// The converted file: a GGUF or a checkpoint directory.
        candidate: PathBuf,
        /// Prompts file: one prompt per line; a line starting with `chat:` is chat-templated.
        #[arg(long)]
        prompts: Option<PathBuf>,
        /// Tokenizer-parity corpus, one text per line (default: a built-in sample).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Write the full report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Greedy tokens generated per prompt.
        #[arg(short = 'n', long, default_value_t = 16)]
        max_new_tokens: usize,
        /// Differing corpus lines on which to measure what the tokenizer mismatch costs.
        #[arg(long, default_value_t = 6)]
        parity_cost_lines: usize,
        /// Override a limit: NAME=VALUE (max_abs_error, mean_kl, max_kl, top1_agreement,
        /// greedy_agreement; VALUE none drops the check). Repeatable.
        #[arg(long = "threshold")]
        thresholds: Vec<String>,
        /// Use the limits of this storage type (f32, f16, bf16, q8_0, q4_k ...).
        #[arg(long)]
        thresholds_for: Option<String>,
        /// Do not sha256 the input files.
        #[arg(long)]
        no_hash: bool,
        /// Overwrite an existing JSON report.
        #[arg(long)]
        force: bool,
        /// Where the candidate's forward pass runs: cpu, cuda or auto.
        #[arg(long, default_value = "cpu")]
        device: Device,
        /// Where the reference's runs (default: --device). Verifying a model against itself
        /// on another device uses f32's limits unless --thresholds-for says otherwise.
        #[arg(long)]
        reference_device: Option<Device>,
    },
    /// Forward-pass speed: prompt processing (one batch) and greedy generation (KV cache).
    Bench {
        /// A GGUF file or a checkpoint directory.
        model: PathBuf,
        /// cpu, cuda or auto.
        #[arg(long, default_value = "cpu")]
        device: Device,
        /// Prompt length (one batch; logits of the last position).
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens generated one at a time after the prompt.
        #[arg(long, default_value_t = 32)]
        gen_tokens: usize,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 3)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Tokenizer parity only: HF ids (the reference's tokenizer.json) against llama.cpp's ids
    /// (its SPM merge over the GGUF's vocabulary) on corpus files, one text per line.
    Parity {
        /// Checkpoint directory with tokenizer.json.
        reference: PathBuf,
        /// A GGUF file.
        candidate: PathBuf,
        /// Corpus files (default: verify's built-in sample).
        #[arg(long, num_args = 1..)]
        corpus: Vec<PathBuf>,
        /// Differing lines shown per corpus.
        #[arg(long, default_value_t = 3)]
        examples: usize,
    },
    /// Compute an importance matrix (llama-imatrix's GGUF format) for `quantize --imatrix`,
    /// with our forward pass over calibration text.
    Imatrix {
        /// A checkpoint directory or a GGUF file (F32/F16/BF16/Q8_0 or any type we quantize).
        model: PathBuf,
        /// Output file (GGUF).
        #[arg(short, long)]
        output: PathBuf,
        /// Calibration text (UTF-8). Default: a built-in Japanese-heavy text (JGLUE
        /// JCommonsenseQA and JNLI lines, then a mixed Japanese / English / code sample).
        #[arg(long, short = 'f')]
        text: Option<PathBuf>,
        /// Tokens per chunk (llama-imatrix's context size).
        #[arg(long, default_value_t = 512)]
        chunk_size: usize,
        /// Process at most this many chunks (default: all whole chunks of --text, 64 of the
        /// built-in text).
        #[arg(long)]
        chunks: Option<usize>,
        /// Also record output.weight's input (llama-imatrix --process-output).
        #[arg(long)]
        process_output: bool,
        /// Overwrite an existing output.
        #[arg(long)]
        force: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
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
        Cmd::EvalQuant {
            reference,
            candidate,
            text,
            samples,
            seq_len,
        } => {
            let e = intq::eval::eval(&reference, &candidate, &text, samples, seq_len)?;
            println!("{}", serde_json::to_string(&e)?);
        }
        Cmd::Quantize {
            input,
            output,
            ty,
            imatrix,
            pure,
            output_tensor_type,
            token_embedding_type,
            tensor_types,
            allow_requantize,
            force,
            no_checksum,
            json,
            format,
            method,
            group_size,
            calibration,
            samples,
            seq_len,
            chat,
        } => {
            if llmjp_convert::intq::is_int_type(&ty) {
                anyhow::ensure!(
                    imatrix.is_none() && !pure && tensor_types.is_empty(),
                    "--imatrix, --pure and --tensor-type are for GGUF types, not {ty}"
                );
                let mut o = intq::Options::parse(
                    &ty,
                    format.as_deref(),
                    method.as_deref(),
                    group_size.as_deref(),
                )?;
                o.calib = intq::calib::CalibOptions {
                    file: calibration,
                    samples,
                    seq_len,
                    chat,
                };
                o.force = force;
                o.quiet = quiet;
                let r = intq::quantize_dir(&input, &output, &o)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!(
                        "{}: int{} {:?} {:?}, group {}, {} weights quantized, {} bytes in {:.2}s",
                        r.output.display(),
                        r.bits,
                        r.format,
                        r.method,
                        r.group_size.map_or("channel".into(), |g| g.to_string()),
                        r.quantized_tensors,
                        r.bytes,
                        r.seconds
                    );
                }
                return Ok(());
            }
            anyhow::ensure!(
                format.is_none()
                    && method.is_none()
                    && group_size.is_none()
                    && calibration.is_none(),
                "--format, --method, --group-size and --calibration are for --type int4/int8"
            );
            let opts = quantize::Options {
                ftype: ty,
                pure,
                output_tensor_type,
                token_embedding_type,
                tensor_types,
                imatrix,
                allow_requantize,
                force,
                quiet,
                checksum: !no_checksum,
            };
            let r = quantize::quantize(&input, &output, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let types: Vec<String> = r.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
                println!(
                    "{}: {} tensors, {} ({}), {} bytes in {:.2}s\nsha256 {}",
                    r.output.display(),
                    r.tensors,
                    r.ftype,
                    types.join(", "),
                    r.bytes,
                    r.seconds,
                    r.sha256
                );
                if !r.fallbacks.is_empty() && !quiet {
                    let shown: Vec<&str> = r.fallbacks.iter().take(3).map(String::as_str).collect();
                    let more = if r.fallbacks.len() > 3 { ", ..." } else { "" };
                    eprintln!(
                        "note: {} tensor(s) have rows that the mix's block type does not fit and \
                         use a smaller block (as llama-quantize does): {}{more}",
                        r.fallbacks.len(),
                        shown.join(", ")
                    );
                }
            }
        }
        Cmd::Inspect {
            path,
            json,
            max_items,
        } => print!("{}", inspect::inspect(&path, json, max_items)?),
        Cmd::Generate {
            model,
            prompt,
            chat,
            max_new_tokens,
            tokenizer,
            ids,
            device,
        } => {
            let req = generate::Request {
                prompt,
                chat,
                max_new_tokens,
                tokenizer,
                show_ids: ids,
                device,
            };
            generate::run(&model, &req, &mut std::io::stdout())?;
        }
        Cmd::Verify {
            reference,
            candidate,
            prompts,
            corpus,
            json,
            max_new_tokens,
            parity_cost_lines,
            thresholds,
            thresholds_for,
            no_hash,
            force,
            device,
            reference_device,
        } => {
            let mut opts = verify::Options {
                device,
                reference_device,
                n_new: max_new_tokens,
                parity_cost_lines,
                threshold_overrides: thresholds,
                thresholds_for,
                hash: !no_hash,
                quiet,
                ..Default::default()
            };
            if let Some(p) = &prompts {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("{}: cannot read", p.display()))?;
                opts.prompts = verify::prompts::parse_file(&text)
                    .into_iter()
                    .map(|(name, text, chat)| verify::Prompt { name, text, chat })
                    .collect();
                opts.prompts_source = p.display().to_string();
            }
            if let Some(c) = &corpus {
                let text = std::fs::read_to_string(c)
                    .with_context(|| format!("{}: cannot read", c.display()))?;
                opts.corpus = (c.display().to_string(), text);
            }
            if let Some(j) = &json {
                llmjp_convert::output::check_output_path(j, force, &[&reference, &candidate])?;
            }
            let report = verify::verify(&reference, &candidate, &opts)?;
            print!("{report}");
            if let Some(j) = &json {
                verify::report::write_json(&report, j)?;
            }
            if !report.pass {
                let failed: Vec<String> = report.failures().iter().map(|c| c.to_string()).collect();
                return Err(VerifyFailed(failed.join("; ")).into());
            }
        }
        Cmd::Parity {
            reference,
            candidate,
            corpus,
            examples,
        } => {
            use llmjp_convert::prompt::PromptEncoder;
            use llmjp_convert::tokenize::{corpus_lines, hf_vs_llama};
            let r = PromptEncoder::open(&reference)?;
            let c = PromptEncoder::open(&candidate)?;
            let hf = r.hf().context("the reference has no tokenizer.json")?;
            let llama = c
                .llama()
                .context("the candidate is not a GGUF with a llama (SPM) vocabulary")?;
            let mut texts = Vec::new();
            for p in &corpus {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("{}: cannot read", p.display()))?;
                texts.push((p.display().to_string(), t));
            }
            if texts.is_empty() {
                texts.push((
                    "built-in sample".into(),
                    verify::tokenizer::BUILTIN_CORPUS.to_string(),
                ));
            }
            for (name, t) in &texts {
                let rep = hf_vs_llama(hf, llama, &corpus_lines(t), examples)?;
                print!("{name}: {rep}");
            }
        }
        Cmd::Imatrix {
            model,
            output,
            text,
            chunk_size,
            chunks,
            process_output,
            force,
            json,
        } => {
            let opts = imatrix::Options {
                text,
                chunk_size,
                chunks,
                process_output,
                force,
                quiet,
            };
            let s = imatrix::run(&model, &output, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "wrote {}: {} weights from {} chunks of {} tokens ({} tokens of {}) in {:.1} s",
                    s.output.display(),
                    s.entries,
                    s.chunks,
                    s.chunk_size,
                    s.tokens,
                    s.dataset,
                    s.seconds
                );
            }
        }
        Cmd::Bench {
            model,
            device,
            prompt_tokens,
            gen_tokens,
            reps,
            json,
        } => {
            let opts = bench::Options {
                device,
                prompt_tokens,
                gen_tokens,
                reps,
            };
            let r = bench::run(&model, &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{r}");
            }
        }
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

/// A completed verification whose checks failed (exit 3, unlike errors: exit 1).
#[derive(Debug)]
struct VerifyFailed(String);

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "verify failed: {}", self.0)
    }
}

impl std::error::Error for VerifyFailed {}

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
        let code = if e.downcast_ref::<VerifyFailed>().is_some() {
            3
        } else {
            1
        };
        std::process::exit(code);
    }
}

//! The command line: one file per subcommand; this file parses and dispatches,
//! and holds what several subcommands share (model flags, sampling flags,
//! starting the engine, streaming a reply).

mod bench;
mod chat;
mod convert;
mod daemon;
mod eval;
pub use eval::EvalCmd;
mod inspect;
mod models;
mod serve;
mod service;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};
use hearth::chat::params::{GenerateParams, RecommendedSampling, SamplingParams, DEFAULT_MAX_TOKENS};
use hearth::chat::template::TemplateOptions;
use hearth::engine::{EngineHandle, Event};
use hearth::library::resolve;
use hearth::models::load::{ModelInfo, Precision};
use hearth::paths;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Private, offline chat with local LLMs (MLX)")]
pub struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Chat in the terminal (streams replies; /reset clears, /quit exits).
    Chat {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        s: SampleArgs,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
    },
    /// Generate a reply to one prompt and print it.
    Generate {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        s: SampleArgs,
        /// Feed the prompt as is, without the chat template.
        #[arg(long)]
        raw: bool,
        /// Print generation statistics (JSON) to stderr.
        #[arg(long)]
        stats: bool,
        /// Stop strings (repeatable).
        #[arg(long)]
        stop: Vec<String>,
        /// A folder for the prompt cache on disk: restored before the prompt
        /// runs (only the new part is then computed), saved after the reply.
        /// A corrupt or stale one is refused, removed and computed again.
        #[arg(long, value_name = "DIR")]
        prompt_cache: Option<std::path::PathBuf>,
        prompt: String,
    },
    /// Benchmark prefill and decode speed; one JSON line per case.
    Bench {
        #[command(flatten)]
        m: ModelArgs,
        /// Prompt lengths in tokens (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "128")]
        prompt_tokens: Vec<usize>,
        /// Tokens to generate per case.
        #[arg(long, default_value_t = 128)]
        gen_tokens: usize,
        /// Timed repetitions per case (after one warm-up).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Also time a second chat turn that reuses the prompt cache.
        #[arg(long)]
        multi_turn: bool,
        /// Also decode this many sequences at once (comma-separated; e.g.
        /// 1,4,8) and report the aggregate tokens per second of each batch.
        #[arg(long, value_delimiter = ',')]
        streams: Vec<usize>,
    },
    /// Quality checks: `hearth eval perplexity --model M FILE`.
    Eval {
        #[command(subcommand)]
        cmd: EvalCmd,
    },
    /// Convert a GGUF or Hugging Face checkpoint to an MLX (mlx-community) directory.
    Convert {
        src: PathBuf,
        dst: PathBuf,
        /// f32 = dequantize everything; native = keep the source quantization.
        #[arg(long, default_value = "native")]
        dtype: String,
        /// Re-quantize matrices to MLX affine 4- or 8-bit.
        #[arg(long)]
        q_bits: Option<i32>,
        #[arg(long, default_value_t = 64)]
        q_group_size: i32,
    },
    /// Write a model with random weights at a real model's shape (for benchmarks).
    Synth {
        /// smollm2-135m, llama-3.2-1b, qwen3-4b, llama-3.1-8b, qwen3-30b-a3b or gpt-oss-20b.
        preset: String,
        dst: PathBuf,
        /// 0 = dense.
        #[arg(long, default_value_t = 4)]
        bits: i32,
        #[arg(long, default_value_t = 64)]
        group_size: i32,
        /// affine, or mxfp4 (4 bits, group 32; gpt-oss's release format).
        #[arg(long, default_value = "affine")]
        mode: String,
        /// bf16, f16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
    },
    /// Serve the OpenAI-compatible API on this machine (loopback unless --host says otherwise;
    /// other addresses need HEARTH_API_KEY).
    Serve(serve::ServeArgs),
    /// The daemon (`hearth serve --daemon`) as a service that starts at login; its status; stopping it.
    Service {
        #[command(subcommand)]
        cmd: service::ServiceCmd,
    },
    /// Print the exact prompt a conversation becomes with a model's template.
    Render {
        /// A .gguf file, a model directory, or the name of an installed model.
        #[arg(long, short)]
        model: Option<String>,
        /// Use this Jinja template instead of the model's.
        #[arg(long)]
        template: Option<PathBuf>,
        /// A JSON file: [{"role": "user", "content": "…"}, …].
        #[arg(long)]
        messages: PathBuf,
        /// Print token ids and pieces instead of the text.
        #[arg(long)]
        tokens: bool,
        /// low, medium or high, for templates that take it (gpt-oss).
        #[arg(long)]
        reasoning_effort: Option<String>,
        /// on or off, for templates that take `enable_thinking` (Qwen3, Qwen3.5, SmolLM3).
        #[arg(long)]
        thinking: Option<String>,
    },
    /// Print the token ids and pieces of a text.
    Tokenize {
        #[arg(long, short)]
        model: Option<String>,
        /// Read control-token strings (<|im_end|>…) as control tokens, as a template's markup is.
        #[arg(long)]
        special: bool,
        text: String,
    },
    /// Manage installed models.
    Models {
        #[command(subcommand)]
        cmd: ModelsCmd,
    },
    /// Measure the app's frame time (CPU) while a reply streams; prints JSON.
    UiBench {
        #[command(flatten)]
        m: ModelArgs,
        #[arg(long, default_value = "Explain how a CPU cache works, with a table and a code example.")]
        prompt: String,
        #[arg(long, default_value_t = 256)]
        max_tokens: usize,
        /// Messages (with code blocks) before the reply, as a long conversation.
        #[arg(long, default_value_t = 0)]
        history: usize,
        /// Keep asking in the same chat this long (a soak; memory per reply).
        #[arg(long, default_value_t = 0.0)]
        minutes: f64,
    },
    /// Open the desktop app (the default).
    App {
        /// Send this message once the model is loaded (used for screenshots).
        #[arg(long)]
        demo_prompt: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// List installed models (the models folder and the Hugging Face cache).
    List,
    /// Download a model from Hugging Face (resumes a partial download; HF_ENDPOINT honoured).
    Download {
        /// owner/name, e.g. mlx-community/Qwen3-0.6B-4bit
        id: String,
        /// Only these files (e.g. one .gguf of a GGUF repo).
        #[arg(long)]
        file: Vec<String>,
        /// Download even if the memory estimate says it won't fit.
        #[arg(long)]
        force: bool,
    },
    /// Search Hugging Face for MLX (default) or GGUF models.
    Search {
        query: String,
        #[arg(long)]
        gguf: bool,
    },
    /// Show the memory estimate for an installed model or a catalogue entry.
    Fit {
        model: String,
        #[arg(long, default_value_t = 4096)]
        context: u64,
        /// The KV cache's bits per value: 8 or 4 (quantized), 0 for the model's dtype.
        #[arg(long, default_value_t = 0)]
        kv_bits: u8,
    },
    /// Validate and copy a .gguf file or model folder into the models directory.
    Import {
        path: PathBuf,
        /// Do nothing if a model of that name is already installed.
        #[arg(long)]
        if_missing: bool,
    },
}

#[derive(Args)]
pub struct ModelArgs {
    /// A .gguf file, a model directory, or the name of an installed model.
    #[arg(long, short)]
    pub model: Option<String>,
    /// auto (f32 on CPU, quantized on GPU), f32, or native.
    #[arg(long, default_value = "auto")]
    pub precision: String,
    /// Context length in tokens.
    #[arg(long)]
    pub context_length: Option<usize>,
    /// low, medium or high, for models whose template takes it (gpt-oss).
    #[arg(long)]
    pub reasoning_effort: Option<String>,
    /// on or off, for models whose template takes `enable_thinking` (Qwen3, Qwen3.5, SmolLM3).
    #[arg(long)]
    pub thinking: Option<String>,
    /// A smaller model with the same tokenizer that drafts tokens for
    /// speculative decoding (a file, folder or installed model's name).
    #[arg(long)]
    pub draft: Option<String>,
    /// Bits per key and value in the KV cache: 8 or 4 (quantized, a smaller
    /// cache for long contexts), 0 for the model's own dtype.
    #[arg(long, default_value_t = 0)]
    pub kv_bits: u8,
}

/// `--kv-bits` checked: 0, 8 or 4.
pub fn kv_quant_flag(bits: u8) -> Result<Option<hearth::models::cache::KvQuant>> {
    if !hearth::models::cache::KV_BITS.contains(&bits) {
        bail!("--kv-bits {bits}: the KV cache holds 8 or 4 bits, or 0 for the model's dtype");
    }
    Ok(hearth::models::cache::KvQuant::new(bits))
}

/// Sampling flags; any left out take the defaults in `chat::params`, the same
/// the app starts with.
#[derive(Args)]
pub struct SampleArgs {
    /// 0 = greedy.
    #[arg(long)]
    temperature: Option<f32>,
    #[arg(long)]
    top_p: Option<f32>,
    /// 0 = off.
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    min_p: Option<f32>,
    /// 1 = off.
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long)]
    max_tokens: Option<usize>,
}

impl SampleArgs {
    /// Hearth's defaults, then the model's recommendations, then the flags given.
    pub fn params(&self, stop: Vec<String>, recommended: &RecommendedSampling) -> GenerateParams {
        let d = recommended.apply(&SamplingParams::default());
        GenerateParams {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(d.temperature),
                top_p: self.top_p.unwrap_or(d.top_p),
                top_k: self.top_k.unwrap_or(d.top_k),
                min_p: self.min_p.unwrap_or(d.min_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(d.repetition_penalty),
                seed: self.seed,
                ..d
            },
            max_tokens: self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            stop,
            ignore_eos: false,
            constraint: None,
            logprobs: None,
            call_id_prefix: String::new(),
            keep_turns: false,
            reasoning_budget: None,
            prompt_file: None,
        }
    }
}


/// The models folder the app uses (its settings may point elsewhere).
pub fn models_dir() -> PathBuf {
    hearth::store::settings::models_dir_in_use(&paths::data_dir())
}

/// `--model` resolved to a path, or the default model.
pub fn model_path(spec: &Option<String>) -> Result<PathBuf> {
    let dir = models_dir();
    Ok(match spec {
        Some(s) => resolve::resolve(s, &dir)?,
        None => resolve::default_model(&dir)?,
    })
}

/// Loads a model on the engine thread, printing progress to stderr.
pub fn start_engine(m: &ModelArgs) -> Result<(EngineHandle, ModelInfo)> {
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    let engine = EngineHandle::spawn();
    let reasoning_effort = m.reasoning_effort.as_deref().map(str::parse).transpose()?;
    let enable_thinking = m.thinking.as_deref().map(hearth::chat::template::parse_on_off).transpose()?;
    engine.send(hearth::engine::Command::SetTemplateOptions(TemplateOptions { reasoning_effort, enable_thinking, ..Default::default() }));
    kv_quant_flag(m.kv_bits)?;
    if m.kv_bits > 0 {
        engine.send(hearth::engine::Command::SetKvBits(m.kv_bits));
    }
    if let Some(d) = &m.draft {
        engine.set_draft(Some((resolve::resolve(d, &models_dir())?, precision)));
    }
    engine.load(path, precision, m.context_length);
    let mut loaded = None;
    loop {
        match engine.events.recv()? {
            Event::DraftLoaded(Some(d)) => {
                eprintln!("drafting with {} ({:.0}M params)", d.name, d.parameters as f64 / 1e6);
                if let Some(info) = loaded {
                    return Ok((engine, info));
                }
            }
            Event::Error { id: None, error } if m.draft.is_some() => bail!("draft model: {error}"),
            Event::Loaded(info) => {
                eprintln!(
                    "loaded {} ({}, {:.0}M params, {} on disk, computing in {})",
                    info.name,
                    info.architecture,
                    info.parameters as f64 / 1e6,
                    info.quantization,
                    info.compute
                );
                if !info.recommended.is_empty() {
                    eprintln!("the model recommends {} (flags you pass take precedence)", info.recommended.describe());
                }
                if m.draft.is_none() {
                    return Ok((engine, info));
                }
                loaded = Some(info);
            }
            Event::LoadFailed(e) => bail!("{e}"),
            Event::Crashed(e) => bail!("engine crashed: {e}"),
            _ => {}
        }
    }
}

/// Streams one request's tokens to stdout; returns the full reply.
pub fn stream_reply(engine: &EngineHandle, id: u64, stats: bool) -> Result<String> {
    let mut out = std::io::stdout();
    let mut reply = String::new();
    loop {
        match engine.events.recv()? {
            Event::Token { id: i, text, .. } if i == id => {
                reply.push_str(&text);
                write!(out, "{text}")?;
                out.flush()?;
            }
            Event::ContextTrimmed { dropped_messages, .. } => {
                eprintln!("[context full: left out the {dropped_messages} oldest message(s)]");
            }
            Event::Finished { id: i, stats: s } if i == id => {
                writeln!(out)?;
                if let Some(e) = &s.prompt_file_error {
                    eprintln!("warning: {e}");
                }
                if stats {
                    eprintln!("{}", serde_json::to_string(&s)?);
                }
                return Ok(reply);
            }
            Event::Error { error, .. } => bail!("{error}"),
            Event::Crashed(e) => bail!("engine crashed: {e}"),
            _ => {}
        }
    }
}

/// Parses the command line and runs the subcommand.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    if cfg!(target_os = "macos") {
        if let Ok(exe) = std::env::current_exe() {
            hearth::bundle::check_metallib(&exe).map_err(|e| anyhow!(e))?;
        }
    }
    match cli.cmd {
        None => hearth::ui::run(None),
        Some(Cmd::App { demo_prompt }) => hearth::ui::run(demo_prompt),
        Some(Cmd::UiBench { m, prompt, max_tokens, history, minutes }) => {
            let path = model_path(&m.model)?;
            println!("{}", hearth::ui::frame_bench::run(&path, &prompt, max_tokens, history, minutes)?);
            Ok(())
        }
        Some(Cmd::Chat { m, s, system }) => chat::chat(m, system, s),
        Some(Cmd::Generate { m, s, raw, stats, stop, prompt_cache, prompt }) => chat::generate(m, s, raw, stats, stop, prompt_cache, prompt),
        Some(Cmd::Bench { m, prompt_tokens, gen_tokens, reps, multi_turn, streams }) => {
            bench::bench(&m, &prompt_tokens, gen_tokens, reps, multi_turn, &streams)
        }
        Some(Cmd::Eval { cmd: EvalCmd::Perplexity { m, file, window, windows, json } }) => eval::perplexity(&m, &file, window, windows, json),
        Some(Cmd::Convert { src, dst, dtype, q_bits, q_group_size }) => convert::convert(&src, &dst, &dtype, q_bits, q_group_size),
        Some(Cmd::Synth { preset, dst, bits, group_size, mode, dtype }) => {
            convert::synth(&preset, &dst, bits, group_size, &mode, &dtype)
        }
        Some(Cmd::Render { model, template, messages, tokens, reasoning_effort, thinking }) => {
            inspect::render(&model, template.as_deref(), &messages, tokens, reasoning_effort.as_deref(), thinking.as_deref())
        }
        Some(Cmd::Tokenize { model, special, text }) => inspect::tokenize(&model, &text, special),
        Some(Cmd::Models { cmd }) => models::run(cmd),
        Some(Cmd::Serve(args)) => serve::serve(args),
        Some(Cmd::Service { cmd }) => service::service(cmd),
    }
}

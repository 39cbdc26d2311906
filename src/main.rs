//! `hearth`: the desktop app by default; `chat`, `generate`, `bench`, `convert`
//! and `models` on the same engine for the terminal.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth::chat::Message;
use hearth::engine::{Event, GenerateParams, Prompt, SamplingParams, Session};
use hearth::models::loader::{self, Precision};
use hearth::{engine::EngineHandle, paths};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "hearth", version, about = "Private, offline chat with local LLMs (MLX)")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
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
        /// smollm2-135m, llama-3.2-1b, qwen3-4b or llama-3.1-8b.
        preset: String,
        dst: PathBuf,
        /// 0 = dense.
        #[arg(long, default_value_t = 4)]
        bits: i32,
        #[arg(long, default_value_t = 64)]
        group_size: i32,
        /// bf16, f16 or f32.
        #[arg(long, default_value = "bf16")]
        dtype: String,
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
    },
    /// Open the desktop app (the default).
    App {
        /// Send this message once the model is loaded (used for screenshots).
        #[arg(long)]
        demo_prompt: Option<String>,
    },
}

#[derive(Subcommand)]
enum ModelsCmd {
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
struct ModelArgs {
    /// A .gguf file, a model directory, or the name of an installed model.
    #[arg(long, short)]
    model: Option<String>,
    /// auto (f32 on CPU, quantized on GPU), f32, or native.
    #[arg(long, default_value = "auto")]
    precision: String,
    /// Context length in tokens.
    #[arg(long)]
    context_length: Option<usize>,
}

#[derive(Args)]
struct SampleArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    #[arg(long, default_value_t = 1.1)]
    repetition_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 512)]
    max_tokens: usize,
}

impl SampleArgs {
    fn params(&self, stop: Vec<String>) -> GenerateParams {
        GenerateParams {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                repetition_context: 64,
                seed: self.seed,
            },
            max_tokens: self.max_tokens,
            stop,
            ignore_eos: false,
        }
    }
}

fn model_path(spec: &Option<String>) -> Result<PathBuf> {
    let dir = paths::models_dir();
    match spec {
        Some(s) => Ok(loader::resolve(s, &dir)?),
        None => {
            let mut installed = hearth::models::installed(&dir);
            installed.sort_by_key(|m| !m.name.to_lowercase().contains("smollm2"));
            installed.into_iter().next().map(|m| m.path).ok_or_else(|| {
                anyhow!("no model installed in {}: run scripts/setup.sh or pass --model", dir.display())
            })
        }
    }
}

/// Loads a model on the engine thread, printing progress to stderr.
fn start_engine(m: &ModelArgs) -> Result<EngineHandle> {
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    let engine = EngineHandle::spawn();
    engine.load(path, precision, m.context_length);
    loop {
        match engine.events.recv()? {
            Event::Loaded(info) => {
                eprintln!(
                    "loaded {} ({}, {:.0}M params, {} on disk, computing in {})",
                    info.name,
                    info.architecture,
                    info.parameters as f64 / 1e6,
                    info.quantization,
                    info.compute
                );
                return Ok(engine);
            }
            Event::LoadFailed(e) => bail!("{e}"),
            Event::Crashed(e) => bail!("engine crashed: {e}"),
            _ => {}
        }
    }
}

/// Streams one request's tokens to stdout; returns the full reply.
fn stream_reply(engine: &EngineHandle, id: u64, stats: bool) -> Result<String> {
    let mut out = std::io::stdout();
    let mut reply = String::new();
    loop {
        match engine.events.recv()? {
            Event::Token { id: i, text } if i == id => {
                reply.push_str(&text);
                write!(out, "{text}")?;
                out.flush()?;
            }
            Event::ContextTrimmed { dropped_messages, .. } => {
                eprintln!("[context full: left out the {dropped_messages} oldest message(s)]");
            }
            Event::Finished { id: i, stats: s } if i == id => {
                writeln!(out)?;
                if stats {
                    eprintln!("{}", serde_json::to_string(&s)?);
                }
                return Ok(reply);
            }
            Event::Error { message, .. } => bail!("{message}"),
            Event::Crashed(e) => bail!("engine crashed: {e}"),
            _ => {}
        }
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if cfg!(target_os = "macos") {
        if let Ok(exe) = std::env::current_exe() {
            hearth::bundle::check_metallib(&exe).map_err(|e| anyhow!(e))?;
        }
    }
    match cli.cmd {
        None => hearth::ui::run(None),
        Some(Cmd::App { demo_prompt }) => hearth::ui::run(demo_prompt),
        Some(Cmd::UiBench { m, prompt, max_tokens }) => {
            let path = model_path(&m.model)?;
            println!("{}", hearth::ui::frame_bench::run(&path, &prompt, max_tokens)?);
            Ok(())
        }
        Some(Cmd::Chat { m, s, system }) => chat(m, system, s),
        Some(Cmd::Generate { m, s, raw, stats, stop, prompt }) => {
            let engine = start_engine(&m)?;
            let p = if raw { Prompt::Raw(prompt) } else { Prompt::Chat(vec![Message::user(prompt)]) };
            let id = engine.generate(p, s.params(stop));
            stream_reply(&engine, id, stats)?;
            Ok(())
        }
        Some(Cmd::Bench { m, prompt_tokens, gen_tokens, reps, multi_turn }) => {
            bench(&m, &prompt_tokens, gen_tokens, reps, multi_turn)
        }
        Some(Cmd::Convert { src, dst, dtype, q_bits, q_group_size }) => {
            let precision: Precision = dtype.parse()?;
            let q = q_bits.map(|b| hearth::convert::Quantize::new(b, q_group_size)).transpose()?;
            let r = hearth::convert::convert_with(&src, &dst, precision, q)?;
            eprintln!("wrote {} ({} tensors, {:.1} MB, {})", dst.display(), r.tensors, r.bytes as f64 / 1e6, r.compute);
            Ok(())
        }
        Some(Cmd::Synth { preset, dst, bits, group_size, dtype }) => {
            let dtype = match dtype.as_str() {
                "bf16" | "bfloat16" => mlx_rs::Dtype::Bfloat16,
                "f16" | "float16" => mlx_rs::Dtype::Float16,
                "f32" | "float32" => mlx_rs::Dtype::Float32,
                other => bail!("unknown dtype '{other}' (bf16, f16, f32)"),
            };
            let bytes = hearth::models::synth::write(&preset, &dst, bits, group_size, dtype)?;
            eprintln!("wrote {} ({:.2} GB of weights)", dst.display(), bytes as f64 / 1e9);
            Ok(())
        }
        Some(Cmd::Models { cmd: ModelsCmd::Download { id, file, force } }) => download(&id, file, force),
        Some(Cmd::Models { cmd: ModelsCmd::Search { query, gguf } }) => {
            let hub = hearth::hub::Hub::new(None, hearth::hub::token::load(), None)?;
            let kind = if gguf { hearth::hub::SearchKind::Gguf } else { hearth::hub::SearchKind::Mlx };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            for h in rt.block_on(hub.search(&query, kind, 30))? {
                println!("{}\t{} downloads\t{} likes{}", h.id, h.downloads, h.likes, if h.gated { "\tgated" } else { "" });
            }
            Ok(())
        }
        Some(Cmd::Models { cmd: ModelsCmd::Fit { model, context } }) => fit(&model, context),
        Some(Cmd::Models { cmd: ModelsCmd::List }) => {
            let dir = paths::models_dir();
            for m in hearth::models::installed::installed_with_cache(&dir, &hf_hub::resolve_cache_dir()) {
                println!("{}\t{:.1} MB\t{}", m.name, m.size as f64 / 1e6, m.path.display());
            }
            Ok(())
        }
        Some(Cmd::Models { cmd: ModelsCmd::Import { path, if_missing } }) => {
            let dir = paths::models_dir();
            match hearth::models::import(&path, &dir, if_missing)? {
                Some(p) => eprintln!("installed {}", p.display()),
                None => eprintln!("already installed"),
            }
            Ok(())
        }
    }
}

fn download(id: &str, files: Vec<String>, force: bool) -> Result<()> {
    use hearth::hub::{fit, Control, Hub, Phase};
    let hub = Hub::new(None, hearth::hub::token::load(), None)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let only = (!files.is_empty()).then_some(files);
    let plan = rt.block_on(hub.plan(id, only.as_deref()))?;
    let mem = fit::total_memory();
    let need = plan.need(4096, fit::device(), mem);
    let verdict = fit::verdict(need, mem);
    eprintln!(
        "{id}: {} files, {} ({} already here); needs about {} of {} memory at 4096 tokens: {}",
        plan.files.len(),
        fit::gb(plan.total()),
        fit::gb(hub.bytes_present(&plan)),
        fit::gb(need),
        fit::gb(mem),
        verdict.label()
    );
    if verdict == fit::Verdict::WontFit && !force {
        bail!("{id} won't fit in this machine's memory; pass --force to download anyway");
    }
    let (tx, mut ctl) = tokio::sync::watch::channel(Control::Run);
    // Ctrl-C pauses: the partial files stay and the next run resumes them.
    let _keep = tx;
    let mut last = String::new();
    let snap = rt.block_on(hub.download(&plan, &mut ctl, &mut |p| {
        let line = match &p.phase {
            Phase::Downloading => format!(
                "{:5.1}%  {} / {}  {}/s  {}",
                p.done as f64 * 100.0 / p.total.max(1) as f64,
                fit::gb(p.done),
                fit::gb(p.total),
                fit::gb(p.bytes_per_sec as u64),
                p.file
            ),
            Phase::Retrying { attempt, wait, reason } => format!("{reason}; retry {attempt} in {:.0?}", wait),
            Phase::Verifying => format!("checking {}", p.file),
        };
        if line != last {
            eprint!("\r\x1b[2K{line}");
            last = line;
        }
    }))?;
    eprintln!();
    println!("{}", snap.display());
    Ok(())
}

fn fit(model: &str, context: u64) -> Result<()> {
    use hearth::hub::fit;
    let mem = fit::total_memory();
    let (shape, name) = match hearth::hub::catalogue::CATALOGUE.iter().find(|e| e.id == model) {
        Some(e) => (e.shape, e.id.to_string()),
        None => {
            let path = loader::resolve(model, &paths::models_dir())?;
            let card = hearth::models::installed::card(&path)?;
            (card.shape.ok_or_else(|| anyhow!("{model}: its config lacks the numbers for an estimate"))?, path.display().to_string())
        }
    };
    let need = fit::estimate(&shape, context, fit::device(), mem);
    println!(
        "{name}: weights {} + KV cache {} + working {} = {} of {} at {context} tokens: {}",
        fit::gb(need.weights),
        fit::gb(need.kv_cache),
        fit::gb(need.working),
        fit::gb(need.total()),
        fit::gb(mem),
        fit::verdict(need.total(), mem).label()
    );
    Ok(())
}

fn chat(m: ModelArgs, system: Option<String>, s: SampleArgs) -> Result<()> {
    let engine = start_engine(&m)?;
    let mut history: Vec<Message> = system.into_iter().map(Message::system).collect();
    let base = history.clone();
    let stdin = std::io::stdin();
    eprintln!("Type a message; /reset starts over, /quit exits.");
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/quit" | "/exit" => return Ok(()),
            "/reset" => {
                history = base.clone();
                continue;
            }
            _ => {}
        }
        history.push(Message::user(line));
        let id = engine.generate(Prompt::Chat(history.clone()), s.params(vec![]));
        match stream_reply(&engine, id, false) {
            Ok(reply) => history.push(Message::assistant(reply)),
            Err(e) => {
                history.pop();
                eprintln!("error: {e:#}");
            }
        }
    }
}

/// Deterministic prompt of exactly `n` ordinary tokens (no specials).
fn bench_prompt(session: &Session, n: usize) -> Vec<u32> {
    let tok = &session.loaded.tokenizer;
    let vocab = tok.vocab_size() as u64;
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % vocab) as u32;
        if !tok.is_special(id) && !tok.bytes_of(id).is_empty() {
            out.push(id);
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

fn bench(m: &ModelArgs, prompt_lens: &[usize], gen_tokens: usize, reps: usize, multi_turn: bool) -> Result<()> {
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    let t = std::time::Instant::now();
    let loaded = loader::load(&path, precision).with_context(|| format!("loading {}", path.display()))?;
    let load_s = t.elapsed().as_secs_f64();
    let info = loaded.info.clone();
    let max_p = prompt_lens.iter().max().copied().unwrap_or(128);
    let mut session = Session::new(loaded, Some(m.context_length.unwrap_or(2 * max_p + gen_tokens + 256)));
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: gen_tokens,
        stop: vec![],
        ignore_eos: true,
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    for &n in prompt_lens {
        let prompt = bench_prompt(&session, n);
        let (mut pre, mut dec, mut ttft) = (vec![], vec![], vec![]);
        for r in 0..reps + 1 {
            session.reset_cache();
            let st = session.generate(&prompt, &params, &cancel, &mut |_| {})?;
            if r > 0 {
                pre.push(st.prefill_tps);
                dec.push(st.decode_tps);
                ttft.push(st.ttft_s);
            }
        }
        let spread = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            [lo, hi]
        };
        let line = serde_json::json!({
            "engine": "hearth",
            "model": info.name,
            "compute": info.compute,
            "prompt_tokens": n,
            "gen_tokens": gen_tokens,
            "reps": reps,
            "prefill_tps": median(&mut pre.clone()),
            "prefill_tps_range": spread(&pre),
            "decode_tps": median(&mut dec.clone()),
            "decode_tps_range": spread(&dec),
            "ttft_s": median(&mut ttft.clone()),
            "ttft_s_range": spread(&ttft),
            "load_s": load_s,
            "peak_memory_mb": mlx_rs::memory::peak_memory().unwrap_or(0) as f64 / 1e6,
        });
        println!("{line}");
    }
    if multi_turn {
        // Turn 1: a prompt and its reply. Turn 2: the same conversation plus a short
        // follow-up; only the follow-up should be prefilled. Compared with the same
        // total prompt from a cold cache. Repeated like the other cases (the first
        // round is a warm-up: GPU backends compile kernels for new shapes).
        let n = prompt_lens.iter().copied().max().unwrap_or(128);
        let first = bench_prompt(&session, n);
        let p = GenerateParams { max_tokens: 32, ..params.clone() };
        let (mut warm_t, mut cold_t) = (vec![], vec![]);
        let (mut total, mut reused) = (0, 0);
        for r in 0..reps + 1 {
            session.reset_cache();
            session.generate(&first, &p, &cancel, &mut |_| {})?;
            let mut second = first.clone();
            second.extend_from_slice(&session.last_tokens.clone());
            second.extend(bench_prompt(&session, 48 + n).into_iter().skip(n));
            let warm = session.generate(&second, &p, &cancel, &mut |_| {})?;
            session.reset_cache();
            let cold = session.generate(&second, &p, &cancel, &mut |_| {})?;
            if r > 0 {
                warm_t.push(warm.ttft_s);
                cold_t.push(cold.ttft_s);
            }
            (total, reused) = (second.len(), warm.reused_tokens);
        }
        println!(
            "{}",
            serde_json::json!({
                "engine": "hearth", "case": "multi_turn", "model": info.name,
                "total_prompt_tokens": total, "reused_tokens": reused,
                "second_turn_ttft_s": median(&mut warm_t), "cold_ttft_s": median(&mut cold_t),
            })
        );
    }
    Ok(())
}

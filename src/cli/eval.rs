//! `hearth eval perplexity`: a model's windowed perplexity over a text file,
//! the quality check beside every change to the numerics (`engine::eval`).

use super::{model_path, ModelArgs};
use anyhow::{anyhow, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use hearth::models::load::{self, Precision};
use std::path::Path;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// Windowed perplexity of the model over a text file (each window on its
    /// own, every token predicting the next, as mlx-lm's `perplexity`).
    Perplexity {
        #[command(flatten)]
        m: ModelArgs,
        file: PathBuf,
        /// Tokens per window.
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Only the first this many windows (default: every whole window).
        #[arg(long)]
        windows: Option<usize>,
        /// Print one JSON line instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

pub fn perplexity(m: &ModelArgs, file: &Path, window: usize, windows: Option<usize>, json: bool) -> Result<()> {
    let kv_quant = super::kv_quant_flag(m.kv_bits)?;
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    // Up to 256 MiB of text; a file that is not UTF-8 is refused, not guessed at.
    let text = hearth::files::read_small_text(file, 256 << 20)?.ok_or_else(|| anyhow!("{} does not exist", file.display()))?;
    let loaded = load::load(&path, precision).with_context(|| format!("loading {}", path.display()))?;
    let tokens = loaded.tokenizer.encode(&text)?;
    let r = hearth::engine::eval::perplexity(loaded.model.as_ref(), &tokens, window, windows, kv_quant)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: perplexity {:.3} ± {:.3} over {} tokens ({} windows of {}{}), {:.1} s",
            loaded.info.name,
            r.perplexity,
            r.standard_error,
            r.tokens,
            r.windows,
            r.window,
            if kv_quant.is_some() { format!(", {}-bit KV cache", m.kv_bits) } else { String::new() },
            r.seconds
        );
    }
    Ok(())
}

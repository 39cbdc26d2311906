//! `hearth eval perplexity`: a model's windowed perplexity over a text file,
//! the quality check beside every change to the numerics (`engine::eval`).

use super::{model_path, ModelArgs};
use anyhow::{anyhow, Context, Result};
use hearth::models::load::{self, Precision};
use std::path::Path;

pub fn perplexity(m: &ModelArgs, file: &Path, window: usize, windows: Option<usize>, json: bool) -> Result<()> {
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    // Up to 256 MiB of text; a file that is not UTF-8 is refused, not guessed at.
    let text = hearth::files::read_small_text(file, 256 << 20)?.ok_or_else(|| anyhow!("{} does not exist", file.display()))?;
    let loaded = load::load(&path, precision).with_context(|| format!("loading {}", path.display()))?;
    let tokens = loaded.tokenizer.encode(&text)?;
    let r = hearth::engine::eval::perplexity(loaded.model.as_ref(), &tokens, window, windows)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{}: perplexity {:.3} ± {:.3} over {} tokens ({} windows of {}), {:.1} s",
            loaded.info.name, r.perplexity, r.standard_error, r.tokens, r.windows, r.window, r.seconds
        );
    }
    Ok(())
}

//! Turning what the user typed (`--model`, the app's last model) into a path:
//! a file or folder, a model in the models folder, or a Hugging Face id already
//! in the shared cache.

use super::{hf_cache, ids, installed};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Resolves what the user typed: a path, or the name of an installed model.
pub fn resolve(spec: &str, models_dir: &Path) -> Result<PathBuf> {
    let p = PathBuf::from(spec);
    if p.exists() {
        return Ok(p);
    }
    let safe_name = !spec.is_empty()
        && !spec.contains("..")
        && !Path::new(spec).is_absolute()
        && !spec.starts_with('.');
    if safe_name {
        for cand in [models_dir.join(spec), models_dir.join(format!("{spec}.gguf"))] {
            if cand.exists() {
                return Ok(cand);
            }
        }
        // A Hugging Face id already in the shared cache (ours or mlx-lm's).
        if ids::check_repo_id(spec).is_ok() {
            if let Some(snap) = hf_cache::snapshot(&hf_hub::resolve_cache_dir(), spec) {
                return Ok(snap);
            }
        }
        // A case-insensitive match on an installed model's name.
        if let Ok(entries) = std::fs::read_dir(models_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let stem = name.strip_suffix(".gguf").unwrap_or(&name);
                if stem.eq_ignore_ascii_case(spec) {
                    return Ok(e.path());
                }
            }
        }
    }
    Err(Error::ModelNotFound(format!(
        "'{spec}' is neither a file, a directory, a downloaded Hugging Face model, nor a model installed in {}",
        models_dir.display()
    )))
}

/// The model used when none is named: SmolLM2 if installed (the default that
/// setup fetches), else the first installed model.
pub fn default_model(models_dir: &Path) -> Result<PathBuf> {
    let mut all = installed::installed(models_dir);
    all.sort_by_key(|m| !m.name.to_lowercase().contains("smollm2"));
    all.into_iter().next().map(|m| m.path).ok_or_else(|| {
        Error::ModelNotFound(format!("no model installed in {}: run scripts/setup.sh or pass --model", models_dir.display()))
    })
}


//! What a download will fetch (the plan: commit, files, sizes, checksums, the
//! model's config for the fit estimate), what a running one reports, and what
//! the UI can tell it.

use crate::models::load::fit;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the UI (or CLI) tells a running download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Cancel,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanFile {
    pub path: String,
    pub size: u64,
    /// Cache blob name: the LFS sha256, or the git blob id for small files.
    pub etag: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub id: String,
    pub commit: String,
    pub files: Vec<PlanFile>,
    /// config.json, when the repo has one (for the fit estimate before download).
    pub config: Option<serde_json::Value>,
}

impl Plan {
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn is_gguf(&self) -> bool {
        self.files.iter().any(|f| f.path.ends_with(".gguf"))
    }

    /// Memory the model will need at `context` tokens on this machine.
    pub fn need(&self, context: u64, device: fit::Device, mem: u64) -> u64 {
        let weights: u64 = self
            .files
            .iter()
            .filter(|f| f.path.ends_with(".safetensors") || f.path.ends_with(".gguf"))
            .map(|f| f.size)
            .sum();
        let bits = self
            .config
            .as_ref()
            .and_then(|c| c["quantization"]["bits"].as_u64().or(c["quantization_config"]["bits"].as_u64()));
        // Parameters from bytes: 4.5 bits each for 4-bit (8.5 for 8-bit) with group
        // scales; two bytes each for 16-bit checkpoints; GGUF counted as ~4.5 bits.
        let params = match (bits, self.is_gguf()) {
            (Some(b), _) => weights * 8 * 2 / (2 * b + 1),
            (None, true) => weights * 16 / 9,
            (None, false) => weights / 2,
        };
        match self.config.as_ref().and_then(|c| fit::Shape::from_config(c, params)) {
            Some(shape) => fit::estimate(&shape, context, device, mem).total(),
            None => {
                let w = if device == fit::Device::Cpu && params * 4 <= mem / 2 { params * 4 } else { weights };
                w + w / 8
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Downloading,
    /// Waiting `wait` before attempt `attempt` after `reason`.
    Retrying { attempt: u32, wait: Duration, reason: String },
    Verifying,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub file: String,
    pub file_done: u64,
    pub file_total: u64,
    pub done: u64,
    pub total: u64,
    pub bytes_per_sec: f64,
    pub phase: Phase,
}

impl Progress {
    pub fn eta(&self) -> Option<Duration> {
        (self.bytes_per_sec > 1.0).then(|| Duration::from_secs_f64((self.total - self.done) as f64 / self.bytes_per_sec))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKind {
    Mlx,
    Gguf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub downloads: u64,
    pub likes: u64,
    pub gated: bool,
}

/// The files Hearth needs from a repo; for GGUF repos one quantization
/// (the preferred one, or the one named in `only`).
pub fn select_files(all: &[String], only: Option<&[String]>) -> Vec<String> {
    if let Some(only) = only {
        return all.iter().filter(|f| only.contains(f)).cloned().collect();
    }
    let ggufs: Vec<&String> = all.iter().filter(|f| f.ends_with(".gguf") && !f.contains("mmproj")).collect();
    let has_safetensors = all.iter().any(|f| f.ends_with(".safetensors"));
    if !ggufs.is_empty() && !has_safetensors {
        let rank = |f: &str| {
            let u = f.to_uppercase();
            ["Q4_K_M", "Q4_0", "Q4_K_S", "Q5_K_M", "Q8_0", "Q6_K"].iter().position(|q| u.contains(q)).unwrap_or(99)
        };
        let best = ggufs.iter().min_by_key(|f| (rank(f), f.len())).unwrap();
        return vec![(*best).clone()];
    }
    let wanted = |f: &str| {
        let name = f.rsplit('/').next().unwrap_or(f);
        !f.starts_with("original/")
            && (name.ends_with(".safetensors")
                || name.ends_with(".json")
                || name.ends_with(".jinja")
                || name.ends_with(".tiktoken")
                || name == "tokenizer.model"
                || name == "merges.txt"
                || name == "vocab.txt")
    };
    all.iter().filter(|f| wanted(f)).cloned().collect()
}


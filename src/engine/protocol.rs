//! Messages between the UI (or CLI) and the inference thread.

use super::generate::{GenerateParams, GenerationStats};
use crate::chat::Message;
use crate::models::loader::{ModelInfo, Precision};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub type RequestId = u64;

#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Text given to the model as is (no template).
    Raw(String),
}

pub enum Command {
    Load { path: PathBuf, precision: Precision, context_length: Option<usize> },
    Generate { id: RequestId, prompt: Prompt, params: GenerateParams, cancel: Arc<AtomicBool> },
    /// Sets the context length used by later requests.
    SetContextLength(usize),
    /// Drops the prompt cache (e.g. the user switched conversations).
    ResetCache,
    Unload,
    Shutdown,
}

#[derive(Debug, Clone)]
pub enum Event {
    LoadProgress { fraction: f32, message: String },
    Loaded(ModelInfo),
    LoadFailed(String),
    Unloaded,
    /// The conversation did not fit; this many of the oldest messages were left out.
    ContextTrimmed { id: RequestId, dropped_messages: usize },
    Token { id: RequestId, text: String },
    Finished { id: RequestId, stats: GenerationStats },
    Error { id: Option<RequestId>, message: String },
    Memory(MemoryStats),
    /// The engine thread died (a bug); the UI can restart it.
    Crashed(String),
}

#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryStats {
    pub mlx_active: u64,
    pub mlx_peak: u64,
    pub mlx_cache: u64,
    pub process_rss: u64,
}

impl MemoryStats {
    pub fn now() -> Self {
        MemoryStats {
            mlx_active: mlx_rs::memory::active_memory().unwrap_or(0) as u64,
            mlx_peak: mlx_rs::memory::peak_memory().unwrap_or(0) as u64,
            mlx_cache: mlx_rs::memory::cache_memory().unwrap_or(0) as u64,
            process_rss: process_rss(),
        }
    }
}

/// Resident memory of this process (Linux /proc; 0 where unavailable).
pub fn process_rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

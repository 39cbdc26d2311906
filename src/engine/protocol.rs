//! Messages between the UI (or CLI) and the inference thread.

use crate::chat::params::{GenerateParams, GenerationStats, TokenLogprob};
use crate::chat::template::TemplateOptions;
use crate::chat::Message;
use crate::error::Error;
use crate::models::load::{ModelInfo, Precision};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub type RequestId = u64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// A conversation with template variables for this request only (an API
    /// client's thinking on/off or reasoning effort); unset ones keep the
    /// engine's.
    ChatWith(Vec<Message>, TemplateOptions),
    /// Text given to the model as is (no template).
    Raw(String),
}

// A command crosses the channel once per request, so the size of its
// largest variant (Generate) costs nothing worth a Box at every call site.
// Commands cross a daemon's socket as JSON (`remote`); a cancel flag does
// not: the daemon gives each request one of its own.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub enum Command {
    Load { path: PathBuf, precision: Precision, context_length: Option<usize> },
    /// `interactive`: a person waits on it (the app's chat, the terminal):
    /// it joins the batch ahead of queued API requests, and even when the
    /// batch is full, so a burst of API requests never starves the chat.
    /// `model`: the model it runs on (held by `Load` or `Reside`); None: the primary.
    Generate {
        id: RequestId,
        prompt: Prompt,
        params: GenerateParams,
        #[serde(skip)]
        cancel: Arc<AtomicBool>,
        interactive: bool,
        model: Option<PathBuf>,
    },
    /// Renders and tokenizes `prompt` as a generation would, whole (no turn
    /// dropped to fit), and answers `PromptReady` with its length, then
    /// `Finished`; nothing runs on the model (Anthropic's `count_tokens`).
    CountTokens { id: RequestId, prompt: Prompt, model: Option<PathBuf> },
    /// Renders `prompt` as a generation with `reserve` tokens for the
    /// answer would and answers `Measured`: its whole length, the context,
    /// and which of the oldest messages would be left out to fit (the app's
    /// context meter); nothing runs on the model.
    Measure { id: RequestId, prompt: Prompt, reserve: usize, model: Option<PathBuf> },
    /// Holds `path` beside the primary and the other residents (nothing if
    /// it is held already, as either), for requests that name it: an API
    /// server's pool. Answered by `Resident`; sends no load progress (the
    /// app's progress bar is the primary's).
    Reside { path: PathBuf, precision: Precision, context_length: Option<usize> },
    /// Drops resident `path` once its sequences finish (never the primary);
    /// answered by `Evicted`.
    Evict { path: PathBuf },
    /// The draft model for speculative decoding, for this model and the next
    /// (loaded beside each, where its tokenizer matches), or none. Answered
    /// by `DraftLoaded`, or an `Error` saying why it cannot draft.
    SetDraft(Option<(PathBuf, Precision)>),
    /// Bits per key and value in the KV caches of later requests (0, 8 or
    /// 4; `EngineConfig::kv_bits`), for this model and the next; the prefix
    /// cache, stored the old way, is dropped.
    SetKvBits(u8),
    /// Sets the context length used by later requests.
    SetContextLength(usize),
    /// Template variables (reasoning effort) for later requests, this model and the next.
    SetTemplateOptions(TemplateOptions),
    /// Drops the prompt cache (e.g. the user switched conversations).
    ResetCache,
    Unload,
    Shutdown,
}

/// How a prompt fits the context (`Command::Measure`), in the engine's own count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptFit {
    /// The whole prompt, before anything is left out.
    pub tokens: usize,
    /// The context length the engine runs the model with.
    pub context_length: usize,
    /// What the prompt may take: the context less the room kept for the answer.
    pub budget: usize,
    /// The oldest messages a generation would leave out to fit the budget.
    pub dropped_messages: usize,
    /// False where even leaving messages out would not fit (the request fails).
    pub fits: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    LoadProgress { fraction: f32, message: String },
    Loaded(ModelInfo),
    LoadFailed(EngineError),
    Unloaded,
    /// `Reside`'s answer, for the path it named.
    Resident { path: PathBuf, result: Result<ModelInfo, EngineError> },
    /// `Evict`'s answer: `path` is no longer held as a resident.
    Evicted { path: PathBuf },
    /// The draft model is loaded beside the model (None: drafting is off).
    DraftLoaded(Option<ModelInfo>),
    /// The conversation did not fit; this many of the oldest messages were left out.
    ContextTrimmed { id: RequestId, dropped_messages: usize },
    /// The prompt is rendered and tokenized; generation starts (APIs that
    /// report input tokens up front, as Anthropic's does, wait for this).
    /// `cached`: the leading tokens the prefix cache already holds.
    PromptReady { id: RequestId, tokens: usize, cached: usize },
    /// `Measure`'s answer.
    Measured { id: RequestId, result: Result<PromptFit, EngineError> },
    /// A piece of the reply: the text as the model wrote it, the same read
    /// into typed parts once (reasoning, content, tool calls: what the app
    /// and the APIs render), and the log-probabilities of its tokens when
    /// the request asked for them.
    Token { id: RequestId, text: String, parts: Vec<crate::chat::reply::Part>, logprobs: Vec<TokenLogprob> },
    Finished { id: RequestId, stats: GenerationStats },
    Error { id: Option<RequestId>, error: EngineError },
    Memory(MemoryStats),
    /// The engine thread died (a bug); the UI can restart it. The text is the panic's.
    Crashed(String),
}

/// What kind of failure an error event reports, so callers act on the kind
/// instead of matching the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// A request arrived with no model loaded.
    NoModel,
    /// The model files are missing, unreadable, corrupt or of an unknown kind.
    BadModel,
    /// The request itself was refused (empty, too long, bad parameters).
    BadRequest,
    /// MLX failed while running the model.
    Compute,
    /// The model named went away before the request reached it: retry.
    Unavailable,
}

/// An engine error as it crosses the channel: its kind and the message to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<&Error> for EngineError {
    fn from(e: &Error) -> Self {
        let kind = match e {
            Error::NoModel => ErrorKind::NoModel,
            Error::NotLoaded(_) => ErrorKind::Unavailable,
            Error::EmptyPrompt | Error::PromptTooLong { .. } | Error::InvalidArgument(_) | Error::Template(_) => {
                ErrorKind::BadRequest
            }
            Error::Mlx(_) => ErrorKind::Compute,
            _ => ErrorKind::BadModel,
        };
        EngineError { kind, message: e.to_string() }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
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
            process_rss: crate::sys::process_rss(),
        }
    }
}

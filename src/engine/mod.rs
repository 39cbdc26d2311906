//! The inference engine: one thread owns the model and all MLX state; commands
//! in, events out (`protocol`, `worker`); it may hold several models at once
//! (`pool`). A `Session` keeps a loaded model and
//! its prefix cache; the batch (`batch`) steps every sequence being served in
//! one loop (continuous batching), over the prefill (`step`), streaming text
//! (`stream`) and sampling on the device (`sampling`), as in mlx-lm.

pub mod batch;
pub mod config;
pub mod prompt_file;
pub mod protocol;
pub mod remote;
pub mod sampling;
pub mod sequence;
pub mod session;
mod speculate;
pub mod constraint;
pub mod draft;
pub mod eval;
mod control;
mod merged;
pub(crate) mod pool;
pub mod step;
pub mod stream;
pub mod worker;

pub use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, SamplingParams};
pub use config::EngineConfig;
pub use protocol::{Command, Event, Prompt, PromptFit};
pub use session::Session;
pub use worker::EngineHandle;

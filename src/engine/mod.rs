//! The inference engine: one thread owns the model; commands in, events out.

pub mod detokenize;
pub mod generate;
pub mod kv_cache;
pub mod protocol;
pub mod sampling;
pub mod worker;

pub use generate::{FinishReason, GenerateParams, GenerationStats, Session};
pub use protocol::{Command, Event, Prompt};
pub use sampling::SamplingParams;
pub use worker::EngineHandle;

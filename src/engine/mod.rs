//! The inference engine: one thread owns the model and all MLX state; commands
//! in, events out (`protocol`, `worker`). A `Session` keeps the loaded model and
//! its prompt cache; the token loop (`step`), streaming text (`stream`) and
//! sampling on the device (`sampling`) are separate, as in mlx-lm.

pub mod protocol;
pub mod sampling;
pub mod session;
pub mod constraint;
pub mod step;
pub mod stream;
pub mod worker;

pub use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, SamplingParams};
pub use protocol::{Command, Event, Prompt};
pub use session::Session;
pub use worker::EngineHandle;

//! Hearth: a private, offline chat assistant running local LLMs with MLX.
//!
//! Dependencies run one way (checked by `tests/layout.rs`):
//! `ui`, `server` → `engine`, `hub`, `library`, `store` → `models` → `chat`, `formats` → `sys`, `error`;
//! `synth` (random-weight models for the CLI and the tests) → `models`.

pub mod bundle;
pub mod chat;
pub mod engine;
pub mod error;
pub mod files;
pub mod formats;
pub mod hub;
pub mod library;
pub mod mcp;
pub mod models;
pub mod paths;
pub mod server;
pub mod store;
pub mod synth;
pub mod sys;
pub mod ui;
pub mod units;

pub use error::{Error, Result};

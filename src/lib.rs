//! Hearth: a private, offline chat assistant running local LLMs with MLX.

pub mod bundle;
pub mod chat;
pub mod convert;
pub mod engine;
pub mod error;
pub mod hub;
pub mod models;
pub mod paths;
pub mod store;
pub mod ui;

pub use error::{Error, Result};

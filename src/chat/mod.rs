//! Messages, chat templates and tokenizers, and the parameters and statistics
//! of a generation (`params`), shared by the engine, the app and the store.

pub mod harmony;
pub mod params;
pub mod template;
pub mod tokenizer;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(c: impl Into<String>) -> Self {
        Message { role: Role::System, content: c.into() }
    }
    pub fn user(c: impl Into<String>) -> Self {
        Message { role: Role::User, content: c.into() }
    }
    pub fn assistant(c: impl Into<String>) -> Self {
        Message { role: Role::Assistant, content: c.into() }
    }
}

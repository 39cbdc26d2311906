//! Messages, chat templates and tokenizers, and the parameters and statistics
//! of a generation (`params`), shared by the engine, the app and the store.

pub mod harmony;
pub mod params;
pub mod template;
pub mod tools;
mod template_compat;
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

/// An assistant reply stored as `<think>reasoning</think>answer` split into its
/// reasoning and its answer; a reply without a closed reasoning block is all answer.
pub fn split_reasoning(content: &str) -> (Option<&str>, &str) {
    let trimmed = content.trim_start();
    if let Some(rest) = trimmed.strip_prefix("<think>") {
        if let Some(end) = rest.find("</think>") {
            return (Some(&rest[..end]), &rest[end + "</think>".len()..]);
        }
    }
    (None, content)
}

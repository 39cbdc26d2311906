//! Messages, chat templates and tokenizers, and the parameters and statistics
//! of a generation (`params`), shared by the engine, the app and the store.

pub mod harmony;
pub mod params;
pub mod reply;
pub mod template;
pub mod tool_prompt;
pub mod tools;
mod template_compat;
pub mod tokenizer;
#[cfg(test)]
pub(crate) mod test_vocab;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool's result, answering an assistant's tool call.
    Tool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
    /// An assistant message's reasoning, apart from its answer (templates
    /// get it as `reasoning_content`, harmony's as `thinking`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    /// The tools an assistant message called (after its content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<tools::ToolCall>,
    /// A tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into(), reasoning: String::new(), tool_calls: Vec::new(), tool_call_id: None }
    }
    pub fn system(c: impl Into<String>) -> Self {
        Message::new(Role::System, c)
    }
    pub fn user(c: impl Into<String>) -> Self {
        Message::new(Role::User, c)
    }
    pub fn assistant(c: impl Into<String>) -> Self {
        Message::new(Role::Assistant, c)
    }
    /// A tool's result for the call `id`.
    pub fn tool(id: impl Into<String>, c: impl Into<String>) -> Self {
        Message { tool_call_id: Some(id.into()), ..Message::new(Role::Tool, c) }
    }
}

//! What an OpenAI chat or completion request asks for, read and checked:
//! the messages, sampling, stop strings, template variables (thinking,
//! reasoning effort), `response_format` as an output constraint and the
//! tools offered. Fields Hearth does not implement yet are a 400 that names them.

use super::tools::ToolRequest;
use super::ApiError;
use crate::chat::tools::ToolCall;
use crate::chat::params::{GenerateParams, OutputConstraint, DEFAULT_MAX_TOKENS, MAX_TOP_LOGPROBS};
use crate::chat::template::TemplateOptions;
use crate::chat::{Message, Role};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Fields clients send that change nothing here.
const HARMLESS: &[&str] = &["user", "metadata", "store", "service_tier", "parallel_tool_calls"];

#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    pub(super) model: Option<String>,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    pub(super) stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    /// OpenAI's effort for reasoning models (gpt-oss's template takes it).
    #[serde(default)]
    reasoning_effort: Option<String>,
    /// Variables for the chat template, as vLLM and LM Studio take them
    /// (`enable_thinking`, `reasoning_effort`).
    #[serde(default)]
    chat_template_kwargs: Option<Map<String, Value>>,
    /// `text`, `json_object` or `json_schema` (structured output).
    #[serde(default)]
    response_format: Option<Value>,
    /// vLLM's extension: keep going past end-of-sequence (benchmarks that
    /// need exact lengths).
    #[serde(default)]
    ignore_eos: bool,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    /// true (chat: `top_logprobs` alternatives) or a count (completions).
    logprobs: Option<Value>,
    #[serde(default)]
    top_logprobs: Option<u64>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// Seconds the model may stay loaded idle after this request (LM
    /// Studio's `ttl`; negative: for good).
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
pub(super) struct StreamOptions {
    #[serde(default)]
    pub(super) include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant's calls (arguments as JSON text, as OpenAI sends them).
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    /// A tool message: the call it answers.
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl ChatRequest {
    /// Refuses what is not implemented, naming it, instead of ignoring it.
    pub(super) fn check(&self) -> Result<(), ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("n > 1 (several choices) is not supported; send one request per choice"));
        }
        for (k, v) in &self.other {
            let off = v.is_null()
                || v == &json!(false)
                || v == &json!(0)
                || v == &json!(0.0)
                || (k == "response_format" && v["type"] == "text")
                || v.as_array().is_some_and(|a| a.is_empty());
            if !HARMLESS.contains(&k.as_str()) && !off {
                return Err(ApiError::bad_request(format!("'{k}' is not supported by this server yet")));
            }
        }
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty"));
        }
        Ok(())
    }

    /// The model's idle time to live this request sets.
    pub(super) fn keep(&self) -> Option<super::pool::Keep> {
        self.ttl.map(super::pool::Keep::seconds)
    }

    pub(super) fn messages(&self) -> Result<Vec<Message>, ApiError> {
        self.messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "tool" => Role::Tool,
                    other => return Err(ApiError::bad_request(format!("messages with role '{other}' are not supported"))),
                };
                if role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ApiError::bad_request("a tool message needs the tool_call_id it answers"));
                }
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p["type"].as_str(), p["text"].as_str()) {
                                (Some("text"), Some(t)) => text.push_str(t),
                                _ => return Err(ApiError::bad_request("only text content parts are supported")),
                            }
                        }
                        text
                    }
                };
                let mut msg = Message::new(role, content);
                msg.tool_calls = m.tool_calls.clone().unwrap_or_default();
                msg.tool_call_id = m.tool_call_id.clone().filter(|_| role == Role::Tool);
                Ok(msg)
            })
            .collect()
    }

    /// Chat's `logprobs: true` with `top_logprobs` alternatives, or a
    /// completion's `logprobs: N` (0 to 20 alternatives per token).
    pub(super) fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        let range = |n: u64| {
            if n as usize <= MAX_TOP_LOGPROBS {
                Ok(Some(n as usize))
            } else {
                Err(ApiError::bad_request(format!("{n} log-probability alternatives is out of range (0 to {MAX_TOP_LOGPROBS})")))
            }
        };
        match (&self.logprobs, self.top_logprobs) {
            (Some(Value::Bool(true)), top) => range(top.unwrap_or(0)),
            (Some(Value::Number(n)), None) => range(n.as_u64().ok_or_else(|| ApiError::bad_request("logprobs must be true, false or a count"))?),
            (Some(Value::Bool(false)) | None | Some(Value::Null), Some(n)) if n > 0 => {
                Err(ApiError::bad_request("top_logprobs needs logprobs: true"))
            }
            (Some(Value::Bool(false)) | None | Some(Value::Null), _) => Ok(None),
            _ => Err(ApiError::bad_request("logprobs must be true, false or a count")),
        }
    }

    /// `tools` and `tool_choice`.
    pub(super) fn tools(&self) -> Result<ToolRequest, ApiError> {
        ToolRequest::new(self.tools.as_ref(), ToolRequest::openai_choice(self.tool_choice.as_ref())?)
    }

    /// `response_format` as an output constraint.
    pub(super) fn constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        let Some(f) = &self.response_format else { return Ok(None) };
        match f["type"].as_str() {
            None if f.is_null() => Ok(None),
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(OutputConstraint::JsonObject)),
            Some("json_schema") => match &f["json_schema"]["schema"] {
                s if s.is_object() || s.is_boolean() => Ok(Some(OutputConstraint::JsonSchema(s.clone()))),
                _ => Err(ApiError::bad_request("response_format.json_schema.schema must be a JSON Schema object")),
            },
            _ => Err(ApiError::bad_request("response_format.type must be text, json_object or json_schema")),
        }
    }

    /// The template variables this request sets.
    pub(super) fn template_options(&self) -> Result<TemplateOptions, ApiError> {
        let mut o = TemplateOptions::default();
        let effort = |v: &str| v.parse().map_err(|e: crate::error::Error| ApiError::bad_request(e.to_string()));
        if let Some(e) = &self.reasoning_effort {
            o.reasoning_effort = Some(effort(e)?);
        }
        for (k, v) in self.chat_template_kwargs.iter().flatten() {
            match (k.as_str(), v) {
                ("enable_thinking", Value::Bool(b)) => o.enable_thinking = Some(*b),
                ("reasoning_effort", Value::String(e)) => o.reasoning_effort = Some(effort(e)?),
                (_, Value::Null) => {}
                (k, _) => {
                    return Err(ApiError::bad_request(format!(
                        "chat_template_kwargs.{k} is not supported (enable_thinking: bool and reasoning_effort: low|medium|high are)"
                    )))
                }
            }
        }
        Ok(o)
    }

    pub(super) fn params(&self, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
        let mut sampling = recommended.with_request(self.temperature, self.top_p);
        sampling.seed = self.seed.or(sampling.seed);
        if let Some(p) = self.presence_penalty {
            sampling.presence_penalty = p;
        }
        if let Some(f) = self.frequency_penalty {
            sampling.frequency_penalty = f;
        }
        sampling.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let max = self.max_completion_tokens.or(self.max_tokens).unwrap_or(DEFAULT_MAX_TOKENS as u64);
        if max == 0 || max > 1 << 20 {
            return Err(ApiError::bad_request(format!("max_tokens {max} is out of range (1 to 1048576)")));
        }
        let stop = match &self.stop {
            None => vec![],
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) if v.len() <= 16 => v.clone(),
            Some(Stop::Many(_)) => return Err(ApiError::bad_request("at most 16 stop strings")),
        };
        Ok(GenerateParams { sampling, max_tokens: max as usize, stop, ignore_eos: self.ignore_eos, constraint: self.constraint()?, logprobs: self.logprobs()?, call_id_prefix: String::new(), keep_turns: false, reasoning_budget: None, prompt_file: None })
    }
}


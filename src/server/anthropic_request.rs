//! The Anthropic Messages request (`POST /v1/messages` and its
//! `count_tokens`): system text, turns of text, tool_use and tool_result
//! blocks, tools and tool_choice, the thinking switch, structured output
//! (`output_format`), context editing and sampling, read
//! into Hearth's messages and parameters (`anthropic` answers it).

use super::tools::{ToolChoice, ToolRequest};
use super::ApiError;
use crate::chat::params::{GenerateParams, OutputConstraint};
use crate::chat::template::TemplateOptions;
use crate::chat::tool_prompt::ToolSpec;
use crate::chat::tools::ToolCall;
use crate::chat::{Message, Role};
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Deserialize)]
#[serde(untagged)]
enum Text {
    Plain(String),
    Blocks(Vec<Value>),
}

impl Text {
    /// The text of a system prompt or a tool result.
    fn join(&self) -> Result<String, ApiError> {
        let msgs = self.messages(Role::User)?;
        match msgs.as_slice() {
            [] => Ok(String::new()),
            [m] if m.role == Role::User => Ok(m.content.clone()),
            _ => Err(ApiError::bad_request("only text blocks belong here")),
        }
    }

    /// A turn's blocks as messages: its text (with an assistant's tool_use
    /// blocks as its calls), and each tool_result as a tool message before
    /// the text that follows them.
    fn messages(&self, role: Role) -> Result<Vec<Message>, ApiError> {
        let blocks = match self {
            Text::Plain(s) => return Ok(vec![Message::new(role, s.clone())]),
            Text::Blocks(blocks) => blocks,
        };
        let mut results = Vec::new();
        let mut turn = Message::new(role, String::new());
        for b in blocks {
            match b["type"].as_str() {
                Some("text") => turn.content.push_str(b["text"].as_str().ok_or_else(|| ApiError::bad_request("a text block without text"))?),
                // Reasoning goes back as the turn's own (context editing
                // decides which turns keep it; templates may drop it too);
                // redacted reasoning is opaque to any other model.
                Some("thinking") if role == Role::Assistant => turn.reasoning.push_str(b["thinking"].as_str().unwrap_or("")),
                Some("redacted_thinking") if role == Role::Assistant => {}
                Some("tool_use") if role == Role::Assistant => {
                    let call: ToolCall = serde_json::from_value(json!({"id": b["id"], "name": b["name"], "arguments": b["input"]}))
                        .map_err(|e| ApiError::bad_request(format!("a tool_use block: {e}")))?;
                    turn.tool_calls.push(call);
                }
                Some("tool_result") if role == Role::User => {
                    let id = b["tool_use_id"].as_str().filter(|i| !i.is_empty());
                    let id = id.ok_or_else(|| ApiError::bad_request("a tool_result block needs its tool_use_id"))?;
                    let content = match &b["content"] {
                        Value::Null => String::new(),
                        c => serde_json::from_value::<Text>(c.clone())
                            .map_err(|_| ApiError::bad_request("tool_result content must be text or text blocks"))?
                            .join()?,
                    };
                    let content = if b["is_error"] == true { format!("Error: {content}") } else { content };
                    results.push(Message::tool(id, content));
                }
                Some(other) => {
                    let turn = if role == Role::Assistant { "assistant" } else { "user" };
                    return Err(ApiError::bad_request(format!("'{other}' content blocks are not supported in {turn} turns")));
                }
                None => return Err(ApiError::bad_request("a content block without a type")),
            }
        }
        if !turn.content.is_empty() || !turn.tool_calls.is_empty() || results.is_empty() {
            results.push(turn);
        }
        Ok(results)
    }
}

#[derive(Deserialize)]
struct Turn {
    role: String,
    content: Text,
}

#[derive(Deserialize)]
pub struct MessagesRequest {
    pub(super) model: String,
    /// Required by `messages`; `count_tokens` takes none.
    #[serde(default)]
    max_tokens: Option<u64>,
    messages: Vec<Turn>,
    #[serde(default)]
    system: Option<Text>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    pub(super) stop_sequences: Vec<String>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    tools: Vec<AnthropicTool>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Deserialize)]
struct AnthropicTool {
    name: String,
    #[serde(default)]
    description: String,
    input_schema: Value,
}

impl MessagesRequest {
    /// `thinking: {"type": "enabled" | "disabled"}` as the template's thinking switch.
    pub(super) fn template_options(&self) -> Result<TemplateOptions, ApiError> {
        let mut o = TemplateOptions::default();
        match self.other.get("thinking").map(|t| &t["type"]) {
            None | Some(Value::Null) => {}
            Some(t) if t == "enabled" => o.enable_thinking = Some(true),
            Some(t) if t == "disabled" => o.enable_thinking = Some(false),
            Some(t) => return Err(ApiError::bad_request(format!("thinking.type must be enabled or disabled, not {t}"))),
        }
        Ok(o)
    }

    /// `tools` and `tool_choice` (`auto`, `any`, `tool` with a name, `none`).
    pub(super) fn tools(&self) -> Result<ToolRequest, ApiError> {
        let specs = self
            .tools
            .iter()
            .map(|t| ToolSpec::from_value(&json!({"name": t.name, "description": t.description, "parameters": t.input_schema})))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ApiError::bad_request)?;
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(c) => match (c["type"].as_str(), c["name"].as_str()) {
                (Some("auto"), _) => ToolChoice::Auto,
                (Some("any"), _) => ToolChoice::Required,
                (Some("none"), _) => ToolChoice::None,
                (Some("tool"), Some(name)) => ToolChoice::Function(name.to_string()),
                _ => return Err(ApiError::bad_request("tool_choice.type must be auto, any, none, or tool with a name")),
            },
        };
        ToolRequest::from_specs(specs, choice)
    }

    /// The request's conversation, checked, for a reply.
    pub(super) fn check(&self) -> Result<Vec<Message>, ApiError> {
        match self.max_tokens {
            None => return Err(ApiError::bad_request("max_tokens is required")),
            Some(n) if n == 0 || n > 1 << 20 => {
                return Err(ApiError::bad_request(format!("max_tokens {n} is out of range (1 to 1048576)")));
            }
            Some(_) => {}
        }
        self.conversation()
    }

    /// `context_management`'s edits.
    pub(super) fn context_edits(&self) -> Result<super::context_edits::Edits, ApiError> {
        super::context_edits::Edits::parse(self.other.get("context_management"))
    }

    /// `output_format` (structured outputs): a JSON schema the reply follows.
    fn constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        match self.other.get("output_format") {
            None | Some(Value::Null) => Ok(None),
            Some(f) if f["type"] == "json_schema" && (f["schema"].is_object() || f["schema"].is_boolean()) => Ok(Some(OutputConstraint::JsonSchema(f["schema"].clone()))),
            Some(_) => Err(ApiError::bad_request("output_format must be {\"type\": \"json_schema\", \"schema\": {…}}")),
        }
    }

    /// The system prompt and turns as messages; fields this server does not
    /// take are an error rather than silently ignored.
    pub(super) fn conversation(&self) -> Result<Vec<Message>, ApiError> {
        for (k, v) in &self.other {
            let off = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
            // `thinking` turns reasoning on or off (`template_options`) and
            // bounds it (`budget_tokens`); the reasoning itself is always
            // shown. `cache_control` (here or on blocks) asks for what the
            // prefix cache does for every prompt. `context_management` is
            // applied by the handler, `output_format` is the reply's
            // constraint; a `container` only matters to code-execution
            // tools, which are refused as tools.
            const TAKEN: &[&str] = &["metadata", "thinking", "service_tier", "cache_control", "context_management", "output_format", "container"];
            if k == "mcp_servers" && !off {
                return Err(ApiError::bad_request(
                    "mcp_servers: this server does not connect to MCP servers for a request; run the tools in the client and send them as tools",
                ));
            }
            if !TAKEN.contains(&k.as_str()) && !off {
                return Err(ApiError::bad_request(format!("'{k}' is not supported by this server yet")));
            }
        }
        let mut msgs = Vec::new();
        if let Some(s) = &self.system {
            let s = s.join()?;
            if !s.is_empty() {
                msgs.push(Message::system(s));
            }
        }
        for t in &self.messages {
            let role = match t.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => return Err(ApiError::bad_request(format!("role '{other}' is not a Messages API role"))),
            };
            msgs.extend(t.content.messages(role)?);
        }
        if self.messages.is_empty() {
            return Err(ApiError::bad_request("messages is empty"));
        }
        Ok(msgs)
    }

    pub(super) fn params(&self, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
        let mut s = recommended.with_request(self.temperature, self.top_p);
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        s.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(GenerateParams {
            sampling: s,
            max_tokens: self.max_tokens.unwrap_or(1) as usize,
            stop: self.stop_sequences.clone(),
            ignore_eos: false,
            constraint: self.constraint()?,
            logprobs: None,
            call_id_prefix: String::new(),
            keep_turns: false,
            reasoning_budget: self.thinking_budget()?,
            prompt_file: None,
        })
    }

    /// `thinking.budget_tokens` with thinking enabled: the most tokens the
    /// reply may think before its reasoning block is closed for it.
    fn thinking_budget(&self) -> Result<Option<usize>, ApiError> {
        let Some(t) = self.other.get("thinking").filter(|t| t["type"] == "enabled") else { return Ok(None) };
        match &t["budget_tokens"] {
            Value::Null => Ok(None),
            b => match b.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n as usize)),
                _ => Err(ApiError::bad_request(format!("thinking.budget_tokens must be a positive number of tokens, not {b}"))),
            },
        }
    }
}

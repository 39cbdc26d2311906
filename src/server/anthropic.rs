//! The Anthropic-compatible `POST /v1/messages`: system text, user and
//! assistant turns of text blocks, whole or streamed with the Messages event
//! sequence (`message_start`, `content_block_start/delta/stop`,
//! `message_delta`, `message_stop`). Reasoning comes as a `thinking` block
//! before the text block; tools (`tools`, `tool_choice`) as `tool_use`
//! blocks, their results as `tool_result` blocks. Images are a 400.

use super::bridge::Update;
use crate::chat::reply::{gather, Part};
use super::tools::{ToolChoice, ToolRequest};
use crate::chat::tool_prompt::ToolSpec;
use crate::chat::tools::ToolCall;
use super::{ApiError, Job, Server};
use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, SamplingParams};
use crate::chat::template::TemplateOptions;
use crate::chat::{Message, Role};
use crate::engine::Prompt;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`.
pub struct AnthropicError(ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let kind = match self.0.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            _ => "api_error",
        };
        (self.0.status, Json(json!({"type": "error", "error": {"type": kind, "message": self.0.message}}))).into_response()
    }
}

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
                // Earlier reasoning is not sent back to the model.
                Some("thinking") | Some("redacted_thinking") => {}
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
    model: String,
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
    stop_sequences: Vec<String>,
    #[serde(default)]
    stream: bool,
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
    fn template_options(&self) -> Result<TemplateOptions, ApiError> {
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
    fn tools(&self) -> Result<ToolRequest, ApiError> {
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
    fn check(&self) -> Result<Vec<Message>, ApiError> {
        match self.max_tokens {
            None => return Err(ApiError::bad_request("max_tokens is required")),
            Some(n) if n == 0 || n > 1 << 20 => {
                return Err(ApiError::bad_request(format!("max_tokens {n} is out of range (1 to 1048576)")));
            }
            Some(_) => {}
        }
        self.conversation()
    }

    /// The system prompt and turns as messages; fields this server does not
    /// take are an error rather than silently ignored.
    fn conversation(&self) -> Result<Vec<Message>, ApiError> {
        for (k, v) in &self.other {
            let off = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
            // `thinking` turns reasoning on or off (`template_options`); the
            // reasoning itself is always shown. `cache_control` (here or on
            // blocks) asks for what the prefix cache does for every prompt.
            if !matches!(k.as_str(), "metadata" | "thinking" | "service_tier" | "cache_control") && !off {
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

    fn params(&self, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
        let mut s = recommended.apply(&SamplingParams::default());
        if let Some(t) = self.temperature {
            s.temperature = t;
        }
        if let Some(p) = self.top_p {
            s.top_p = p;
        }
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        s.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(GenerateParams { sampling: s, max_tokens: self.max_tokens.unwrap_or(1) as usize, stop: self.stop_sequences.clone(), ignore_eos: false, constraint: None, logprobs: None, call_id_prefix: String::new() })
    }
}

fn stop_reason(stats: &GenerationStats, stops: &[String], called: bool) -> (&'static str, Value) {
    match stats.finish_reason {
        _ if called && !matches!(stats.finish_reason, Some(FinishReason::MaxTokens) | Some(FinishReason::ContextFull)) => {
            ("tool_use", Value::Null)
        }
        Some(FinishReason::MaxTokens) | Some(FinishReason::ContextFull) => ("max_tokens", Value::Null),
        // Which string matched is not recorded; with one there is no doubt.
        Some(FinishReason::StopString) => ("stop_sequence", if stops.len() == 1 { json!(stops[0]) } else { Value::Null }),
        _ => ("end_turn", Value::Null),
    }
}

pub async fn messages(State(server): State<Arc<Server>>, body: Bytes) -> Result<Response, AnthropicError> {
    let req: MessagesRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a Messages request: {e}")))?;
    let msgs = req.check()?;
    let kind = if req.stream { "messages stream" } else { "messages" };
    let mut template = req.template_options()?;
    let tools = req.tools()?;
    let n = server.next_id();
    let job = server
        .start(Some(&req.model), kind, |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut template, &mut params)?;
            params.call_id_prefix = format!("toolu_{n:020}_");
            Ok((Prompt::ChatWith(msgs, template), params))
        })
        .await?;
    let id = format!("msg_{n:024}");
    let stops = req.stop_sequences.clone();
    if !req.stream {
        return Ok(whole(job, id, stops).await);
    }
    Ok(stream(job, id, stops))
}

/// `POST /v1/messages/count_tokens`: the tokens the same request's prompt
/// renders to on this model (system, turns, tools and the thinking switch
/// included), before any turn is dropped to fit the context:
/// `{"input_tokens": N}`, what `messages` reports as `usage.input_tokens`.
pub async fn count_tokens(State(server): State<Arc<Server>>, body: Bytes) -> Result<Response, AnthropicError> {
    let req: MessagesRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a count_tokens request: {e}")))?;
    let msgs = req.conversation()?;
    let mut template = req.template_options()?;
    let tools = req.tools()?;
    let n = server
        .count_tokens(Some(&req.model), "count_tokens", |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut template, &mut params)?;
            Ok(Prompt::ChatWith(msgs, template))
        })
        .await?;
    Ok(Json(json!({"input_tokens": n})).into_response())
}

async fn whole(job: Job, id: String, stops: Vec<String>) -> Response {
    let Job { mut rx, queued, cancel, model, .. } = job;
    let mut parts = Vec::new();
    loop {
        match rx.recv().await {
            Some(Update::Started(_)) => {}
            Some(Update::Reply(p, _)) => parts.extend(p),
            Some(Update::Done(stats)) => {
                cancel.disarm();
                drop(queued);
                let (text, thinking, calls) = gather(parts);
                let mut content = vec![];
                if !thinking.is_empty() {
                    content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
                }
                if !text.is_empty() || calls.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                content.extend(calls.iter().map(|c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments})));
                let (reason, seq) = stop_reason(&stats, &stops, !calls.is_empty());
                return Json(json!({"id": id, "type": "message", "role": "assistant", "model": model.id, "content": content,
                                   "stop_reason": reason, "stop_sequence": seq,
                                   "usage": {"input_tokens": stats.prompt_tokens, "output_tokens": stats.generated_tokens}}))
                .into_response();
            }
            Some(Update::Failed(e)) => return AnthropicError(ApiError::engine(e)).into_response(),
            None => return AnthropicError(ApiError::internal("the engine stopped")).into_response(),
        }
    }
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

/// Which content block is open while streaming.
#[derive(Clone, Copy, PartialEq)]
enum Block {
    None,
    Thinking,
    Text,
}

/// A streamed reply: the engine's updates in, Messages events out. It owns
/// the queue slot and the cancel guard: a client that disconnects drops it,
/// which cancels the generation and frees the queue.
struct Stream {
    rx: tokio::sync::mpsc::UnboundedReceiver<Update>,
    _queued: Option<super::Slot>,
    cancel: Option<super::bridge::CancelOnDrop>,
    /// Tool calls so far.
    calls: usize,
    open: Block,
    /// The index of the open (or next) content block.
    index: usize,
    pending: std::collections::VecDeque<SseEvent>,
    finished: bool,
}

impl Stream {
    /// Switches the open block to `want`, closing the one before.
    fn switch(&mut self, want: Block) {
        if self.open == want {
            return;
        }
        if self.open != Block::None {
            self.pending.push_back(event("content_block_stop", json!({"type": "content_block_stop", "index": self.index})));
            self.index += 1;
        }
        self.open = want;
        let block = match want {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            Block::Text => json!({"type": "text", "text": ""}),
            Block::None => return,
        };
        self.pending.push_back(event("content_block_start", json!({"type": "content_block_start", "index": self.index, "content_block": block})));
    }

    /// Deltas into the open thinking or text block, and each tool call as a
    /// whole tool_use block.
    fn parts(&mut self, parts: Vec<Part>) {
        for p in parts {
            let (want, delta) = match p {
                Part::Reasoning(r) => (Block::Thinking, json!({"type": "thinking_delta", "thinking": r})),
                Part::Content(c) => (Block::Text, json!({"type": "text_delta", "text": c})),
                Part::Call(c) => {
                    self.calls += 1;
                    self.switch(Block::None);
                    let i = self.index;
                    self.pending.push_back(event("content_block_start", json!({"type": "content_block_start", "index": i,
                        "content_block": {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}})));
                    self.pending.push_back(event("content_block_delta", json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": c.arguments.to_string()}})));
                    self.pending.push_back(event("content_block_stop", json!({"type": "content_block_stop", "index": i})));
                    self.index += 1;
                    continue;
                }
            };
            self.switch(want);
            self.pending.push_back(event("content_block_delta", json!({"type": "content_block_delta", "index": self.index, "delta": delta})));
        }
    }
}

fn stream(job: Job, id: String, stops: Vec<String>) -> Response {
    let Job { rx, queued, cancel, model, .. } = job;
    let state = Stream {
        rx,
        _queued: Some(queued),
        cancel: Some(cancel),
        calls: 0,
        open: Block::None,
        index: 0,
        pending: Default::default(),
        finished: false,
    };
    let model_id = model.id;
    let events = futures::stream::unfold(state, move |mut st| {
        let (id, model_id, stops) = (id.clone(), model_id.clone(), stops.clone());
        async move {
            loop {
                if let Some(e) = st.pending.pop_front() {
                    return Some((Ok::<_, std::convert::Infallible>(e), st));
                }
                if st.finished {
                    return None;
                }
                match st.rx.recv().await {
                    Some(Update::Started(n)) => {
                        st.pending.push_back(event("message_start", json!({"type": "message_start", "message": {
                            "id": id, "type": "message", "role": "assistant", "model": model_id, "content": [],
                            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": n, "output_tokens": 0}}})));
                    }
                    Some(Update::Reply(parts, _)) => st.parts(parts),
                    Some(Update::Done(stats)) => {
                        if let Some(c) = st.cancel.take() {
                            c.disarm();
                        }
                        // A reply with neither text nor calls still has its (empty) text block.
                        if st.open == Block::None && st.index == 0 {
                            st.switch(Block::Text);
                        }
                        st.switch(Block::None);
                        let (reason, seq) = stop_reason(&stats, &stops, st.calls > 0);
                        st.pending.push_back(event("message_delta", json!({"type": "message_delta",
                            "delta": {"stop_reason": reason, "stop_sequence": seq},
                            "usage": {"output_tokens": stats.generated_tokens}})));
                        st.pending.push_back(event("message_stop", json!({"type": "message_stop"})));
                        st.finished = true;
                        st._queued = None;
                    }
                    Some(Update::Failed(e)) => {
                        st.pending.push_back(event("error", json!({"type": "error", "error": {"type": "api_error", "message": e.message}})));
                        st.finished = true;
                    }
                    None => return None,
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

//! The Anthropic-compatible `POST /v1/messages`: system text, user and
//! assistant turns of text blocks, whole or streamed with the Messages event
//! sequence (`message_start`, `content_block_start/delta/stop`,
//! `message_delta`, `message_stop`). Reasoning comes as a `thinking` block
//! before the text block. Tool use and images are a 400 until implemented.

use super::bridge::Update;
use super::openai::ReasoningSplit;
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
    fn join(&self) -> Result<String, ApiError> {
        match self {
            Text::Plain(s) => Ok(s.clone()),
            Text::Blocks(blocks) => {
                let mut out = String::new();
                for b in blocks {
                    match (b["type"].as_str(), b["text"].as_str()) {
                        (Some("text"), Some(t)) => out.push_str(t),
                        // Earlier reasoning is not sent back to the model.
                        (Some("thinking") | Some("redacted_thinking"), _) => {}
                        (Some(other), _) => {
                            return Err(ApiError::bad_request(format!("'{other}' content blocks are not supported by this server yet")))
                        }
                        _ => return Err(ApiError::bad_request("a content block without a type")),
                    }
                }
                Ok(out)
            }
        }
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
    max_tokens: u64,
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
    #[serde(flatten)]
    other: Map<String, Value>,
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

    fn check(&self) -> Result<Vec<Message>, ApiError> {
        for (k, v) in &self.other {
            let off = v.is_null() || v.as_array().is_some_and(|a| a.is_empty());
            // `thinking` turns reasoning on or off (`template_options`); the
            // reasoning itself is always shown.
            if !matches!(k.as_str(), "metadata" | "thinking" | "service_tier") && !off {
                return Err(ApiError::bad_request(format!("'{k}' is not supported by this server yet")));
            }
        }
        if self.max_tokens == 0 || self.max_tokens > 1 << 20 {
            return Err(ApiError::bad_request(format!("max_tokens {} is out of range (1 to 1048576)", self.max_tokens)));
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
            msgs.push(Message::new(role, t.content.join()?));
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
        Ok(GenerateParams { sampling: s, max_tokens: self.max_tokens as usize, stop: self.stop_sequences.clone(), ignore_eos: false, constraint: None })
    }
}

fn stop_reason(stats: &GenerationStats, stops: &[String]) -> (&'static str, Value) {
    match stats.finish_reason {
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
    let template = req.template_options()?;
    let job = server.start(Some(&req.model), kind, |info| Ok((Prompt::ChatWith(msgs, template), req.params(&info.recommended)?))).await?;
    let id = format!("msg_{:024}", server.next_id());
    let stops = req.stop_sequences.clone();
    if !req.stream {
        return Ok(whole(job, id, stops).await);
    }
    Ok(stream(job, id, stops))
}

async fn whole(job: Job, id: String, stops: Vec<String>) -> Response {
    let Job { mut rx, queued, cancel, model, .. } = job;
    let mut split = ReasoningSplit::default();
    let (mut text, mut thinking) = (String::new(), String::new());
    loop {
        match rx.recv().await {
            Some(Update::Started(_)) => {}
            Some(Update::Text(t)) => {
                let (r, c) = split.push(&t);
                thinking.push_str(&r);
                text.push_str(&c);
            }
            Some(Update::Done(stats)) => {
                cancel.disarm();
                drop(queued);
                let mut content = vec![];
                if !thinking.is_empty() {
                    content.push(json!({"type": "thinking", "thinking": thinking, "signature": ""}));
                }
                content.push(json!({"type": "text", "text": text}));
                let (reason, seq) = stop_reason(&stats, &stops);
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

fn stream(job: Job, id: String, stops: Vec<String>) -> Response {
    let Job { rx, queued, cancel, model, .. } = job;
    struct S {
        rx: tokio::sync::mpsc::UnboundedReceiver<Update>,
        _queued: Option<tokio::sync::OwnedMutexGuard<()>>,
        cancel: Option<super::bridge::CancelOnDrop>,
        split: ReasoningSplit,
        open: Block,
        index: usize,
        pending: std::collections::VecDeque<SseEvent>,
        finished: bool,
    }
    let state = S {
        rx,
        _queued: Some(queued),
        cancel: Some(cancel),
        split: ReasoningSplit::default(),
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
                // Switches the open block to `want`, closing the one before.
                let switch = |st: &mut S, want: Block| {
                    if st.open == want {
                        return;
                    }
                    if st.open != Block::None {
                        st.pending.push_back(event("content_block_stop", json!({"type": "content_block_stop", "index": st.index})));
                        st.index += 1;
                    }
                    let block = match want {
                        Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
                        _ => json!({"type": "text", "text": ""}),
                    };
                    st.pending.push_back(event(
                        "content_block_start",
                        json!({"type": "content_block_start", "index": st.index, "content_block": block}),
                    ));
                    st.open = want;
                };
                match st.rx.recv().await {
                    Some(Update::Started(n)) => {
                        st.pending.push_back(event("message_start", json!({"type": "message_start", "message": {
                            "id": id, "type": "message", "role": "assistant", "model": model_id, "content": [],
                            "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": n, "output_tokens": 0}}})));
                    }
                    Some(Update::Text(t)) => {
                        let (r, c) = st.split.push(&t);
                        if !r.is_empty() {
                            switch(&mut st, Block::Thinking);
                            let i = st.index;
                            st.pending.push_back(event("content_block_delta", json!({"type": "content_block_delta", "index": i,
                                "delta": {"type": "thinking_delta", "thinking": r}})));
                        }
                        if !c.is_empty() {
                            switch(&mut st, Block::Text);
                            let i = st.index;
                            st.pending.push_back(event("content_block_delta", json!({"type": "content_block_delta", "index": i,
                                "delta": {"type": "text_delta", "text": c}})));
                        }
                    }
                    Some(Update::Done(stats)) => {
                        if let Some(c) = st.cancel.take() {
                            c.disarm();
                        }
                        // A reply with no text still has its (empty) text block.
                        switch(&mut st, Block::Text);
                        st.pending.push_back(event("content_block_stop", json!({"type": "content_block_stop", "index": st.index})));
                        let (reason, seq) = stop_reason(&stats, &stops);
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

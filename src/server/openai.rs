//! The OpenAI-compatible endpoints: `GET /v1/models` and
//! `POST /v1/chat/completions`, plain and streamed (SSE `data:` chunks ending
//! in `[DONE]`, usage in a last chunk when `stream_options.include_usage`).
//! Reasoning (`<think>…</think>`, or gpt-oss's analysis channel) goes in
//! `reasoning_content`, as LM Studio and DeepSeek send it, never in `content`.
//! Fields Hearth does not implement yet are a 400 that names them.

use super::bridge::{CancelOnDrop, Update};
use super::{ApiError, Server};
use crate::chat::params::{FinishReason, GenerateParams, GenerationStats, SamplingParams, DEFAULT_MAX_TOKENS};
use crate::chat::{Message, Role};
use crate::engine::Prompt;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Fields clients send that change nothing here.
const HARMLESS: &[&str] = &["user", "metadata", "store", "service_tier", "parallel_tool_calls"];

#[derive(Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    model: Option<String>,
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
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
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
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl ChatRequest {
    /// Refuses what is not implemented, naming it, instead of ignoring it.
    fn check(&self) -> Result<(), ApiError> {
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

    fn messages(&self) -> Result<Vec<Message>, ApiError> {
        self.messages
            .iter()
            .map(|m| {
                let role = match m.role.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => return Err(ApiError::bad_request(format!("messages with role '{other}' are not supported yet"))),
                };
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
                Ok(Message { role, content })
            })
            .collect()
    }

    fn params(&self, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
        let mut sampling = recommended.apply(&SamplingParams::default());
        if let Some(t) = self.temperature {
            sampling.temperature = t;
        }
        if let Some(p) = self.top_p {
            sampling.top_p = p;
        }
        sampling.seed = self.seed.or(sampling.seed);
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
        Ok(GenerateParams { sampling, max_tokens: max as usize, stop, ignore_eos: false })
    }
}

pub async fn models(State(server): State<Arc<Server>>) -> Json<Value> {
    let data: Vec<Value> = server
        .models()
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": "hearth"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

fn finish_reason(stats: &GenerationStats) -> &'static str {
    match stats.finish_reason {
        Some(FinishReason::MaxTokens) | Some(FinishReason::ContextFull) => "length",
        _ => "stop",
    }
}

fn usage(stats: &GenerationStats) -> Value {
    json!({"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
           "total_tokens": stats.prompt_tokens + stats.generated_tokens})
}

pub async fn chat_completions(State(server): State<Arc<Server>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a chat completion: {e}")))?;
    req.check()?;
    let messages = req.messages()?;
    let kind = if req.stream { "chat.completions stream" } else { "chat.completions" };
    let job = server.start(req.model.as_deref(), kind, |info| Ok((Prompt::Chat(messages), req.params(&info.recommended)?))).await?;
    let super::Job { mut rx, queued, cancel: guard, model, .. } = job;
    let id = format!("chatcmpl-{}", server.next_id());
    let created = super::now_secs();
    let model_id = model.id.clone();

    if !req.stream {
        let mut split = ReasoningSplit::default();
        let (mut content, mut reasoning) = (String::new(), String::new());
        loop {
            match rx.recv().await {
                Some(Update::Started(_)) => continue,
                Some(Update::Text(t)) => {
                    let (r, c) = split.push(&t);
                    reasoning.push_str(&r);
                    content.push_str(&c);
                }
                Some(Update::Done(stats)) => {
                    drop(queued);
                    guard.disarm();
                    let mut message = json!({"role": "assistant", "content": content});
                    if !reasoning.is_empty() {
                        message["reasoning_content"] = json!(reasoning);
                    }
                    return Ok(Json(json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model_id,
                        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(&stats)}],
                        "usage": usage(&stats),
                    }))
                    .into_response());
                }
                Some(Update::Failed(e)) => return Err(ApiError::engine(e)),
                None => return Err(ApiError::internal("the engine stopped")),
            }
        }
    }

    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model_id,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    // The stream owns the queue slot and the cancel guard: a client that
    // disconnects drops it, which cancels the generation and frees the queue.
    let state = (rx, Some(queued), Some(guard), ReasoningSplit::default(), Vec::<Value>::new(), false);
    let first = chunk(json!({"role": "assistant", "content": ""}), None);
    let stream = futures::stream::unfold((state, Some(first)), move |((mut rx, queued, guard, mut split, mut pending, done), first)| {
        let chunk = chunk.clone();
        async move {
            if let Some(f) = first {
                return Some((Ok::<_, std::convert::Infallible>(sse(&f)), ((rx, queued, guard, split, pending, done), None)));
            }
            loop {
                if let Some(v) = pending.pop() {
                    return Some((Ok(sse(&v)), ((rx, queued, guard, split, pending, done), None)));
                }
                if done {
                    return None;
                }
                match rx.recv().await {
                    Some(Update::Started(_)) => continue,
                    Some(Update::Text(t)) => {
                        let (r, c) = split.push(&t);
                        // Pushed in reverse: `pending` is popped from the end.
                        if !c.is_empty() {
                            pending.push(chunk(json!({"content": c}), None));
                        }
                        if !r.is_empty() {
                            pending.push(chunk(json!({"reasoning_content": r}), None));
                        }
                    }
                    Some(Update::Done(stats)) => {
                        if let Some(g) = guard {
                            g.disarm();
                        }
                        let mut tail = vec![Value::String("[DONE]".into())];
                        if include_usage {
                            let mut u = chunk(json!({}), None);
                            u["choices"] = json!([]);
                            u["usage"] = usage(&stats);
                            tail.push(u);
                        }
                        tail.push(chunk(json!({}), Some(finish_reason(&stats))));
                        return done_with(tail, (rx, None, None, split));
                    }
                    Some(Update::Failed(e)) => {
                        let tail = vec![Value::String("[DONE]".into()), json!({"error": {"message": e.message, "type": "server_error"}})];
                        return done_with(tail, (rx, None, None, split));
                    }
                    None => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

type StreamState = (
    tokio::sync::mpsc::UnboundedReceiver<Update>,
    Option<tokio::sync::OwnedMutexGuard<()>>,
    Option<CancelOnDrop>,
    ReasoningSplit,
    Vec<Value>,
    bool,
);

#[allow(clippy::type_complexity)]
fn done_with(
    mut tail: Vec<Value>,
    (rx, queued, guard, split): (tokio::sync::mpsc::UnboundedReceiver<Update>, Option<tokio::sync::OwnedMutexGuard<()>>, Option<CancelOnDrop>, ReasoningSplit),
) -> Option<(Result<SseEvent, std::convert::Infallible>, (StreamState, Option<Value>))> {
    let first = tail.pop().expect("a tail has a last chunk");
    Some((Ok(sse(&first)), ((rx, queued, guard, split, tail, true), None)))
}

/// A chunk as an SSE event; the `[DONE]` marker goes as bare text.
fn sse(v: &Value) -> SseEvent {
    match v {
        Value::String(s) => SseEvent::default().data(s.clone()),
        v => SseEvent::default().data(v.to_string()),
    }
}

/// Splits streamed text into reasoning (inside `<think>…</think>` at the start
/// of the reply) and content, however the tags are cut across pieces.
#[derive(Default)]
pub struct ReasoningSplit {
    held: String,
    state: SplitState,
}

#[derive(Default, PartialEq)]
enum SplitState {
    #[default]
    Start,
    Thinking,
    Answer,
}

impl ReasoningSplit {
    /// Returns (reasoning, content) released by this piece.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut r, mut c) = (String::new(), String::new());
        loop {
            match self.state {
                SplitState::Start => {
                    let t = self.held.trim_start();
                    if t.starts_with("<think>") {
                        let at = self.held.find("<think>").expect("just seen") + "<think>".len();
                        self.held.drain(..at);
                        self.state = SplitState::Thinking;
                    } else if t.is_empty() || "<think>".starts_with(t) {
                        return (r, c); // could still become the tag
                    } else {
                        self.state = SplitState::Answer;
                    }
                }
                SplitState::Thinking => match self.held.find("</think>") {
                    Some(end) => {
                        r.push_str(&self.held[..end]);
                        self.held.drain(..end + "</think>".len());
                        self.state = SplitState::Answer;
                    }
                    None => {
                        // Keep a tail that may be the start of the closing tag.
                        let keep = (1.."</think>".len()).rev().find(|&n| self.held.ends_with(&"</think>"[..n])).unwrap_or(0);
                        let cut = self.held.len() - keep;
                        r.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return (r, c);
                    }
                },
                SplitState::Answer => {
                    c.push_str(&self.held);
                    self.held.clear();
                    return (r, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_is_split_from_the_answer_across_any_cuts() {
        let text = "<think>Two and two.</think>It is 4.";
        for cut in 1..text.len() {
            let mut s = ReasoningSplit::default();
            let (r1, c1) = s.push(&text[..cut]);
            let (r2, c2) = s.push(&text[cut..]);
            assert_eq!(r1 + &r2, "Two and two.", "cut at {cut}");
            assert_eq!(c1 + &c2, "It is 4.", "cut at {cut}");
        }
        let mut s = ReasoningSplit::default();
        assert_eq!(s.push("Plain answer"), (String::new(), "Plain answer".into()));
    }
}

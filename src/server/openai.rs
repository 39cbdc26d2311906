//! The OpenAI-compatible endpoints: `GET /v1/models`, `POST /v1/chat/completions`
//! and `POST /v1/completions`, plain and streamed (SSE `data:` chunks ending
//! in `[DONE]`, usage in a last chunk when `stream_options.include_usage`).
//! Reasoning (`<think>…</think>`, or gpt-oss's analysis channel) goes in
//! `reasoning_content`, as LM Studio and DeepSeek send it, never in `content`.
//! Fields Hearth does not implement yet are a 400 that names them.

use super::bridge::{CancelOnDrop, Update};
use super::{ApiError, Server};
use super::openai_request::ChatRequest;
use crate::chat::params::{FinishReason, GenerationStats};
use crate::engine::Prompt;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn models(State(server): State<Arc<Server>>) -> Json<Value> {
    let data: Vec<Value> = server
        .models()
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": "hearth"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// OpenAI's and Ollama's finish reason.
pub(super) fn finish_reason(stats: &GenerationStats) -> &'static str {
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
    let options = req.template_options()?;
    let kind = if req.stream { "chat.completions stream" } else { "chat.completions" };
    let job =
        server.start(req.model.as_deref(), kind, |info| Ok((Prompt::ChatWith(messages, options), req.params(&info.recommended)?))).await?;
    let reply = Reply { shape: Shape::Chat, id: format!("chatcmpl-{}", server.next_id()), created: super::now_secs() };
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(if req.stream { reply.stream(job, include_usage) } else { reply.whole(job).await })
}

/// `POST /v1/completions`: text in, text out, no chat template (`prompt` is given
/// to the model as is), whole or streamed.
pub async fn completions(State(server): State<Arc<Server>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let mut v: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a completion: {e}")))?;
    let prompt = match v.as_object_mut().and_then(|o| o.remove("prompt")) {
        Some(Value::String(p)) if !p.is_empty() => p,
        Some(Value::String(_)) | None => return Err(ApiError::bad_request("prompt is empty")),
        Some(_) => return Err(ApiError::bad_request("prompt must be one string (lists of prompts and token ids are not supported)")),
    };
    // The rest reads like a chat request with no messages.
    v["messages"] = json!([{"role": "user", "content": "-"}]);
    let req: ChatRequest = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("the request is not a completion: {e}")))?;
    req.check()?;
    let kind = if req.stream { "completions stream" } else { "completions" };
    let job = server.start(req.model.as_deref(), kind, |info| Ok((Prompt::Raw(prompt), req.params(&info.recommended)?))).await?;
    let reply = Reply { shape: Shape::Text, id: format!("cmpl-{}", server.next_id()), created: super::now_secs() };
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(if req.stream { reply.stream(job, include_usage) } else { reply.whole(job).await })
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `chat.completion`: a message, deltas with content / reasoning_content.
    Chat,
    /// `text_completion`: text.
    Text,
}

/// What every chunk of one reply carries.
#[derive(Clone)]
struct Reply {
    shape: Shape,
    id: String,
    created: u64,
}

impl Reply {
    fn chunk(&self, model: &str, content: &str, reasoning: &str, finish: Option<&str>, first: bool) -> Value {
        match self.shape {
            Shape::Chat => {
                let mut delta = json!({});
                if first {
                    delta["role"] = json!("assistant");
                }
                if first || !content.is_empty() {
                    delta["content"] = json!(content);
                }
                if !reasoning.is_empty() {
                    delta["reasoning_content"] = json!(reasoning);
                }
                json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            }
            Shape::Text => json!({"id": self.id, "object": "text_completion", "created": self.created, "model": model,
                                  "choices": [{"index": 0, "text": content, "logprobs": null, "finish_reason": finish}]}),
        }
    }

    async fn whole(self, job: super::Job) -> Response {
        let super::Job { mut rx, queued, cancel, model, .. } = job;
        // A plain completion is the model's text as is; only chat splits reasoning out.
        let mut split = (self.shape == Shape::Chat).then(ReasoningSplit::default);
        let (mut content, mut reasoning) = (String::new(), String::new());
        loop {
            match rx.recv().await {
                Some(Update::Started(_)) => {}
                Some(Update::Text(t)) => match split.as_mut() {
                    Some(sp) => {
                        let (r, c) = sp.push(&t);
                        reasoning.push_str(&r);
                        content.push_str(&c);
                    }
                    None => content.push_str(&t),
                },
                Some(Update::Done(stats)) => {
                    drop(queued);
                    cancel.disarm();
                    let choice = match self.shape {
                        Shape::Chat => {
                            let mut message = json!({"role": "assistant", "content": content});
                            if !reasoning.is_empty() {
                                message["reasoning_content"] = json!(reasoning);
                            }
                            json!({"index": 0, "message": message, "finish_reason": finish_reason(&stats)})
                        }
                        Shape::Text => json!({"index": 0, "text": content, "logprobs": null, "finish_reason": finish_reason(&stats)}),
                    };
                    let object = if self.shape == Shape::Chat { "chat.completion" } else { "text_completion" };
                    return Json(json!({"id": self.id, "object": object, "created": self.created, "model": model.id,
                                       "choices": [choice], "usage": usage(&stats)}))
                    .into_response();
                }
                Some(Update::Failed(e)) => return ApiError::engine(e).into_response(),
                None => return ApiError::internal("the engine stopped").into_response(),
            }
        }
    }

    /// SSE chunks, the last with the finish reason, then usage (if asked) and
    /// `[DONE]`. The stream owns the queue slot and the cancel guard: a client
    /// that disconnects drops it, which cancels the generation and frees the queue.
    fn stream(self, job: super::Job, include_usage: bool) -> Response {
        let super::Job { rx, queued, cancel, model, .. } = job;
        struct S {
            rx: tokio::sync::mpsc::UnboundedReceiver<Update>,
            _queued: Option<tokio::sync::OwnedMutexGuard<()>>,
            cancel: Option<CancelOnDrop>,
            split: Option<ReasoningSplit>,
            pending: std::collections::VecDeque<Value>,
            finished: bool,
        }
        let mut pending = std::collections::VecDeque::new();
        if self.shape == Shape::Chat {
            pending.push_back(self.chunk(&model.id, "", "", None, true));
        }
        let split = (self.shape == Shape::Chat).then(ReasoningSplit::default);
        let state = S { rx, _queued: Some(queued), cancel: Some(cancel), split, pending, finished: false };
        let model_id = model.id;
        let events = futures::stream::unfold(state, move |mut st| {
            let (reply, model_id) = (self.clone(), model_id.clone());
            async move {
                loop {
                    if let Some(v) = st.pending.pop_front() {
                        return Some((Ok::<_, std::convert::Infallible>(sse(&v)), st));
                    }
                    if st.finished {
                        return None;
                    }
                    match st.rx.recv().await {
                        Some(Update::Started(_)) => {}
                        Some(Update::Text(t)) => {
                            let (r, c) = match st.split.as_mut() {
                                Some(sp) => sp.push(&t),
                                None => (String::new(), t),
                            };
                            if !r.is_empty() || !c.is_empty() {
                                st.pending.push_back(reply.chunk(&model_id, &c, &r, None, false));
                            }
                        }
                        Some(Update::Done(stats)) => {
                            if let Some(g) = st.cancel.take() {
                                g.disarm();
                            }
                            st.pending.push_back(reply.chunk(&model_id, "", "", Some(finish_reason(&stats)), false));
                            if include_usage {
                                let mut u = reply.chunk(&model_id, "", "", None, false);
                                u["choices"] = json!([]);
                                u["usage"] = usage(&stats);
                                st.pending.push_back(u);
                            }
                            st.pending.push_back(Value::String("[DONE]".into()));
                            st.finished = true;
                            st._queued = None;
                        }
                        Some(Update::Failed(e)) => {
                            st.pending.push_back(json!({"error": {"message": e.message, "type": "server_error"}}));
                            st.pending.push_back(Value::String("[DONE]".into()));
                            st.finished = true;
                        }
                        None => return None,
                    }
                }
            }
        });
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    }
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

//! The OpenAI-compatible endpoints: `GET /v1/models`, `POST /v1/chat/completions`
//! and `POST /v1/completions`, plain and streamed (SSE `data:` chunks ending
//! in `[DONE]`, usage in a last chunk when `stream_options.include_usage`).
//! Reasoning (`<think>…</think>`, or gpt-oss's analysis channel) goes in
//! `reasoning_content`, as LM Studio and DeepSeek send it, never in `content`;
//! tool calls in `tool_calls` (one chunk per call when streaming).
//! Fields Hearth does not implement yet are a 400 that names them.

use super::bridge::{CancelOnDrop, Update};
use super::{ApiError, Server};
use super::openai_request::ChatRequest;
use crate::chat::reply::{gather, Part};
use crate::chat::params::TokenLogprob;
use crate::chat::tools::ToolCall;
use crate::chat::params::{FinishReason, GenerationStats};
use crate::engine::Prompt;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Installed models (and aliases, as the models they name); `loaded` says
/// which are held now, as LM Studio's `state` does.
pub async fn models(State(server): State<Arc<Server>>) -> Json<Value> {
    let held: Vec<_> = server.bridge.held().into_iter().map(|(k, _)| k).collect();
    let mut data: Vec<Value> = server
        .models()
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": "hearth", "loaded": held.contains(&super::pool::key(&m.path))}))
        .collect();
    for (alias, target) in server.aliases() {
        data.push(json!({"id": alias, "object": "model", "created": 0, "owned_by": "hearth", "alias_of": target}));
    }
    Json(json!({"object": "list", "data": data}))
}

/// OpenAI's and Ollama's finish reason.
pub(super) fn finish_reason(stats: &GenerationStats) -> &'static str {
    match stats.finish_reason {
        Some(FinishReason::MaxTokens) | Some(FinishReason::ContextFull) => "length",
        _ => "stop",
    }
}

/// The engine's timings, beside OpenAI's fields, as llama-server reports
/// them (`timings`), with how many sequences shared the decode steps.
fn timings(stats: &GenerationStats) -> Value {
    json!({"prompt_n": stats.prefilled_tokens, "cache_n": stats.reused_tokens, "predicted_n": stats.generated_tokens,
           "prompt_per_second": stats.prefill_tps, "predicted_per_second": stats.decode_tps, "batch_rows": stats.batch_rows,
           "draft_n": stats.draft_tokens, "draft_n_accepted": stats.accepted_draft_tokens})
}

/// OpenAI's usage: prompt tokens (those the prefix cache held counted again
/// in `prompt_tokens_details.cached_tokens`, as OpenAI reports its own prompt
/// caching, so an agent sees what its repeated context cost), and the
/// completion tokens written inside the reasoning block.
fn usage(stats: &GenerationStats) -> Value {
    json!({"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.generated_tokens,
           "total_tokens": stats.prompt_tokens + stats.generated_tokens,
           "prompt_tokens_details": {"cached_tokens": stats.reused_tokens},
           "completion_tokens_details": {"reasoning_tokens": stats.reasoning_tokens}})
}

pub async fn chat_completions(State(server): State<Arc<Server>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: ChatRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a chat completion: {e}")))?;
    req.check()?;
    let messages = req.messages()?;
    let mut options = req.template_options()?;
    let tools = req.tools()?;
    let kind = if req.stream { "chat.completions stream" } else { "chat.completions" };
    let n = server.next_id();
    let job = server
        .start(req.model.as_deref(), req.keep(), kind, |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut options, &mut params)?;
            params.call_id_prefix = format!("call_{n}_");
            Ok((Prompt::ChatWith(messages, options), params))
        })
        .await?;
    let reply = Reply::new(Shape::Chat, format!("chatcmpl-{n}"));
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
    if v.get("tools").is_some_and(|t| !t.is_null()) {
        return Err(ApiError::bad_request("tools are for /v1/chat/completions"));
    }
    // The rest reads like a chat request with no messages.
    v["messages"] = json!([{"role": "user", "content": "-"}]);
    let req: ChatRequest = serde_json::from_value(v).map_err(|e| ApiError::bad_request(format!("the request is not a completion: {e}")))?;
    req.check()?;
    let kind = if req.stream { "completions stream" } else { "completions" };
    let job = server.start(req.model.as_deref(), req.keep(), kind, |info| Ok((Prompt::Raw(prompt), req.params(&info.recommended)?))).await?;
    let reply = Reply::new(Shape::Text, format!("cmpl-{}", server.next_id()));
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    Ok(if req.stream { reply.stream(job, include_usage) } else { reply.whole(job).await })
}

enum Shape {
    /// `chat.completion`: a message, deltas with content, reasoning_content
    /// and tool_calls (the engine's parts).
    Chat,
    /// `text_completion`: the text as is.
    Text,
}

/// One reply: its shape, what every chunk carries, and log-probabilities
/// not yet sent.
struct Reply {
    shape: Shape,
    id: String,
    created: u64,
    scores: Vec<TokenLogprob>,
    /// Bytes of completion text so far (the legacy format's text offsets).
    offset: usize,
    /// Tool calls so far.
    calls: usize,
}

/// One token's entry in chat's `logprobs.content`.
pub(super) fn chat_logprob(t: &TokenLogprob) -> Value {
    let entry = |s: &crate::chat::params::Scored| json!({"token": s.text, "logprob": s.logprob, "bytes": s.bytes});
    let mut v = entry(&t.token);
    v["top_logprobs"] = t.top.iter().map(entry).collect();
    v
}

/// A tool call as OpenAI sends it: arguments as JSON text.
fn call_json(c: &ToolCall) -> Value {
    json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments.to_string()}})
}

impl Reply {
    fn new(shape: Shape, id: String) -> Self {
        Reply { shape, id, created: super::now_secs(), scores: Vec::new(), offset: 0, calls: 0 }
    }

    /// The log-probabilities held, in the shape's format (None if there are none).
    fn take_logprobs(&mut self) -> Option<Value> {
        if self.scores.is_empty() {
            return None;
        }
        let scores = std::mem::take(&mut self.scores);
        if self.is_chat() {
            return Some(json!({"content": scores.iter().map(chat_logprob).collect::<Vec<_>>(), "refusal": null}));
        }
        // Completions: parallel lists, the alternatives as {token: logprob}.
        let mut offsets = Vec::new();
        for t in &scores {
            offsets.push(self.offset);
            self.offset += t.token.text.len();
        }
        Some(json!({
            "tokens": scores.iter().map(|t| t.token.text.clone()).collect::<Vec<_>>(),
            "token_logprobs": scores.iter().map(|t| t.token.logprob).collect::<Vec<_>>(),
            "top_logprobs": scores.iter().map(|t| t.top.iter().map(|s| (s.text.clone(), json!(s.logprob))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
            "text_offset": offsets,
        }))
    }

    fn is_chat(&self) -> bool {
        matches!(self.shape, Shape::Chat)
    }

    /// A streamed chunk; it carries the log-probabilities held so far.
    fn chunk(&mut self, model: &str, delta: Value, finish: Option<&str>) -> Value {
        let logprobs = self.take_logprobs().unwrap_or(Value::Null);
        if self.is_chat() {
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]})
        } else {
            json!({"id": self.id, "object": "text_completion", "created": self.created, "model": model,
                   "choices": [{"index": 0, "text": delta["content"].as_str().unwrap_or(""), "logprobs": logprobs, "finish_reason": finish}]})
        }
    }

    /// Counts the calls among a whole reply's parts (the finish reason says
    /// whether any came; streamed, `part_chunks` counts them as it indexes them).
    fn count_calls(&mut self, parts: &[Part]) {
        self.calls += parts.iter().filter(|p| matches!(p, Part::Call(_))).count();
    }

    /// "tool_calls" when the reply called tools (and was not cut short).
    fn finish_reason(&self, stats: &GenerationStats) -> &'static str {
        match (&self.shape, finish_reason(stats)) {
            (Shape::Chat, "stop") if self.calls > 0 => "tool_calls",
            (_, r) => r,
        }
    }

    async fn whole(mut self, job: super::Job) -> Response {
        let super::Job { mut rx, queued, cancel, model, .. } = job;
        let mut parts = Vec::new();
        loop {
            match rx.recv().await {
                Some(Update::Started(..)) => {}
                Some(Update::Reply(p, scores)) => {
                    self.scores.extend(scores);
                    self.count_calls(&p);
                    parts.extend(p);
                }
                Some(Update::Done(stats)) => {
                    drop(queued);
                    cancel.disarm();
                    let (content, reasoning, calls) = gather(parts);
                    let reason = self.finish_reason(&stats);
                    let logprobs = self.take_logprobs().unwrap_or(Value::Null);
                    let choice = if self.is_chat() {
                        let mut message = json!({"role": "assistant", "content": content});
                        if !reasoning.is_empty() {
                            message["reasoning_content"] = json!(reasoning);
                        }
                        if !calls.is_empty() {
                            if content.is_empty() {
                                message["content"] = Value::Null;
                            }
                            message["tool_calls"] = calls.iter().map(call_json).collect();
                        }
                        json!({"index": 0, "message": message, "logprobs": logprobs, "finish_reason": reason})
                    } else {
                        json!({"index": 0, "text": content, "logprobs": logprobs, "finish_reason": reason})
                    };
                    let object = if self.is_chat() { "chat.completion" } else { "text_completion" };
                    return Json(json!({"id": self.id, "object": object, "created": self.created, "model": model.id,
                                       "choices": [choice], "usage": usage(&stats), "timings": timings(&stats)}))
                    .into_response();
                }
                Some(Update::Failed(e)) => return ApiError::engine(e).into_response(),
                None => return ApiError::internal("the engine stopped").into_response(),
            }
        }
    }

    /// A chunk for each part: content, reasoning_content, or one tool call.
    fn part_chunks(&mut self, model: &str, parts: Vec<Part>, out: &mut std::collections::VecDeque<Value>) {
        for p in parts {
            let delta = match p {
                Part::Content(c) => json!({"content": c}),
                Part::Reasoning(r) => json!({"reasoning_content": r}),
                Part::Call(c) => {
                    let mut call = call_json(&c);
                    call["index"] = json!(self.calls);
                    self.calls += 1;
                    json!({"tool_calls": [call]})
                }
            };
            out.push_back(self.chunk(model, delta, None));
        }
    }

    /// SSE chunks, the last with the finish reason, then usage (if asked) and
    /// `[DONE]`. The stream owns the queue slot and the cancel guard: a client
    /// that disconnects drops it, which cancels the generation and frees the queue.
    fn stream(mut self, job: super::Job, include_usage: bool) -> Response {
        let super::Job { rx, queued, cancel, model, .. } = job;
        struct S {
            reply: Reply,
            rx: tokio::sync::mpsc::UnboundedReceiver<Update>,
            _queued: Option<super::Slot>,
            cancel: Option<CancelOnDrop>,
            pending: std::collections::VecDeque<Value>,
            finished: bool,
        }
        let model_id = model.id;
        let mut pending = std::collections::VecDeque::new();
        if self.is_chat() {
            pending.push_back(self.chunk(&model_id, json!({"role": "assistant", "content": ""}), None));
        }
        let state = S { reply: self, rx, _queued: Some(queued), cancel: Some(cancel), pending, finished: false };
        let events = futures::stream::unfold(state, move |mut st| {
            let model_id = model_id.clone();
            async move {
                loop {
                    if let Some(v) = st.pending.pop_front() {
                        return Some((Ok::<_, std::convert::Infallible>(sse(&v)), st));
                    }
                    if st.finished {
                        return None;
                    }
                    match st.rx.recv().await {
                        Some(Update::Started(..)) => {}
                        Some(Update::Reply(parts, scores)) => {
                            // Scores go out with the next chunk (text the engine's
                            // reader holds back sends them a little later).
                            st.reply.scores.extend(scores);
                            st.reply.part_chunks(&model_id, parts, &mut st.pending);
                        }
                        Some(Update::Done(stats)) => {
                            if let Some(g) = st.cancel.take() {
                                g.disarm();
                            }
                            let reason = st.reply.finish_reason(&stats);
                            let delta = if st.reply.is_chat() { json!({}) } else { json!({"content": ""}) };
                            st.pending.push_back(st.reply.chunk(&model_id, delta, Some(reason)));
                            if include_usage {
                                let mut u = st.reply.chunk(&model_id, json!({}), None);
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

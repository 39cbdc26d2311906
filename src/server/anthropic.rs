//! The Anthropic-compatible `POST /v1/messages`: system text, user and
//! assistant turns of text blocks, whole or streamed with the Messages event
//! sequence (`message_start`, `content_block_start/delta/stop`,
//! `message_delta`, `message_stop`). Reasoning comes as a `thinking` block
//! before the text block; tools (`tools`, `tool_choice`) as `tool_use`
//! blocks, their results as `tool_result` blocks. Images are a 400.

use super::bridge::Update;
use crate::chat::reply::{gather, Part};
use super::anthropic_request::MessagesRequest;
use super::{ApiError, Job, Server};
use crate::chat::params::{FinishReason, GenerationStats};
use crate::engine::Prompt;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
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
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        (self.0.status, Json(json!({"type": "error", "error": {"type": kind, "message": self.0.message}}))).into_response()
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
    let (msgs, context, _) = edit_context(&server, &req, &tools, &template, msgs).await?;
    let n = server.next_id();
    let job = server
        .start(Some(&req.model), None, kind, |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut template, &mut params)?;
            params.call_id_prefix = format!("toolu_{n:020}_");
            Ok((Prompt::ChatWith(msgs, template), params))
        })
        .await?;
    let id = format!("msg_{n:024}");
    let stops = req.stop_sequences.clone();
    if !req.stream {
        return Ok(whole(job, id, stops, context).await);
    }
    Ok(stream(job, id, stops, context))
}

/// Anthropic's usage: the input the prefix cache held is reported apart as
/// `cache_read_input_tokens` (their sum is what `count_tokens` says), so an
/// agent sees its repeated context cost nothing to prefill.
fn usage(prompt_tokens: usize, cached: usize, output_tokens: usize) -> Value {
    json!({"input_tokens": prompt_tokens - cached.min(prompt_tokens), "cache_read_input_tokens": cached,
           "cache_creation_input_tokens": 0, "output_tokens": output_tokens})
}

/// The conversation after context editing (`context_management`), what to
/// report of it (`applied_edits`; None when the request asked for none) and
/// the prompt's tokens before it. Without a thinking edit the last assistant
/// turn alone keeps its reasoning, as Anthropic's API does. Counting renders
/// and tokenizes on the engine (nothing runs on the model), only when edits
/// were asked for.
async fn edit_context(
    server: &Server,
    req: &MessagesRequest,
    tools: &super::tools::ToolRequest,
    template: &crate::chat::template::TemplateOptions,
    mut msgs: Vec<crate::chat::Message>,
) -> Result<(Vec<crate::chat::Message>, Option<Value>, usize), ApiError> {
    use super::context_edits::keep_thinking;
    let edits = req.context_edits()?;
    if edits.thinking.is_none() {
        keep_thinking(&mut msgs, Some(1));
    }
    if edits == Default::default() {
        return Ok((msgs, None, 0));
    }
    let count = |m: Vec<crate::chat::Message>| {
        server.count_tokens(Some(&req.model), "count_tokens (context editing)", move |info| {
            let (mut params, mut t) = (req.params(&info.recommended)?, template.clone());
            tools.apply(&mut t, &mut params)?;
            Ok(Prompt::ChatWith(m, t))
        })
    };
    let original = count(msgs.clone()).await?;
    let (mut now, mut applied) = (original, Vec::new());
    // In the order Anthropic requires them listed: thinking first, then
    // tool uses, whose trigger sees the prompt as the first left it.
    if let Some(keep) = edits.thinking {
        let n = keep_thinking(&mut msgs, keep);
        if n > 0 {
            let after = count(msgs.clone()).await?;
            applied.push(json!({"type": "clear_thinking_20251015", "cleared_thinking_turns": n, "cleared_input_tokens": now.saturating_sub(after)}));
            now = after;
        }
    }
    if let Some(t) = edits.tool_uses.as_ref().filter(|t| t.triggered(&msgs, now)) {
        let mut edited = msgs.clone();
        let n = t.apply(&mut edited);
        if n > 0 {
            let after = count(edited.clone()).await?;
            let gone = now.saturating_sub(after);
            if gone >= t.clear_at_least {
                msgs = edited;
                applied.push(json!({"type": "clear_tool_uses_20250919", "cleared_tool_uses": n, "cleared_input_tokens": gone}));
            }
        }
    }
    Ok((msgs, Some(json!({"applied_edits": applied})), original))
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
    let (msgs, context, original) = edit_context(&server, &req, &tools, &template, msgs).await?;
    let n = server
        .count_tokens(Some(&req.model), "count_tokens", |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut template, &mut params)?;
            Ok(Prompt::ChatWith(msgs, template))
        })
        .await?;
    let mut r = json!({"input_tokens": n});
    if context.is_some() {
        r["context_management"] = json!({"original_input_tokens": original});
    }
    Ok(Json(r).into_response())
}

async fn whole(job: Job, id: String, stops: Vec<String>, context: Option<Value>) -> Response {
    let Job { mut rx, queued, cancel, model, .. } = job;
    let mut parts = Vec::new();
    loop {
        match rx.recv().await {
            Some(Update::Started(..)) => {}
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
                let mut m = json!({"id": id, "type": "message", "role": "assistant", "model": model.id, "content": content,
                                   "stop_reason": reason, "stop_sequence": seq,
                                   "usage": usage(stats.prompt_tokens, stats.reused_tokens, stats.generated_tokens)});
                if let Some(c) = context {
                    m["context_management"] = c;
                }
                return Json(m).into_response();
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

fn stream(job: Job, id: String, stops: Vec<String>, context: Option<Value>) -> Response {
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
        let (id, model_id, stops, context) = (id.clone(), model_id.clone(), stops.clone(), context.clone());
        async move {
            loop {
                if let Some(e) = st.pending.pop_front() {
                    return Some((Ok::<_, std::convert::Infallible>(e), st));
                }
                if st.finished {
                    return None;
                }
                match st.rx.recv().await {
                    Some(Update::Started(n, cached)) => {
                        st.pending.push_back(event("message_start", json!({"type": "message_start", "message": {
                            "id": id, "type": "message", "role": "assistant", "model": model_id, "content": [],
                            "stop_reason": null, "stop_sequence": null, "usage": usage(n, cached, 0)}})));
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
                        let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": seq},
                                               "usage": usage(stats.prompt_tokens, stats.reused_tokens, stats.generated_tokens)});
                        if let Some(c) = &context {
                            delta["context_management"] = c.clone();
                        }
                        st.pending.push_back(event("message_delta", delta));
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

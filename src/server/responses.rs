//! The OpenAI Responses API: `POST /v1/responses` (whole, or streamed as the
//! typed event sequence the SDKs read), `GET` and `DELETE /v1/responses/{id}`.
//! A stored response (`store`, on by default) is continued by
//! `previous_response_id`: its history comes from disk, so a client sends
//! only its new items, and the engine's prefix cache prefills only the new
//! tokens. The reply's parts become output items: reasoning, a message,
//! function calls.

use super::bridge::{CancelOnDrop, Update};
use super::responses_request::ResponsesRequest;
use super::{ApiError, Server};
use crate::chat::params::{FinishReason, GenerationStats, TokenLogprob};
use crate::chat::reply::Part;
use crate::chat::{Message, Role};
use crate::engine::Prompt;
use crate::store::responses::{new_id, StoredResponse};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;

fn not_found(m: String) -> ApiError {
    ApiError { status: StatusCode::NOT_FOUND, kind: "not_found_error", message: m }
}

/// A store call off the async thread (files can be large, disks slow).
async fn on_store<T: Send + 'static>(server: &Server, f: impl FnOnce(&crate::store::responses::ResponseStore) -> crate::Result<T> + Send + 'static) -> Result<T, ApiError> {
    let store = server.responses.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| match e {
            crate::Error::InvalidArgument(m) => ApiError::bad_request(m),
            e => ApiError::internal(e.to_string()),
        })
}

pub async fn create(State(server): State<Arc<Server>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: ResponsesRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the request is not a response request: {e}")))?;
    req.check()?;
    // The conversation so far: a stored response's history, then the input.
    let mut history = Vec::new();
    let mut model_name = req.model.clone();
    if let Some(prev) = req.previous_response_id.clone() {
        let p = on_store(&server, move |s| s.load(&prev)).await?;
        let p = p.ok_or_else(|| not_found(format!("previous_response_id '{}' is not stored (it may have been deleted or dropped as the oldest)", req.previous_response_id.as_deref().unwrap_or(""))))?;
        let named = server.find_model(model_name.as_deref().or(Some(&p.model)))?;
        if named.id != p.model {
            return Err(ApiError::bad_request(format!(
                "previous_response_id '{}' was written by model '{}'; this request names '{}'",
                p.id, p.model, named.id
            )));
        }
        model_name = Some(p.model);
        history = p.history;
    }
    history.extend(req.input_messages()?);
    if !history.iter().any(|m| m.role != Role::System) {
        return Err(ApiError::bad_request("input is empty"));
    }
    let mut messages: Vec<Message> = req.instructions.iter().filter(|i| !i.is_empty()).map(|i| Message::system(i.clone())).collect();
    messages.extend(history.iter().cloned());
    let mut options = req.template_options()?;
    let tools = req.tool_request()?;
    let kind = if req.stream { "responses stream" } else { "responses" };
    let n = server.next_id();
    let mut sampling = (0.0, 1.0);
    let job = server
        .start(model_name.as_deref(), req.keep(), kind, |info| {
            let mut params = req.params(&info.recommended)?;
            tools.apply(&mut options, &mut params)?;
            params.call_id_prefix = format!("call_{n}_");
            sampling = (params.sampling.temperature, params.sampling.top_p);
            Ok((Prompt::ChatWith(messages, options), params))
        })
        .await?;
    let id = new_id();
    let base = json!({
        "id": id, "object": "response", "created_at": super::now_secs(), "status": "in_progress", "error": null,
        "incomplete_details": null, "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
        "model": job.model.id, "output": [], "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": req.previous_response_id, "reasoning": req.reasoning.clone().unwrap_or(json!({"effort": null, "summary": null})),
        "store": req.stores(), "temperature": sampling.0, "top_p": sampling.1,
        "text": req.text.clone().unwrap_or(json!({"format": {"type": "text"}})),
        "tool_choice": req.tool_choice.clone().unwrap_or(json!("auto")), "tools": req.tools.clone().unwrap_or_default(),
        "truncation": req.truncation.clone().unwrap_or("disabled".into()), "usage": null, "metadata": req.metadata.clone().unwrap_or(json!({})),
    });
    let keep = req.stores().then(|| Keep { server: server.clone(), history, model: job.model.id.clone(), input_items: req.input_items(&id) });
    let writer = Writer { base, output: Vec::new(), open: None, seq: 0, events: VecDeque::new(), streaming: req.stream, scores: Vec::new(), reply: Message::assistant(""), cut: false, server: server.clone() };
    Ok(if req.stream { writer.stream(job, keep) } else { writer.whole(job, keep).await })
}

pub async fn retrieve(State(server): State<Arc<Server>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = id.clone();
    match on_store(&server, move |s| s.load(&key)).await? {
        Some(r) => Ok(Json(r.response)),
        None => Err(not_found(format!("no response '{id}' is stored"))),
    }
}

/// `GET /v1/responses/{id}/input_items`: the request's input items, newest
/// first unless `order=asc`, `limit` (1-100, 20) at a time after the item `after`.
pub async fn input_items(
    State(server): State<Arc<Server>>,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q: std::collections::HashMap<&str, String> =
        query.as_deref().unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k, super::responses_request::percent_decoded(v))).collect();
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return Err(ApiError::bad_request("limit must be a number from 1 to 100")),
    };
    let asc = match q.get("order").map(|o| o.as_str()) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(o) => return Err(ApiError::bad_request(format!("order '{o}' is not asc or desc"))),
    };
    let key = id.clone();
    let Some(r) = on_store(&server, move |s| s.load(&key)).await? else {
        return Err(not_found(format!("no response '{id}' is stored")));
    };
    let mut items = r.input_items;
    if !asc {
        items.reverse();
    }
    if let Some(after) = q.get("after") {
        match items.iter().position(|i| i["id"].as_str() == Some(after.as_str())) {
            Some(p) => drop(items.drain(..=p)),
            None => return Err(ApiError::bad_request(format!("after: no input item '{after}' in response '{id}'"))),
        }
    }
    let has_more = items.len() > limit;
    items.truncate(limit);
    let (first, last) = (items.first().map(|i| i["id"].clone()), items.last().map(|i| i["id"].clone()));
    Ok(Json(json!({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": has_more})))
}


pub async fn delete(State(server): State<Arc<Server>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let key = id.clone();
    if on_store(&server, move |s| s.delete(&key)).await? {
        server.log(format!("responses delete: {id}"));
        Ok(Json(json!({"id": id, "object": "response.deleted", "deleted": true})))
    } else {
        Err(not_found(format!("no response '{id}' is stored")))
    }
}

/// What a stored response keeps: the conversation it continues.
struct Keep {
    server: Arc<Server>,
    history: Vec<Message>,
    model: String,
    input_items: Vec<Value>,
}

impl Keep {
    /// Saves the response with the reply added to the history. A save that
    /// fails (a full disk) is logged; the client still gets its response.
    async fn save(self, response: &Value, reply: &Message) {
        let mut history = self.history;
        history.push(reply.clone());
        let r = StoredResponse { id: response["id"].as_str().unwrap_or("").to_string(), model: self.model, history, response: response.clone(), input_items: self.input_items };
        let id = r.id.clone();
        if let Err(e) = on_store(&self.server, move |s| s.save(&r)).await {
            self.server.log(format!("response {id} was not stored: {}", e.message));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Open {
    Reasoning,
    Message,
}

/// A response's output items as the reply's parts arrive, and (streaming)
/// the events that build them.
struct Writer {
    base: Value,
    output: Vec<Value>,
    /// The item text is being added to (the last in `output`).
    open: Option<Open>,
    seq: u64,
    events: VecDeque<Value>,
    streaming: bool,
    scores: Vec<TokenLogprob>,
    /// The reply as the history keeps it.
    reply: Message,
    /// The token limit or the context ended the reply.
    cut: bool,
    server: Arc<Server>,
}

impl Writer {
    fn emit(&mut self, ty: &str, mut data: Value) {
        if self.streaming {
            data["type"] = json!(ty);
            data["sequence_number"] = json!(self.seq);
            self.seq += 1;
            self.events.push_back(data);
        }
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}_{}", self.base["id"].as_str().unwrap_or("").trim_start_matches("resp_"), self.output.len())
    }

    /// Adds an item; streamed, it is announced without its content.
    fn add_item(&mut self, item: Value, announced: Value) {
        self.output.push(item);
        let i = self.output.len() - 1;
        self.emit("response.output_item.added", json!({"output_index": i, "item": announced}));
    }

    fn part(&mut self, p: Part) {
        match p {
            Part::Reasoning(t) => {
                // Log-probabilities are the answer's (OpenAI gives them for output text only).
                self.scores.clear();
                if self.open != Some(Open::Reasoning) {
                    self.close();
                    let id = self.item_id("rs");
                    let item = json!({"id": id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": ""}]});
                    self.add_item(item, json!({"id": id, "type": "reasoning", "summary": [], "content": []}));
                    self.emit("response.content_part.added", json!({"item_id": id, "output_index": self.output.len() - 1, "content_index": 0, "part": {"type": "reasoning_text", "text": ""}}));
                    self.open = Some(Open::Reasoning);
                }
                self.reply.reasoning.push_str(&t);
                self.append(t, "response.reasoning_text.delta");
            }
            Part::Content(t) => {
                if self.open != Some(Open::Message) {
                    self.close();
                    let id = self.item_id("msg");
                    let part = json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []});
                    self.add_item(json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": [part]}),
                                  json!({"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}));
                    self.emit("response.content_part.added", json!({"item_id": id, "output_index": self.output.len() - 1, "content_index": 0, "part": part}));
                    self.open = Some(Open::Message);
                }
                self.reply.content.push_str(&t);
                self.append(t, "response.output_text.delta");
            }
            Part::Call(c) => {
                self.close();
                let id = self.item_id("fc");
                let args = c.arguments.to_string();
                let mut item = json!({"id": id, "type": "function_call", "status": "in_progress", "call_id": c.id, "name": c.name, "arguments": ""});
                self.add_item(item.clone(), item.clone());
                let i = self.output.len() - 1;
                self.emit("response.function_call_arguments.delta", json!({"item_id": id, "output_index": i, "delta": args}));
                self.emit("response.function_call_arguments.done", json!({"item_id": id, "output_index": i, "name": c.name, "arguments": args}));
                item["arguments"] = json!(args);
                item["status"] = json!("completed");
                self.output[i] = item.clone();
                self.emit("response.output_item.done", json!({"output_index": i, "item": item}));
                self.reply.tool_calls.push(c);
            }
        }
    }

    /// Text added to the open item's content, with the answer's scores.
    fn append(&mut self, t: String, event: &str) {
        let i = self.output.len() - 1;
        let logprobs: Vec<Value> = if self.open == Some(Open::Message) { self.scores.drain(..).map(|s| super::openai::chat_logprob(&s)).collect() } else { vec![] };
        let content = &mut self.output[i]["content"][0];
        if let Value::String(text) = &mut content["text"] {
            text.push_str(&t);
        }
        if let Some(l) = content["logprobs"].as_array_mut() {
            l.extend(logprobs.iter().cloned());
        }
        let id = self.output[i]["id"].clone();
        let mut data = json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t});
        if event == "response.output_text.delta" {
            data["logprobs"] = json!(logprobs);
        }
        self.emit(event, data);
    }

    /// Ends the open item: its text done, its part done, the item done.
    fn close(&mut self) {
        let Some(open) = self.open.take() else { return };
        let i = self.output.len() - 1;
        let id = self.output[i]["id"].clone();
        let part = self.output[i]["content"][0].clone();
        let text = part["text"].clone();
        match open {
            Open::Reasoning => self.emit("response.reasoning_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text})),
            Open::Message => {
                self.emit("response.output_text.done", json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": part["logprobs"]}));
                self.output[i]["status"] = json!(if self.cut { "incomplete" } else { "completed" });
            }
        }
        self.emit("response.content_part.done", json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}));
        let item = self.output[i].clone();
        self.emit("response.output_item.done", json!({"output_index": i, "item": item}));
    }

    /// The response as it stands, with this status.
    fn object(&self, status: &str) -> Value {
        let mut r = self.base.clone();
        r["status"] = json!(status);
        r["output"] = json!(self.output);
        r
    }

    /// The finished response: completed, or incomplete when the token limit
    /// or the context ended it; usage with the tokens the prefix cache held.
    fn finish(&mut self, stats: &GenerationStats) -> Value {
        let cut = matches!(stats.finish_reason, Some(FinishReason::MaxTokens | FinishReason::ContextFull));
        // The message the limit cut is incomplete too.
        self.cut = cut;
        self.close();
        let mut r = self.object(if cut { "incomplete" } else { "completed" });
        if cut {
            r["incomplete_details"] = json!({"reason": "max_output_tokens"});
        }
        r["usage"] = json!({
            "input_tokens": stats.prompt_tokens, "input_tokens_details": {"cached_tokens": stats.reused_tokens},
            "output_tokens": stats.generated_tokens, "output_tokens_details": {"reasoning_tokens": stats.reasoning_tokens},
            "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        });
        let ty = if cut { "response.incomplete" } else { "response.completed" };
        self.emit(ty, json!({"response": r}));
        r
    }

    fn failed(&mut self, message: String) {
        let mut r = self.object("failed");
        r["error"] = json!({"code": "server_error", "message": message});
        self.emit("response.failed", json!({"response": r}));
    }

    /// Ends the response: the finished object (stored first when kept, so
    /// a continuation sent at once finds it), and a log line with where the
    /// request's time went (an agent's turn should cost its new tokens only).
    async fn complete(&mut self, stats: &GenerationStats, keep: Option<Keep>, started: std::time::Instant) -> Value {
        let r = self.finish(stats);
        let t = std::time::Instant::now();
        let stored = keep.is_some();
        if let Some(k) = keep {
            k.save(&r, &self.reply).await;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        self.server.log(format!(
            "response {}: {} prompt tokens ({} cached), {} generated; first token {:.1} ms after the engine took it, {:.1} ms in all{}",
            r["id"].as_str().unwrap_or(""),
            stats.prompt_tokens,
            stats.reused_tokens,
            stats.generated_tokens,
            stats.ttft_s * 1e3,
            ms(started.elapsed()),
            if stored { format!(", {:.1} ms of it storing", ms(t.elapsed())) } else { String::new() }
        ));
        r
    }

    async fn whole(mut self, job: super::Job, keep: Option<Keep>) -> Response {
        let super::Job { mut rx, queued, cancel, started, .. } = job;
        loop {
            match rx.recv().await {
                Some(Update::Started(..)) => {}
                Some(Update::Reply(parts, scores)) => {
                    self.scores.extend(scores);
                    parts.into_iter().for_each(|p| self.part(p));
                }
                Some(Update::Done(stats)) => {
                    drop(queued);
                    cancel.disarm();
                    let r = self.complete(&stats, keep, started).await;
                    return Json(r).into_response();
                }
                Some(Update::Failed(e)) => return ApiError::engine(e).into_response(),
                None => return ApiError::internal("the engine stopped").into_response(),
            }
        }
    }

    /// Server-sent events, each named by its type. The stream owns the queue
    /// slot and the cancel guard: a client that leaves cancels the generation.
    fn stream(mut self, job: super::Job, keep: Option<Keep>) -> Response {
        let super::Job { rx, queued, cancel, started, .. } = job;
        let created = self.object("in_progress");
        self.emit("response.created", json!({"response": created}));
        self.emit("response.in_progress", json!({"response": created}));
        struct S {
            w: Writer,
            rx: tokio::sync::mpsc::UnboundedReceiver<Update>,
            queued: Option<super::Slot>,
            cancel: Option<CancelOnDrop>,
            keep: Option<Keep>,
            finished: bool,
            started: std::time::Instant,
        }
        let state = S { w: self, rx, queued: Some(queued), cancel: Some(cancel), keep, finished: false, started };
        let events = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(v) = st.w.events.pop_front() {
                    let ty = v["type"].as_str().unwrap_or("").to_string();
                    return Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event(ty).data(v.to_string())), st));
                }
                if st.finished {
                    return None;
                }
                match st.rx.recv().await {
                    Some(Update::Started(..)) => {}
                    Some(Update::Reply(parts, scores)) => {
                        st.w.scores.extend(scores);
                        parts.into_iter().for_each(|p| st.w.part(p));
                    }
                    Some(Update::Done(stats)) => {
                        if let Some(g) = st.cancel.take() {
                            g.disarm();
                        }
                        st.queued = None;
                        // The events go out after it is stored.
                        st.w.complete(&stats, st.keep.take(), st.started).await;
                        st.finished = true;
                    }
                    Some(Update::Failed(e)) => {
                        st.w.failed(e.message);
                        st.finished = true;
                    }
                    None => {
                        st.w.failed("the engine stopped".into());
                        st.finished = true;
                    }
                }
            }
        });
        Sse::new(events).keep_alive(KeepAlive::default()).into_response()
    }
}

//! The Ollama-compatible endpoints many desktop tools speak: `/api/version`,
//! `/api/tags`, `/api/ps`, `/api/show`, `/api/chat` and `/api/generate`, streamed as
//! NDJSON (one JSON object a line, the last with `done: true` and the
//! timings in nanoseconds) unless `"stream": false`. Reasoning goes in
//! `thinking`, as Ollama sends it. Options Hearth does not implement are a 400.

use super::bridge::Update;
use crate::chat::reply::gather;
use super::tools::{ToolChoice, ToolRequest};
use crate::chat::tools::ToolCall;
use super::{rfc3339, ApiError, Job, Server, ServedModel};
use crate::chat::params::{GenerateParams, GenerationStats, OutputConstraint, SamplingParams, DEFAULT_MAX_TOKENS};
use crate::chat::template::TemplateOptions;
use crate::chat::{Message, Role};
use crate::engine::Prompt;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Ollama's error shape: `{"error": "message"}` (a string, not an object).
pub struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        (self.0.status, Json(json!({"error": self.0.message}))).into_response()
    }
}

pub async fn version() -> Json<Value> {
    Json(json!({"version": env!("CARGO_PKG_VERSION")}))
}

fn details(m: &ServedModel) -> Value {
    let format = if m.path.is_file() { "gguf" } else { "safetensors" };
    match &m.card {
        Some(c) => json!({"format": format, "family": c.architecture, "families": [c.architecture],
                          "parameter_size": c.shape.as_ref().map_or_else(|| format!("{:.1}B", c.parameters as f64 / 1e9), |sh| sh.params_label()),
                          "quantization_level": c.quantization}),
        None => json!({"format": format}),
    }
}

fn modified(m: &ServedModel) -> String {
    let secs = std::fs::metadata(&m.path)
        .and_then(|md| md.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

pub async fn tags(State(server): State<Arc<Server>>) -> Json<Value> {
    let models: Vec<Value> = server
        .models()
        .iter()
        .map(|m| json!({"name": m.id, "model": m.id, "modified_at": modified(m), "size": m.size, "details": details(m)}))
        .collect();
    Json(json!({"models": models}))
}

/// The models held (Ollama's running models): each with its size, when it
/// unloads if it stays idle (`expires_at`), and Hearth's figures: requests
/// using it, when it was loaded, whether it is the app's chat model.
pub async fn ps(State(server): State<Arc<Server>>) -> Json<Value> {
    let installed: Vec<_> = server.models().into_iter().map(|m| (super::pool::key(&m.path), m)).collect();
    let mut held = server.bridge.held();
    held.sort_by(|a, b| a.0.cmp(&b.0));
    let models: Vec<Value> = held
        .iter()
        .map(|(k, h)| {
            let m = installed.iter().find(|(key, _)| key == k).map(|(_, m)| m);
            let name = m.map_or_else(|| crate::models::load::display_name(&h.info.path), |m| m.id.clone());
            let idle = h.keep.or(server.default_keep());
            let expires = match idle {
                Some(super::pool::Keep::For(t)) if !h.primary => {
                    let left = t.saturating_sub(h.last_used.elapsed()).as_secs();
                    json!(rfc3339(super::now_secs() + if h.in_flight > 0 { t.as_secs() } else { left }))
                }
                _ => Value::Null,
            };
            json!({"name": name, "model": name, "size": h.size, "size_vram": h.size, "expires_at": expires,
                   "details": m.map(details).unwrap_or(json!({})),
                   "hearth": {"in_flight": h.in_flight, "loaded_at_ms": h.loaded_at_ms, "chat_model": h.primary}})
        })
        .collect();
    // Hearth's own figures beside Ollama's fields (clients ignore what they
    // do not know): what the soak benchmark and a watchful user read.
    let m = server.bridge.memory();
    Json(json!({"models": models, "hearth": {
        "mlx_active_bytes": m.mlx_active, "mlx_cache_bytes": m.mlx_cache, "mlx_peak_bytes": m.mlx_peak, "process_rss_bytes": m.process_rss,
    }}))
}

#[derive(Deserialize)]
pub struct ShowRequest {
    #[serde(alias = "name")]
    model: String,
}

pub async fn show(State(server): State<Arc<Server>>, body: Bytes) -> Result<Json<Value>, OllamaError> {
    let req: ShowRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad show request: {e}")))?;
    let m = server.find_model(Some(&req.model))?;
    let (_, template) = crate::models::load::read_chat_parts(&m.path).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut info = Map::new();
    if let Some(c) = &m.card {
        info.insert("general.architecture".into(), json!(c.architecture));
        info.insert("general.parameter_count".into(), json!(c.parameters));
    }
    Ok(Json(json!({
        "modified_at": modified(&m), "template": template.source, "modelfile": "", "parameters": "",
        "details": details(&m), "model_info": info, "capabilities": ["completion"],
    })))
}

/// Ollama's `options`, those Hearth implements; others are refused by name.
fn params(options: &Map<String, Value>, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
    let mut s = recommended.apply(&SamplingParams::default());
    let mut max = DEFAULT_MAX_TOKENS;
    let mut stop = vec![];
    let num = |k: &str, v: &Value| v.as_f64().ok_or_else(|| ApiError::bad_request(format!("option '{k}' must be a number")));
    for (k, v) in options {
        match k.as_str() {
            "temperature" => s.temperature = num(k, v)? as f32,
            "top_p" => s.top_p = num(k, v)? as f32,
            "min_p" => s.min_p = num(k, v)? as f32,
            "top_k" => s.top_k = num(k, v)?.max(0.0) as usize,
            "repeat_penalty" => s.repetition_penalty = num(k, v)? as f32,
            "repeat_last_n" => s.repetition_context = num(k, v)?.max(0.0) as usize,
            "presence_penalty" => s.presence_penalty = num(k, v)? as f32,
            "frequency_penalty" => s.frequency_penalty = num(k, v)? as f32,
            "seed" => s.seed = Some(num(k, v)? as u64),
            "num_predict" => {
                let n = num(k, v)?;
                // Ollama's -1 means "no limit": the context decides.
                max = if n < 0.0 { 1 << 20 } else { (n as usize).max(1) };
            }
            "stop" => {
                stop = serde_json::from_value(v.clone()).map_err(|_| ApiError::bad_request("option 'stop' must be a list of strings"))?
            }
            // Context size is the server's setting; accepted when it asks nothing new.
            "num_ctx" => {}
            other => return Err(ApiError::bad_request(format!("option '{other}' is not supported by this server yet"))),
        }
    }
    s.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(GenerateParams { sampling: s, max_tokens: max, stop, ignore_eos: false, constraint: None, logprobs: None, call_id_prefix: String::new(), keep_turns: false, reasoning_budget: None, prompt_file: None })
}

#[derive(Deserialize)]
struct OllamaMessage {
    role: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    images: Option<Vec<Value>>,
    /// An assistant's calls (`{"function": {"name", "arguments"}}`).
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
    /// A tool message: the function whose result it is.
    #[serde(default)]
    tool_name: Option<String>,
}

#[derive(Deserialize)]
pub struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<OllamaMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    format: Option<Value>,
    /// Ollama's thinking switch: true/false, or an effort for gpt-oss.
    #[serde(default)]
    think: Option<Value>,
    /// How long the model stays loaded idle after this request.
    #[serde(default)]
    keep_alive: Value,
}

/// Ollama's `think` as template variables.
fn think_options(think: &Option<Value>) -> Result<TemplateOptions, ApiError> {
    let mut o = TemplateOptions::default();
    match think {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => o.enable_thinking = Some(*b),
        Some(Value::String(e)) => {
            o.reasoning_effort = Some(e.parse().map_err(|e: crate::error::Error| ApiError::bad_request(e.to_string()))?)
        }
        Some(other) => return Err(ApiError::bad_request(format!("think must be true, false, low, medium or high, not {other}"))),
    }
    Ok(o)
}

#[derive(Deserialize)]
pub struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    options: Map<String, Value>,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    keep_alive: Value,
}

/// Ollama's `format`: "json" (any JSON object) or a JSON schema.
fn format_constraint(format: &Option<Value>) -> Result<Option<OutputConstraint>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputConstraint::JsonObject)),
        Some(s @ Value::Object(_)) => Ok(Some(OutputConstraint::JsonSchema(s.clone()))),
        Some(other) => Err(ApiError::bad_request(format!("format must be \"json\" or a JSON schema, not {other}"))),
    }
}

pub async fn chat(State(server): State<Arc<Server>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: ChatRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad chat request: {e}")))?;
    let keep = super::pool::Keep::from_ollama(&req.keep_alive).map_err(ApiError::bad_request)?;
    let tools = ToolRequest::new(req.tools.as_ref(), ToolChoice::Auto)?;
    let constraint = format_constraint(&req.format)?;
    let mut messages = Vec::new();
    for m in &req.messages {
        if m.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(ApiError::bad_request("images are not supported by this server yet").into());
        }
        let role = match m.role.as_str() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            "tool" => Role::Tool,
            other => return Err(ApiError::bad_request(format!("messages with role '{other}' are not supported")).into()),
        };
        let mut msg = Message::new(role, m.content.clone());
        msg.tool_calls = m.tool_calls.clone().unwrap_or_default();
        if role == Role::Tool {
            // Ollama's results name the function, not a call id.
            msg.tool_call_id = Some(m.tool_name.clone().unwrap_or_default());
        }
        messages.push(msg);
    }
    if messages.is_empty() {
        // Ollama loads the model and answers done for an empty chat.
        let (m, _used, _, _) = server.enter(Some(&req.model), keep).await?;
        return Ok(Json(json!({"model": m.id, "created_at": rfc3339(super::now_secs()),
                               "message": {"role": "assistant", "content": ""}, "done_reason": "load", "done": true}))
        .into_response());
    }
    let options = req.options.clone();
    let mut template = think_options(&req.think)?;
    let n = server.next_id();
    let job = server
        .start(Some(&req.model), keep, "ollama chat", |info| {
            let mut p = params(&options, &info.recommended)?;
            p.constraint = constraint;
            tools.apply(&mut template, &mut p)?;
            p.call_id_prefix = format!("call_{n}_");
            Ok((Prompt::ChatWith(messages, template), p))
        })
        .await?;
    Ok(respond(job, req.stream.unwrap_or(true), |content, thinking, calls| {
        let mut message = json!({"role": "assistant", "content": content});
        if !thinking.is_empty() {
            message["thinking"] = json!(thinking);
        }
        if !calls.is_empty() {
            message["tool_calls"] = calls.iter().map(|c| json!({"function": {"name": c.name, "arguments": c.arguments}})).collect();
        }
        json!({"message": message})
    })
    .await)
}

pub async fn generate(State(server): State<Arc<Server>>, body: Bytes) -> Result<Response, OllamaError> {
    let req: GenerateRequest = serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("bad generate request: {e}")))?;
    let keep = super::pool::Keep::from_ollama(&req.keep_alive).map_err(ApiError::bad_request)?;
    if req.prompt.is_empty() && req.system.is_none() {
        // Ollama's way to load a model (and, with keep_alive 0, to unload
        // it: at the next expiry check if idle; one not held stays unloaded).
        let unload = keep == Some(super::pool::Keep::For(std::time::Duration::ZERO));
        let m = if unload {
            let m = server.find_model(Some(&req.model))?;
            server.bridge.unload_soon(&m.path);
            m
        } else {
            server.enter(Some(&req.model), keep).await?.0
        };
        return Ok(Json(json!({"model": m.id, "created_at": rfc3339(super::now_secs()), "response": "", "done": true,
                               "done_reason": if unload { "unload" } else { "load" }}))
        .into_response());
    }
    let constraint = format_constraint(&req.format)?;
    let prompt = if req.raw {
        Prompt::Raw(req.prompt.clone())
    } else {
        let mut msgs = Vec::new();
        if let Some(s) = req.system.as_ref().filter(|s| !s.is_empty()) {
            msgs.push(Message::system(s.clone()));
        }
        msgs.push(Message::user(req.prompt.clone()));
        Prompt::Chat(msgs)
    };
    let options = req.options.clone();
    let job = server
        .start(Some(&req.model), keep, "ollama generate", |info| {
            let mut p = params(&options, &info.recommended)?;
            p.constraint = constraint;
            Ok((prompt, p))
        })
        .await?;
    Ok(respond(job, req.stream.unwrap_or(true), |content, thinking, _| {
        let mut v = json!({"response": content});
        if !thinking.is_empty() {
            v["thinking"] = json!(thinking);
        }
        v
    })
    .await)
}

/// The last object: why it stopped and Ollama's timings (nanoseconds).
fn done(job_model: &str, stats: &GenerationStats, load_s: f64, total_s: f64) -> Value {
    let ns = |s: f64| (s * 1e9) as u64;
    let reason = super::openai::finish_reason(stats);
    json!({"model": job_model, "created_at": rfc3339(super::now_secs()), "done": true, "done_reason": reason,
           "total_duration": ns(total_s), "load_duration": ns(load_s),
           "prompt_eval_count": stats.prefilled_tokens, "prompt_eval_duration": ns(stats.ttft_s),
           "eval_count": stats.generated_tokens, "eval_duration": ns((stats.total_s - stats.ttft_s).max(0.0))})
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// One object (`stream: false`) or NDJSON lines; `piece(content, thinking,
/// calls)` shapes the endpoint's fields.
async fn respond(job: Job, stream: bool, piece: fn(&str, &str, &[ToolCall]) -> Value) -> Response {
    let Job { mut rx, queued, cancel, model, load_s, started, .. } = job;
    let id = model.id;
    if !stream {
        {
            let mut parts = Vec::new();
            loop {
                match rx.recv().await {
                    Some(Update::Started(..)) => continue,
                    Some(Update::Reply(p, _)) => parts.extend(p),
                    Some(Update::Done(stats)) => {
                        cancel.disarm();
                        drop(queued);
                        let (content, thinking, calls) = gather(parts);
                        let head = merge(json!({"model": id}), piece(&content, &thinking, &calls));
                        return Json(merge(done(&id, &stats, load_s, started.elapsed().as_secs_f64()), head)).into_response();
                    }
                    Some(Update::Failed(e)) => return OllamaError(ApiError::engine(e)).into_response(),
                    None => return OllamaError(ApiError::internal("the engine stopped")).into_response(),
                }
            }
        }
    }
    // The stream owns the queue slot and the cancel guard: a client that goes
    // away drops it, which stops the generation and frees the queue.
    let state = (rx, Some(queued), Some(cancel), false);
    let lines = futures::stream::unfold(state, move |(mut rx, queued, cancel, finished)| {
        let id = id.clone();
        async move {
            if finished {
                return None;
            }
            loop {
                let line = match rx.recv().await {
                    Some(Update::Started(..)) => continue,
                    Some(Update::Reply(parts, _)) => {
                        let (c, r, calls) = gather(parts);
                        if r.is_empty() && c.is_empty() && calls.is_empty() {
                            continue;
                        }
                        merge(json!({"model": id, "created_at": rfc3339(super::now_secs()), "done": false}), piece(&c, &r, &calls))
                    }
                    Some(Update::Done(stats)) => {
                        if let Some(c) = cancel {
                            c.disarm();
                        }
                        // The last line has the endpoint's (empty) fields too, as Ollama's does.
                        let last = merge(done(&id, &stats, load_s, started.elapsed().as_secs_f64()), piece("", "", &[]));
                        return Some((Ok::<_, std::convert::Infallible>(Bytes::from(last.to_string() + "\n")), (rx, None, None, true)));
                    }
                    Some(Update::Failed(e)) => {
                        let err = json!({"error": e.message});
                        return Some((Ok(Bytes::from(err.to_string() + "\n")), (rx, None, None, true)));
                    }
                    None => return None,
                };
                return Some((Ok(Bytes::from(line.to_string() + "\n")), (rx, queued, cancel, false)));
            }
        }
    });
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
}

//! What an OpenAI Responses request asks for, read and checked: the input
//! (a string, or items: messages, function calls and their outputs,
//! reasoning) as chat messages, `instructions`, function tools and the
//! choice among them, `text.format` as an output constraint, the reasoning
//! effort, and sampling. Fields Hearth cannot honour are a 400 that names them.

use super::tools::{ToolChoice, ToolRequest};
use super::ApiError;
use crate::chat::params::{GenerateParams, OutputConstraint, ReasoningEffort, DEFAULT_MAX_TOKENS, MAX_TOP_LOGPROBS};
use crate::chat::template::TemplateOptions;
use crate::chat::tool_prompt::ToolSpec;
use crate::chat::tools::ToolCall;
use crate::chat::{Message, Role};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Fields clients send that change nothing here (`store` is read, then kept
/// in the response; `prompt_cache_key`: Hearth's prefix cache needs no key).
const HARMLESS: &[&str] = &["user", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options", "background"];

/// `include` values Hearth honours: log-probabilities; encrypted reasoning
/// is asked for by clients that run with `store: false` (Codex) — Hearth's
/// reasoning items carry the text itself, which such a client sends back.
const INCLUDES: &[&str] = &["message.output_text.logprobs", "reasoning.encrypted_content"];

#[derive(Deserialize)]
pub struct ResponsesRequest {
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    pub(super) instructions: Option<String>,
    #[serde(default)]
    pub(super) tools: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) tool_choice: Option<Value>,
    /// `{"format": {...}, "verbosity": ...}`.
    #[serde(default)]
    pub(super) text: Option<Value>,
    /// `{"effort": ..., "summary": ...}`.
    #[serde(default)]
    pub(super) reasoning: Option<Value>,
    #[serde(default)]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(default)]
    pub(super) temperature: Option<f32>,
    #[serde(default)]
    pub(super) top_p: Option<f32>,
    #[serde(default)]
    top_logprobs: Option<u64>,
    #[serde(default)]
    pub(super) store: Option<bool>,
    #[serde(default)]
    pub(super) previous_response_id: Option<String>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    include: Option<Vec<String>>,
    #[serde(default)]
    pub(super) metadata: Option<Value>,
    #[serde(default)]
    pub(super) parallel_tool_calls: Option<bool>,
    /// "auto" (drop the oldest turns to fit, as Hearth always does) or "disabled".
    #[serde(default)]
    pub(super) truncation: Option<String>,
    /// Seconds the model may stay loaded idle after this request (as LM Studio's `ttl`).
    #[serde(default)]
    ttl: Option<f64>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl ResponsesRequest {
    /// Refuses what is not implemented, naming it, instead of ignoring it.
    pub(super) fn check(&self) -> Result<(), ApiError> {
        for (k, v) in &self.other {
            let off = v.is_null() || v == &json!(false) || v.as_array().is_some_and(|a| a.is_empty());
            if !HARMLESS.contains(&k.as_str()) && !off {
                return Err(ApiError::bad_request(format!("'{k}' is not supported by this server yet")));
            }
        }
        if self.other.get("background").is_some_and(|b| b == &json!(true)) {
            return Err(ApiError::bad_request("background responses are not supported; stream the response instead"));
        }
        for i in self.include.iter().flatten() {
            if !INCLUDES.contains(&i.as_str()) {
                return Err(ApiError::bad_request(format!("include '{i}' is not supported (supported: {})", INCLUDES.join(", "))));
            }
        }
        if let Some(t) = self.truncation.as_deref().filter(|t| !matches!(*t, "auto" | "disabled")) {
            return Err(ApiError::bad_request(format!("truncation '{t}' is not auto or disabled")));
        }
        Ok(())
    }

    pub(super) fn keep(&self) -> Option<super::pool::Keep> {
        self.ttl.map(super::pool::Keep::seconds)
    }

    /// Whether the response is kept for `previous_response_id` and retrieval
    /// (OpenAI's default: yes).
    pub(super) fn stores(&self) -> bool {
        self.store.unwrap_or(true)
    }

    /// The input as chat messages (after any earlier response's history).
    pub(super) fn input_messages(&self) -> Result<Vec<Message>, ApiError> {
        match &self.input {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![Message::user(s.clone())]),
            Some(Value::Array(items)) => items_to_messages(items),
            Some(_) => Err(ApiError::bad_request("input must be a string or a list of items")),
        }
    }

    /// The input as OpenAI lists it back (`input_items`): every item typed,
    /// a message's text as parts, each with an id (`{kind}_{response}_{n}`).
    pub(super) fn input_items(&self, response_id: &str) -> Vec<Value> {
        let items = match &self.input {
            Some(Value::String(s)) => vec![json!({"role": "user", "content": s})],
            Some(Value::Array(items)) => items.clone(),
            _ => vec![],
        };
        let tail = response_id.strip_prefix("resp_").unwrap_or(response_id);
        // Ids are what `after` pages by: a repeated or odd one is replaced.
        let mut seen = std::collections::HashSet::new();
        items
            .into_iter()
            .enumerate()
            .map(|(n, mut item)| {
                if item["type"].is_null() && item.get("role").is_some() {
                    item["type"] = json!("message");
                }
                if item["type"] == "message" {
                    let part = if item["role"] == "assistant" { "output_text" } else { "input_text" };
                    if let Some(text) = item["content"].as_str().map(String::from) {
                        item["content"] = json!([{"type": part, "text": text}]);
                    }
                    item["status"] = json!("completed");
                }
                let id = item.get("id").and_then(|i| i.as_str()).map(String::from);
                if !id.is_some_and(|i| !i.is_empty() && seen.insert(i)) {
                    let kind = match item["type"].as_str() {
                        Some("function_call") => "fc",
                        Some("function_call_output") => "fco",
                        Some("reasoning") => "rs",
                        _ => "msg",
                    };
                    item["id"] = json!(format!("{kind}_{tail}_{n}"));
                }
                item
            })
            .collect()
    }

    /// Function tools and `tool_choice`.
    pub(super) fn tool_request(&self) -> Result<ToolRequest, ApiError> {
        let mut specs = Vec::new();
        for t in self.tools.iter().flatten() {
            match t["type"].as_str() {
                Some("function") => specs.push(ToolSpec::from_value(&json!({"name": t["name"], "description": t["description"].as_str().unwrap_or(""),
                                                                             "parameters": t.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or(json!({"type": "object", "properties": {}}))}))
                    .map_err(ApiError::bad_request)?),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "tools of type '{}' are not supported (only function tools run here)",
                        other.unwrap_or("(none)")
                    )))
                }
            }
        }
        let choice = match &self.tool_choice {
            None | Some(Value::Null) => ToolChoice::Auto,
            Some(Value::String(_)) => ToolRequest::openai_choice(self.tool_choice.as_ref())?,
            Some(o) => match (o["type"].as_str(), o["name"].as_str()) {
                (Some("function"), Some(name)) => ToolChoice::Function(name.to_string()),
                _ => return Err(ApiError::bad_request("tool_choice must be auto, none, required or {\"type\": \"function\", \"name\": …}")),
            },
        };
        ToolRequest::from_specs(specs, choice)
    }

    /// `text.format` as an output constraint.
    fn constraint(&self) -> Result<Option<OutputConstraint>, ApiError> {
        let f = self.text.as_ref().map(|t| &t["format"]).unwrap_or(&Value::Null);
        match f["type"].as_str() {
            None if f.is_null() => Ok(None),
            Some("text") => Ok(None),
            Some("json_object") => Ok(Some(OutputConstraint::JsonObject)),
            Some("json_schema") => match &f["schema"] {
                s if s.is_object() || s.is_boolean() => Ok(Some(OutputConstraint::JsonSchema(s.clone()))),
                _ => Err(ApiError::bad_request("text.format.schema must be a JSON Schema object")),
            },
            _ => Err(ApiError::bad_request("text.format.type must be text, json_object or json_schema")),
        }
    }

    /// `reasoning.effort`: "none" turns thinking off (Qwen3's switch); the
    /// others set the template's effort (gpt-oss), "minimal" as low and
    /// "xhigh" as high.
    pub(super) fn template_options(&self) -> Result<TemplateOptions, ApiError> {
        let mut o = TemplateOptions::default();
        let effort = self.reasoning.as_ref().map(|r| &r["effort"]).unwrap_or(&Value::Null);
        match effort.as_str() {
            None if effort.is_null() => {}
            Some("none") => o.enable_thinking = Some(false),
            Some("minimal" | "low") => o.reasoning_effort = Some(ReasoningEffort::Low),
            Some("medium") => o.reasoning_effort = Some(ReasoningEffort::Medium),
            Some("high" | "xhigh") => o.reasoning_effort = Some(ReasoningEffort::High),
            _ => return Err(ApiError::bad_request(format!("reasoning.effort {effort} is not none, minimal, low, medium, high or xhigh"))),
        }
        Ok(o)
    }

    pub(super) fn params(&self, recommended: &crate::chat::params::RecommendedSampling) -> Result<GenerateParams, ApiError> {
        let sampling = recommended.with_request(self.temperature, self.top_p);
        sampling.validate().map_err(|e| ApiError::bad_request(e.to_string()))?;
        let max = self.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS as u64);
        if max == 0 || max > 1 << 20 {
            return Err(ApiError::bad_request(format!("max_output_tokens {max} is out of range (1 to 1048576)")));
        }
        let top = self.top_logprobs.unwrap_or(0);
        if top as usize > MAX_TOP_LOGPROBS {
            return Err(ApiError::bad_request(format!("top_logprobs {top} is out of range (0 to {MAX_TOP_LOGPROBS})")));
        }
        let logprobs = self.include.iter().flatten().any(|i| i == "message.output_text.logprobs").then_some(top as usize);
        // OpenAI's default is "disabled": a conversation over the context fails rather than loses turns.
        let keep_turns = self.truncation.as_deref() != Some("auto");
        Ok(GenerateParams { sampling, max_tokens: max as usize, constraint: self.constraint()?, logprobs, keep_turns, ..Default::default() })
    }
}

/// The text of a message's or an output's content: a string, or parts of
/// text (`input_text`, `output_text`, `text`, `refusal`).
fn content_text(v: &Value, what: &str) -> Result<String, ApiError> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str().or(p["refusal"].as_str())) {
                    (Some("input_text" | "output_text" | "text" | "refusal"), Some(t)) => text.push_str(t),
                    (Some(t @ ("input_image" | "input_file" | "input_audio")), _) => {
                        return Err(ApiError::bad_request(format!("{what}: {t} parts are not supported by this model server yet (text only)")))
                    }
                    (t, _) => return Err(ApiError::bad_request(format!("{what}: content parts of type {} are not supported", t.unwrap_or("(none)")))),
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::bad_request(format!("{what}: content must be a string or a list of parts"))),
    }
}

/// A string field an item must have.
fn field<'a>(item: &'a Value, name: &str, ty: &str) -> Result<&'a str, ApiError> {
    item[name].as_str().filter(|s| !s.is_empty()).ok_or_else(|| ApiError::bad_request(format!("a {ty} item needs '{name}'")))
}

/// Input items as chat messages: function calls join the assistant turn
/// before them (or start one), their outputs become tool messages, and a
/// reasoning item is the next assistant turn's reasoning.
fn items_to_messages(items: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::new();
    let mut reasoning = String::new();
    for item in items {
        let ty = match item["type"].as_str() {
            Some(t) => t,
            None if item.get("role").is_some() => "message",
            None => return Err(ApiError::bad_request("an input item needs a type (message, function_call, function_call_output or reasoning)")),
        };
        match ty {
            "message" => {
                let role = match item["role"].as_str() {
                    Some("user") => Role::User,
                    Some("system" | "developer") => Role::System,
                    Some("assistant") => Role::Assistant,
                    r => return Err(ApiError::bad_request(format!("messages with role {} are not supported", r.map(|r| format!("'{r}'")).unwrap_or("(none)".into())))),
                };
                let mut m = Message::new(role, content_text(&item["content"], "a message")?);
                if role == Role::Assistant {
                    m.reasoning = std::mem::take(&mut reasoning);
                }
                out.push(m);
            }
            "function_call" => {
                let (call_id, name) = (field(item, "call_id", ty)?, field(item, "name", ty)?);
                let args = item["arguments"].as_str().unwrap_or("{}");
                let arguments: Value = serde_json::from_str(if args.trim().is_empty() { "{}" } else { args })
                    .map_err(|e| ApiError::bad_request(format!("function_call {call_id}: arguments are not JSON ({e})")))?;
                let call = ToolCall { id: call_id.to_string(), name: name.to_string(), arguments };
                match out.last_mut() {
                    Some(m) if m.role == Role::Assistant && reasoning.is_empty() => m.tool_calls.push(call),
                    _ => {
                        let mut m = Message::assistant("");
                        m.reasoning = std::mem::take(&mut reasoning);
                        m.tool_calls.push(call);
                        out.push(m);
                    }
                }
            }
            "function_call_output" => {
                let call_id = field(item, "call_id", ty)?;
                let mut m = Message::new(Role::Tool, content_text(&item["output"], "a function_call_output")?);
                m.tool_call_id = Some(call_id.to_string());
                out.push(m);
            }
            "reasoning" => {
                let parts = item["content"].as_array().filter(|c| !c.is_empty()).or(item["summary"].as_array());
                for p in parts.into_iter().flatten() {
                    reasoning.push_str(p["text"].as_str().unwrap_or(""));
                }
            }
            "item_reference" => return Err(ApiError::bad_request("item_reference items are not supported: send the item itself, or continue with previous_response_id")),
            other => {
                return Err(ApiError::bad_request(format!(
                    "input items of type '{other}' are not supported (message, function_call, function_call_output and reasoning are)"
                )))
            }
        }
    }
    Ok(out)
}

/// A query value as sent (`+` a space, `%XX` a byte); a malformed escape stays as it is.
pub(super) fn percent_decoded(v: &str) -> String {
    let b = v.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let (mut out, mut i) = (Vec::with_capacity(b.len()), 0);
    while i < b.len() {
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (c, _, _) => {
                out.push(if c == b'+' { b' ' } else { c });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn items_become_the_conversation_an_agent_had() {
        let r = request(json!({"input": [
            {"role": "developer", "content": "Be brief."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Call the tool."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
        ]}));
        r.check().unwrap();
        let m = r.input_messages().unwrap();
        assert_eq!(m.iter().map(|m| m.role).collect::<Vec<_>>(), [Role::System, Role::User, Role::Assistant, Role::Tool]);
        assert_eq!(m[2].reasoning, "Call the tool.");
        assert_eq!(m[2].tool_calls[0].arguments, json!({"city": "Paris"}));
        assert_eq!((m[3].content.as_str(), m[3].tool_call_id.as_deref()), ("18 C", Some("call_1")));
    }

    #[test]
    fn what_cannot_be_honoured_is_named() {
        let err = |v: Value| {
            let r = request(v);
            r.check().and_then(|_| r.input_messages().map(|_| ())).and_then(|_| r.tool_request().map(|_| ())).unwrap_err().message
        };
        assert!(err(json!({"input": [{"type": "computer_call", "id": "x"}]})).contains("'computer_call' are not supported"));
        assert!(err(json!({"input": [{"type": "item_reference", "id": "msg_1"}]})).contains("item_reference"));
        assert!(err(json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})).contains("input_image"));
        assert!(err(json!({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops"}]})).contains("not JSON"));
        assert!(err(json!({"input": [{"type": "function_call_output", "output": "x"}]})).contains("needs 'call_id'"));
        assert!(err(json!({"input": "hi", "tools": [{"type": "web_search"}]})).contains("'web_search' are not supported"));
        assert!(err(json!({"input": "hi", "conversation": "conv_1"})).contains("'conversation' is not supported"));
        assert!(err(json!({"input": "hi", "include": ["file_search_call.results"]})).contains("include 'file_search_call.results'"));
        let r = request(json!({"input": "hi", "reasoning": {"effort": "none"}, "tools": [{"type": "function", "name": "f", "parameters": null}],
                               "tool_choice": {"type": "function", "name": "f"}}));
        assert_eq!(r.template_options().unwrap().enable_thinking, Some(false));
        assert_eq!(r.tool_request().unwrap().choice, ToolChoice::Function("f".into()));
    }
}

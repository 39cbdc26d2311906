//! Tool calls in model output, per family, read while the reply streams:
//! - `Hermes`: `<tool_call>{"name": …, "arguments": {…}}</tool_call>` (Qwen2.5,
//!   Qwen3, Qwen3.5, Hermes, SmolLM3), any number, text around them is content;
//! - `Llama3`: the whole reply is `<|python_tag|>` and/or a JSON object
//!   `{"name": …, "parameters": {…}}` (several joined by `;`);
//! - `QwenXml`: `<tool_call>\n<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n…</function>\n</tool_call>`
//!   (Qwen3-Coder, Qwen3.5, Qwen3-Next);
//! - `Mistral`: `[TOOL_CALLS]` then a JSON array of `{"name", "arguments"}`
//!   (v3) or `name[ARGS]{…}` per call (v11+: Mistral Small 3.x, Ministral 3).
//!
//! gpt-oss's harmony calls are read by the harmony parser (`chat::harmony`)
//! and reach the text stream in the Hermes form.
//!
//! The parser holds back only what could still become a tool call (a partial
//! opening marker, or the body of one); everything else streams out as text
//! at once. Whatever does not parse — a broken body, a missing end marker —
//! comes back as plain text, never an error and never lost.
//!
//! Longer than 450 lines: each format's streaming reader sits beside its
//! split-at-every-byte tests.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WireCall")]
pub struct ToolCall {
    /// The id an API client refers to it by (given by the server; the model
    /// writes none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them (a JSON object).
    pub arguments: Value,
}

impl ToolCall {
    pub fn new(name: impl Into<String>, arguments: Value) -> Self {
        ToolCall { id: String::new(), name: name.into(), arguments }
    }
}

/// A call as it is stored (`{id, name, arguments}`) or as OpenAI and Ollama
/// clients send it (`{id, type, function: {name, arguments}}`, the arguments
/// an object or JSON text).
#[derive(Deserialize)]
struct WireCall {
    #[serde(default)]
    id: String,
    name: Option<String>,
    arguments: Option<Value>,
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    arguments: Option<Value>,
}

impl TryFrom<WireCall> for ToolCall {
    type Error = String;
    fn try_from(w: WireCall) -> Result<Self, String> {
        let (name, arguments) = match (w.function, w.name) {
            (Some(f), _) => (f.name, f.arguments),
            (None, Some(name)) => (name, w.arguments),
            (None, None) => return Err("a tool call needs a function name".into()),
        };
        let arguments = match arguments {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::String(s)) => serde_json::from_str::<Value>(&s)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| format!("the arguments of the call to '{name}' are not a JSON object"))?,
            Some(v @ Value::Object(_)) => v,
            Some(_) => return Err(format!("the arguments of the call to '{name}' are not a JSON object")),
        };
        Ok(ToolCall { id: w.id, name, arguments })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    Text(String),
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ToolFormat {
    #[default]
    Hermes,
    QwenXml,
    Llama3,
    Mistral,
}

impl ToolFormat {
    /// The format a chat template asks for, from the markup it writes.
    pub fn detect(template: &str) -> Option<ToolFormat> {
        if template.contains("<function=") {
            Some(ToolFormat::QwenXml)
        } else if template.contains("<tool_call>") || template.contains("<|call|>") {
            Some(ToolFormat::Hermes)
        } else if template.contains("[TOOL_CALLS]") {
            Some(ToolFormat::Mistral)
        } else if template.contains("<|python_tag|>") || template.contains("\"parameters\"") {
            Some(ToolFormat::Llama3)
        } else {
            None
        }
    }
}

/// A call in the Hermes form, `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`,
/// with the arguments as written (JSON text).
pub fn hermes_text(name: &str, arguments: &str) -> String {
    format!("{HERMES_OPEN}\n{{\"name\": {}, \"arguments\": {}}}\n{HERMES_CLOSE}", Value::from(name), arguments.trim())
}

/// Reads tool calls out of a streamed reply.
pub struct ToolStream {
    format: ToolFormat,
    /// Text not yet handed out: a possible marker prefix, or a call's body.
    held: String,
    /// Inside a call (after its opening marker), or (Llama 3,
    /// Mistral) holding the rest of the reply.
    inside: bool,
    /// Llama 3: whether the reply's first non-blank text has been seen.
    started: bool,
}

pub(crate) const HERMES_OPEN: &str = "<tool_call>";
pub(crate) const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL_OPEN: &str = "[TOOL_CALLS]";
const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolStream {
    pub fn new(format: ToolFormat) -> Self {
        ToolStream { format, held: String::new(), inside: false, started: false }
    }

    /// Takes the next piece of the reply; returns what can be handed out now.
    pub fn push(&mut self, piece: &str) -> Vec<ToolEvent> {
        self.held.push_str(piece);
        let mut out = Vec::new();
        match self.format {
            ToolFormat::Hermes | ToolFormat::QwenXml => self.hermes(&mut out),
            ToolFormat::Mistral => self.until_marker(MISTRAL_OPEN, &mut out),
            ToolFormat::Llama3 => self.llama3(&mut out),
        }
        merge_text(out)
    }

    /// The reply ended: the calls held back, or their text if they do not parse.
    pub fn finish(mut self) -> Vec<ToolEvent> {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return vec![];
        }
        if !self.inside {
            return vec![ToolEvent::Text(held)];
        }
        let calls = match self.format {
            // An unclosed <tool_call>: not a call.
            ToolFormat::Hermes | ToolFormat::QwenXml => None,
            ToolFormat::Mistral => parse_mistral(&held),
            ToolFormat::Llama3 => parse_llama3(&held),
        };
        match calls {
            Some(calls) if !calls.is_empty() => calls.into_iter().map(ToolEvent::Call).collect(),
            _ => vec![ToolEvent::Text(held)],
        }
    }

    fn hermes(&mut self, out: &mut Vec<ToolEvent>) {
        loop {
            if self.inside {
                let Some(end) = self.held.find(HERMES_CLOSE) else { return };
                let body = self.held[HERMES_OPEN.len()..end].to_string();
                let whole = self.held[..end + HERMES_CLOSE.len()].to_string();
                self.held.drain(..end + HERMES_CLOSE.len());
                self.inside = false;
                let call = match self.format {
                    ToolFormat::QwenXml => parse_qwen_xml(body.trim()),
                    _ => parse_call(body.trim(), &["arguments", "parameters"]),
                };
                match call {
                    Some(call) => out.push(ToolEvent::Call(call)),
                    None => out.push(ToolEvent::Text(whole)),
                }
            } else {
                match self.held.find(HERMES_OPEN) {
                    Some(at) => {
                        out.push(ToolEvent::Text(self.held[..at].to_string()));
                        self.held.drain(..at);
                        self.inside = true;
                    }
                    None => {
                        let keep = partial_suffix(&self.held, HERMES_OPEN);
                        let cut = self.held.len() - keep;
                        out.push(ToolEvent::Text(self.held[..cut].to_string()));
                        self.held.drain(..cut);
                        return;
                    }
                }
            }
        }
    }

    /// Text streams until `marker`; from there on the rest of the reply is held
    /// (its calls are parsed at the end).
    fn until_marker(&mut self, marker: &str, out: &mut Vec<ToolEvent>) {
        if self.inside {
            return;
        }
        match self.held.find(marker) {
            Some(at) => {
                out.push(ToolEvent::Text(self.held[..at].to_string()));
                self.held.drain(..at);
                self.inside = true;
            }
            None => {
                let cut = self.held.len() - partial_suffix(&self.held, marker);
                out.push(ToolEvent::Text(self.held[..cut].to_string()));
                self.held.drain(..cut);
            }
        }
    }

    /// A Llama 3 reply is a tool call only as a whole: held from its start
    /// when that start is `<|python_tag|>` or `{`, streamed otherwise.
    fn llama3(&mut self, out: &mut Vec<ToolEvent>) {
        if self.inside {
            return;
        }
        if !self.started {
            let t = self.held.trim_start();
            if t.is_empty() {
                return;
            }
            if PYTHON_TAG.starts_with(t) && t.len() < PYTHON_TAG.len() {
                return; // could still be the tag
            }
            self.started = true;
            if t.starts_with(PYTHON_TAG) || t.starts_with('{') {
                self.inside = true;
                return;
            }
        }
        out.push(ToolEvent::Text(std::mem::take(&mut self.held)));
    }
}

/// Joins neighbouring text events and drops empty ones.
fn merge_text(events: Vec<ToolEvent>) -> Vec<ToolEvent> {
    let mut out: Vec<ToolEvent> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (_, ToolEvent::Text(t)) if t.is_empty() => {}
            (Some(ToolEvent::Text(prev)), ToolEvent::Text(t)) => prev.push_str(&t),
            (_, e) => out.push(e),
        }
    }
    out
}

/// How many bytes at the end of `s` could begin `marker`.
fn partial_suffix(s: &str, marker: &str) -> usize {
    (1..marker.len().min(s.len() + 1)).rev().find(|&n| s.is_char_boundary(s.len() - n) && marker.starts_with(&s[s.len() - n..])).unwrap_or(0)
}

/// `{"name": "...", "<args key>": {...}}` -> a call; arguments given as a
/// JSON string are read as JSON (some models quote them).
fn parse_call(text: &str, arg_keys: &[&str]) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(text).ok()?;
    call_from(&v, arg_keys)
}

fn call_from(v: &Value, arg_keys: &[&str]) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?.trim();
    if name.is_empty() {
        return None;
    }
    let args = arg_keys.iter().find_map(|k| v.get(*k)).cloned().unwrap_or(Value::Object(Default::default()));
    let args = match args {
        Value::String(s) => serde_json::from_str(&s).ok().filter(Value::is_object)?,
        Value::Object(_) => args,
        _ => return None,
    };
    Some(ToolCall::new(name, args))
}

/// `<function=NAME>\n<parameter=KEY>\nVALUE\n</parameter>\n…</function>`: a
/// value that reads as JSON other than a string (a number, a list…) is that
/// JSON, anything else is the string as written.
fn parse_qwen_xml(body: &str) -> Option<ToolCall> {
    let rest = body.strip_prefix("<function=")?;
    let (name, mut rest) = rest.split_once('>')?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    let mut args = serde_json::Map::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix("</function>") {
            return after.trim().is_empty().then(|| ToolCall::new(name, Value::Object(args)));
        }
        let p = rest.strip_prefix("<parameter=")?;
        let (key, p) = p.split_once('>')?;
        let end = p.find("</parameter>")?;
        let raw = p[..end].strip_prefix('\n').unwrap_or(&p[..end]);
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(v) if !v.is_string() => v,
            _ => Value::String(raw.to_string()),
        };
        args.insert(key.trim().to_string(), value);
        rest = &p[end + "</parameter>".len()..];
    }
}

fn parse_llama3(text: &str) -> Option<Vec<ToolCall>> {
    let body = text.trim_start();
    let body = body.strip_prefix(PYTHON_TAG).unwrap_or(body).trim();
    let body = body.strip_suffix("<|eom_id|>").unwrap_or(body).trim();
    // One object, or several separated by ';'.
    if let Some(call) = parse_call(body, &["parameters", "arguments"]) {
        return Some(vec![call]);
    }
    body.split(';').map(|part| parse_call(part.trim(), &["parameters", "arguments"])).collect()
}

fn parse_mistral(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    for part in text.split(MISTRAL_OPEN).map(str::trim).filter(|p| !p.is_empty()) {
        if part.starts_with('[') {
            // v3: a JSON array of calls.
            let arr: Vec<Value> = serde_json::from_str(part).ok()?;
            for v in &arr {
                calls.push(call_from(v, &["arguments", "parameters"])?);
            }
        } else {
            // v11+: name[ARGS]{json}
            let (name, args) = part.split_once("[ARGS]")?;
            let name = name.trim();
            let args: Value = serde_json::from_str(args.trim()).ok().filter(Value::is_object)?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return None;
            }
            calls.push(ToolCall::new(name, args));
        }
    }
    Some(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Runs `text` through the parser cut into pieces at every `step` bytes
    /// (on char boundaries), and in one piece; both must agree.
    fn run(format: ToolFormat, text: &str, step: usize) -> Vec<ToolEvent> {
        let mut s = ToolStream::new(format);
        let mut out = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let mut j = (i + step).min(text.len());
            while !text.is_char_boundary(j) {
                j += 1;
            }
            out.extend(s.push(&text[i..j]));
            i = j;
        }
        out.extend(s.finish());
        merge_text(out)
    }

    fn all_splits(format: ToolFormat, text: &str) -> Vec<ToolEvent> {
        let whole = run(format, text, text.len().max(1));
        for step in 1..12 {
            assert_eq!(run(format, text, step), whole, "{format:?} split every {step} bytes");
        }
        whole
    }

    fn call(name: &str, args: Value) -> ToolEvent {
        ToolEvent::Call(ToolCall::new(name, args))
    }

    #[test]
    fn hermes_calls_among_text_in_any_split() {
        let text = "Let me check. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\
                    <tool_call>{\"name\": \"time\", \"arguments\": \"{\\\"tz\\\": \\\"CET\\\"}\"}</tool_call> Done — ünïcode.";
        assert_eq!(
            all_splits(ToolFormat::Hermes, text),
            vec![
                ToolEvent::Text("Let me check. ".into()),
                call("get_weather", json!({"city": "Paris"})),
                call("time", json!({"tz": "CET"})),
                ToolEvent::Text(" Done — ünïcode.".into()),
            ]
        );
    }

    #[test]
    fn text_streams_at_once_and_only_a_marker_prefix_is_held() {
        let mut s = ToolStream::new(ToolFormat::Hermes);
        assert_eq!(s.push("Hello <tool"), vec![ToolEvent::Text("Hello ".into())]);
        assert_eq!(s.push("box>"), vec![ToolEvent::Text("<toolbox>".into())]);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn malformed_calls_come_back_as_text() {
        let broken = "x <tool_call>{\"name\": \"f\", \"arguments\": {oops}}</tool_call> y";
        assert_eq!(all_splits(ToolFormat::Hermes, broken), vec![ToolEvent::Text(broken.into())]);
        let unclosed = "a <tool_call>{\"name\": \"f\"";
        assert_eq!(all_splits(ToolFormat::Hermes, unclosed), vec![ToolEvent::Text(unclosed.into())]);
        let nameless = "<tool_call>{\"arguments\": {}}</tool_call>";
        assert_eq!(all_splits(ToolFormat::Hermes, nameless), vec![ToolEvent::Text(nameless.into())]);
        let bad_mistral = "[TOOL_CALLS][{\"name\": \"f\", \"arguments\": [1]}]";
        assert_eq!(all_splits(ToolFormat::Mistral, bad_mistral), vec![ToolEvent::Text(bad_mistral.into())]);
        let bad_llama = "{\"name\": \"f\", \"parameters\": ";
        assert_eq!(all_splits(ToolFormat::Llama3, bad_llama), vec![ToolEvent::Text(bad_llama.into())]);
    }

    #[test]
    fn qwen_xml_calls_with_typed_and_multiline_values() {
        let text = "I'll look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n\
                    <parameter=days>\n3\n</parameter>\n<parameter=note>\ntwo\nlines\n</parameter>\n</function>\n</tool_call>";
        assert_eq!(
            all_splits(ToolFormat::QwenXml, text),
            vec![ToolEvent::Text("I'll look.\n".into()), call("get_weather", json!({"city": "New York", "days": 3, "note": "two\nlines"}))]
        );
        let broken = "<tool_call>\n<function=f>\n<parameter=x>\n1\n</function>\n</tool_call>";
        assert_eq!(all_splits(ToolFormat::QwenXml, broken), vec![ToolEvent::Text(broken.into())]);
    }

    #[test]
    fn llama3_json_and_python_tag_calls() {
        let text = "<|python_tag|>{\"name\": \"search\", \"parameters\": {\"q\": \"mlx\"}}";
        assert_eq!(all_splits(ToolFormat::Llama3, text), vec![call("search", json!({"q": "mlx"}))]);
        let two = "{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"x\": 1}}";
        assert_eq!(all_splits(ToolFormat::Llama3, two), vec![call("a", json!({})), call("b", json!({"x": 1}))]);
        // Plain prose streams out untouched, whatever the split.
        assert_eq!(all_splits(ToolFormat::Llama3, "Paris is the capital."), vec![ToolEvent::Text("Paris is the capital.".into())]);
    }

    #[test]
    fn mistral_v3_and_v11_calls() {
        let v3 = "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}, {\"name\": \"neg\", \"arguments\": {\"x\": 3}}]";
        assert_eq!(all_splits(ToolFormat::Mistral, v3), vec![call("add", json!({"a": 1, "b": 2})), call("neg", json!({"x": 3}))]);
        let v11 = "Sure.[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Lyon\"}[TOOL_CALLS]time[ARGS]{}";
        assert_eq!(
            all_splits(ToolFormat::Mistral, v11),
            vec![ToolEvent::Text("Sure.".into()), call("get_weather", json!({"city": "Lyon"})), call("time", json!({}))]
        );
    }

    #[test]
    fn formats_are_told_from_templates() {
        assert_eq!(ToolFormat::detect("{{- '<tool_call>' }}"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::detect("[TOOL_CALLS]"), Some(ToolFormat::Mistral));
        assert_eq!(ToolFormat::detect("'<tool_call>\\n<function=' + name"), Some(ToolFormat::QwenXml));
        assert_eq!(ToolFormat::detect("<|python_tag|>"), Some(ToolFormat::Llama3));
        // gpt-oss's calls arrive in the Hermes form (see chat::harmony).
        assert_eq!(ToolFormat::detect("to=functions.{{ name }}<|call|>"), Some(ToolFormat::Hermes));
        assert_eq!(ToolFormat::detect("{{ message.content }}"), None);
    }
}

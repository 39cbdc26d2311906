//! Offering tools to a model: their definitions (`ToolSpec`), how a model's
//! template writes a call (`CallMarkup`), the grammar that forces one call
//! (`call_grammar`, for `tool_choice`), and the conversation rewritten for a
//! template that takes no tools (`inline_tools`). Reading calls out of the
//! reply is `tools`.

use super::tools::{hermes_text, ToolFormat};
use super::{Message, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A function the model may call: its name, what it does and its
/// arguments' JSON Schema (OpenAI's `function` object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// A JSON Schema for the arguments object.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

impl ToolSpec {
    /// A tool as OpenAI (`{"type": "function", "function": {…}}`) or Ollama
    /// clients send it, or the bare function object.
    pub fn from_value(v: &Value) -> Result<ToolSpec, String> {
        let f = if v["function"].is_object() {
            if !(v["type"].is_null() || v["type"] == "function") {
                return Err(format!("tools of type {} are not supported (only functions)", v["type"]));
            }
            &v["function"]
        } else {
            v
        };
        let spec: ToolSpec = serde_json::from_value(f.clone()).map_err(|e| format!("a tool is not a function definition: {e}"))?;
        let name_ok = !spec.name.is_empty()
            && spec.name.len() <= 64
            && spec.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(format!("tool name '{}' must be 1 to 64 letters, digits, '_', '-' or '.'", spec.name));
        }
        if !spec.parameters.is_object() {
            return Err(format!("the parameters of tool '{}' must be a JSON Schema object", spec.name));
        }
        Ok(spec)
    }

    /// The tool as chat templates and OpenAI clients write it:
    /// `{"type": "function", "function": {name, description, parameters}}`.
    pub fn as_function(&self) -> Value {
        serde_json::json!({"type": "function", "function": self})
    }
}

/// How a model's template writes a call, which is what a grammar must
/// produce to force one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMarkup {
    Hermes,
    QwenXml,
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}]` (Mistral v3).
    MistralJson,
    /// `[TOOL_CALLS]NAME[ARGS]{…}` (Mistral v11+).
    MistralArgs,
    /// gpt-oss: `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>`.
    Harmony,
}

impl CallMarkup {
    /// The markup a template writes calls in; templates that take no tools
    /// get Hearth's Hermes-form description (`inline_tools`).
    pub fn of(template: &str, harmony: bool) -> CallMarkup {
        if harmony {
            return CallMarkup::Harmony;
        }
        match ToolFormat::detect(template) {
            Some(ToolFormat::QwenXml) => CallMarkup::QwenXml,
            Some(ToolFormat::Llama3) => CallMarkup::Llama3,
            Some(ToolFormat::Mistral) if template.contains("[ARGS]") => CallMarkup::MistralArgs,
            Some(ToolFormat::Mistral) => CallMarkup::MistralJson,
            Some(ToolFormat::Hermes) | None => CallMarkup::Hermes,
        }
    }

    /// The parser that reads this markup from the text stream (harmony calls
    /// reach it in the Hermes form).
    pub fn reader(self) -> ToolFormat {
        match self {
            CallMarkup::Hermes | CallMarkup::Harmony => ToolFormat::Hermes,
            CallMarkup::QwenXml => ToolFormat::QwenXml,
            CallMarkup::Llama3 => ToolFormat::Llama3,
            CallMarkup::MistralJson | CallMarkup::MistralArgs => ToolFormat::Mistral,
        }
    }
}

/// A lark grammar (llguidance's syntax) for exactly one call of one of
/// `tools`, in `markup`, arguments valid against the tool's schema.
/// `marker(text)` writes a piece of markup: the control token it is in this
/// tokenizer, or the text.
pub fn call_grammar(markup: CallMarkup, tools: &[ToolSpec], marker: &dyn Fn(&str) -> String) -> String {
    let lit = |t: &str| Value::from(t).to_string();
    let json = |schema: &Value| {
        let mut schema = if schema.is_object() { schema.clone() } else { empty_object_schema() };
        // Fixed whitespace, as json.dumps writes it (", " and ": ", which is how
        // templates show calls): with free whitespace a small model can spend
        // its budget on newlines.
        schema["x-guidance"] = serde_json::json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
        format!("%json {schema}")
    };
    let mut rules = Vec::new();
    let mut alts = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let name = Value::from(t.name.as_str()).to_string();
        let body = match markup {
            CallMarkup::Hermes => format!(
                "{} {} args_{i} {} {}",
                marker("<tool_call>"),
                lit(&format!("\n{{\"name\": {name}, \"arguments\": ")),
                lit("}\n"),
                marker("</tool_call>")
            ),
            CallMarkup::Llama3 => format!("{} args_{i} {}", lit(&format!("{{\"name\": {name}, \"parameters\": ")), lit("}")),
            CallMarkup::MistralJson => format!(
                "{} {} args_{i} {}",
                marker("[TOOL_CALLS]"),
                lit(&format!("[{{\"name\": {name}, \"arguments\": ")),
                lit("}]")
            ),
            CallMarkup::MistralArgs => format!("{} {} {} args_{i}", marker("[TOOL_CALLS]"), lit(&t.name), marker("[ARGS]")),
            CallMarkup::Harmony => format!(
                "{} {} {} {} {} args_{i} {}",
                marker("<|channel|>"),
                lit(&format!("commentary to=functions.{} ", t.name)),
                marker("<|constrain|>"),
                lit("json"),
                marker("<|message|>"),
                marker("<|call|>")
            ),
            CallMarkup::QwenXml => {
                // One rule per parameter, in the schema's order; optional ones may be left out.
                let props = t.parameters["properties"].as_object().cloned().unwrap_or_default();
                let required: Vec<&str> =
                    t.parameters["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
                let mut params = String::new();
                for (j, (key, schema)) in props.iter().enumerate() {
                    // A string runs to the closing tag (its last newline is the
                    // template's); other values are JSON and a newline.
                    let value = if schema["type"] == "string" { "/[^<]*/".to_string() } else { format!("{} {}", json(schema), lit("\n")) };
                    rules.push(format!("param_{i}_{j}: {} {value} {}", lit(&format!("<parameter={key}>\n")), lit("</parameter>\n")));
                    let opt = if required.contains(&key.as_str()) { "" } else { "?" };
                    params.push_str(&format!(" param_{i}_{j}{opt}"));
                }
                format!(
                    "{} {}{params} {} {}",
                    marker("<tool_call>"),
                    lit(&format!("\n<function={}>\n", t.name)),
                    lit("</function>\n"),
                    marker("</tool_call>")
                )
            }
        };
        alts.push(format!("call_{i}"));
        rules.push(format!("call_{i}: {body}"));
        if markup != CallMarkup::QwenXml {
            rules.push(format!("args_{i}: {}", json(&t.parameters)));
        }
    }
    format!("start: {}\n{}\n", alts.join(" | "), rules.join("\n"))
}

/// A conversation with tools for a template that takes none: the tools are
/// described in the system message (Hermes form, which small models follow
/// best) and earlier calls are written into their assistant messages. Tool
/// results stay `tool` turns when `results_as_user` is false (ChatML
/// templates print any role, and small models answer from such a turn), or
/// become user turns in `<tool_response>` tags as Qwen's templates write them.
pub fn inline_tools(messages: &[Message], tools: &[ToolSpec], results_as_user: bool) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    if !tools.is_empty() {
        let mut text = String::from("You can call these functions (JSON Schema signatures):\n<tools>\n");
        for t in tools {
            text.push_str(&t.as_function().to_string());
            text.push('\n');
        }
        text.push_str(
            "</tools>\nTo call one, reply with only this, the arguments as a JSON object:\n\
             <tool_call>\n{\"name\": \"<function name>\", \"arguments\": {<arguments>}}\n</tool_call>",
        );
        match messages.first() {
            Some(m) if m.role == Role::System => out.push(Message::system(format!("{}\n\n{text}", m.content))),
            _ => out.push(Message::system(text)),
        }
    }
    let skip = usize::from(!tools.is_empty() && messages.first().is_some_and(|m| m.role == Role::System));
    for m in &messages[skip..] {
        match m.role {
            Role::Tool if !results_as_user => out.push(Message::new(Role::Tool, m.content.clone())),
            Role::Tool => {
                let response = format!("<tool_response>\n{}\n</tool_response>", m.content);
                match out.last_mut() {
                    // Results of one turn's calls share one user message.
                    Some(prev) if prev.role == Role::User && prev.content.ends_with("</tool_response>") => {
                        prev.content = format!("{}\n{response}", prev.content)
                    }
                    _ => out.push(Message::user(response)),
                }
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut content = m.content.clone();
                for c in &m.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&hermes_text(&c.name, &c.arguments.to_string()));
                }
                out.push(Message::assistant(content));
            }
            _ => out.push(Message::new(m.role, m.content.clone())),
        }
    }
    out
}

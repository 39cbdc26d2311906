//! Hugging Face chat templates (Jinja) rendered with minijinja, with the
//! Python-compatible string/dict methods templates rely on (`.strip()`,
//! `.startswith()`, `.items()`…), `raise_exception` and `strftime_now`.

use super::tool_prompt::{inline_tools, CallMarkup, ToolSpec};
use super::{Message, Role};
use crate::error::{Error, Result};
use super::template_compat::{cap_assignments, hearth_cap, python_line_continuations, raise_exception, strftime_now, tojson};
use minijinja::{context, Environment, ErrorKind, Value};

/// Used when a model ships no template (base models): a plain transcript.
const FALLBACK: &str = "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    pub source: String,
    pub is_fallback: bool,
    /// gpt-oss's harmony format: replies arrive in channels (`reasoning` as
    /// analysis, the answer as final) and earlier reasoning goes back in each
    /// assistant message's `thinking` field, which the template drops.
    pub harmony: bool,
    /// Variables the template documents beyond the messages.
    pub options: TemplateOptions,
    /// The template takes `tools` (else Hearth describes them in the system
    /// message, `tools::inline_tools`).
    pub takes_tools: bool,
    /// How the model writes a tool call.
    pub call_markup: CallMarkup,
}

/// Variables some templates take besides the conversation; unset ones are left
/// undefined so the template's own default applies.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TemplateOptions {
    pub reasoning_effort: Option<super::params::ReasoningEffort>,
    /// `enable_thinking` (Qwen3, Qwen3.5, SmolLM3): false asks the model to
    /// answer without a reasoning section.
    pub enable_thinking: Option<bool>,
    /// Functions offered to the model (an API request's `tools`).
    pub tools: Option<Vec<ToolSpec>>,
}

impl TemplateOptions {
    /// Whether these options offer the model any tools (its reply is then read for calls).
    pub fn offers_tools(&self) -> bool {
        self.tools.as_ref().is_some_and(|t| !t.is_empty())
    }

    /// These options with `over`'s set fields taking precedence.
    pub fn with(&self, over: &TemplateOptions) -> TemplateOptions {
        TemplateOptions {
            reasoning_effort: over.reasoning_effort.or(self.reasoning_effort),
            enable_thinking: over.enable_thinking.or(self.enable_thinking),
            tools: over.tools.clone().or_else(|| self.tools.clone()),
        }
    }
}

/// "on"/"off" (also true/false, yes/no) for `--thinking`.
pub fn parse_on_off(s: &str) -> crate::error::Result<bool> {
    match s.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        other => Err(Error::InvalidArgument(format!("thinking must be on or off, not '{other}'"))),
    }
}

/// Limits that make a hostile template fail fast instead of stalling the
/// engine: instructions (a real template with a long history uses well under
/// a million), nesting, and the size of what it writes.
const TEMPLATE_FUEL: u64 = 20_000_000;
const TEMPLATE_RECURSION: usize = 100;
pub(crate) const MAX_PROMPT_BYTES: usize = 64 << 20;

/// A writer that refuses to grow past a cap.
struct CappedWriter {
    out: Vec<u8>,
    cap: usize,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + buf.len() > self.cap {
            return Err(std::io::Error::other("the rendered prompt is too large"));
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Byte ranges of `text` that hold each message's content, found in order
/// (verbatim, or trimmed as many templates print it). Content a template
/// rewrote beyond that is not marked.
pub fn content_spans(text: &str, messages: &[Message]) -> Vec<std::ops::Range<usize>> {
    let mut spans = Vec::new();
    let mut at = 0;
    for m in messages {
        for needle in [m.content.as_str(), m.content.trim()] {
            if needle.is_empty() {
                break;
            }
            if let Some(pos) = text.get(at..).and_then(|t| t.find(needle)) {
                let start = at + pos;
                spans.push(start..start + needle.len());
                at = start + needle.len();
                break;
            }
        }
    }
    spans
}

/// Gemma's turn format, for GGUF files that ship without a template (the Gemma 3
/// 270M GGUF does). Like Google's own template it puts a system message at the
/// top of the first user turn.
const GEMMA: &str = "{{ bos_token }}\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set msgs = messages[1:] -%}\
{%- else -%}{%- set prefix = '' -%}{%- set msgs = messages -%}{%- endif -%}\
{%- for m in msgs -%}\
{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// A built-in template for architectures whose GGUF files often lack one.
pub fn builtin_for(arch: &str) -> Option<&'static str> {
    matches!(arch, "gemma3" | "gemma3_text" | "gemma2" | "gemma").then_some(GEMMA)
}

impl ChatTemplate {
    pub fn new(source: Option<String>) -> Result<Self> {
        let is_fallback = source.is_none();
        let source = source.unwrap_or_else(|| FALLBACK.to_string());
        let mut env = Environment::new();
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_recursion_limit(TEMPLATE_RECURSION);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_function("__hearth_cap", hearth_cap);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", cap_assignments(&python_line_continuations(&source)))
            .map_err(|e| Error::Template(format!("the model's chat template does not parse: {e}")))?;
        let harmony = source.contains("<|channel|>") && source.contains("<|message|>");
        let takes_tools = uses_variable(&source, "tools");
        let call_markup = if takes_tools { CallMarkup::of(&source, harmony) } else { CallMarkup::Hermes };
        Ok(ChatTemplate { env, source, is_fallback, harmony, options: TemplateOptions::default(), takes_tools, call_markup })
    }

    /// Renders a conversation for generation. A template that rejects a system
    /// role (Gemma's) gets it folded into the first user turn. Returns the text
    /// and the messages as rendered (for `content_spans`).
    pub fn render_conversation(
        &self,
        messages: &[Message],
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<(String, Vec<Message>)> {
        let tools = self.options.tools.as_deref().unwrap_or_default();
        let has_tool_turns = messages.iter().any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        if !self.takes_tools && (!tools.is_empty() || has_tool_turns) {
            // Tool results as `tool` turns where the template prints them
            // (each result's text is in the prompt), else as user turns.
            let inlined = inline_tools(messages, tools, false);
            if let Ok(text) = self.render(&inlined, true, bos_token, eos_token) {
                let shown = |m: &Message| m.role != Role::Tool || text.contains(m.content.trim());
                if inlined.iter().all(shown) {
                    return Ok((text, inlined));
                }
            }
            let inlined = inline_tools(messages, tools, true);
            return Ok((self.render(&inlined, true, bos_token, eos_token)?, inlined));
        }
        // Harmony templates get reasoning apart from the answer (`render`
        // splits it out); the text holds only the answers of earlier turns.
        let as_rendered = || -> Vec<Message> {
            if !self.harmony {
                return messages.to_vec();
            }
            messages.iter().map(|m| Message { content: super::reply::split_reasoning(&m.content).1.to_string(), reasoning: String::new(), ..m.clone() }).collect()
        };
        match self.render(messages, true, bos_token, eos_token) {
            Ok(t) => Ok((t, as_rendered())),
            Err(e) if messages.first().is_some_and(|m| m.role == super::Role::System) && messages.len() > 1 => {
                let mut folded = messages[1..].to_vec();
                folded[0].content = format!("{}\n\n{}", messages[0].content, folded[0].content);
                let text = self.render(&folded, true, bos_token, eos_token).map_err(|_| e)?;
                Ok((text, folded))
            }
            Err(e) => Err(e),
        }
    }

    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(e.to_string()))?;
        // Tool results name their function, as some templates print it.
        let names: std::collections::HashMap<&str, &str> =
            messages.iter().flat_map(|m| &m.tool_calls).map(|c| (c.id.as_str(), c.name.as_str())).collect();
        let msgs: Vec<Value> = messages.iter().map(|m| Value::from_serialize(self.message_value(m, &names))).collect();
        let mut vars = serde_json::Map::new();
        if let Some(tools) = self.options.tools.as_ref().filter(|t| !t.is_empty() && self.takes_tools) {
            vars.insert("tools".into(), tools.iter().map(ToolSpec::as_function).collect());
        }
        if let Some(effort) = self.options.reasoning_effort {
            vars.insert("reasoning_effort".into(), effort.as_str().into());
        }
        if let Some(on) = self.options.enable_thinking {
            vars.insert("enable_thinking".into(), on.into());
        }
        let mut out = CappedWriter { out: Vec::new(), cap: MAX_PROMPT_BYTES };
        tmpl.render_captured_to(
            context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => bos_token.unwrap_or(""),
                eos_token => eos_token.unwrap_or(""),
                ..Value::from_serialize(&vars)
            },
            &mut out,
        )
        .map_err(|e| {
            let mut msg = match e.kind() {
                ErrorKind::OutOfFuel => "the chat template ran too long (an endless or huge loop)".to_string(),
                ErrorKind::WriteFailure => format!("the rendered prompt is too large (over {} MB)", MAX_PROMPT_BYTES >> 20),
                _ => e.to_string(),
            };
            if let Some(detail) = e.detail() {
                msg = format!("{msg}: {detail}");
            }
            Error::Template(msg)
        })?;
        String::from_utf8(out.out).map_err(|_| Error::Template("the template wrote invalid UTF-8".into()))
    }

    /// A message as Hugging Face templates read it: tool calls as
    /// `{id, type: "function", function: {name, arguments}}` with the
    /// arguments an object, a tool result with its call's id and name, and
    /// (harmony) earlier reasoning in `thinking`.
    fn message_value(&self, m: &Message, names: &std::collections::HashMap<&str, &str>) -> serde_json::Value {
        let mut v = serde_json::json!({"role": m.role, "content": m.content});
        if m.role == Role::Assistant {
            // Reasoning kept apart (the engine's replies), or inline in
            // `<think>` (assistant turns as API clients send them).
            let (thinking, answer) = match super::reply::split_reasoning(&m.content) {
                _ if !m.reasoning.is_empty() => (Some(m.reasoning.as_str()), m.content.as_str()),
                split => split,
            };
            if let Some(thinking) = thinking {
                if self.harmony {
                    v["content"] = answer.into();
                    v["thinking"] = thinking.into();
                } else if !m.reasoning.is_empty() {
                    // Qwen3-style templates read it here and drop it from
                    // earlier turns themselves.
                    v["reasoning_content"] = thinking.into();
                }
            }
        }
        if !m.tool_calls.is_empty() {
            v["tool_calls"] = m
                .tool_calls
                .iter()
                .map(|c| serde_json::json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
                .collect();
        }
        if let Some(id) = &m.tool_call_id {
            v["tool_call_id"] = id.as_str().into();
            if let Some(name) = names.get(id.as_str()) {
                v["name"] = (*name).into();
            }
        }
        v
    }
}

/// Whether `source` uses a variable `name` (not as part of a longer name
/// such as `xml_tools`).
fn uses_variable(source: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    source.match_indices(name).any(|(at, _)| {
        let before = source[..at].chars().next_back();
        let after = source[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, msgs: &[Message]) -> Result<String> {
        ChatTemplate::new(Some(src.to_string()))?.render(msgs, true, Some("<s>"), Some("</s>"))
    }

    #[test]
    fn templates_use_python_methods_loop_controls_dates_and_exceptions() {
        let msgs = [Message::system("  Be brief.  "), Message::user("hello world"), Message::assistant("hi"), Message::user("again")];
        // Python string methods (pycompat) and loop controls.
        let src = "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}\
                   {{ m.role.upper() }}:{{ m.content.strip().split(' ')[0] }}{% if m.content.startswith('hello') %}!{% endif %};\
                   {% if loop.index >= 3 %}{% break %}{% endif %}{% endfor %}";
        assert_eq!(render(src, &msgs).unwrap(), "USER:hello!;ASSISTANT:hi;");
        // strftime_now, as Llama 3.x templates call it for the date line.
        let out = render("{{ strftime_now('%d %b %Y') }}", &msgs).unwrap();
        assert!(out.len() == 11 && out[7..].parse::<u32>().unwrap() >= 2024, "{out}");
        // raise_exception becomes a template error carrying the template's message.
        let e = render("{{ raise_exception('Conversation roles must alternate') }}", &msgs).unwrap_err();
        assert!(matches!(&e, Error::Template(m) if m.contains("Conversation roles must alternate")), "{e}");
    }

    #[test]
    fn hostile_templates_fail_fast() {
        let msgs = [Message::user("hi")];
        let t = std::time::Instant::now();
        // 10^15 iterations: out of fuel long before.
        let e = render(
            "{% for a in range(99999) %}{% for b in range(99999) %}{% for c in range(99999) %}{% endfor %}{% endfor %}{% endfor %}",
            &msgs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("ran too long"), "{e}");
        let e = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", &msgs).unwrap_err();
        assert!(!e.to_string().is_empty());
        let e = render("{% for a in range(99999) %}{{ 'y' * 1000 }}{% endfor %}", &msgs).unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        // A namespace string doubled in a loop: 2^60 bytes if nothing stopped it.
        let rss0 = crate::sys::process_rss();
        let e = render(
            "{%- set ns = namespace(s='ab') -%}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
            &msgs,
        )
        .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        assert!(crate::sys::process_rss() < rss0 + (1 << 30), "memory grew past 1 GB");
        assert!(t.elapsed() < std::time::Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn assignments_are_capped_without_changing_what_templates_mean() {
        assert_eq!(
            cap_assignments("{%- set x = 'a' ~ b -%}{% set ns.y=1 %}{% if a == 1 %}{% set z %}k{% endset %}{% raw %}{% set r = 1 %}{% endraw %}"),
            "{%- set x = __hearth_cap('a' ~ b) -%}{% set ns.y = __hearth_cap(1) %}{% if a == 1 %}{% set z %}k{% endset %}{% raw %}{% set r = 1 %}{% endraw %}"
        );
        // A `%}` inside a string: the tag is left as it is.
        assert_eq!(cap_assignments("{% set s = 'a%}' %}"), "{% set s = 'a%}' %}");
        let out = render("{% set ns = namespace(t='') %}{% for m in messages %}{% set ns.t = ns.t ~ m.content %}{% endfor %}{{ ns.t }}", &[Message::user("x"), Message::user("y")]);
        assert_eq!(out.unwrap(), "xy");
    }

    #[test]
    fn backslash_newline_in_a_string_literal_continues_the_line_as_in_python() {
        let src = "{{ 'one \\\ntwo' }}|{{ \"a\\\"b\" }}|keep \\\ntext";
        assert_eq!(render(src, &[Message::user("x")]).unwrap(), "one two|a\"b|keep \\\ntext");
    }

    #[test]
    fn content_spans_find_each_message_in_order() {
        let msgs = [Message::user(" hi "), Message::assistant("hi")];
        let text = "<u>hi</u><a>hi</a>";
        let spans = content_spans(text, &msgs);
        assert_eq!(spans, vec![3..5, 12..14]);
    }

    #[test]
    fn gemma_format_folds_the_system_prompt() {
        let t = ChatTemplate::new(builtin_for("gemma3").map(String::from)).unwrap();
        let msgs = [Message::system("Be brief."), Message::user("Hi"), Message::assistant("Hello!"), Message::user("Bye")];
        assert_eq!(
            t.render(&msgs, true, Some("<bos>"), None).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}

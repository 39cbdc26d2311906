//! Hugging Face chat templates (Jinja) rendered with minijinja, with the
//! Python-compatible string/dict methods templates rely on (`.strip()`,
//! `.startswith()`, `.items()`…), `raise_exception` and `strftime_now`.

use super::Message;
use crate::error::{Error, Result};
use minijinja::{context, Environment, ErrorKind, Value};

/// Used when a model ships no template (base models): a plain transcript.
const FALLBACK: &str = "{% for m in messages %}{{ m.role | capitalize }}: {{ m.content }}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

pub struct ChatTemplate {
    env: Environment<'static>,
    pub source: String,
    pub is_fallback: bool,
}

fn raise_exception(msg: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

fn strftime_now(format: String) -> String {
    // Templates (Llama 3.x) print today's date; local time, formatted strftime-style.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = now.div_euclid(86400);
    // Civil-from-days (Howard Hinnant's algorithm), UTC.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    const MONTHS: [&str; 12] = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ];
    let month = MONTHS[(m - 1) as usize];
    format
        .replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", month)
        .replace("%b", &month[..3])
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
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_template_owned("chat", source.clone())
            .map_err(|e| Error::Template(format!("the model's chat template does not parse: {e}")))?;
        Ok(ChatTemplate { env, source, is_fallback })
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
        let msgs: Vec<Value> = messages
            .iter()
            .map(|m| Value::from_serialize(m))
            .collect();
        tmpl.render(context! {
            messages => msgs,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
        .map_err(|e| {
            let mut msg = e.to_string();
            if let Some(detail) = e.detail() {
                msg = format!("{msg}: {detail}");
            }
            Error::Template(msg)
        })
    }
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

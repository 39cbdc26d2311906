//! `hearth render` (the exact prompt text a conversation becomes) and
//! `hearth tokenize` (token ids and pieces): the tools for debugging templates
//! and tokenizers, reading only the tokenizer and template, never the weights.

use super::model_path;
use anyhow::{anyhow, bail, Result};
use hearth::chat::template::{content_spans, ChatTemplate};
use hearth::chat::tokenizer::TextTokenizer;
use hearth::chat::tool_prompt::ToolSpec;
use hearth::chat::Message;
use hearth::models::load::read_chat_parts;
use std::path::Path;

/// Messages from a JSON file: `[{"role": "user", "content": "…"}]` or
/// `{"messages": […], "tools": […]}` (tools as OpenAI writes them).
fn read_messages(path: &Path) -> Result<(Vec<Message>, Option<Vec<ToolSpec>>)> {
    let text = hearth::files::read_small_text(path, 64 << 20)?.ok_or_else(|| anyhow!("{} does not exist", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let tools = match v["tools"].as_array() {
        Some(list) => Some(list.iter().map(ToolSpec::from_value).collect::<Result<Vec<_>, String>>().map_err(|e| anyhow!("{}: {e}", path.display()))?),
        None => None,
    };
    let list = if v["messages"].is_array() { v["messages"].clone() } else { v };
    let msgs: Vec<Message> = serde_json::from_value(list)
        .map_err(|e| anyhow!("{}: expected a list of {{\"role\", \"content\"}} messages: {e}", path.display()))?;
    if msgs.is_empty() {
        bail!("{} holds no messages", path.display());
    }
    Ok((msgs, tools))
}

fn chat_parts(model: &Option<String>, template: Option<&Path>) -> Result<(TextTokenizer, ChatTemplate)> {
    let (tok, tmpl) = read_chat_parts(&model_path(model)?)?;
    match template {
        Some(t) => {
            let src = hearth::files::read_small_text(t, 4 << 20)?.ok_or_else(|| anyhow!("{} does not exist", t.display()))?;
            Ok((tok, ChatTemplate::new(Some(src))?))
        }
        None => Ok((tok, tmpl)),
    }
}

pub fn render(
    model: &Option<String>,
    template: Option<&Path>,
    messages: &Path,
    tokens: bool,
    effort: Option<&str>,
    thinking: Option<&str>,
) -> Result<()> {
    let (msgs, tools) = read_messages(messages)?;
    let (tok, mut tmpl) = chat_parts(model, template)?;
    tmpl.options.tools = tools;
    tmpl.options.reasoning_effort = effort.map(str::parse).transpose()?;
    tmpl.options.enable_thinking = thinking.map(hearth::chat::template::parse_on_off).transpose()?;
    let (text, rendered) = tmpl.render_conversation(&msgs, tok.bos_token.as_deref(), tok.eos_token.as_deref())?;
    if tokens {
        let ids = tok.encode_prompt_guarded(&text, &content_spans(&text, &rendered))?;
        print_tokens(&tok, &ids);
    } else {
        print!("{text}");
    }
    Ok(())
}

pub fn tokenize(model: &Option<String>, text: &str, special: bool) -> Result<()> {
    let (tok, _) = chat_parts(model, None)?;
    // Without --special the text is read as a message would be: control-token
    // strings stay text.
    // One guarded range (the whole text), not the numbers in it.
    #[allow(clippy::single_range_in_vec_init)]
    let whole = if special { vec![] } else { vec![0..text.len()] };
    let ids = tok.encode_prompt_guarded(text, &whole)?;
    print_tokens(&tok, &ids);
    Ok(())
}

fn print_tokens(tok: &TextTokenizer, ids: &[u32]) {
    for &id in ids {
        let piece = if tok.is_special(id) { format!("<special {id}>") } else { format!("{:?}", tok.decode(&[id])) };
        println!("{id}\t{piece}");
    }
    eprintln!("{} tokens", ids.len());
}

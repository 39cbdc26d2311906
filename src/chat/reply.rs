//! A reply's typed parts — reasoning, answer text, tool calls — read once, in
//! the engine, from the text the model writes, however its markup is cut
//! across tokens. The app and each API dialect only render them.
//!
//! The readings, per family: reasoning inside `<think>…</think>` at the start
//! (Qwen3, DeepSeek-R1, SmolLM3; gpt-oss's analysis channel, which the
//! engine's harmony stream writes in the same tags), or from the first token
//! when the prompt already opened the block (Qwen3.5's `<think>\n` at the end
//! of the generation prompt); tool calls in the model's own markup
//! (`tools::ToolStream`), only when the request offered tools.

use super::tools::{ToolCall, ToolEvent, ToolFormat, ToolStream};

/// One piece of a reply, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Part {
    Reasoning(String),
    Content(String),
    /// A tool call with its id (`{prefix}{n}`).
    Call(ToolCall),
}

/// A whole reply's parts gathered: (content, reasoning, calls).
pub fn gather(parts: Vec<Part>) -> (String, String, Vec<ToolCall>) {
    let (mut content, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for p in parts {
        match p {
            Part::Reasoning(r) => reasoning.push_str(&r),
            Part::Content(c) => content.push_str(&c),
            Part::Call(c) => calls.push(c),
        }
    }
    (content, reasoning, calls)
}

/// Whether a rendered generation prompt leaves the reply inside a reasoning
/// block (it ends with an open `<think>`).
pub fn prompt_opens_reasoning(prompt_tail: &str) -> bool {
    let t = prompt_tail.trim_end();
    t.ends_with("<think>")
}

/// Reads a streamed reply into parts.
pub struct ReplyReader {
    reasoning: Option<ReasoningSplit>,
    tools: Option<ToolStream>,
    id_prefix: String,
    calls: usize,
}

impl ReplyReader {
    /// Text as is: all content (a prompt given without a template).
    pub fn plain() -> Self {
        ReplyReader { reasoning: None, tools: None, id_prefix: String::new(), calls: 0 }
    }

    /// A chat reply: reasoning split out (from the start when `open`: the
    /// prompt opened the block), and calls read in `tools`'s format when the
    /// request offered tools (None: the rest is all content). Call ids are
    /// `id_prefix` and a count.
    pub fn chat(open: bool, tools: Option<ToolFormat>, id_prefix: String) -> Self {
        let reasoning = if open { ReasoningSplit::opened() } else { ReasoningSplit::default() };
        ReplyReader { reasoning: Some(reasoning), tools: tools.map(ToolStream::new), id_prefix, calls: 0 }
    }

    /// Whether the reply is inside its reasoning block now.
    pub fn thinking(&self) -> bool {
        self.reasoning.as_ref().is_some_and(|s| s.state == SplitState::Thinking)
    }

    pub fn push(&mut self, text: &str) -> Vec<Part> {
        let (r, c) = match self.reasoning.as_mut() {
            Some(s) => s.push(text),
            None => (String::new(), text.to_string()),
        };
        let mut out = Vec::new();
        if !r.is_empty() {
            out.push(Part::Reasoning(r));
        }
        self.content(c, &mut out);
        out
    }

    /// The reply ended: what was held back.
    pub fn finish(&mut self) -> Vec<Part> {
        let mut out = Vec::new();
        if let Some(s) = self.reasoning.as_mut() {
            let (r, c) = s.finish();
            if !r.is_empty() {
                out.push(Part::Reasoning(r));
            }
            self.content(c, &mut out);
        }
        if let Some(t) = self.tools.take() {
            let events = t.finish();
            self.add(events, &mut out);
        }
        out
    }

    fn content(&mut self, c: String, out: &mut Vec<Part>) {
        match self.tools.as_mut() {
            Some(t) => {
                let events = t.push(&c);
                self.add(events, out);
            }
            None if !c.is_empty() => out.push(Part::Content(c)),
            None => {}
        }
    }

    fn add(&mut self, events: Vec<ToolEvent>, out: &mut Vec<Part>) {
        for e in events {
            match e {
                ToolEvent::Text(t) if !t.is_empty() => out.push(Part::Content(t)),
                ToolEvent::Text(_) => {}
                ToolEvent::Call(mut call) => {
                    call.id = format!("{}{}", self.id_prefix, self.calls);
                    self.calls += 1;
                    out.push(Part::Call(call));
                }
            }
        }
    }
}

/// Splits streamed text into reasoning (inside `<think>…</think>` at the start
/// of the reply) and content, however the tags are cut across pieces. The
/// whitespace templates put between the block and the answer is dropped.
#[derive(Default)]
pub struct ReasoningSplit {
    held: String,
    state: SplitState,
}

#[derive(Default, PartialEq, Debug)]
enum SplitState {
    #[default]
    Start,
    Thinking,
    /// Just past `</think>`: leading whitespace is not the answer.
    Closed,
    Answer,
}

impl ReasoningSplit {
    /// A reply that starts inside the block (the prompt opened it).
    pub fn opened() -> Self {
        ReasoningSplit { held: String::new(), state: SplitState::Thinking }
    }

    /// Returns (reasoning, content) released by this piece.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut r, mut c) = (String::new(), String::new());
        loop {
            match self.state {
                SplitState::Start => {
                    let t = self.held.trim_start();
                    if t.starts_with("<think>") {
                        let at = self.held.find("<think>").expect("just seen") + "<think>".len();
                        self.held.drain(..at);
                        self.state = SplitState::Thinking;
                    } else if t.is_empty() || "<think>".starts_with(t) {
                        return (r, c); // could still become the tag
                    } else {
                        self.state = SplitState::Answer;
                    }
                }
                SplitState::Thinking => match self.held.find("</think>") {
                    Some(end) => {
                        r.push_str(&self.held[..end]);
                        self.held.drain(..end + "</think>".len());
                        self.state = SplitState::Closed;
                    }
                    None => {
                        // Keep a tail that may be the start of the closing tag.
                        let keep = (1.."</think>".len()).rev().find(|&n| self.held.ends_with(&"</think>"[..n])).unwrap_or(0);
                        let cut = self.held.len() - keep;
                        r.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return (r, c);
                    }
                },
                SplitState::Closed => {
                    let lead = self.held.len() - self.held.trim_start().len();
                    self.held.drain(..lead);
                    if self.held.is_empty() {
                        return (r, c);
                    }
                    self.state = SplitState::Answer;
                }
                SplitState::Answer => {
                    c.push_str(&self.held);
                    self.held.clear();
                    return (r, c);
                }
            }
        }
    }

    /// The reply ended: what was held back (a tag that never completed is text).
    pub fn finish(&mut self) -> (String, String) {
        let held = std::mem::take(&mut self.held);
        match self.state {
            SplitState::Thinking => (held, String::new()),
            SplitState::Closed => (String::new(), String::new()),
            SplitState::Start | SplitState::Answer => (String::new(), held),
        }
    }
}

/// A whole reply stored as `<think>reasoning</think>answer` split into its
/// reasoning and its answer (conversations saved before replies had parts,
/// and assistant turns sent to the APIs); a reply without a closed reasoning
/// block is all answer.
pub fn split_reasoning(content: &str) -> (Option<&str>, &str) {
    let trimmed = content.trim_start();
    if let Some(rest) = trimmed.strip_prefix("<think>") {
        if let Some(end) = rest.find("</think>") {
            return (Some(&rest[..end]), rest[end + "</think>".len()..].trim_start());
        }
    }
    (None, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(reader: impl Fn() -> ReplyReader, text: &str, cut: usize) -> (String, String, Vec<ToolCall>) {
        let mut s = reader();
        let mut parts = s.push(&text[..cut]);
        parts.extend(s.push(&text[cut..]));
        parts.extend(s.finish());
        let (content, reasoning, calls) = gather(parts);
        (reasoning, content, calls)
    }

    #[test]
    fn replies_split_into_reasoning_text_and_calls_across_any_cut() {
        let text = "<think>Need the weather.</think>\n\nChecking. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        let mut want = ToolCall::new("get_weather", serde_json::json!({"city": "Oslo"}));
        want.id = "call_7_0".into();
        for cut in 0..=text.len() {
            let got = read(|| ReplyReader::chat(false, Some(ToolFormat::Hermes), "call_7_".into()), text, cut);
            assert_eq!(got, ("Need the weather.".into(), "Checking. ".into(), vec![want.clone()]), "cut at {cut}");
        }
        // Without tools the markup is content; without a template, all of it is.
        let got = read(|| ReplyReader::chat(false, None, String::new()), "<tool_call>x</tool_call>", 3);
        assert_eq!(got, (String::new(), "<tool_call>x</tool_call>".into(), vec![]));
        let got = read(ReplyReader::plain, "<think>a</think>b", 4);
        assert_eq!(got, (String::new(), "<think>a</think>b".into(), vec![]));
    }

    #[test]
    fn a_prompt_that_opened_the_block_makes_the_reply_start_in_reasoning() {
        assert!(prompt_opens_reasoning("<|im_start|>assistant\n<think>\n"));
        assert!(!prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
        let text = "Two and two.\n</think>\n\nIt is 4.";
        for cut in 0..=text.len() {
            let got = read(|| ReplyReader::chat(true, None, String::new()), text, cut);
            assert_eq!(got, ("Two and two.\n".into(), "It is 4.".into(), vec![]), "cut at {cut}");
        }
        // Cut off while thinking: all of it is reasoning, the held tail too.
        assert_eq!(read(|| ReplyReader::chat(true, None, String::new()), "Hmm </thi", 5), ("Hmm </thi".into(), String::new(), vec![]));
    }

    #[test]
    fn held_back_text_is_released_at_the_end() {
        // Text that could have become the tag, and then the reply ended.
        assert_eq!(read(|| ReplyReader::chat(false, None, String::new()), "<thi", 2), (String::new(), "<thi".into(), vec![]));
        assert_eq!(read(|| ReplyReader::chat(false, None, String::new()), "Plain answer", 5), (String::new(), "Plain answer".into(), vec![]));
    }

    #[test]
    fn stored_replies_split_whole() {
        assert_eq!(split_reasoning("<think>hmm</think>\n\nAnswer"), (Some("hmm"), "Answer"));
        assert_eq!(split_reasoning("No block"), (None, "No block"));
        assert_eq!(split_reasoning("<think>never closed"), (None, "<think>never closed"));
    }
}

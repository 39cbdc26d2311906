//! What a chat reply's text becomes in the APIs: reasoning (`<think>…</think>`
//! at the start, or gpt-oss's analysis channel as the engine writes it),
//! answer text, and the tool calls in it when the request offered tools.

use crate::chat::tools::{ToolCall, ToolEvent, ToolFormat, ToolStream};

/// One piece of a reply, in order.
#[derive(Debug, Clone, PartialEq)]
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

/// Splits a streamed reply into parts, however the markup is cut across pieces.
pub struct ReplySplit {
    reasoning: ReasoningSplit,
    tools: Option<ToolStream>,
    id_prefix: String,
    calls: usize,
}

impl ReplySplit {
    /// `tools`: the format to read calls in, or None when the request offered
    /// no tools (the text is all content then). Call ids are `id_prefix` and a count.
    pub fn new(tools: Option<ToolFormat>, id_prefix: String) -> Self {
        ReplySplit { reasoning: ReasoningSplit::default(), tools: tools.map(ToolStream::new), id_prefix, calls: 0 }
    }

    pub fn push(&mut self, text: &str) -> Vec<Part> {
        let (r, c) = self.reasoning.push(text);
        let mut out = Vec::new();
        if !r.is_empty() {
            out.push(Part::Reasoning(r));
        }
        match self.tools.as_mut() {
            Some(t) => {
                let events = t.push(&c);
                self.add(events, &mut out);
            }
            None if !c.is_empty() => out.push(Part::Content(c)),
            None => {}
        }
        out
    }

    /// The reply ended: what was held back.
    pub fn finish(&mut self) -> Vec<Part> {
        let mut out = Vec::new();
        if let Some(t) = self.tools.take() {
            let events = t.finish();
            self.add(events, &mut out);
        }
        out
    }

    pub fn calls(&self) -> usize {
        self.calls
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
/// of the reply) and content, however the tags are cut across pieces.
#[derive(Default)]
pub struct ReasoningSplit {
    held: String,
    state: SplitState,
}

#[derive(Default, PartialEq)]
enum SplitState {
    #[default]
    Start,
    Thinking,
    Answer,
}

impl ReasoningSplit {
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
                        self.state = SplitState::Answer;
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
                SplitState::Answer => {
                    c.push_str(&self.held);
                    self.held.clear();
                    return (r, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_split_into_reasoning_text_and_calls() {
        let text = "<think>Need the weather.</think>Checking. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        for cut in 1..text.len() {
            let mut s = ReplySplit::new(Some(ToolFormat::Hermes), "call_7_".into());
            let mut parts = s.push(&text[..cut]);
            parts.extend(s.push(&text[cut..]));
            parts.extend(s.finish());
            let (mut reasoning, mut content, mut calls) = (String::new(), String::new(), vec![]);
            for p in parts {
                match p {
                    Part::Reasoning(r) => reasoning.push_str(&r),
                    Part::Content(c) => content.push_str(&c),
                    Part::Call(c) => calls.push(c),
                }
            }
            assert_eq!((reasoning.as_str(), content.as_str()), ("Need the weather.", "Checking. "), "cut at {cut}");
            let mut want = ToolCall::new("get_weather", serde_json::json!({"city": "Oslo"}));
            want.id = "call_7_0".into();
            assert_eq!(calls, vec![want], "cut at {cut}");
        }
        // Without tools the same text is all content.
        let mut s = ReplySplit::new(None, String::new());
        assert_eq!(s.push("<tool_call>x</tool_call>"), vec![Part::Content("<tool_call>x</tool_call>".into())]);
    }

    #[test]
    fn reasoning_is_split_from_the_answer_across_any_cuts() {
        let text = "<think>Two and two.</think>It is 4.";
        for cut in 1..text.len() {
            let mut s = ReasoningSplit::default();
            let (r1, c1) = s.push(&text[..cut]);
            let (r2, c2) = s.push(&text[cut..]);
            assert_eq!(r1 + &r2, "Two and two.", "cut at {cut}");
            assert_eq!(c1 + &c2, "It is 4.", "cut at {cut}");
        }
        let mut s = ReasoningSplit::default();
        assert_eq!(s.push("Plain answer"), (String::new(), "Plain answer".into()));
    }
}

//! From token ids to streamed text (mlx-lm's `stream_generate` side): a
//! streaming detokenizer and stop strings, joined in `TextStream`, and for
//! gpt-oss's harmony format `HarmonyStream`, which reads the channels and
//! writes the reasoning as `<think>…</think>` before the answer, as reasoning
//! models that think in tags do (one form for the chat view and history).
//!
//! The detokenizer appends each token's bytes (looked up in a table built at
//! load) and releases only complete UTF-8: O(1) per token, and a character
//! split across tokens (emoji, CJK, byte-fallback) is never broken.

use crate::chat::harmony::{HarmonyEvent, HarmonyParser, Piece};
use crate::chat::tokenizer::TextTokenizer;

#[derive(Default)]
pub struct StreamingDetokenizer {
    pending: Vec<u8>,
}

impl StreamingDetokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token; returns the text that became complete.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> String {
        self.pending.extend_from_slice(tok.bytes_of(id));
        self.take_valid()
    }

    fn take_valid(&mut self) -> String {
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) => {
                // error_len() == None: an incomplete sequence at the end, wait for more.
                // Some(n): invalid bytes; let them through as U+FFFD rather than stall.
                match e.error_len() {
                    None => e.valid_up_to(),
                    Some(n) => e.valid_up_to() + n,
                }
            }
        };
        let rest = self.pending.split_off(valid);
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending = rest;
        out
    }

    /// Whatever is left at the end of generation (lossy if incomplete).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Holds back text that could be the start of a stop string, and reports when
/// one is complete; the stop string itself is never emitted.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

pub enum StopCheck {
    /// Text that is safe to emit now.
    Emit(String),
    /// A stop string was found; emit this text (before it) and stop.
    Stop(String),
    /// The reply's format closed the reply (harmony's `<|return|>`/`<|call|>`):
    /// emit this text and stop, as at end-of-sequence.
    End(String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        if self.stops.is_empty() {
            return StopCheck::Emit(text.to_string());
        }
        self.held.push_str(text);
        if let Some(pos) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return StopCheck::Stop(out);
        }
        // Keep the longest tail that is a proper prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.held.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopCheck::Emit(out)
    }

    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Token ids in, text out: detokenized, with stop strings held back and cut.
pub struct TextStream {
    detok: StreamingDetokenizer,
    stops: StopMatcher,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        TextStream { detok: StreamingDetokenizer::new(), stops: StopMatcher::new(stops) }
    }

    /// Adds one token; returns the text to emit now, or the text before a
    /// completed stop string.
    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> StopCheck {
        let piece = self.detok.push(tok, id);
        if piece.is_empty() {
            return StopCheck::Emit(String::new());
        }
        self.stops.push(&piece)
    }

    /// Everything still held when generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        let tail = self.detok.finish();
        let (StopCheck::Emit(s) | StopCheck::Stop(s) | StopCheck::End(s)) = self.stops.push(&tail);
        s + &self.stops.finish()
    }
}

/// A harmony reply as text: the `analysis` channel inside `<think>…</think>`,
/// the `final` channel after it, a tool call shown as what it is.
pub struct HarmonyStream {
    detok: StreamingDetokenizer,
    parser: HarmonyParser,
    stops: StopMatcher,
    thinking: bool,
}

impl HarmonyStream {
    pub fn new(stops: Vec<String>) -> Self {
        HarmonyStream {
            detok: StreamingDetokenizer::new(),
            parser: HarmonyParser::new(),
            stops: StopMatcher::new(stops),
            thinking: false,
        }
    }

    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> StopCheck {
        let mut events = Vec::new();
        match tok.special_text(id) {
            Some(special) => {
                // Text before a control token belongs to the message it ends.
                let tail = self.detok.finish();
                if !tail.is_empty() {
                    events.extend(self.parser.push(Piece::Text(&tail)));
                }
                events.extend(self.parser.push(Piece::Special(&special)));
            }
            None => {
                let text = self.detok.push(tok, id);
                if !text.is_empty() {
                    events.extend(self.parser.push(Piece::Text(&text)));
                }
            }
        }
        let mut out = String::new();
        let mut ended = false;
        for e in events {
            match e {
                HarmonyEvent::Reasoning(t) => {
                    if !self.thinking {
                        out.push_str("<think>");
                        self.thinking = true;
                    }
                    out.push_str(&t);
                }
                HarmonyEvent::Content(t) => {
                    self.close_thinking(&mut out);
                    out.push_str(&t);
                }
                HarmonyEvent::ToolCall { name, arguments } => {
                    // In the one form every tool-call reader takes (Hermes);
                    // arguments that are not a JSON object stay text there.
                    self.close_thinking(&mut out);
                    out.push_str(&crate::chat::tools::hermes_text(&name, &arguments));
                }
                HarmonyEvent::Done => ended = true,
            }
        }
        match self.stops.push(&out) {
            StopCheck::Emit(s) if ended => {
                let mut s = s + &self.stops.finish();
                self.close_thinking(&mut s);
                StopCheck::End(s)
            }
            other => other,
        }
    }

    fn close_thinking(&mut self, out: &mut String) {
        if self.thinking {
            out.push_str("</think>");
            self.thinking = false;
        }
    }

    /// What is still held when generation ends (an open reasoning block is closed).
    pub fn finish(&mut self) -> String {
        let tail = self.detok.finish();
        let mut events = Vec::new();
        if !tail.is_empty() {
            events = self.parser.push(Piece::Text(&tail));
        }
        let mut out = String::new();
        for e in events {
            if let HarmonyEvent::Reasoning(t) | HarmonyEvent::Content(t) = e {
                out.push_str(&t);
            }
        }
        let (StopCheck::Emit(s) | StopCheck::Stop(s) | StopCheck::End(s)) = self.stops.push(&out);
        let mut s = s + &self.stops.finish();
        self.close_thinking(&mut s);
        s
    }
}

/// How a reply's tokens become text: plain, or through the harmony channels.
pub enum ReplyStream {
    Plain(TextStream),
    Harmony(HarmonyStream),
}

impl ReplyStream {
    pub fn new(harmony: bool, stops: Vec<String>) -> Self {
        if harmony {
            ReplyStream::Harmony(HarmonyStream::new(stops))
        } else {
            ReplyStream::Plain(TextStream::new(stops))
        }
    }

    pub fn push(&mut self, tok: &TextTokenizer, id: u32) -> StopCheck {
        match self {
            ReplyStream::Plain(s) => s.push(tok, id),
            ReplyStream::Harmony(s) => s.push(tok, id),
        }
    }

    pub fn is_harmony(&self) -> bool {
        matches!(self, ReplyStream::Harmony(_))
    }

    pub fn finish(&mut self) -> String {
        match self {
            ReplyStream::Plain(s) => s.finish(),
            ReplyStream::Harmony(s) => s.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emitted(c: StopCheck) -> (String, bool) {
        match c {
            StopCheck::Emit(s) => (s, false),
            StopCheck::Stop(s) | StopCheck::End(s) => (s, true),
        }
    }

    /// A byte-level tokenizer with harmony's control tokens after the 256 bytes.
    fn harmony_tokenizer() -> (TextTokenizer, Vec<&'static str>) {
        let specials = vec!["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"];
        (crate::chat::test_vocab::byte_tokenizer(&specials), specials)
    }

    use crate::chat::test_vocab::script;

    #[test]
    fn harmony_replies_become_folded_reasoning_then_the_answer() {
        let (tok, _) = harmony_tokenizer();
        let ids = script(
            &tok,
            &["<|channel|>", "analysis", "<|message|>", "Sum 1..4 = 10.", "<|end|>", "<|start|>", "assistant", "<|channel|>",
              "final", "<|message|>", "The answer is ", "10 — ok.", "<|return|>", "ignored"],
        );
        let mut s = ReplyStream::new(true, vec![]);
        let mut text = String::new();
        let mut ended = false;
        for id in ids {
            match s.push(&tok, id) {
                StopCheck::Emit(t) => text.push_str(&t),
                StopCheck::End(t) => {
                    text.push_str(&t);
                    ended = true;
                    break;
                }
                StopCheck::Stop(_) => panic!("no stop strings were given"),
            }
        }
        assert!(ended, "<|return|> ends the reply");
        assert_eq!(text, "<think>Sum 1..4 = 10.</think>The answer is 10 — ok.");
        assert_eq!(crate::chat::reply::split_reasoning(&text), (Some("Sum 1..4 = 10."), "The answer is 10 — ok."));
    }

    #[test]
    fn a_harmony_reply_cut_off_while_thinking_is_closed_and_stop_strings_apply_to_the_answer() {
        let (tok, _) = harmony_tokenizer();
        let mut s = ReplyStream::new(true, vec![]);
        let mut text = String::new();
        for id in script(&tok, &["<|channel|>", "analysis", "<|message|>", "Hmm"]) {
            let (t, _) = emitted(s.push(&tok, id));
            text.push_str(&t);
        }
        text.push_str(&s.finish());
        assert_eq!(text, "<think>Hmm</think>");

        let mut s = ReplyStream::new(true, vec!["STOP".into()]);
        let mut text = String::new();
        for id in script(&tok, &["<|channel|>", "final", "<|message|>", "one two STOP three"]) {
            let (t, stopped) = emitted(s.push(&tok, id));
            text.push_str(&t);
            if stopped {
                break;
            }
        }
        assert_eq!(text, "one two ");
    }

    #[test]
    fn a_harmony_tool_call_reaches_the_text_in_the_hermes_form() {
        let (tok, _) = harmony_tokenizer();
        let mut s = ReplyStream::new(true, vec![]);
        let mut text = String::new();
        let ids = script(
            &tok,
            &["<|channel|>", "commentary to=functions.get_weather ", "<|constrain|>", "json", "<|message|>",
              "{\"city\": \"Paris\"}", "<|call|>"],
        );
        for id in ids {
            let (t, _) = emitted(s.push(&tok, id));
            text.push_str(&t);
        }
        assert_eq!(text, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
        let mut calls = crate::chat::tools::ToolStream::new(crate::chat::tools::ToolFormat::Hermes);
        let mut events = calls.push(&text);
        events.extend(calls.finish());
        let args = serde_json::json!({"city": "Paris"});
        assert_eq!(events, vec![crate::chat::tools::ToolEvent::Call(crate::chat::tools::ToolCall::new("get_weather", args))]);
    }

    #[test]
    fn stop_string_split_across_pieces_is_cut_and_never_emitted() {
        let mut m = StopMatcher::new(vec!["</answer>".into()]);
        assert_eq!(emitted(m.push("The answer is 4</an")), ("The answer is 4".into(), false));
        assert_eq!(emitted(m.push("swer> and more")), (String::new(), true));
    }

    #[test]
    fn held_prefix_is_released_when_it_turns_out_not_to_be_a_stop() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(emitted(m.push("ST")), (String::new(), false));
        assert_eq!(emitted(m.push("ART")), ("START".into(), false));
        assert_eq!(m.finish(), "");
    }

    #[test]
    fn no_stops_emits_everything_at_once() {
        let mut m = StopMatcher::new(vec![String::new()]);
        assert_eq!(emitted(m.push("abc")), ("abc".into(), false));
    }
}

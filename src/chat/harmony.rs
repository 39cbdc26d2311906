//! The harmony response format of gpt-oss, parsed while it streams: each
//! message opens with a header (`assistant<|channel|>analysis`, perhaps a
//! recipient `to=functions.get_weather` and `<|constrain|>json`) and carries its
//! text after `<|message|>`; `<|end|>` closes a message, `<|return|>` ends the
//! reply and `<|call|>` ends it with a tool call. The `analysis` channel is the
//! reasoning shown folded, `final` the answer, and a message addressed to a
//! function is a tool call.
//!
//! Control tokens reach the parser as `Piece::Special` (the detokenizer gives
//! them no text), everything else as `Piece::Text`, however it is split.

/// One piece of the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A control token's text, e.g. `<|channel|>`.
    Special(&'a str),
    Text(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HarmonyEvent {
    /// Text of the `analysis` channel.
    Reasoning(String),
    /// Text of the `final` channel (or a `commentary` preamble to the user).
    Content(String),
    /// A complete call: `functions.NAME` and its arguments as the model wrote them.
    ToolCall { name: String, arguments: String },
    /// The reply is over (`<|return|>` or `<|call|>`).
    Done,
}

enum State {
    /// Reading a header, up to `<|message|>`.
    Header { text: String },
    /// Inside a message's text.
    Body { kind: Body },
    /// Between messages, waiting for `<|start|>`.
    Between,
    Finished,
}

enum Body {
    Reasoning,
    Content,
    Call { name: String, arguments: String },
}

pub struct HarmonyParser {
    state: State,
}

impl Default for HarmonyParser {
    fn default() -> Self {
        Self::new()
    }
}

impl HarmonyParser {
    /// A parser for a reply whose prompt ended with `<|start|>assistant`, as
    /// the gpt-oss template's generation prompt does: the first header follows.
    pub fn new() -> Self {
        HarmonyParser { state: State::Header { text: String::new() } }
    }

    pub fn push(&mut self, piece: Piece) -> Vec<HarmonyEvent> {
        let mut out = vec![];
        let state = std::mem::replace(&mut self.state, State::Finished);
        self.state = match (state, piece) {
            (State::Finished, _) => State::Finished,
            (State::Header { mut text }, Piece::Text(t)) => {
                text.push_str(t);
                State::Header { text }
            }
            (State::Header { text }, Piece::Special("<|message|>")) => State::Body { kind: body_for(&text) },
            (State::Header { mut text }, Piece::Special(s)) => {
                // <|channel|>, <|constrain|>: kept as separators in the header.
                text.push(' ');
                text.push_str(s);
                text.push(' ');
                State::Header { text }
            }
            (State::Body { kind }, Piece::Text(t)) => match kind {
                Body::Reasoning => {
                    out.push(HarmonyEvent::Reasoning(t.to_string()));
                    State::Body { kind: Body::Reasoning }
                }
                Body::Content => {
                    out.push(HarmonyEvent::Content(t.to_string()));
                    State::Body { kind: Body::Content }
                }
                Body::Call { name, mut arguments } => {
                    arguments.push_str(t);
                    State::Body { kind: Body::Call { name, arguments } }
                }
            },
            (State::Body { kind }, Piece::Special(s)) => match (s, kind) {
                ("<|call|>", Body::Call { name, arguments }) | ("<|end|>", Body::Call { name, arguments }) => {
                    out.push(HarmonyEvent::ToolCall { name, arguments: arguments.trim().to_string() });
                    if s == "<|call|>" {
                        out.push(HarmonyEvent::Done);
                        State::Finished
                    } else {
                        State::Between
                    }
                }
                ("<|end|>", _) => State::Between,
                ("<|return|>", _) | ("<|call|>", _) => {
                    out.push(HarmonyEvent::Done);
                    State::Finished
                }
                // A header inside a body: the model skipped <|end|>.
                ("<|start|>", _) => State::Header { text: String::new() },
                (_, kind) => State::Body { kind },
            },
            (State::Between, Piece::Special("<|start|>")) => State::Header { text: String::new() },
            (State::Between, Piece::Special("<|return|>")) => {
                out.push(HarmonyEvent::Done);
                State::Finished
            }
            (State::Between, _) => State::Between,
        };
        out
    }
}

/// What a message is, from its header: a call when addressed to a function,
/// reasoning on `analysis`, content otherwise.
fn body_for(header: &str) -> Body {
    let words: Vec<&str> = header.split_whitespace().collect();
    if let Some(to) = words.iter().find_map(|w| w.strip_prefix("to=")) {
        if let Some(name) = to.strip_prefix("functions.") {
            return Body::Call { name: name.to_string(), arguments: String::new() };
        }
    }
    let channel = words.iter().position(|w| *w == "<|channel|>").and_then(|i| words.get(i + 1)).copied();
    match channel {
        Some("analysis") => Body::Reasoning,
        _ => Body::Content,
    }
}

/// The history a harmony template wants back: earlier assistant turns keep only
/// their final answers (reasoning is dropped), as the gpt-oss template expects.
pub fn final_text(events: &[HarmonyEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            HarmonyEvent::Content(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::{Special as S, Text as T};

    fn run(pieces: &[Piece]) -> Vec<HarmonyEvent> {
        let mut p = HarmonyParser::new();
        pieces.iter().flat_map(|&x| p.push(x)).collect()
    }

    fn merged(events: Vec<HarmonyEvent>) -> Vec<HarmonyEvent> {
        let mut out: Vec<HarmonyEvent> = vec![];
        for e in events {
            match (out.last_mut(), e) {
                (Some(HarmonyEvent::Reasoning(a)), HarmonyEvent::Reasoning(b)) => a.push_str(&b),
                (Some(HarmonyEvent::Content(a)), HarmonyEvent::Content(b)) => a.push_str(&b),
                (_, e) => out.push(e),
            }
        }
        out
    }

    #[test]
    fn analysis_then_final_split_across_pieces() {
        let ev = merged(run(&[
            T("assis"),
            T("tant"),
            S("<|channel|>"),
            T("analy"),
            T("sis"),
            S("<|message|>"),
            T("User asks 2+2. "),
            T("Answer 4."),
            S("<|end|>"),
            S("<|start|>"),
            T("assistant"),
            S("<|channel|>"),
            T("final"),
            S("<|message|>"),
            T("The answer"),
            T(" is 4."),
            S("<|return|>"),
            T("ignored after the end"),
        ]));
        assert_eq!(
            ev,
            vec![
                HarmonyEvent::Reasoning("User asks 2+2. Answer 4.".into()),
                HarmonyEvent::Content("The answer is 4.".into()),
                HarmonyEvent::Done
            ]
        );
        assert_eq!(final_text(&ev), "The answer is 4.");
    }

    #[test]
    fn a_tool_call_with_a_constrained_recipient() {
        let ev = merged(run(&[
            S("<|channel|>"),
            T("analysis"),
            S("<|message|>"),
            T("Need weather."),
            S("<|end|>"),
            S("<|start|>"),
            T("assistant"),
            S("<|channel|>"),
            T("commentary to=functions.get_weather "),
            S("<|constrain|>"),
            T("json"),
            S("<|message|>"),
            T("{\"city\": "),
            T("\"Paris\"}"),
            S("<|call|>"),
        ]));
        assert_eq!(
            ev,
            vec![
                HarmonyEvent::Reasoning("Need weather.".into()),
                HarmonyEvent::ToolCall { name: "get_weather".into(), arguments: "{\"city\": \"Paris\"}".into() },
                HarmonyEvent::Done
            ]
        );
    }

    #[test]
    fn recipient_in_the_role_part_and_a_missing_end() {
        let ev = merged(run(&[
            T(" to=functions.lookup"),
            S("<|channel|>"),
            T("commentary json"),
            S("<|message|>"),
            T("{}"),
            S("<|call|>"),
        ]));
        assert_eq!(ev[0], HarmonyEvent::ToolCall { name: "lookup".into(), arguments: "{}".into() });
        // A body that runs into a new header without <|end|> still parses.
        let ev = merged(run(&[
            S("<|channel|>"),
            T("analysis"),
            S("<|message|>"),
            T("think"),
            S("<|start|>"),
            T("assistant"),
            S("<|channel|>"),
            T("final"),
            S("<|message|>"),
            T("ok"),
            S("<|return|>"),
        ]));
        assert_eq!(ev, vec![HarmonyEvent::Reasoning("think".into()), HarmonyEvent::Content("ok".into()), HarmonyEvent::Done]);
    }
}

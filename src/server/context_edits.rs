//! Anthropic's context editing (`context_management.edits`), applied to a
//! conversation before it reaches the model, as Anthropic's server does:
//! `clear_tool_uses_20250919` replaces the oldest tool results (and, if
//! asked, the calls' inputs) with a placeholder once the prompt passes a
//! trigger, keeping the most recent uses; `clear_thinking_20251015` keeps
//! the reasoning of the last assistant turns only (one unless told, as
//! Anthropic does without the edit). The client keeps its full history;
//! the response says what was applied (`context_management.applied_edits`).

use super::ApiError;
use crate::chat::{Message, Role};
use serde_json::{json, Value};

/// What a cleared tool result says instead, so the model knows it was there.
pub const CLEARED: &str = "[tool result cleared to save context]";

/// Anthropic's default trigger: 100,000 input tokens.
const DEFAULT_TRIGGER: usize = 100_000;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Edits {
    pub tool_uses: Option<ClearToolUses>,
    /// `Some(None)`: keep all reasoning; `Some(Some(n))`: the last n turns'.
    pub thinking: Option<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClearToolUses {
    pub trigger: Trigger,
    /// The most recent tool uses kept whole.
    pub keep: usize,
    /// Clear only if at least this many input tokens go (else nothing).
    pub clear_at_least: usize,
    pub exclude_tools: Vec<String>,
    /// Also clear the calls' inputs: all (`None` in the list) or these tools'.
    pub clear_inputs: ClearInputs,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Trigger {
    InputTokens(usize),
    ToolUses(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClearInputs {
    No,
    All,
    Tools(Vec<String>),
}

/// `{"type": T, "value": N}` with one of the `types`.
fn amount(v: &Value, what: &str, types: &[&str]) -> Result<Option<(String, usize)>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    match (v["type"].as_str(), v["value"].as_u64()) {
        (Some(t), Some(n)) if types.contains(&t) => Ok(Some((t.to_string(), n as usize))),
        _ => Err(ApiError::bad_request(format!("context_management: {what} must be {{\"type\": {}, \"value\": N}}", types.join(" or ")))),
    }
}

impl Edits {
    /// `context_management` as the request sends it (absent: no edits).
    pub fn parse(v: Option<&Value>) -> Result<Edits, ApiError> {
        let mut e = Edits::default();
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(e) };
        let list = match &v["edits"] {
            Value::Null => return Ok(e),
            Value::Array(l) => l,
            _ => return Err(ApiError::bad_request("context_management.edits must be a list")),
        };
        for edit in list {
            match edit["type"].as_str() {
                Some("clear_tool_uses_20250919") => {
                    let trigger = match amount(&edit["trigger"], "trigger", &["input_tokens", "tool_uses"])? {
                        Some((t, n)) if t == "tool_uses" => Trigger::ToolUses(n),
                        Some((_, n)) => Trigger::InputTokens(n),
                        None => Trigger::InputTokens(DEFAULT_TRIGGER),
                    };
                    let keep = amount(&edit["keep"], "keep", &["tool_uses"])?.map_or(3, |(_, n)| n);
                    let clear_at_least = amount(&edit["clear_at_least"], "clear_at_least", &["input_tokens"])?.map_or(0, |(_, n)| n);
                    let names = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect() };
                    let clear_inputs = match &edit["clear_tool_inputs"] {
                        Value::Null | Value::Bool(false) => ClearInputs::No,
                        Value::Bool(true) => ClearInputs::All,
                        l @ Value::Array(_) => ClearInputs::Tools(names(l)),
                        _ => return Err(ApiError::bad_request("context_management: clear_tool_inputs must be true, false or a list of tool names")),
                    };
                    e.tool_uses = Some(ClearToolUses { trigger, keep, clear_at_least, exclude_tools: names(&edit["exclude_tools"]), clear_inputs });
                }
                Some("clear_thinking_20251015") => {
                    if e.tool_uses.is_some() {
                        return Err(ApiError::bad_request(
                            "context_management: clear_thinking_20251015 must be listed first when combined with other edits",
                        ));
                    }
                    e.thinking = Some(match &edit["keep"] {
                        Value::String(s) if s == "all" => None,
                        Value::Null => Some(1),
                        k => Some(amount(k, "keep", &["thinking_turns"])?.map_or(1, |(_, n)| n)),
                    });
                }
                t => {
                    return Err(ApiError::bad_request(format!(
                        "context_management edit {} is not supported (clear_tool_uses_20250919 and clear_thinking_20251015 are)",
                        t.map(|t| format!("'{t}'")).unwrap_or("without a type".into())
                    )))
                }
            }
        }
        Ok(e)
    }
}

/// Keeps the reasoning of the last `keep` assistant turns that have any
/// (`None`: all); returns how many turns lost theirs.
pub fn keep_thinking(msgs: &mut [Message], keep: Option<usize>) -> usize {
    let Some(keep) = keep else { return 0 };
    let mut seen = 0;
    let mut cleared = 0;
    for m in msgs.iter_mut().rev().filter(|m| m.role == Role::Assistant && !m.reasoning.is_empty()) {
        seen += 1;
        if seen > keep {
            m.reasoning.clear();
            cleared += 1;
        }
    }
    cleared
}

/// Every tool use in order: (assistant message, call index, tool name, id).
fn uses(msgs: &[Message]) -> Vec<(usize, usize, String, String)> {
    let mut out = Vec::new();
    for (i, m) in msgs.iter().enumerate().filter(|(_, m)| m.role == Role::Assistant) {
        for (j, c) in m.tool_calls.iter().enumerate() {
            out.push((i, j, c.name.clone(), c.id.clone()));
        }
    }
    out
}

impl ClearToolUses {
    /// Whether the edit fires for a prompt of `input_tokens`.
    pub fn triggered(&self, msgs: &[Message], input_tokens: usize) -> bool {
        match self.trigger {
            Trigger::InputTokens(n) => input_tokens > n,
            Trigger::ToolUses(n) => uses(msgs).len() > n,
        }
    }

    /// Clears the tool uses before the last `keep` (excluded tools never):
    /// their results become the placeholder, and their inputs `{}` when
    /// asked. Returns how many uses were cleared.
    pub fn apply(&self, msgs: &mut [Message]) -> usize {
        let all = uses(msgs);
        let eligible: Vec<_> = all.iter().filter(|(_, _, name, _)| !self.exclude_tools.contains(name)).collect();
        let clear = eligible.len().saturating_sub(self.keep);
        let mut cleared = 0;
        for (i, j, name, id) in eligible.into_iter().take(clear) {
            let mut any = false;
            for r in msgs.iter_mut().filter(|m| m.role == Role::Tool && m.tool_call_id.as_deref() == Some(id)) {
                if r.content != CLEARED {
                    r.content = CLEARED.to_string();
                    any = true;
                }
            }
            let inputs = match &self.clear_inputs {
                ClearInputs::No => false,
                ClearInputs::All => true,
                ClearInputs::Tools(names) => names.contains(name),
            };
            if inputs && msgs[*i].tool_calls[*j].arguments != json!({}) {
                msgs[*i].tool_calls[*j].arguments = json!({});
                any = true;
            }
            cleared += any as usize;
        }
        cleared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::tools::ToolCall;

    /// A user question, then `n` rounds of (assistant call with reasoning, tool result).
    fn agent_history(n: usize) -> Vec<Message> {
        let mut m = vec![Message::user("Look things up.")];
        for i in 0..n {
            let mut a = Message::assistant("");
            a.reasoning = format!("thought {i}");
            let name = if i == 0 { "memory" } else { "search" };
            a.tool_calls.push(ToolCall { id: format!("toolu_{i}"), name: name.into(), arguments: json!({"q": i}) });
            m.push(a);
            m.push(Message::tool(format!("toolu_{i}"), format!("result {i}")));
        }
        m
    }

    #[test]
    fn old_tool_results_and_thinking_are_cleared_by_the_rules() {
        let e = Edits::parse(Some(&json!({"edits": [
            {"type": "clear_thinking_20251015", "keep": {"type": "thinking_turns", "value": 2}},
            {"type": "clear_tool_uses_20250919", "trigger": {"type": "tool_uses", "value": 4}, "keep": {"type": "tool_uses", "value": 2},
             "exclude_tools": ["memory"], "clear_tool_inputs": ["search"]}]})))
        .unwrap();
        let t = e.tool_uses.clone().unwrap();
        assert_eq!(e.thinking, Some(Some(2)));
        let mut m = agent_history(4);
        assert!(!t.triggered(&m, 0), "4 uses do not pass a trigger of 4");
        let mut m5 = agent_history(5);
        assert!(t.triggered(&m5, 0));
        // Uses 0..5; "memory" (use 0) is excluded; of 1..5 the last two stay: 1 and 2 go.
        assert_eq!(t.apply(&mut m5), 2);
        let results: Vec<&str> = m5.iter().filter(|m| m.role == Role::Tool).map(|m| m.content.as_str()).collect();
        assert_eq!(results, ["result 0", CLEARED, CLEARED, "result 3", "result 4"]);
        assert_eq!(m5[3].tool_calls[0].arguments, json!({}));
        assert_eq!(m5[1].tool_calls[0].arguments, json!({"q": 0}));
        assert_eq!(t.apply(&mut m5), 0, "applying twice clears nothing more");
        assert_eq!(keep_thinking(&mut m, Some(2)), 2);
        let kept: Vec<&str> = m.iter().map(|m| m.reasoning.as_str()).filter(|r| !r.is_empty()).collect();
        assert_eq!(kept, ["thought 2", "thought 3"]);
        assert_eq!(keep_thinking(&mut m, None), 0);

        // Defaults: 100k input tokens, keep 3; bad shapes are named.
        let d = Edits::parse(Some(&json!({"edits": [{"type": "clear_tool_uses_20250919"}]}))).unwrap().tool_uses.unwrap();
        assert_eq!((d.trigger, d.keep), (Trigger::InputTokens(100_000), 3));
        assert!(d.triggered(&m, 100_001) && !d.triggered(&m, 100_000));
        let err = |v: Value| Edits::parse(Some(&v)).unwrap_err().message;
        assert!(err(json!({"edits": [{"type": "compact_20260101"}]})).contains("'compact_20260101' is not supported"));
        assert!(err(json!({"edits": [{"type": "clear_tool_uses_20250919", "keep": {"type": "input_tokens", "value": 3}}]})).contains("keep must be"));
        assert!(err(json!({"edits": {}})).contains("must be a list"));
        let late = json!({"edits": [{"type": "clear_tool_uses_20250919"}, {"type": "clear_thinking_20251015"}]});
        assert!(err(late).contains("must be listed first"));
    }
}

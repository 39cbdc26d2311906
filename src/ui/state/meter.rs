//! The context meter under the input box: how much of the context the current
//! conversation and the draft in the input box take, in the engine's own count
//! (`Command::Measure`: the chat template rendered and tokenized as a reply
//! would be), asked again once either has stayed unchanged for a moment, and
//! never while a reply streams (rendering a long chat would hold up its tokens).

use super::{AppState, ModelState};
use crate::chat::{Message, Role};
use crate::engine::{Prompt, PromptFit};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

/// How long the inputs must stay as they are before they are measured (typing
/// sends one request when it pauses, not one per key).
pub const SETTLE: Duration = Duration::from_millis(300);

#[derive(Default)]
pub struct Meter {
    /// The inputs measured last (a digest of everything the prompt is made of).
    measured: Option<u64>,
    /// The request in flight and the inputs it measures.
    pending: Option<(u64, u64)>,
    /// The inputs as they changed last, and when.
    changed: Option<(u64, Instant)>,
    /// The last answer: how the prompt fits (None before the first, or with nothing to measure).
    pub fit: Option<PromptFit>,
    /// Why the last measure failed (a template error), shown instead.
    pub error: Option<String>,
}

impl AppState {
    /// The messages a reply sent now would be given: the current conversation
    /// (or a new one's system prompt) and the draft as the next question.
    pub fn draft_messages(&self) -> Vec<Message> {
        let mut v = match self.current_conversation() {
            Some(c) => c.prompt_messages(),
            None if !self.settings.system_prompt.trim().is_empty() => vec![Message::system(self.settings.system_prompt.clone())],
            None => vec![],
        };
        let attached = &self.chat.attachments.list;
        if !self.chat.input.trim().is_empty() || !attached.is_empty() {
            v.push(Message::new(Role::User, crate::store::conversations::with_attachments(self.chat.input.trim(), attached)));
        }
        v
    }

    /// A digest of what the prompt is made of, cheap enough for every frame:
    /// message count and lengths, the newest messages and the draft in full,
    /// and the settings that shape the prompt.
    fn meter_inputs(&self, model: &std::path::Path) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        model.hash(&mut h);
        (self.settings.context_length, self.settings.max_tokens, self.settings.reasoning_effort, self.mcp.tools.len()).hash(&mut h);
        self.chat.input.trim().hash(&mut h);
        for a in &self.chat.attachments.list {
            (&a.name, a.text.len()).hash(&mut h);
        }
        match self.current_conversation() {
            Some(c) => {
                (&c.id, &c.system_prompt, c.thinking, c.messages.len()).hash(&mut h);
                for m in &c.messages {
                    (m.content.len(), m.reasoning.len(), m.tool_calls.len()).hash(&mut h);
                }
                for m in c.messages.iter().rev().take(2) {
                    (&m.content, &m.reasoning).hash(&mut h);
                }
            }
            None => self.settings.system_prompt.hash(&mut h),
        }
        h.finish()
    }

    /// Called once a frame: asks the engine for a measure once the inputs have
    /// settled. Returns when to look again, while they are settling.
    pub fn tick_meter(&mut self) -> Option<Duration> {
        let ModelState::Ready(info) = &self.engine.model else {
            self.chat.meter = Meter::default();
            return None;
        };
        if self.is_generating() || self.chat.meter.pending.is_some() {
            return None;
        }
        let inputs = self.meter_inputs(&info.path.clone());
        let meter = &mut self.chat.meter;
        if meter.measured == Some(inputs) {
            return None;
        }
        match meter.changed {
            Some((seen, at)) if seen == inputs => {
                let waited = at.elapsed();
                if waited < SETTLE {
                    return Some(SETTLE - waited);
                }
            }
            _ => {
                meter.changed = Some((inputs, Instant::now()));
                return Some(SETTLE);
            }
        }
        let messages = self.draft_messages();
        if messages.is_empty() {
            self.chat.meter.fit = None;
            self.chat.meter.measured = Some(inputs);
            return None;
        }
        let options = self.template_options(self.current_thinking());
        let id = self.engine.handle.measure(Prompt::ChatWith(messages, options), self.settings.max_tokens.max(1));
        self.chat.meter.pending = Some((id, inputs));
        None
    }

    /// The engine's answer to the meter's request `id`.
    pub(super) fn on_measured(&mut self, id: u64, result: Result<PromptFit, String>) {
        let meter = &mut self.chat.meter;
        let Some((_, inputs)) = meter.pending.take_if(|(asked, _)| *asked == id) else { return };
        meter.measured = Some(inputs);
        match result {
            Ok(fit) => (meter.fit, meter.error) = (Some(fit), None),
            Err(e) => (meter.fit, meter.error) = (None, Some(e)),
        }
    }
}

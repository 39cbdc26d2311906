//! Conversations as the app holds them: the list, the current one, the reply
//! being streamed, the input box, search and undo; and the actions on them.

use super::{AppState, View};
use crate::chat::template::TemplateOptions;
use crate::chat::Role;
use crate::engine::{Command, GenerateParams, Prompt};
use crate::store::conversations::{now_secs, serialize, ChatMessage, Conversation, ConversationStore};
use std::time::Instant;

/// Shown under a reply the app was closed in the middle of (kept as far as it got).
pub const INTERRUPTED: &str = "Interrupted: Hearth was closed while this reply was being written.";

/// The reply being streamed right now.
pub struct Streaming {
    pub request: u64,
    pub conversation: String,
    pub started: Instant,
    pub first_token: Option<Instant>,
    pub pieces: usize,
    pub think_started: Option<Instant>,
}

pub struct ChatState {
    pub store: ConversationStore,
    pub conversations: Vec<Conversation>,
    pub current: Option<String>,
    pub streaming: Option<Streaming>,
    /// A deleted conversation, restorable until the next delete.
    pub undo: Option<Conversation>,
    pub input: String,
    pub search: String,
    /// The context meter under the input box.
    pub meter: super::Meter,
    /// Files attached to the question being written.
    pub attachments: super::Attachments,
}

impl ChatState {
    pub fn new(store: ConversationStore, conversations: Vec<Conversation>) -> Self {
        ChatState {
            store,
            current: conversations.first().map(|c| c.id.clone()),
            conversations,
            streaming: None,
            undo: None,
            input: String::new(),
            search: String::new(),
            meter: super::Meter::default(),
            attachments: super::Attachments::default(),
        }
    }

    pub fn conversation_mut(&mut self, id: &str) -> Option<&mut Conversation> {
        self.conversations.iter_mut().find(|c| c.id == id)
    }
}

impl AppState {
    pub fn current_conversation(&self) -> Option<&Conversation> {
        let id = self.chat.current.as_ref()?;
        self.chat.conversations.iter().find(|c| &c.id == id)
    }

    pub(super) fn persist(&self, id: &str) {
        if let Some(c) = self.chat.conversations.iter().find(|c| c.id == id) {
            self.saver.write(self.chat.store.path_of(&c.id), serialize(c));
        }
    }

    pub fn new_conversation(&mut self) {
        self.stop();
        let c = Conversation::new(&self.settings.system_prompt);
        self.chat.current = Some(c.id.clone());
        self.chat.conversations.insert(0, c);
        self.view = View::Chat;
        self.engine.handle.send(Command::ResetCache);
    }

    pub fn select(&mut self, id: &str) {
        if self.chat.current.as_deref() != Some(id) {
            self.stop();
            self.chat.current = Some(id.to_string());
        }
        self.view = View::Chat;
    }

    pub fn rename(&mut self, id: &str, title: String) {
        if let Some(c) = self.chat.conversation_mut(id) {
            c.title = title;
            c.updated = now_secs();
        }
        self.persist(id);
    }

    pub fn delete_conversation(&mut self, id: &str) {
        if self.chat.streaming.as_ref().is_some_and(|s| s.conversation == id) {
            self.stop();
        }
        if let Some(pos) = self.chat.conversations.iter().position(|c| c.id == id) {
            let c = self.chat.conversations.remove(pos);
            self.saver.delete(self.chat.store.path_of(&c.id));
            if let Some(dir) = prompt_cache_of(&self.data_dir, &c.id) {
                // Off the UI thread; an undone delete computes it again.
                std::thread::spawn(move || crate::engine::prompt_file::remove(&dir));
            }
            if self.chat.current.as_deref() == Some(id) {
                self.chat.current = self.chat.conversations.first().map(|c| c.id.clone());
            }
            self.chat.undo = Some(c);
        }
    }

    pub fn undo_delete(&mut self) {
        if let Some(c) = self.chat.undo.take() {
            let id = c.id.clone();
            self.chat.conversations.insert(0, c);
            self.persist(&id);
            self.chat.current = Some(id);
        }
    }

    pub fn is_generating(&self) -> bool {
        self.chat.streaming.is_some()
    }

    pub fn can_send(&self) -> bool {
        matches!(self.engine.model, super::ModelState::Ready(_)) && !self.is_generating()
    }

    /// Sends the input box as a new user message.
    pub fn send_input(&mut self) {
        let text = self.chat.input.trim().to_string();
        let attached = !self.chat.attachments.list.is_empty();
        if (text.is_empty() && !attached) || !self.can_send() {
            return;
        }
        self.chat.input.clear();
        if self.current_conversation().is_none() {
            self.new_conversation();
        }
        let id = self.chat.current.clone().expect("a conversation exists");
        let attachments = std::mem::take(&mut self.chat.attachments.list);
        if let Some(c) = self.chat.conversation_mut(&id) {
            let mut m = ChatMessage::new(Role::User, text);
            m.attachments = attachments;
            c.messages.push(m);
            c.auto_title();
        }
        self.start_reply(&id);
    }

    /// Replaces user message `index` with `text` and regenerates from there.
    pub fn edit_and_resend(&mut self, index: usize, text: String) {
        let Some(id) = self.chat.current.clone() else { return };
        if !self.can_send() || text.trim().is_empty() {
            return;
        }
        if let Some(c) = self.chat.conversation_mut(&id) {
            if index < c.messages.len() && c.messages[index].role == Role::User {
                c.branches.fork(&mut c.messages, index);
                c.messages.push(ChatMessage::new(Role::User, text));
            }
        }
        self.start_reply(&id);
    }

    /// Shows version `to` (from 0) of the current conversation from message
    /// `index` on (the "‹ 2/3 ›" arrows); not while a reply streams.
    pub fn switch_version(&mut self, index: usize, to: usize) {
        let Some(id) = self.chat.current.clone() else { return };
        if self.is_generating() {
            return;
        }
        if let Some(c) = self.chat.conversation_mut(&id) {
            c.branches.switch(&mut c.messages, index, to);
        }
        self.persist(&id);
    }

    /// A new conversation with the current one's messages up to `index`
    /// (inclusive, the version shown), its settings, and no other versions.
    pub fn duplicate_from(&mut self, index: usize) {
        let Some(c) = self.current_conversation() else { return };
        let mut copy = Conversation::new(&c.system_prompt);
        copy.title = format!("{} (copy)", c.title);
        copy.messages = c.messages[..(index + 1).min(c.messages.len())].to_vec();
        copy.thinking = c.thinking;
        copy.preset = c.preset.clone();
        copy.sampling = c.sampling.clone();
        copy.model = c.model.clone();
        copy.allowed_tools = c.allowed_tools.clone();
        self.stop();
        let id = copy.id.clone();
        self.chat.conversations.insert(0, copy);
        self.chat.current = Some(id.clone());
        self.persist(&id);
    }

    /// Keeps assistant message `index` (and anything after) as a version and asks again.
    pub fn regenerate(&mut self, index: usize) {
        let Some(id) = self.chat.current.clone() else { return };
        if !self.can_send() {
            return;
        }
        if let Some(c) = self.chat.conversation_mut(&id) {
            if index < c.messages.len() && c.messages[index].role == Role::Assistant {
                c.branches.fork(&mut c.messages, index);
            }
        }
        self.start_reply(&id);
    }

    /// The current chat's own system prompt (its header's editor).
    pub fn set_chat_system_prompt(&mut self, text: String) {
        let Some(id) = self.chat.current.clone() else { return };
        if let Some(c) = self.chat.conversation_mut(&id) {
            c.system_prompt = text;
        }
        self.persist(&id);
    }

    /// The conversation's sampling (its preset's) or the settings', with the
    /// loaded model's recommendations wherever Hearth's defaults were kept.
    fn params(&self, own: Option<&crate::chat::params::SamplingParams>) -> GenerateParams {
        let chosen = own.unwrap_or(&self.settings.sampling);
        let sampling = match &self.engine.model {
            super::ModelState::Ready(info) => info.recommended.apply(chosen),
            _ => chosen.clone(),
        };
        GenerateParams {
            sampling,
            max_tokens: self.settings.max_tokens.max(1),
            stop: vec![],
            ignore_eos: false,
            constraint: None,
            logprobs: None,
            call_id_prefix: String::new(),
            keep_turns: false,
            reasoning_budget: None,
            prompt_file: None,
        }
    }

    /// The current conversation's thinking choice (None: the template's default).
    pub fn current_thinking(&self) -> Option<bool> {
        self.current_conversation().and_then(|c| c.thinking)
    }

    /// "Use a tool" for the current conversation: its next answers to a
    /// question are tool calls.
    pub fn set_require_tool(&mut self, on: bool) {
        if self.current_conversation().is_none() {
            self.new_conversation();
        }
        let Some(id) = self.chat.current.clone() else { return };
        if let Some(c) = self.chat.conversation_mut(&id) {
            c.require_tool = on;
        }
        self.persist(&id);
    }

    /// Turns thinking on or off for the current conversation (kept with it;
    /// each reply sends it with its request).
    pub fn set_thinking(&mut self, on: bool) {
        let Some(id) = self.chat.current.clone() else { return };
        if let Some(c) = self.chat.conversation_mut(&id) {
            c.thinking = Some(on);
        }
        self.persist(&id);
    }

    /// The template variables a reply is sent with: the conversation's
    /// thinking choice (None: the template's default), the settings'
    /// reasoning effort (with each request: a daemon's engine keeps its own
    /// settings), and the MCP tools while servers are connected.
    pub(super) fn template_options(&self, thinking: Option<bool>) -> TemplateOptions {
        let tools: Vec<_> = self.mcp.tools.iter().map(|t| t.spec.clone()).collect();
        TemplateOptions {
            enable_thinking: thinking,
            reasoning_effort: Some(self.settings.reasoning_effort),
            tools: (!tools.is_empty()).then_some(tools),
        }
    }

    pub(super) fn start_reply(&mut self, id: &str) {
        let own = self.chat.conversations.iter().find(|c| c.id == id).and_then(|c| c.sampling.clone());
        let mut params = self.params(own.as_ref());
        if self.settings.prompt_cache_on_disk {
            params.prompt_file = prompt_cache_of(&self.data_dir, id);
        }
        let thinking = self.chat.conversations.iter().find(|c| c.id == id).and_then(|c| c.thinking);
        let loaded = match &self.engine.model {
            super::ModelState::Ready(info) => Some(info.path.clone()),
            _ => None,
        };
        let options = self.template_options(thinking);
        let Some(c) = self.chat.conversation_mut(id) else { return };
        // "Use a tool": the answer to a question must be a call (not the
        // answer after a tool's result, or it would call for ever).
        if c.require_tool && c.messages.last().is_some_and(|m| m.role == Role::User) {
            if let Some(tools) = options.tools.clone() {
                params.constraint = Some(crate::chat::params::OutputConstraint::ToolCall(tools));
            }
        }
        c.messages.push(ChatMessage::new(Role::Assistant, ""));
        c.updated = now_secs();
        if let Some(p) = &loaded {
            c.model = Some(p.clone());
        }
        let prompt = c.prompt_messages();
        let request = self.engine.handle.generate(Prompt::ChatWith(prompt, options), params);
        self.chat.streaming = Some(Streaming {
            request,
            conversation: id.to_string(),
            started: Instant::now(),
            first_token: None,
            pieces: 0,
            think_started: None,
        });
        let live = &mut self.engine.live;
        live.ttft_s = None;
        live.tok_per_s = 0.0;
        live.generated = 0;
        self.persist(id);
    }

    /// The app is closing mid-reply (a terminate signal): the reply keeps
    /// what was written, marked as interrupted, and every pending save is
    /// written before this returns.
    pub fn interrupt_for_exit(&mut self) {
        if let Some(s) = self.chat.streaming.take() {
            self.engine.handle.cancel();
            if let Some(c) = self.chat.conversation_mut(&s.conversation) {
                if let Some(m) = c.messages.last_mut().filter(|m| m.role == Role::Assistant) {
                    m.error = Some(INTERRUPTED.into());
                }
            }
            self.persist(&s.conversation);
        }
        self.flush();
    }

    pub fn stop(&mut self) {
        if self.chat.streaming.is_some() {
            self.engine.handle.cancel();
        }
    }

    pub fn export(&mut self, id: &str, markdown: bool) {
        let Some(c) = self.chat.conversations.iter().find(|c| c.id == id).cloned() else { return };
        let ext = if markdown { "md" } else { "json" };
        let name: String = c.title.chars().map(|ch| if ch.is_alphanumeric() || ch == ' ' { ch } else { '_' }).collect();
        let fut = rfd::AsyncFileDialog::new().set_file_name(format!("{}.{ext}", name.trim())).save_file();
        self.jobs.spawn(move || {
            let Some(h) = pollster::block_on(fut) else { return super::Background::Exported(None) };
            let path = h.path().to_path_buf();
            let bytes = if markdown { c.to_markdown().into_bytes() } else { serialize(&c) };
            let r = crate::store::write_atomic(&path, &bytes).map(|_| path).map_err(|e| e.to_string());
            super::Background::Exported(Some(r))
        });
    }
}

/// A conversation's prompt cache folder; None for an id that is not a plain
/// name (ids come from files, and a folder is named by it).
fn prompt_cache_of(data_dir: &std::path::Path, id: &str) -> Option<std::path::PathBuf> {
    let plain = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then(|| data_dir.join(crate::engine::prompt_file::STORE_FOLDER).join(id))
}

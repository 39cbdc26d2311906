//! Conversations: one JSON file each under the data dir.

use super::branches::Branches;
use super::write_atomic;
use crate::chat::tools::ToolCall;
use crate::chat::{Message, Role};
use crate::chat::params::GenerationStats;
use crate::error::{io_err, Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    /// The answer (an assistant's reply without its reasoning).
    pub content: String,
    /// An assistant reply's reasoning, as the engine's parts gave it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<GenerationStatsLite>,
    /// An engine error shown inline instead of (or after) the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds spent reasoning, measured while streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_secs: Option<f32>,
    /// The tools an assistant reply called (the engine's parts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A tool message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Files attached to a question: their text goes to the model after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// A text file attached to a message: its name, its text, and the engine's
/// count of its tokens (None until counted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
}

/// A question as the model reads it: its text, then each attached file's,
/// headed by the file's name.
pub fn with_attachments(content: &str, attachments: &[Attachment]) -> String {
    let mut text = content.to_string();
    for a in attachments {
        text.push_str(&format!("\n\n[Attached file: {}]\n{}", a.name, a.text));
    }
    text
}

/// The per-reply numbers kept with a message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerationStatsLite {
    pub tokens: usize,
    pub decode_tps: f64,
    pub ttft_s: f64,
    pub prompt_tokens: usize,
    /// Speculative decoding: tokens proposed and kept (0 where none ran).
    #[serde(default)]
    pub drafted: usize,
    #[serde(default)]
    pub accepted: usize,
    /// Prompt tokens served from the prompt cache (memory or disk), and of
    /// them those restored from disk.
    #[serde(default)]
    pub cached: usize,
    #[serde(default)]
    pub from_disk: usize,
    /// The model that wrote the reply (its name as the app lists it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl From<&GenerationStats> for GenerationStatsLite {
    fn from(s: &GenerationStats) -> Self {
        GenerationStatsLite {
            tokens: s.generated_tokens,
            decode_tps: s.decode_tps,
            ttft_s: s.ttft_s,
            prompt_tokens: s.prompt_tokens,
            drafted: s.draft_tokens,
            accepted: s.accepted_draft_tokens,
            cached: s.reused_tokens,
            from_disk: s.prompt_file_tokens,
            model: None,
        }
    }
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
            reasoning: String::new(),
            stats: None,
            error: None,
            thought_secs: None,
            tool_calls: vec![],
            tool_call_id: None,
            attachments: vec![],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub created: u64,
    pub updated: u64,
    #[serde(default)]
    pub system_prompt: String,
    pub messages: Vec<ChatMessage>,
    /// Thinking on/off for models whose template takes `enable_thinking`;
    /// None leaves the template's default (on for Qwen3 and SmolLM3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<bool>,
    /// Tools the user allowed to run without asking again in this chat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// The next reply to a question must call a tool ("Use a tool").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_tool: bool,
    /// Shown at the top of the sidebar.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The sidebar folder it is filed in (None: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// The preset applied to this chat (its name, as shown in the header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// This chat's sampling (from its preset); None: the settings'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<crate::chat::params::SamplingParams>,
    /// The model its replies run on (the one loaded when the last began, or
    /// picked in the chat header); None: whichever is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    /// The other versions of the conversation (edits, regenerations); `messages` is the one shown.
    #[serde(default, skip_serializing_if = "Branches::is_empty")]
    pub branches: Branches,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:04x}", nanos, N.fetch_add(1, Ordering::Relaxed) & 0xffff)
}

impl Conversation {
    pub fn new(system_prompt: &str) -> Self {
        let t = now_secs();
        Conversation {
            id: new_id(),
            title: "New chat".into(),
            created: t,
            updated: t,
            system_prompt: system_prompt.to_string(),
            messages: vec![],
            thinking: None,
            allowed_tools: vec![],
            require_tool: false,
            pinned: false,
            folder: None,
            preset: None,
            sampling: None,
            model: None,
            branches: Branches::default(),
        }
    }

    /// What the model sees: system prompt + turns, without failed or empty replies.
    pub fn prompt_messages(&self) -> Vec<Message> {
        let mut v = Vec::new();
        if !self.system_prompt.trim().is_empty() {
            v.push(Message::system(self.system_prompt.clone()));
        }
        for m in &self.messages {
            if m.role == Role::Assistant && m.content.is_empty() && m.tool_calls.is_empty() {
                continue;
            }
            let mut msg = Message::new(m.role, with_attachments(&m.content, &m.attachments));
            msg.reasoning = m.reasoning.clone();
            msg.tool_calls = m.tool_calls.clone();
            msg.tool_call_id = m.tool_call_id.clone();
            v.push(msg);
        }
        v
    }

    /// Names the chat after its first question.
    pub fn auto_title(&mut self) {
        if self.title == "New chat" {
            if let Some(first) = self.messages.iter().find(|m| m.role == Role::User) {
                let line = first.content.lines().next().unwrap_or("").trim();
                let mut t: String = line.chars().take(48).collect();
                if line.chars().count() > 48 {
                    t.push('…');
                }
                if !t.is_empty() {
                    self.title = t;
                }
            }
        }
    }

    pub fn matches(&self, query: &str) -> bool {
        let q = query.to_lowercase();
        self.title.to_lowercase().contains(&q)
            || self.messages.iter().any(|m| m.content.to_lowercase().contains(&q))
    }

    pub fn to_markdown(&self) -> String {
        let mut s = format!("# {}\n\n", self.title);
        if !self.system_prompt.is_empty() {
            s += &format!("> System: {}\n\n", self.system_prompt);
        }
        for m in &self.messages {
            let who = match m.role {
                Role::User => "You",
                Role::Assistant => "Assistant",
                Role::System => "System",
                Role::Tool => "Tool",
            };
            s += &format!("**{who}:**\n\n{}\n\n", m.content);
        }
        s
    }
}

/// The largest conversation file Hearth reads (a year of daily chatting is a
/// few MB); a bigger one is reported with its size and left untouched.
pub const MAX_CONVERSATION_BYTES: u64 = 32 << 20;

/// Conversation ids are Hearth's own: 1–64 letters, digits, `-` or `_`. An id
/// is a file name, so nothing else may ever reach the disk.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub struct ConversationStore {
    pub dir: PathBuf,
}

impl ConversationStore {
    pub fn new(dir: PathBuf) -> Self {
        ConversationStore { dir }
    }

    /// The file of conversation `id`, always directly inside the store's
    /// folder: an id that is not one of Hearth's is reduced to safe characters.
    pub fn path_of(&self, id: &str) -> PathBuf {
        if valid_id(id) {
            return self.dir.join(format!("{id}.json"));
        }
        let safe: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).take(48).collect();
        self.dir.join(format!("invalid-{safe}.json"))
    }

    /// Loads every conversation, newest first. A conversation's id is its file
    /// name (a file is saved where it was read from), whatever id the file
    /// itself claims, so a copied or edited file can neither write elsewhere nor
    /// overwrite another conversation. Unreadable, oversized or odd files are
    /// reported and skipped; they stay on disk untouched. Temporary files left
    /// by an interrupted save are removed.
    pub fn load_all(&self) -> (Vec<Conversation>, Vec<String>) {
        let mut convs: Vec<Conversation> = Vec::new();
        let mut errors = Vec::new();
        super::remove_stale_temporaries(&self.dir);
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return (convs, errors);
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let stem = p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
            match load_one(&p) {
                Ok(mut c) => {
                    if valid_id(&stem) {
                        if c.id != stem {
                            errors.push(format!(
                                "{} said it was conversation “{}”; it is kept as its own conversation",
                                p.display(),
                                c.id.chars().take(80).collect::<String>()
                            ));
                        }
                        c.id = stem;
                    } else {
                        // Not a name Hearth gives: move it to a fresh one so its
                        // saves land where it is read from next time.
                        c.id = new_id();
                        if let Err(err) = std::fs::rename(&p, self.path_of(&c.id)) {
                            errors.push(format!("{}: could not rename it to a conversation id: {err}", p.display()));
                            continue;
                        }
                    }
                    convs.push(c)
                }
                Err(err) => errors.push(format!("{}: {err}", p.display())),
            }
        }
        convs.sort_by(|a, b| b.updated.cmp(&a.updated).then(b.id.cmp(&a.id)));
        (convs, errors)
    }

    pub fn save(&self, c: &Conversation) -> Result<()> {
        write_atomic(&self.path_of(&c.id), &serialize(c))
    }
}

pub fn serialize(c: &Conversation) -> Vec<u8> {
    serde_json::to_vec_pretty(c).expect("conversation serializes")
}

fn load_one(p: &Path) -> Result<Conversation> {
    // A symlink is not followed: it could point anywhere (/dev/zero, a user file).
    let meta = std::fs::symlink_metadata(p).map_err(io_err(p))?;
    if !meta.file_type().is_file() {
        return Err(Error::InvalidArgument("not a regular file (a link or a device); left untouched".into()));
    }
    if meta.len() > MAX_CONVERSATION_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{:.0} MB is more than the {} MB a conversation may take; left untouched",
            meta.len() as f64 / 1e6,
            MAX_CONVERSATION_BYTES >> 20
        )));
    }
    let bytes = crate::files::read_small(p, MAX_CONVERSATION_BYTES)?.unwrap_or_default();
    let mut c: Conversation = serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("not a valid conversation: {e}")))?;
    migrate_inline_reasoning(&mut c);
    c.branches.sanitize(0, c.messages.len());
    // A hand-edited file cannot ask for absurd sampling: the settings' then.
    if c.sampling.as_ref().is_some_and(|s| s.validate().is_err()) {
        c.sampling = None;
    }
    Ok(c)
}

/// Replies saved before they had parts kept their reasoning inline
/// (`<think>…</think>answer`, a block cut off unclosed, or only the closing
/// tag where the prompt had opened the block); it moves to the reasoning field.
fn migrate_inline_reasoning(c: &mut Conversation) {
    use crate::chat::reply::{gather, ReplyReader};
    for m in c.messages.iter_mut().filter(|m| m.role == Role::Assistant && m.reasoning.is_empty()) {
        // The engine's own reader, as if the reply streamed again (opened by
        // the prompt when only the closing tag is there).
        let opened = m.content.contains("</think>") && !m.content.contains("<think>");
        let mut reader = ReplyReader::chat(opened, None, String::new());
        let mut parts = reader.push(&m.content);
        parts.extend(reader.finish());
        let (content, reasoning, _) = gather(parts);
        m.reasoning = reasoning;
        m.content = content;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_reasoning_of_old_saves_moves_to_its_field() {
        let mut c = Conversation::new("");
        for text in ["<think>hmm</think>\n\nFour.", "<think>cut off", "opened by the prompt</think>\nYes.", "Plain.", "Says </think> and <think> in text."] {
            c.messages.push(ChatMessage::new(Role::Assistant, text));
        }
        c.messages.push(ChatMessage::new(Role::User, "<think>mine</think>"));
        migrate_inline_reasoning(&mut c);
        let got: Vec<(&str, &str)> = c.messages.iter().map(|m| (m.reasoning.as_str(), m.content.as_str())).collect();
        assert_eq!(
            got,
            vec![
                ("hmm", "Four."),
                ("cut off", ""),
                ("opened by the prompt", "Yes."),
                ("", "Plain."),
                ("", "Says </think> and <think> in text."),
                ("", "<think>mine</think>"),
            ]
        );
        // The prompt gets the reasoning apart from the answer.
        let prompt = c.prompt_messages();
        assert_eq!((prompt[0].reasoning.as_str(), prompt[0].content.as_str()), ("hmm", "Four."));
    }
}

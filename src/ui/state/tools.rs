//! MCP tools in the chat: the configured servers (`mcp.json` in the data
//! folder, Claude Desktop's shape), their tools offered with each reply, the
//! calls the engine read out of a finished reply, and the user's decision on each:
//! nothing runs without a click (Allow once, Always in this chat, Deny). A
//! result (or the refusal) goes back as a tool message and the model goes on.

use super::AppState;
use crate::chat::tools::ToolCall;
use crate::chat::Role;
use crate::mcp::{parse_config, McpEvent, McpHandle, McpTool};
use crate::store::conversations::ChatMessage;
use std::collections::HashMap;
use std::path::PathBuf;

/// What a tool message says when the user refused the call.
pub const DENIED: &str = "The user did not allow this tool call.";

pub struct McpState {
    pub handle: McpHandle,
    pub config_path: PathBuf,
    /// The configuration as edited in Settings.
    pub config_text: String,
    /// Each configured server: its tool count once connected, or why it failed.
    pub servers: Vec<(String, Result<usize, String>)>,
    pub tools: Vec<McpTool>,
    /// Calls waiting for the user's decision.
    pub pending: Vec<PendingCall>,
    /// Calls running: call id → conversation.
    pub running: HashMap<String, String>,
    /// Conversations whose calls are all answered but whose reply had to wait
    /// (the engine was busy with another); continued when it is free.
    pub waiting: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PendingCall {
    pub conversation: String,
    pub call: ToolCall,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    AllowOnce,
    AlwaysInThisChat,
    Deny,
}

impl McpState {
    pub fn new(config_path: PathBuf) -> Self {
        McpState {
            handle: McpHandle::spawn(),
            config_path,
            config_text: String::new(),
            servers: vec![],
            tools: vec![],
            pending: vec![],
            running: HashMap::new(),
            waiting: vec![],
        }
    }
}

impl AppState {
    /// Reads `mcp.json` and connects to its servers (the user configured them;
    /// their tools still run only when the user allows each call).
    pub fn load_mcp_config(&mut self) {
        match crate::files::read_small_text(&self.mcp.config_path, 1 << 20) {
            Ok(Some(text)) => {
                self.mcp.config_text = text;
                self.connect_mcp();
            }
            Ok(None) => {}
            Err(e) => self.error(format!("Could not read the MCP configuration: {e}")),
        }
    }

    /// Saves the edited configuration and reconnects.
    pub fn save_mcp_config(&mut self) {
        if let Err(e) = parse_config(&self.mcp.config_text) {
            self.error(e);
            return;
        }
        self.saver.write(self.mcp.config_path.clone(), self.mcp.config_text.clone().into_bytes());
        self.connect_mcp();
    }

    fn connect_mcp(&mut self) {
        match parse_config(&self.mcp.config_text) {
            Ok(servers) => {
                self.mcp.servers = servers.iter().map(|s| (s.name().to_string(), Err("connecting…".to_string()))).collect();
                self.mcp.tools.clear();
                self.mcp.handle.connect(servers);
            }
            Err(e) => self.error(e),
        }
    }

    pub(super) fn on_mcp_event(&mut self, ev: McpEvent) {
        match ev {
            McpEvent::Connected { server, tools } => {
                self.set_server_status(&server, Ok(tools.len()));
                self.mcp.tools.retain(|t| t.server != server);
                self.mcp.tools.extend(tools);
            }
            McpEvent::Failed { server, error } => self.set_server_status(&server, Err(error)),
            McpEvent::Result { call_id, text, is_error } => {
                let Some(conv) = self.mcp.running.remove(&call_id) else { return };
                let text = if is_error && !text.starts_with("The tool") { format!("The tool reported an error: {text}") } else { text };
                self.answer_call(&conv, &call_id, text);
            }
        }
    }

    fn set_server_status(&mut self, server: &str, status: Result<usize, String>) {
        match self.mcp.servers.iter_mut().find(|(n, _)| n == server) {
            Some(s) => s.1 = status,
            None => self.mcp.servers.push((server.to_string(), status)),
        }
    }

    /// After a reply: the calls the engine read out of it (it reads them
    /// when tools were offered) each wait for the user, run (allowed in this
    /// chat), or are answered at once (a tool that does not exist).
    pub(super) fn dispatch_tool_calls(&mut self, conversation: &str) {
        let Some(c) = self.chat.conversation_mut(conversation) else { return };
        let Some(m) = c.messages.last_mut().filter(|m| m.role == Role::Assistant && !m.tool_calls.is_empty()) else { return };
        // Text around the calls' markup (a newline before it) is not the answer.
        let trimmed = m.content.trim_end().len();
        m.content.truncate(trimmed);
        let calls = m.tool_calls.clone();
        let allowed = c.allowed_tools.clone();
        self.persist(conversation);
        for call in calls {
            if !self.mcp.tools.iter().any(|t| t.spec.name == call.name) {
                let text = format!("There is no tool named '{}'.", call.name);
                self.answer_call(conversation, &call.id, text);
            } else if allowed.contains(&call.name) {
                self.run_call(conversation, call);
            } else {
                self.mcp.pending.push(PendingCall { conversation: conversation.to_string(), call });
            }
        }
    }

    /// The user's answer to a pending call.
    pub fn decide(&mut self, call_id: &str, decision: Decision) {
        let Some(pos) = self.mcp.pending.iter().position(|p| p.call.id == call_id) else { return };
        let p = self.mcp.pending.remove(pos);
        match decision {
            Decision::Deny => self.answer_call(&p.conversation, &p.call.id, DENIED.to_string()),
            Decision::AllowOnce => self.run_call(&p.conversation, p.call),
            Decision::AlwaysInThisChat => {
                if let Some(c) = self.chat.conversation_mut(&p.conversation) {
                    if !c.allowed_tools.contains(&p.call.name) {
                        c.allowed_tools.push(p.call.name.clone());
                    }
                }
                self.persist(&p.conversation);
                self.run_call(&p.conversation, p.call);
            }
        }
    }

    fn run_call(&mut self, conversation: &str, call: ToolCall) {
        let Some(tool) = self.mcp.tools.iter().find(|t| t.spec.name == call.name).cloned() else { return };
        self.mcp.running.insert(call.id.clone(), conversation.to_string());
        self.mcp.handle.call(call.id.clone(), &tool, call.arguments.clone());
    }

    /// Adds a call's result as a tool message; once every call of the reply
    /// has one, the model continues.
    fn answer_call(&mut self, conversation: &str, call_id: &str, text: String) {
        let Some(c) = self.chat.conversation_mut(conversation) else { return };
        let mut msg = ChatMessage::new(Role::Tool, text);
        msg.tool_call_id = Some(call_id.to_string());
        c.messages.push(msg);
        // The calls of the last reply that made any, and the answers after it.
        let Some(at) = c.messages.iter().rposition(|m| m.role == Role::Assistant && !m.tool_calls.is_empty()) else { return };
        let answered = c.messages[at + 1..].iter().filter(|m| m.role == Role::Tool).count();
        let complete = answered >= c.messages[at].tool_calls.len();
        self.persist(conversation);
        if complete {
            if self.can_send() {
                self.start_reply(conversation);
            } else if !self.mcp.waiting.iter().any(|w| w == conversation) {
                self.mcp.waiting.push(conversation.to_string());
            }
        }
    }

    /// Continues a conversation whose tool results came while the engine
    /// was busy (called when a reply ends).
    pub(super) fn resume_after_tools(&mut self) {
        if self.mcp.waiting.is_empty() || !self.can_send() {
            return;
        }
        let id = self.mcp.waiting.remove(0);
        self.start_reply(&id);
    }
}

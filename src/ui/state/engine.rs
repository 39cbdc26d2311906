//! The engine as the app sees it: the handle, the model's state, live stats,
//! and what each engine event changes.

use super::{AppState, NoticeAction};
use crate::chat::template::TemplateOptions;
use crate::chat::reply::Part;
use crate::chat::Role;
use crate::engine::protocol::MemoryStats;
use crate::engine::{Command, EngineHandle, Event};
use crate::models::load::{ModelInfo, Precision};
use crate::store::conversations::GenerationStatsLite;
use crate::engine::remote::DaemonHello;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub enum ModelState {
    None,
    Loading { path: PathBuf, fraction: f32, message: String },
    Ready(ModelInfo),
    Failed(String),
}

impl ModelState {
    /// The model loaded or being loaded (what a new pick is compared with).
    pub fn held_path(&self) -> Option<&Path> {
        match self {
            ModelState::Ready(info) => Some(&info.path),
            ModelState::Loading { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    pub tok_per_s: f64,
    pub ttft_s: Option<f64>,
    pub prompt_tokens: usize,
    pub generated: usize,
    pub memory: MemoryStats,
}

pub struct EngineState {
    /// Shared with the local server when it runs.
    pub handle: std::sync::Arc<EngineHandle>,
    pub model: ModelState,
    pub live: LiveStats,
    /// The draft model loaded beside the model (speculative decoding), if any.
    pub draft: Option<ModelInfo>,
    /// Whether this engine was told the draft and KV cache settings (it
    /// keeps them for every model it loads, so once per engine, and on each
    /// change).
    draft_sent: bool,
    /// The daemon whose engine this is (`hearth serve --daemon`), when the
    /// app attached to one instead of starting its own.
    pub daemon: Option<DaemonHello>,
    /// Why a daemon that holds the socket could not be attached to (another
    /// version, hung): the app then runs an engine of its own and says so.
    pub attach_error: Option<String>,
    /// The app asked the attached daemon to stop: its going away is expected.
    pub stopping_daemon: bool,
}

impl EngineState {
    /// The engine of the daemon serving from `data_dir` if one answers (its
    /// model shown as loaded), else one of the app's own.
    pub fn start(data_dir: &Path) -> Self {
        let (handle, daemon, attach_error) = connect(data_dir);
        let model = match &daemon {
            Some(DaemonHello { model: Some(info), .. }) => ModelState::Ready(info.clone()),
            Some(DaemonHello { loading: true, .. }) => ModelState::Loading { path: PathBuf::new(), fraction: 0.0, message: "The daemon is loading a model".into() },
            _ => ModelState::None,
        };
        EngineState { handle: std::sync::Arc::new(handle), model, live: LiveStats::default(), draft: None, draft_sent: false, daemon, attach_error, stopping_daemon: false }
    }
}

/// Attaches to the daemon of `data_dir`, or starts an engine in this process
/// (with why, when something held the socket but could not be attached to).
fn connect(data_dir: &Path) -> (EngineHandle, Option<DaemonHello>, Option<String>) {
    // Nothing listening (no socket, or one a dead daemon left): nothing to wait for.
    if !crate::engine::remote::listening(data_dir) {
        return (EngineHandle::spawn(), None, None);
    }
    match EngineHandle::attach(data_dir, Duration::from_secs(2)) {
        Ok((handle, hello)) => (handle, Some(hello), None),
        Err(why) => (EngineHandle::spawn(), None, Some(why)),
    }
}

impl AppState {
    /// Tells the engine the template variables from the settings; it keeps
    /// them for every model it loads.
    pub fn send_template_options(&self) {
        let options = TemplateOptions { reasoning_effort: Some(self.settings.reasoning_effort), ..TemplateOptions::default() };
        self.engine.handle.send(Command::SetTemplateOptions(options));
    }

    /// Tells the engine the draft model from the settings (or none).
    pub fn send_draft(&mut self) {
        self.engine.handle.send(Command::SetDraft(self.settings.draft_model.clone().map(|p| (p, Precision::Auto))));
        self.engine.draft_sent = true;
    }

    pub fn load_model(&mut self, path: PathBuf) {
        self.send_template_options();
        if !self.engine.draft_sent {
            // Once per engine: it keeps both for every model it loads.
            if self.settings.draft_model.is_some() {
                self.send_draft();
            }
            if self.settings.kv_bits != 0 {
                self.engine.handle.send(Command::SetKvBits(self.settings.kv_bits));
            }
            self.engine.draft_sent = true;
        }
        self.engine.model = ModelState::Loading { path: path.clone(), fraction: 0.0, message: "Starting".into() };
        self.engine.handle.load(path, Precision::Auto, Some(self.settings.context_length));
    }

    /// The chat header's pick: `path` becomes the current conversation's
    /// model (kept with it) and is loaded, unless it is already.
    pub fn use_model_for_chat(&mut self, path: PathBuf) {
        if let Some(id) = self.chat.current.clone() {
            if let Some(c) = self.chat.conversation_mut(&id) {
                c.model = Some(path.clone());
            }
            self.persist(&id);
        }
        if self.engine.model.held_path() != Some(path.as_path()) && !self.is_generating() {
            self.load_model(path);
        }
    }

    pub fn unload_model(&mut self) {
        self.engine.handle.send(Command::Unload);
    }

    pub fn restart_engine(&mut self) {
        let serving = self.server.running.is_some();
        self.stop_server();
        let live = std::mem::take(&mut self.engine.live);
        self.engine = EngineState::start(&self.data_dir);
        self.engine.live = live;
        self.chat.streaming = None;
        if let Some(why) = self.engine.attach_error.clone() {
            self.error(format!("A Hearth daemon holds this data folder's socket but could not be attached to ({why}); this app runs its own engine."));
        }
        if !matches!(self.engine.model, ModelState::Ready(_) | ModelState::Loading { .. }) {
            match self.settings.last_model.clone() {
                Some(p) => self.load_model(p),
                None => self.engine.model = ModelState::None,
            }
        }
        // The app's own server, as before; or, where a daemon that served went away, as the settings say.
        if serving {
            self.start_server();
        } else {
            self.start_server_if_enabled();
        }
    }

    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::LoadProgress { fraction, message } => {
                if let ModelState::Loading { path, .. } = &self.engine.model {
                    self.engine.model = ModelState::Loading { path: path.clone(), fraction, message };
                }
            }
            Event::Loaded(info) => {
                if self.settings.last_model.as_ref() != Some(&info.path) {
                    self.settings.last_model = Some(info.path.clone());
                    self.save_settings();
                }
                self.engine.model = ModelState::Ready(info);
            }
            Event::LoadFailed(e) => self.engine.model = ModelState::Failed(e.message),
            Event::Unloaded => self.engine.model = ModelState::None,
            Event::DraftLoaded(d) => self.engine.draft = d,
            Event::ContextTrimmed { dropped_messages, .. } => self.info(format!(
                "This chat is longer than the context ({} tokens): the oldest {dropped_messages} message(s) were left out of the prompt.",
                self.settings.context_length
            )),
            Event::Measured { id, result } => self.on_measured(id, result.map_err(|e| e.message)),
            // An attachment's count; a reply's prompt length shows in the live stats once it is done.
            Event::PromptReady { id, tokens, .. } => {
                self.on_attachment_counted(id, tokens);
            }
            // The local server's other models: the chat's is the primary.
            Event::Resident { .. } | Event::Evicted { .. } => {}
            Event::Token { id, parts, .. } => self.on_token(id, parts),
            Event::Finished { id, stats } => {
                if let Some(s) = self.chat.streaming.take_if(|s| s.request == id) {
                    let live = &mut self.engine.live;
                    live.ttft_s = Some(stats.ttft_s);
                    live.tok_per_s = stats.decode_tps;
                    live.prompt_tokens = stats.prompt_tokens;
                    live.generated = stats.generated_tokens;
                    let model = match &self.engine.model {
                        ModelState::Ready(info) => Some(info.name.clone()),
                        _ => None,
                    };
                    if let Some(c) = self.chat.conversation_mut(&s.conversation) {
                        if let Some(m) = c.messages.last_mut() {
                            m.stats = Some(GenerationStatsLite { model, ..GenerationStatsLite::from(&stats) });
                            if let (Some(t0), None) = (s.think_started, m.thought_secs) {
                                m.thought_secs = Some(t0.elapsed().as_secs_f32());
                            }
                        }
                        c.updated = crate::store::conversations::now_secs();
                    }
                    self.persist(&s.conversation);
                    self.dispatch_tool_calls(&s.conversation);
                }
                self.resume_after_tools();
            }
            Event::Error { id: Some(id), .. } if self.on_attachment_count_failed(id) => {}
            Event::Error { id, error } => {
                let stream = id.and_then(|id| self.chat.streaming.take_if(|s| s.request == id));
                match stream {
                    Some(s) => {
                        if let Some(c) = self.chat.conversation_mut(&s.conversation) {
                            if let Some(m) = c.messages.last_mut().filter(|m| m.role == Role::Assistant) {
                                m.error = Some(error.message);
                            }
                        }
                        self.persist(&s.conversation);
                    }
                    // A local-server client's error is its own (the server answers it).
                    None if id.is_none() => self.error(error.message),
                    None => {}
                }
                self.resume_after_tools();
            }
            Event::Memory(m) => self.engine.live.memory = m,
            // The daemon the app asked to stop went: `on_daemon_stopped` starts the app's own engine.
            Event::Crashed(_) if self.engine.stopping_daemon => {}
            Event::Crashed(msg) => {
                self.chat.streaming = None;
                self.engine.model = ModelState::Failed(format!("The engine stopped unexpectedly: {msg}"));
                self.error_with_action(
                    format!("The inference engine crashed ({msg}). Restart it to continue."),
                    NoticeAction::RestartEngine,
                );
            }
        }
    }

    fn on_token(&mut self, id: u64, parts: Vec<Part>) {
        let Some(s) = self.chat.streaming.as_mut().filter(|s| s.request == id) else { return };
        let now = Instant::now();
        let live = &mut self.engine.live;
        if s.first_token.is_none() {
            s.first_token = Some(now);
            live.ttft_s = Some((now - s.started).as_secs_f64());
        }
        s.pieces += 1;
        let first = s.first_token.expect("set above");
        let elapsed = (now - first).as_secs_f64();
        if s.pieces > 1 && elapsed > 0.0 {
            live.tok_per_s = (s.pieces - 1) as f64 / elapsed;
        }
        live.generated = s.pieces;
        let conv = s.conversation.clone();
        let think_started = &mut s.think_started;
        let Some(m) = self.chat.conversations.iter_mut().find(|c| c.id == conv).and_then(|c| c.messages.last_mut()) else { return };
        for p in parts {
            match p {
                Part::Reasoning(r) => {
                    think_started.get_or_insert(first);
                    m.reasoning.push_str(&r);
                }
                Part::Content(c) => {
                    // The answer began: the reasoning (if any) is over.
                    if let (Some(t0), None) = (*think_started, m.thought_secs) {
                        m.thought_secs = Some((now - t0).as_secs_f32());
                    }
                    m.content.push_str(&c);
                }
                Part::Call(call) => m.tool_calls.push(call),
            }
        }
    }
}

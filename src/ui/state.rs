//! Application state, separate from widgets: conversations, settings, the engine
//! handle and what it last reported. Panels read and mutate this; only
//! `AppState` talks to the engine and the disk (through the saver thread).

use crate::chat::Role;
use crate::engine::protocol::MemoryStats;
use crate::engine::{EngineHandle, Event, GenerateParams, Prompt};
use crate::hub::fit::Verdict;
use crate::hub::manager::{HubCommand, HubConfig, HubEvent, HubHandle};
use crate::hub::{HubError, Progress, SearchHit, SearchKind};
use crate::models::installed::{self, InstalledModel};
use crate::models::loader::{ModelInfo, Precision};
use crate::store::conversations::{serialize, ChatMessage, Conversation, ConversationStore, GenerationStatsLite};
use crate::store::settings::Settings;
use crate::store::Saver;
use crossbeam_channel::{Receiver, Sender};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Chat,
    Models,
    Settings,
}

#[derive(Debug, Clone)]
pub enum ModelState {
    None,
    Loading { path: PathBuf, fraction: f32, message: String },
    Ready(ModelInfo),
    Failed(String),
}

/// The reply being streamed right now.
pub struct Streaming {
    pub request: u64,
    pub conversation: String,
    pub started: Instant,
    pub first_token: Option<Instant>,
    pub pieces: usize,
    pub think_started: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
pub struct LiveStats {
    pub tok_per_s: f64,
    pub ttft_s: Option<f64>,
    pub prompt_tokens: usize,
    pub generated: usize,
    pub memory: MemoryStats,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NoticeKind {
    Info,
    Error,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DownloadStatus {
    Starting,
    Running(Progress),
    Paused { done: u64, total: u64 },
    /// The estimate says it won't fit; waiting for "download anyway".
    NeedsConfirm { need: u64, memory: u64 },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Download {
    pub id: String,
    pub status: DownloadStatus,
    pub fit: Option<(u64, Verdict)>,
}

#[derive(Debug, Clone, Default)]
pub struct HubSearch {
    pub query: String,
    pub gguf: bool,
    pub pending: bool,
    pub results: Option<Result<Vec<SearchHit>, String>>,
}

/// Results of work done off the UI thread.
pub enum Background {
    Installed(Vec<InstalledModel>),
    Imported(Result<PathBuf, String>),
    Deleted(Result<(PathBuf, u64), String>),
    Exported(Result<PathBuf, String>),
    PickedImport(Option<PathBuf>),
    PickedModelsDir(Option<PathBuf>),
}

pub struct AppState {
    pub engine: EngineHandle,
    pub settings: Settings,
    pub settings_path: PathBuf,
    pub store: ConversationStore,
    pub saver: Saver,
    pub conversations: Vec<Conversation>,
    pub current: Option<String>,
    pub view: View,
    pub model: ModelState,
    pub streaming: Option<Streaming>,
    pub live: LiveStats,
    pub notices: Vec<Notice>,
    pub installed: Vec<InstalledModel>,
    /// A deleted conversation, restorable until the next delete.
    pub undo: Option<Conversation>,
    pub input: String,
    pub search: String,
    /// Background jobs not yet reported back (the UI polls only while any run).
    pub pending_bg: usize,
    /// The download thread, and what the model manager shows of it.
    pub hub: HubHandle,
    pub downloads: Vec<Download>,
    pub hub_search: HubSearch,
    /// Set when a download or search found no connection.
    pub hub_offline: Option<String>,
    bg_tx: Sender<Background>,
    bg_rx: Receiver<Background>,
}

impl AppState {
    /// Builds state rooted at `data_dir` (conversations/, settings.json, models/).
    pub fn new(data_dir: &Path) -> Self {
        let mut cfg = HubConfig::from_env(4096);
        cfg.jobs_file = data_dir.join("downloads.json");
        Self::with_hub(data_dir, cfg)
    }

    /// As `new`, with the hub endpoint, cache and download options given (tests).
    pub fn with_hub(data_dir: &Path, hub: HubConfig) -> Self {
        let settings_path = data_dir.join("settings.json");
        let (mut settings, notice) = Settings::load(&settings_path);
        if settings.models_dir.is_none() {
            settings.models_dir = Some(data_dir.join("models"));
        }
        let store = ConversationStore::new(data_dir.join("conversations"));
        let (conversations, errors) = store.load_all();
        let (bg_tx, bg_rx) = crossbeam_channel::unbounded();
        let context = settings.context_length as u64;
        let mut s = AppState {
            engine: EngineHandle::spawn(),
            settings,
            settings_path,
            store,
            saver: Saver::spawn(),
            current: conversations.first().map(|c| c.id.clone()),
            conversations,
            view: View::Chat,
            model: ModelState::None,
            streaming: None,
            live: LiveStats::default(),
            notices: vec![],
            installed: vec![],
            undo: None,
            input: String::new(),
            search: String::new(),
            pending_bg: 0,
            hub_offline: hub.offline.then(|| HubError::offline_mode().to_string()),
            hub: HubHandle::spawn(HubConfig { context, ..hub }),
            downloads: vec![],
            hub_search: HubSearch::default(),
            bg_tx,
            bg_rx,
        };
        s.installed = installed::installed_with_cache(&s.settings.models_dir(), &s.hub.cache_dir);
        if let Some(n) = notice {
            s.error(n);
        }
        for e in errors {
            s.error(format!("Skipped an unreadable conversation file: {e}"));
        }
        s
    }

    /// Loads the last used model, or the first installed one.
    pub fn autoload(&mut self) {
        let pick = self
            .settings
            .last_model
            .clone()
            .filter(|p| p.exists())
            .or_else(|| self.installed.first().map(|m| m.path.clone()));
        if let Some(p) = pick {
            self.load_model(p);
        }
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { kind: NoticeKind::Info, text: text.into() });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { kind: NoticeKind::Error, text: text.into() });
    }

    pub fn load_model(&mut self, path: PathBuf) {
        self.model = ModelState::Loading { path: path.clone(), fraction: 0.0, message: "Starting".into() };
        self.engine.load(path, Precision::Auto, Some(self.settings.context_length));
    }

    pub fn unload_model(&mut self) {
        self.engine.send(crate::engine::Command::Unload);
    }

    pub fn restart_engine(&mut self) {
        self.engine = EngineHandle::spawn();
        self.streaming = None;
        if let Some(p) = self.settings.last_model.clone() {
            self.load_model(p);
        } else {
            self.model = ModelState::None;
        }
    }

    pub fn save_settings(&self) {
        self.saver.write(self.settings_path.clone(), self.settings.to_bytes());
    }

    pub fn current_conversation(&self) -> Option<&Conversation> {
        let id = self.current.as_ref()?;
        self.conversations.iter().find(|c| &c.id == id)
    }

    fn conversation_mut(&mut self, id: &str) -> Option<&mut Conversation> {
        self.conversations.iter_mut().find(|c| c.id == id)
    }

    fn persist(&self, id: &str) {
        if let Some(c) = self.conversations.iter().find(|c| c.id == id) {
            self.saver.write(self.store.path_of(&c.id), serialize(c));
        }
    }

    pub fn new_conversation(&mut self) {
        self.stop();
        let c = Conversation::new(&self.settings.system_prompt);
        self.current = Some(c.id.clone());
        self.conversations.insert(0, c);
        self.view = View::Chat;
        self.engine.send(crate::engine::Command::ResetCache);
    }

    pub fn select(&mut self, id: &str) {
        if self.current.as_deref() != Some(id) {
            self.stop();
            self.current = Some(id.to_string());
        }
        self.view = View::Chat;
    }

    pub fn rename(&mut self, id: &str, title: String) {
        if let Some(c) = self.conversation_mut(id) {
            c.title = title;
            c.updated = crate::store::conversations::now_secs();
        }
        self.persist(id);
    }

    pub fn delete_conversation(&mut self, id: &str) {
        if self.streaming.as_ref().is_some_and(|s| s.conversation == id) {
            self.stop();
        }
        if let Some(pos) = self.conversations.iter().position(|c| c.id == id) {
            let c = self.conversations.remove(pos);
            self.saver.delete(self.store.path_of(&c.id));
            if self.current.as_deref() == Some(id) {
                self.current = self.conversations.first().map(|c| c.id.clone());
            }
            self.undo = Some(c);
        }
    }

    pub fn undo_delete(&mut self) {
        if let Some(c) = self.undo.take() {
            let id = c.id.clone();
            self.conversations.insert(0, c);
            self.persist(&id);
            self.current = Some(id);
        }
    }

    pub fn is_generating(&self) -> bool {
        self.streaming.is_some()
    }

    pub fn can_send(&self) -> bool {
        matches!(self.model, ModelState::Ready(_)) && !self.is_generating()
    }

    /// Sends the input box as a new user message.
    pub fn send_input(&mut self) {
        let text = self.input.trim().to_string();
        if text.is_empty() || !self.can_send() {
            return;
        }
        self.input.clear();
        if self.current_conversation().is_none() {
            self.new_conversation();
        }
        let id = self.current.clone().expect("a conversation exists");
        if let Some(c) = self.conversation_mut(&id) {
            c.messages.push(ChatMessage::new(Role::User, text));
            c.auto_title();
        }
        self.start_reply(&id);
    }

    /// Replaces user message `index` with `text` and regenerates from there.
    pub fn edit_and_resend(&mut self, index: usize, text: String) {
        let Some(id) = self.current.clone() else { return };
        if !self.can_send() || text.trim().is_empty() {
            return;
        }
        if let Some(c) = self.conversation_mut(&id) {
            if index < c.messages.len() && c.messages[index].role == Role::User {
                c.messages.truncate(index);
                c.messages.push(ChatMessage::new(Role::User, text));
            }
        }
        self.start_reply(&id);
    }

    /// Drops assistant message `index` (and anything after) and asks again.
    pub fn regenerate(&mut self, index: usize) {
        let Some(id) = self.current.clone() else { return };
        if !self.can_send() {
            return;
        }
        if let Some(c) = self.conversation_mut(&id) {
            if index < c.messages.len() && c.messages[index].role == Role::Assistant {
                c.messages.truncate(index);
            }
        }
        self.start_reply(&id);
    }

    fn params(&self) -> GenerateParams {
        GenerateParams {
            sampling: self.settings.sampling.clone(),
            max_tokens: self.settings.max_tokens.max(1),
            stop: vec![],
            ignore_eos: false,
        }
    }

    fn start_reply(&mut self, id: &str) {
        let params = self.params();
        let Some(c) = self.conversation_mut(id) else { return };
        c.messages.push(ChatMessage::new(Role::Assistant, ""));
        c.updated = crate::store::conversations::now_secs();
        let prompt = c.prompt_messages();
        let request = self.engine.generate(Prompt::Chat(prompt), params);
        self.streaming = Some(Streaming {
            request,
            conversation: id.to_string(),
            started: Instant::now(),
            first_token: None,
            pieces: 0,
            think_started: None,
        });
        self.live.ttft_s = None;
        self.live.tok_per_s = 0.0;
        self.live.generated = 0;
        self.persist(id);
    }

    pub fn stop(&mut self) {
        if self.streaming.is_some() {
            self.engine.cancel();
        }
    }

    pub fn import(&mut self, src: PathBuf) {
        let dir = self.settings.models_dir();
        let cache = self.hub.cache_dir.clone();
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        std::thread::spawn(move || {
            let r = installed::import(&src, &dir, false)
                .map(|p| p.unwrap_or(src))
                .map_err(|e| e.to_string());
            let _ = tx.send(Background::Imported(r));
            let _ = tx.send(Background::Installed(installed::installed_with_cache(&dir, &cache)));
        });
    }

    pub fn pick_import(&mut self, folder: bool) {
        let dialog = rfd::AsyncFileDialog::new().set_title("Import a model");
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        if folder {
            let fut = dialog.pick_folder();
            std::thread::spawn(move || {
                let r = pollster::block_on(fut).map(|h| h.path().to_path_buf());
                let _ = tx.send(Background::PickedImport(r));
            });
        } else {
            let fut = dialog.add_filter("GGUF model", &["gguf"]).pick_file();
            std::thread::spawn(move || {
                let r = pollster::block_on(fut).map(|h| h.path().to_path_buf());
                let _ = tx.send(Background::PickedImport(r));
            });
        }
    }

    pub fn pick_models_dir(&mut self) {
        let fut = rfd::AsyncFileDialog::new().set_title("Choose the models folder").pick_folder();
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        std::thread::spawn(move || {
            let r = pollster::block_on(fut).map(|h| h.path().to_path_buf());
            let _ = tx.send(Background::PickedModelsDir(r));
        });
    }

    /// Points Hearth at another models folder and lists what is in it.
    pub fn set_models_dir(&mut self, dir: PathBuf) {
        self.settings.models_dir = Some(dir);
        self.save_settings();
        self.refresh_installed();
    }

    pub fn delete_model(&mut self, path: PathBuf) {
        if let ModelState::Ready(info) = &self.model {
            if info.path == path {
                self.unload_model();
            }
        }
        let dir = self.settings.models_dir();
        let cache = self.hub.cache_dir.clone();
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        std::thread::spawn(move || {
            let r = if crate::hub::cache::repo_of(&path, &cache).is_some() {
                crate::hub::cache::delete(&path, &cache).map_err(|e| e.to_string())
            } else {
                installed::delete(&path, &dir).map_err(|e| e.to_string())
            };
            let r = r.map(|n| (path, n));
            let _ = tx.send(Background::Deleted(r));
            let _ = tx.send(Background::Installed(installed::installed_with_cache(&dir, &cache)));
        });
    }

    pub fn export(&mut self, id: &str, markdown: bool) {
        let Some(c) = self.conversations.iter().find(|c| c.id == id).cloned() else { return };
        let ext = if markdown { "md" } else { "json" };
        let name: String = c.title.chars().map(|ch| if ch.is_alphanumeric() || ch == ' ' { ch } else { '_' }).collect();
        let fut = rfd::AsyncFileDialog::new()
            .set_file_name(format!("{}.{ext}", name.trim()))
            .save_file();
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        std::thread::spawn(move || {
            let Some(h) = pollster::block_on(fut) else {
                let _ = tx.send(Background::Exported(Err(String::new())));
                return;
            };
            let path = h.path().to_path_buf();
            let bytes = if markdown { c.to_markdown().into_bytes() } else { serialize(&c) };
            let r = crate::store::write_atomic(&path, &bytes).map(|_| path).map_err(|e| e.to_string());
            let _ = tx.send(Background::Exported(r));
        });
    }

    pub fn start_download(&mut self, id: &str, confirmed: bool) {
        self.downloads.retain(|d| d.id != id);
        self.downloads.push(Download { id: id.to_string(), status: DownloadStatus::Starting, fit: None });
        self.hub.send(HubCommand::Start { id: id.to_string(), only: None, confirmed });
    }

    pub fn pause_download(&mut self, id: &str) {
        self.hub.send(HubCommand::Pause(id.to_string()));
    }

    pub fn resume_download(&mut self, id: &str) {
        if let Some(d) = self.downloads.iter_mut().find(|d| d.id == id) {
            d.status = DownloadStatus::Starting;
        }
        self.hub.send(HubCommand::Resume(id.to_string()));
    }

    pub fn cancel_download(&mut self, id: &str) {
        self.hub.send(HubCommand::Cancel(id.to_string()));
    }

    pub fn search_hub(&mut self) {
        let q = self.hub_search.query.trim().to_string();
        self.hub_search.pending = true;
        let kind = if self.hub_search.gguf { SearchKind::Gguf } else { SearchKind::Mlx };
        self.hub.send(HubCommand::Search { query: q, kind });
    }

    pub fn set_token(&mut self, token: Option<String>) {
        let r = match &token {
            Some(t) => crate::hub::token::save(t),
            None => crate::hub::token::clear(),
        };
        match r {
            Ok(()) => {
                self.hub.send(HubCommand::SetToken(crate::hub::token::load()));
                self.info(if token.is_some() { "Hugging Face token saved (readable only by you)" } else { "Hugging Face token removed" });
            }
            Err(e) => self.error(format!("Could not save the token: {e}")),
        }
    }

    fn on_hub_event(&mut self, ev: HubEvent) {
        let id = match &ev {
            HubEvent::SearchResults { .. } => String::new(),
            HubEvent::Planned { id, .. }
            | HubEvent::NeedsConfirm { id, .. }
            | HubEvent::Progress { id, .. }
            | HubEvent::Paused { id, .. }
            | HubEvent::Finished { id, .. }
            | HubEvent::Failed { id, .. }
            | HubEvent::Cancelled { id } => id.clone(),
        };
        if !id.is_empty() && !self.downloads.iter().any(|d| d.id == id) && !matches!(ev, HubEvent::Cancelled { .. }) {
            self.downloads.push(Download { id: id.clone(), status: DownloadStatus::Starting, fit: None });
        }
        let d = self.downloads.iter_mut().find(|d| d.id == id);
        match (ev, d) {
            (HubEvent::SearchResults { result, .. }, _) => {
                self.hub_search.pending = false;
                if let Err(HubError::Offline(m)) = &result {
                    self.hub_offline = Some(m.clone());
                } else if result.is_ok() {
                    self.hub_offline = None;
                }
                self.hub_search.results = Some(result.map_err(|e| e.to_string()));
            }
            (HubEvent::Planned { need, verdict, .. }, Some(d)) => d.fit = Some((need, verdict)),
            (HubEvent::NeedsConfirm { need, memory, .. }, Some(d)) => d.status = DownloadStatus::NeedsConfirm { need, memory },
            (HubEvent::Progress { progress, .. }, Some(d)) => {
                self.hub_offline = None;
                d.status = DownloadStatus::Running(progress)
            }
            (HubEvent::Paused { done, total, .. }, Some(d)) => d.status = DownloadStatus::Paused { done, total },
            (HubEvent::Finished { id, .. }, _) => {
                self.downloads.retain(|d| d.id != id);
                self.info(format!("Downloaded {id}"));
                self.refresh_installed();
            }
            (HubEvent::Cancelled { id }, _) => self.downloads.retain(|d| d.id != id),
            (HubEvent::Failed { error, .. }, d) => {
                if let HubError::Offline(m) = &error {
                    self.hub_offline = Some(m.clone());
                }
                match d {
                    Some(d) => d.status = DownloadStatus::Failed(error.to_string()),
                    None => self.error(error.to_string()),
                }
            }
            _ => {}
        }
    }

    /// Re-lists installed models (models folder and HF cache) off the UI thread.
    fn refresh_installed(&mut self) {
        let dir = self.settings.models_dir();
        let cache = self.hub.cache_dir.clone();
        let tx = self.bg_tx.clone();
        self.pending_bg += 1;
        std::thread::spawn(move || {
            let _ = tx.send(Background::Installed(installed::installed_with_cache(&dir, &cache)));
        });
    }

    /// Drains engine events and background results; returns true if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        while let Ok(ev) = self.hub.events.try_recv() {
            changed = true;
            self.on_hub_event(ev);
        }
        while let Ok(ev) = self.engine.events.try_recv() {
            changed = true;
            self.on_event(ev);
        }
        while let Ok(bg) = self.bg_rx.try_recv() {
            changed = true;
            match bg {
                Background::Installed(v) => {
                    // The last message of an import or delete job.
                    self.installed = v;
                    self.pending_bg = self.pending_bg.saturating_sub(1);
                }
                Background::Imported(Ok(p)) => self.info(format!("Imported {}", p.display())),
                Background::Imported(Err(e)) => self.error(format!("Import failed: {e}")),
                Background::Deleted(Ok((p, n))) => {
                    self.info(format!("Deleted {} ({:.1} MB freed)", p.display(), n as f64 / 1e6))
                }
                Background::Deleted(Err(e)) => self.error(format!("Delete failed: {e}")),
                Background::Exported(r) => {
                    self.pending_bg = self.pending_bg.saturating_sub(1);
                    match r {
                        Ok(p) => self.info(format!("Exported to {}", p.display())),
                        Err(e) if e.is_empty() => {} // dialog cancelled
                        Err(e) => self.error(format!("Export failed: {e}")),
                    }
                }
                Background::PickedModelsDir(p) => {
                    self.pending_bg = self.pending_bg.saturating_sub(1);
                    if let Some(p) = p {
                        self.set_models_dir(p);
                    }
                }
                Background::PickedImport(p) => {
                    self.pending_bg = self.pending_bg.saturating_sub(1);
                    if let Some(p) = p {
                        self.import(p);
                    }
                }
            }
        }
        while let Ok(e) = self.saver.errors.try_recv() {
            changed = true;
            self.error(format!("Could not save: {e}"));
        }
        changed
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::LoadProgress { fraction, message } => {
                if let ModelState::Loading { path, .. } = &self.model {
                    self.model = ModelState::Loading { path: path.clone(), fraction, message };
                }
            }
            Event::Loaded(info) => {
                if self.settings.last_model.as_ref() != Some(&info.path) {
                    self.settings.last_model = Some(info.path.clone());
                    self.save_settings();
                }
                self.model = ModelState::Ready(info);
            }
            Event::LoadFailed(e) => self.model = ModelState::Failed(e),
            Event::Unloaded => self.model = ModelState::None,
            Event::ContextTrimmed { dropped_messages, .. } => self.info(format!(
                "This chat is longer than the context ({} tokens): the oldest {dropped_messages} message(s) were left out of the prompt.",
                self.settings.context_length
            )),
            Event::Token { id, text } => self.on_token(id, &text),
            Event::Finished { id, stats } => {
                if let Some(s) = self.streaming.take_if(|s| s.request == id) {
                    self.live.ttft_s = Some(stats.ttft_s);
                    self.live.tok_per_s = stats.decode_tps;
                    self.live.prompt_tokens = stats.prompt_tokens;
                    self.live.generated = stats.generated_tokens;
                    if let Some(c) = self.conversation_mut(&s.conversation) {
                        if let Some(m) = c.messages.last_mut() {
                            m.stats = Some(GenerationStatsLite::from(&stats));
                            if let (Some(t0), None) = (s.think_started, m.thought_secs) {
                                if m.content.contains("<think>") {
                                    m.thought_secs = Some(t0.elapsed().as_secs_f32());
                                }
                            }
                        }
                        c.updated = crate::store::conversations::now_secs();
                    }
                    self.persist(&s.conversation);
                }
            }
            Event::Error { id, message } => {
                let stream = match id {
                    Some(id) => self.streaming.take_if(|s| s.request == id),
                    None => None,
                };
                match stream {
                    Some(s) => {
                        if let Some(c) = self.conversation_mut(&s.conversation) {
                            if let Some(m) = c.messages.last_mut().filter(|m| m.role == Role::Assistant) {
                                m.error = Some(message);
                            }
                        }
                        self.persist(&s.conversation);
                    }
                    None => self.error(message),
                }
            }
            Event::Memory(m) => self.live.memory = m,
            Event::Crashed(msg) => {
                self.streaming = None;
                self.model = ModelState::Failed(format!("The engine stopped unexpectedly: {msg}"));
                self.error(format!("The inference engine crashed ({msg}). Use \u{201c}Restart engine\u{201d} to continue."));
            }
        }
    }

    fn on_token(&mut self, id: u64, text: &str) {
        let Some(s) = self.streaming.as_mut().filter(|s| s.request == id) else { return };
        let now = Instant::now();
        if s.first_token.is_none() {
            s.first_token = Some(now);
            self.live.ttft_s = Some((now - s.started).as_secs_f64());
        }
        s.pieces += 1;
        let conv = s.conversation.clone();
        let first = s.first_token.expect("set above");
        let elapsed = (now - first).as_secs_f64();
        if s.pieces > 1 && elapsed > 0.0 {
            self.live.tok_per_s = (s.pieces - 1) as f64 / elapsed;
        }
        self.live.generated = s.pieces;
        let think_started = &mut s.think_started;
        if let Some(c) = self.conversations.iter_mut().find(|c| c.id == conv) {
            if let Some(m) = c.messages.last_mut() {
                m.content.push_str(text);
                if think_started.is_none() && m.content.contains("<think>") {
                    *think_started = Some(now);
                }
                if m.thought_secs.is_none() && m.content.contains("</think>") {
                    if let Some(t0) = think_started {
                        m.thought_secs = Some(t0.elapsed().as_secs_f32());
                    }
                }
            }
        }
    }

    /// Flushes pending writes (on exit, and in tests before a restart).
    pub fn flush(&self) {
        self.saver.flush();
    }
}

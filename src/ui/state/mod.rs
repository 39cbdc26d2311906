//! Application state, separate from widgets, composed of one part per concern
//! (as egui's demo app composes its state): conversations (`chat`), the engine
//! and what it reported (`engine`), downloads and installed models
//! (`downloads`), and background jobs (`jobs`). Panels read and mutate this;
//! only `AppState` talks to the engine and the disk (through the saver thread).

mod attachments;
mod chat;
pub use chat::INTERRUPTED;
mod downloads;
mod engine;
mod jobs;
mod meter;
mod organize;
mod presets;
mod server;
mod tools;

pub use chat::{ChatState, Streaming};
pub use downloads::{Download, DownloadStatus, DownloadsState, HubSearch};
pub use engine::{EngineState, LiveStats, ModelState};
pub use jobs::{Background, Jobs};
pub use attachments::{read_attachment, Attachments};
pub use meter::Meter;
pub use organize::Group;
pub use presets::read_presets;
pub use server::ServerState;
pub use tools::{Decision, McpState, PendingCall, DENIED};

use crate::hub::manager::{HubConfig, HubHandle};
use crate::hub::HubError;
use crate::library::InstalledModel;
use crate::store::conversations::ConversationStore;
use crate::store::settings::Settings;
use crate::store::Saver;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Chat,
    Models,
    Server,
    Settings,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NoticeKind {
    Info,
    Error,
}

/// What a notice offers to do, besides dismissing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeAction {
    RestartEngine,
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub text: String,
    pub action: Option<NoticeAction>,
}

pub struct AppState {
    /// Where everything lives (conversations/, settings.json, models/, the daemon's socket).
    pub data_dir: PathBuf,
    pub settings: Settings,
    pub settings_path: PathBuf,
    pub saver: Saver,
    pub view: View,
    pub notices: Vec<Notice>,
    pub chat: ChatState,
    pub engine: EngineState,
    pub downloads: DownloadsState,
    pub installed: Vec<InstalledModel>,
    /// Whether a scan of the models has landed yet: the first runs off the
    /// UI thread like every other, so the window draws whatever is on disk.
    pub installed_scanned: bool,
    /// `autoload` found no last model and waits for the first scan.
    autoload_pending: bool,
    pub jobs: Jobs,
    pub server: ServerState,
    pub mcp: McpState,
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
        let context = settings.context_length as u64;
        let mut s = AppState {
            engine: EngineState::start(data_dir),
            data_dir: data_dir.to_path_buf(),
            settings,
            settings_path,
            saver: Saver::spawn(),
            chat: ChatState::new(store, conversations),
            view: View::Chat,
            notices: vec![],
            installed: vec![],
            installed_scanned: false,
            autoload_pending: false,
            downloads: DownloadsState {
                offline: hub.offline.then(|| HubError::offline_mode().to_string()),
                hub: HubHandle::spawn(HubConfig { context, ..hub }),
                list: vec![],
                search: HubSearch::default(),
            },
            jobs: Jobs::default(),
            server: ServerState::default(),
            mcp: McpState::new(data_dir.join("mcp.json")),
        };
        s.refresh_installed();
        if let Some(why) = s.engine.attach_error.clone() {
            s.error(format!("A Hearth daemon holds this data folder's socket but could not be attached to ({why}); this app runs its own engine."));
        }
        if let Some(n) = notice {
            s.error(n);
        }
        for e in errors {
            s.error(format!("Skipped an unreadable conversation file: {e}"));
        }
        s
    }

    /// Loads the last used model, or the first installed one whose headers
    /// read (once the first scan has listed them).
    pub fn autoload(&mut self) {
        // An attached daemon's model is the chat's already (or is on its way).
        if matches!(self.engine.model, ModelState::Ready(_) | ModelState::Loading { .. }) {
            return;
        }
        let pick = self.settings.last_model.clone().filter(|p| p.exists());
        match pick.or_else(|| self.installed.iter().find(|m| m.problem.is_none()).map(|m| m.path.clone())) {
            Some(p) => self.load_model(p),
            None => self.autoload_pending = !self.installed_scanned,
        }
    }

    pub fn info(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { kind: NoticeKind::Info, text: text.into(), action: None });
    }

    pub fn error(&mut self, text: impl Into<String>) {
        self.notices.push(Notice { kind: NoticeKind::Error, text: text.into(), action: None });
    }

    pub fn error_with_action(&mut self, text: impl Into<String>, action: NoticeAction) {
        self.notices.push(Notice { kind: NoticeKind::Error, text: text.into(), action: Some(action) });
    }

    pub fn save_settings(&self) {
        self.saver.write(self.settings_path.clone(), self.settings.to_bytes());
    }

    /// Drains engine events, download events and background results. Each
    /// source wakes the UI itself, so there is nothing to report back.
    pub fn poll(&mut self) {
        while let Ok(ev) = self.downloads.hub.events.try_recv() {
            self.on_hub_event(ev);
        }
        while let Ok(ev) = self.engine.handle.events.try_recv() {
            self.on_event(ev);
        }
        while let Ok(ev) = self.mcp.handle.events.try_recv() {
            self.on_mcp_event(ev);
        }
        for bg in self.jobs.drain() {
            self.on_background(bg);
        }
        while let Ok(e) = self.saver.errors.try_recv() {
            self.error(format!("Could not save: {e}"));
        }
    }

    fn on_background(&mut self, bg: Background) {
        match bg {
            Background::Installed(v) => {
                self.installed = v;
                self.installed_scanned = true;
                if std::mem::take(&mut self.autoload_pending) {
                    self.autoload();
                }
            }
            Background::Imported(r, v) => {
                self.installed = v;
                match r {
                    Ok(p) => self.info(format!("Imported {}", p.display())),
                    Err(e) => self.error(format!("Import failed: {e}")),
                }
            }
            Background::Deleted(r, v) => {
                self.installed = v;
                match r {
                    Ok((p, n)) => self.info(format!("Deleted {} ({} freed)", p.display(), crate::units::bytes(n))),
                    Err(e) => self.error(format!("Delete failed: {e}")),
                }
            }
            Background::Exported(None) => {} // dialog cancelled
            Background::Exported(Some(Ok(p))) => self.info(format!("Exported to {}", p.display())),
            Background::Exported(Some(Err(e))) => self.error(format!("Export failed: {e}")),
            Background::PickedModelsDir(p) => {
                if let Some(p) = p {
                    self.set_models_dir(p);
                }
            }
            Background::DaemonStarted(r) => self.on_daemon_started(r),
            Background::DaemonStopped(r) => self.on_daemon_stopped(r),
            Background::AttachmentsRead(read) => self.on_attachments_read(read),
            Background::PresetsRead(None) => {} // dialog cancelled
            Background::PresetsRead(Some(r)) => self.on_presets_read(r),
            Background::PromptCachesCleared(n) => self.info(format!("Cleared the prompt caches on disk ({} freed)", crate::units::bytes(n))),
            Background::PickedImport(p) => {
                if let Some(p) = p {
                    self.import(p);
                }
            }
        }
    }

    /// Flushes pending writes (on exit, and in tests before a restart).
    pub fn flush(&self) {
        self.saver.flush();
    }
}

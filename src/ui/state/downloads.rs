//! Downloads and Hugging Face search as the model manager shows them, the
//! download thread's handle, and the installed-models actions (import, delete,
//! models folder) that change what the manager lists.

use super::{AppState, Background};
use crate::hub::manager::{HubCommand, HubEvent, HubHandle};
use crate::hub::{HubError, Progress, SearchHit, SearchKind};
use crate::library::{hf_cache, installed};
use crate::models::load::fit::Verdict;
use std::path::PathBuf;

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

pub struct DownloadsState {
    /// The download thread.
    pub hub: HubHandle,
    pub list: Vec<Download>,
    pub search: HubSearch,
    /// Set when a download or search found no connection.
    pub offline: Option<String>,
}

impl AppState {
    pub fn start_download(&mut self, id: &str, confirmed: bool) {
        let list = &mut self.downloads.list;
        list.retain(|d| d.id != id);
        list.push(Download { id: id.to_string(), status: DownloadStatus::Starting, fit: None });
        self.downloads.hub.send(HubCommand::Start { id: id.to_string(), only: None, confirmed });
    }

    pub fn pause_download(&mut self, id: &str) {
        self.downloads.hub.send(HubCommand::Pause(id.to_string()));
    }

    pub fn resume_download(&mut self, id: &str) {
        if let Some(d) = self.downloads.list.iter_mut().find(|d| d.id == id) {
            d.status = DownloadStatus::Starting;
        }
        self.downloads.hub.send(HubCommand::Resume(id.to_string()));
    }

    pub fn cancel_download(&mut self, id: &str) {
        self.downloads.hub.send(HubCommand::Cancel(id.to_string()));
    }

    pub fn search_hub(&mut self) {
        let s = &mut self.downloads.search;
        let q = s.query.trim().to_string();
        s.pending = true;
        let kind = if s.gguf { SearchKind::Gguf } else { SearchKind::Mlx };
        self.downloads.hub.send(HubCommand::Search { query: q, kind });
    }

    pub fn set_token(&mut self, token: Option<String>) {
        let r = match &token {
            Some(t) => crate::hub::token::save(t),
            None => crate::hub::token::clear(),
        };
        match r {
            Ok(()) => {
                self.downloads.hub.send(HubCommand::SetToken(crate::hub::token::load()));
                self.info(if token.is_some() { "Hugging Face token saved (readable only by you)" } else { "Hugging Face token removed" });
            }
            Err(e) => self.error(format!("Could not save the token: {e}")),
        }
    }

    pub(super) fn on_hub_event(&mut self, ev: HubEvent) {
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
        let dl = &mut self.downloads;
        if !id.is_empty() && !dl.list.iter().any(|d| d.id == id) && !matches!(ev, HubEvent::Cancelled { .. }) {
            dl.list.push(Download { id: id.clone(), status: DownloadStatus::Starting, fit: None });
        }
        let d = dl.list.iter_mut().find(|d| d.id == id);
        match (ev, d) {
            (HubEvent::SearchResults { result, .. }, _) => {
                dl.search.pending = false;
                if let Err(HubError::Offline(m)) = &result {
                    dl.offline = Some(m.clone());
                } else if result.is_ok() {
                    dl.offline = None;
                }
                dl.search.results = Some(result.map_err(|e| e.to_string()));
            }
            (HubEvent::Planned { need, verdict, .. }, Some(d)) => d.fit = Some((need, verdict)),
            (HubEvent::NeedsConfirm { need, memory, .. }, Some(d)) => d.status = DownloadStatus::NeedsConfirm { need, memory },
            (HubEvent::Progress { progress, .. }, Some(d)) => {
                d.status = DownloadStatus::Running(progress);
                dl.offline = None;
            }
            (HubEvent::Paused { done, total, .. }, Some(d)) => d.status = DownloadStatus::Paused { done, total },
            (HubEvent::Finished { id, .. }, _) => {
                dl.list.retain(|d| d.id != id);
                self.info(format!("Downloaded {id}"));
                self.refresh_installed();
            }
            (HubEvent::Cancelled { id }, _) => dl.list.retain(|d| d.id != id),
            (HubEvent::Failed { error, .. }, d) => {
                let offline = match &error {
                    HubError::Offline(m) => Some(m.clone()),
                    _ => None,
                };
                match d {
                    Some(d) => d.status = DownloadStatus::Failed(error.to_string()),
                    None => self.error(error.to_string()),
                }
                if offline.is_some() {
                    self.downloads.offline = offline;
                }
            }
            _ => {}
        }
    }

    /// Re-lists installed models (models folder and HF cache) off the UI thread.
    pub(super) fn refresh_installed(&mut self) {
        let (dir, cache) = (self.settings.models_dir(), self.downloads.hub.cache_dir.clone());
        self.jobs.spawn(move || Background::Installed(installed::installed_with_cache(&dir, &cache)));
    }

    pub fn import(&mut self, src: PathBuf) {
        let (dir, cache) = (self.settings.models_dir(), self.downloads.hub.cache_dir.clone());
        self.jobs.spawn(move || {
            let r = installed::import(&src, &dir, false).map(|p| p.unwrap_or(src)).map_err(|e| e.to_string());
            Background::Imported(r, installed::installed_with_cache(&dir, &cache))
        });
    }

    pub fn pick_import(&mut self, folder: bool) {
        let dialog = rfd::AsyncFileDialog::new().set_title("Import a model");
        if folder {
            let fut = dialog.pick_folder();
            self.jobs.spawn(move || Background::PickedImport(pollster::block_on(fut).map(|h| h.path().to_path_buf())));
        } else {
            let fut = dialog.add_filter("GGUF model", &["gguf"]).pick_file();
            self.jobs.spawn(move || Background::PickedImport(pollster::block_on(fut).map(|h| h.path().to_path_buf())));
        }
    }

    pub fn pick_models_dir(&mut self) {
        let fut = rfd::AsyncFileDialog::new().set_title("Choose the models folder").pick_folder();
        self.jobs.spawn(move || Background::PickedModelsDir(pollster::block_on(fut).map(|h| h.path().to_path_buf())));
    }

    /// Points Hearth at another models folder and lists what is in it.
    pub fn set_models_dir(&mut self, dir: PathBuf) {
        self.settings.models_dir = Some(dir);
        self.save_settings();
        self.refresh_installed();
    }

    pub fn delete_model(&mut self, path: PathBuf) {
        if let super::ModelState::Ready(info) = &self.engine.model {
            if info.path == path {
                self.unload_model();
            }
        }
        let (dir, cache) = (self.settings.models_dir(), self.downloads.hub.cache_dir.clone());
        self.jobs.spawn(move || {
            let r = if hf_cache::repo_of(&path, &cache).is_some() {
                hf_cache::delete(&path, &cache).map_err(|e| e.to_string())
            } else {
                installed::delete(&path, &dir).map_err(|e| e.to_string())
            };
            Background::Deleted(r.map(|n| (path, n)), installed::installed_with_cache(&dir, &cache))
        });
    }
}

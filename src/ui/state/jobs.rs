//! Work the app does off the UI thread (file dialogs, import, delete, export,
//! listing models): one helper starts a job, each job sends exactly one result,
//! and the count of jobs in flight comes from the helper, not from hand-kept
//! counters.

use crate::library::InstalledModel;
use crossbeam_channel::{Receiver, Sender};
use std::path::PathBuf;

/// The result of one background job.
pub enum Background {
    Installed(Vec<InstalledModel>),
    /// An import finished; the models list as it is afterwards.
    Imported(Result<PathBuf, String>, Vec<InstalledModel>),
    /// A delete finished (path and bytes freed); the models list afterwards.
    Deleted(Result<(PathBuf, u64), String>, Vec<InstalledModel>),
    /// None when the save dialog was cancelled.
    Exported(Option<Result<PathBuf, String>>),
    PickedImport(Option<PathBuf>),
    PickedModelsDir(Option<PathBuf>),
    /// `hearth serve --daemon` started from the Server panel returned (its words, or why it failed).
    DaemonStarted(Result<String, String>),
    /// The attached daemon was asked to stop (its pid), or why it could not be.
    DaemonStopped(Result<u32, String>),
    /// Files read for the question being written (each, or why it was refused).
    AttachmentsRead(Vec<Result<crate::store::conversations::Attachment, String>>),
    /// A presets file was read (None: the dialog was cancelled).
    PresetsRead(Option<Result<Vec<crate::store::settings::Preset>, String>>),
    /// The conversations' prompt caches on disk were removed (bytes freed).
    PromptCachesCleared(u64),
}

pub struct Jobs {
    tx: Sender<Background>,
    rx: Receiver<Background>,
    pending: usize,
}

impl Default for Jobs {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Jobs { tx, rx, pending: 0 }
    }
}

impl Jobs {
    /// Runs `job` on its own thread; its result arrives through `drain`.
    pub fn spawn(&mut self, job: impl FnOnce() -> Background + Send + 'static) {
        self.pending += 1;
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(job());
        });
    }

    /// Jobs started and not yet reported back (the UI keeps polling while any run).
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Results that arrived since the last call.
    pub fn drain(&mut self) -> Vec<Background> {
        let done: Vec<Background> = self.rx.try_iter().collect();
        self.pending = self.pending.saturating_sub(done.len());
        done
    }
}

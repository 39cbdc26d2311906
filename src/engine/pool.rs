//! The models the engine holds at once, each with its own batch: the
//! primary (the app's or the CLI's model: `Load`, `Unload`, drafting and
//! template settings follow it) and residents an API server loads beside it
//! (`Reside`, `Evict`), so requests for several models run without
//! reloading. A generation names its model by path (None: the primary); a
//! path is held once, whichever way it was loaded, so no model ever has two
//! instances in memory.

use super::batch::Batch;
use super::session::Session;
use std::path::{Path, PathBuf};

pub(super) struct Resident {
    /// As canonicalized when loaded (requests name models by any spelling).
    pub key: PathBuf,
    pub session: Session,
    pub batch: Batch,
    pub primary: bool,
}

#[derive(Default)]
pub(super) struct Pool {
    pub models: Vec<Resident>,
}

/// A path as the pool compares it (the server's pool compares the same way).
pub(crate) fn key(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

impl Pool {
    /// The model a request names (None: the primary).
    pub fn find(&self, model: Option<&Path>) -> Option<usize> {
        match model {
            None => self.models.iter().position(|r| r.primary),
            Some(p) => {
                let k = key(p);
                self.models.iter().position(|r| r.key == k)
            }
        }
    }

    pub fn primary(&mut self) -> Option<&mut Resident> {
        self.models.iter_mut().find(|r| r.primary)
    }

    /// Whether the primary model is running sequences.
    pub fn primary_busy(&self) -> bool {
        self.models.iter().any(|r| r.primary && !r.batch.is_empty())
    }

    pub fn any_busy(&self) -> bool {
        self.models.iter().any(|r| !r.batch.is_empty())
    }

    pub fn cancel_all(&self) {
        for r in &self.models {
            r.batch.cancel_all();
        }
    }

    /// Removes model `i` and gives its memory back: MLX's buffer cache,
    /// then what the allocator kept of it.
    pub fn remove(&mut self, i: usize) {
        drop(self.models.remove(i));
        free_memory();
    }

    /// Drops the primary model (a resident that is not primary stays).
    pub fn drop_primary(&mut self) {
        if let Some(i) = self.find(None) {
            self.remove(i);
        }
    }

    /// Every session, for settings that apply to all models.
    pub fn sessions(&mut self) -> impl Iterator<Item = &mut Session> {
        self.models.iter_mut().map(|r| &mut r.session)
    }
}

pub(super) fn free_memory() {
    let _ = mlx_rs::memory::clear_cache();
    crate::sys::return_freed_memory();
}

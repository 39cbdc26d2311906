//! Responses the OpenAI Responses API keeps (`store: true`, its default), so
//! a client continues a conversation by `previous_response_id` without
//! sending it again, and reads or deletes one by id. One JSON file per
//! response, named by its id, in `<data>/responses/`; at most `max_count`
//! of them, the oldest dropped when a new one is saved. Ids are checked before
//! they name a file, so a crafted id reads and writes nothing outside.

use super::write_atomic;
use crate::chat::Message;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The most responses kept unless configured otherwise.
pub const DEFAULT_MAX_COUNT: usize = 1000;
/// A stored response's largest file (a long agent session with big tool
/// outputs stays well under it).
const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    pub id: String,
    /// The model that wrote it (a continuation must use the same one).
    pub model: String,
    /// The conversation up to and including this response's output, without
    /// the request's `instructions` (which OpenAI does not carry over).
    pub history: Vec<Message>,
    /// The response object as the client got it.
    pub response: serde_json::Value,
    /// The request's input as items with ids (`GET …/input_items`).
    #[serde(default)]
    pub input_items: Vec<serde_json::Value>,
}

#[derive(Clone)]
pub struct ResponseStore {
    dir: PathBuf,
    max_count: usize,
}

/// `resp_` and 1 to 64 ASCII letters or digits: nothing else names a file.
pub fn valid_id(id: &str) -> bool {
    id.strip_prefix("resp_").is_some_and(|r| !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// A new response id: `resp_` and 24 hex digits, from the clock, a count
/// and the process's random hasher keys (unique across restarts).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u64(COUNT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("resp_{:016x}{:08x}", h.finish(), (nanos as u64) as u32)
}

impl ResponseStore {
    pub fn new(dir: PathBuf, max_count: usize) -> Self {
        ResponseStore { dir, max_count: max_count.max(1) }
    }

    /// `<data>/responses`, keeping `HEARTH_RESPONSE_STORE_MAX` responses
    /// (default 1000).
    pub fn in_data_dir() -> Self {
        let max = std::env::var("HEARTH_RESPONSE_STORE_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX_COUNT);
        let dir = crate::paths::data_dir().join("responses");
        super::remove_stale_temporaries(&dir);
        ResponseStore::new(dir, max)
    }

    fn path(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(Error::InvalidArgument(format!("'{}' is not a response id", id.chars().take(80).collect::<String>())));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    /// Saves atomically, then drops the oldest beyond the bound.
    pub fn save(&self, r: &StoredResponse) -> Result<()> {
        let path = self.path(&r.id)?;
        let bytes = serde_json::to_vec(r).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if bytes.len() as u64 > MAX_FILE {
            return Err(Error::InvalidArgument(format!(
                "response {} is not stored: its conversation is {} MB, more than the {} MB a stored response may hold; send the history instead",
                r.id,
                bytes.len() >> 20,
                MAX_FILE >> 20
            )));
        }
        write_atomic(&path, &bytes)?;
        self.prune(&r.id);
        Ok(())
    }

    /// The response with this id; `Ok(None)` when none is stored.
    pub fn load(&self, id: &str) -> Result<Option<StoredResponse>> {
        let path = self.path(id)?;
        let Some(text) = crate::files::read_small_text(&path, MAX_FILE)? else { return Ok(None) };
        let r: StoredResponse = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidArgument(format!("stored response {id} is unreadable ({e}); delete it and start again")))?;
        if r.id != id {
            return Err(Error::InvalidArgument(format!("stored response {id} holds another id")));
        }
        Ok(Some(r))
    }

    /// Whether there was one to delete.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let path = self.path(id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { path, source: e }),
        }
    }

    /// Removes the oldest stored responses beyond `max_count` (never `keep`,
    /// the one just saved).
    fn prune(&self, keep: &str) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = rd
            .flatten()
            .filter(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).is_some_and(valid_id))
            .filter_map(|e| {
                let meta = e.metadata().ok().filter(|m| m.is_file())?;
                Some((meta.modified().ok()?, e.path()))
            })
            .collect();
        if files.len() <= self.max_count {
            return;
        }
        files.sort();
        let extra = files.len() - self.max_count;
        for (_, p) in files.into_iter().filter(|(_, p)| !is(p, keep)).take(extra) {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn is(path: &Path, id: &str) -> bool {
    path.file_stem().is_some_and(|s| s == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: &str) -> StoredResponse {
        StoredResponse { id: id.into(), model: "m".into(), history: vec![Message::user("hi")], response: serde_json::json!({"id": id}), input_items: vec![] }
    }

    #[test]
    fn responses_are_kept_within_the_bound_and_ids_never_leave_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResponseStore::new(dir.path().join("responses"), 2);
        let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
        assert!(ids.iter().all(|i| valid_id(i)) && ids[0] != ids[1]);
        for id in &ids {
            store.save(&response(id)).unwrap();
            // Distinct modification times on coarse clocks.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The oldest went; the newest two stay, whole.
        assert!(store.load(&ids[0]).unwrap().is_none());
        assert_eq!(store.load(&ids[2]).unwrap().unwrap().history[0].content, "hi");
        assert!(store.delete(&ids[1]).unwrap());
        assert!(!store.delete(&ids[1]).unwrap());

        for bad in ["../../etc/passwd", "resp_../x", "resp_", "resp_a/b", "x"] {
            assert!(store.load(bad).unwrap_err().to_string().contains("is not a response id"), "{bad}");
        }
        // A file that is not a stored response is an error naming it.
        std::fs::write(dir.path().join("responses/resp_bad.json"), "{not json").unwrap();
        assert!(store.load("resp_bad").unwrap_err().to_string().contains("stored response resp_bad is unreadable"));
    }
}

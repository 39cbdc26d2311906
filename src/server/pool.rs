//! The models the server holds for requests, several at once: a request's
//! model is loaded just in time (one load at a time, never a second
//! instance of one already held), stays while requests use it, and goes
//! when its idle time-to-live runs out or when a load needs its memory
//! under the budget (least recently used first, never one a request is
//! using). The app's chat model (the engine's primary) is shared, never
//! evicted from here.

use crate::engine::protocol::EngineError;
use crate::models::load::ModelInfo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long an idle model stays (a request's `ttl`, Ollama's `keep_alive`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    For(Duration),
    Forever,
}

impl Keep {
    /// Ollama's `keep_alive`: seconds as a number, or a duration such as
    /// "10s", "5m", "1h30m"; negative keeps the model loaded for good.
    pub fn from_ollama(v: &serde_json::Value) -> Result<Option<Keep>, String> {
        let bad = || format!("keep_alive {v} is not a duration (such as 30, \"10s\", \"5m\", \"1h\" or -1)");
        let secs = match v {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::Number(n) => n.as_f64().ok_or_else(bad)?,
            serde_json::Value::String(s) => {
                let s = s.trim();
                if let Ok(n) = s.parse::<f64>() {
                    n
                } else {
                    let (neg, body) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
                    let (mut total, mut num) = (0.0, String::new());
                    for c in body.chars() {
                        match c {
                            '0'..='9' | '.' => num.push(c),
                            'h' | 'm' | 's' if !num.is_empty() => {
                                let n: f64 = num.parse().map_err(|_| bad())?;
                                total += n * match c { 'h' => 3600.0, 'm' => 60.0, _ => 1.0 };
                                num.clear();
                            }
                            _ => return Err(bad()),
                        }
                    }
                    if !num.is_empty() || body.is_empty() {
                        return Err(bad());
                    }
                    if neg { -total } else { total }
                }
            }
            _ => return Err(bad()),
        };
        Ok(Some(Keep::seconds(secs)))
    }

    /// A number of seconds (LM Studio's `ttl`); negative: forever.
    pub fn seconds(s: f64) -> Keep {
        if s < 0.0 || !s.is_finite() {
            Keep::Forever
        } else {
            Keep::For(Duration::from_secs_f64(s.min(1e9)))
        }
    }
}

/// One model held for requests.
#[derive(Debug, Clone)]
pub struct Held {
    pub info: ModelInfo,
    /// Its files' size: what the memory budget counts.
    pub size: u64,
    /// The app's chat model: shared with requests, never evicted here.
    pub primary: bool,
    pub in_flight: usize,
    pub last_used: Instant,
    /// The time to live the last request set (None: the server's default).
    pub keep: Option<Keep>,
    /// When it was loaded (milliseconds since 1970): a reload shows as a new time.
    pub loaded_at_ms: u64,
    /// Being evicted: no new request may use it (it waits and loads it again).
    pub evicting: bool,
}

/// The pool's state, shared with the event dispatcher (which applies the
/// engine's answers) and the `Use` guards (which end requests).
#[derive(Default)]
pub struct PoolState {
    pub held: HashMap<PathBuf, Held>,
    /// `Resident` answers not yet taken by the load that asked.
    pub answers: HashMap<PathBuf, Result<ModelInfo, String>>,
    /// Sizes of models held, by path, for the primary (which the dispatcher learns of).
    pub sizes: HashMap<PathBuf, u64>,
}

/// A path as the pool compares it (requests may spell it differently):
/// the engine's own key, so both sides agree on which model a path means.
pub(crate) use crate::engine::pool::key;

pub type Shared = Arc<Mutex<PoolState>>;

pub fn lock(p: &Shared) -> std::sync::MutexGuard<'_, PoolState> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl PoolState {
    /// The engine loaded the primary (the app's chat model): it replaces the last one.
    pub fn primary_loaded(&mut self, info: ModelInfo) {
        self.held.retain(|_, h| !h.primary);
        let k = key(&info.path);
        let size = self.sizes.get(&k).copied().unwrap_or_else(|| crate::library::installed::dir_size(&info.path));
        let h = self.held.entry(k).or_insert_with(|| new_held(info.clone(), size, true));
        h.primary = true;
        h.info = info;
    }

    pub fn primary_unloaded(&mut self) {
        self.held.retain(|_, h| !h.primary);
    }

    /// `Reside`'s answer.
    pub fn resident(&mut self, path: &Path, result: Result<ModelInfo, EngineError>) {
        let k = key(path);
        if let Ok(info) = &result {
            let size = self.sizes.get(&k).copied().unwrap_or(0);
            self.held.entry(k.clone()).or_insert_with(|| new_held(info.clone(), size, false));
        }
        self.answers.insert(k, result.map_err(|e| e.message));
    }

    pub fn evicted(&mut self, path: &Path) {
        let k = key(path);
        if self.held.get(&k).is_some_and(|h| !h.primary) {
            self.held.remove(&k);
        }
    }

    /// Bytes held (by the budget's measure).
    pub fn total(&self) -> u64 {
        self.held.values().map(|h| h.size).sum()
    }

    /// The least recently used model no request is using (never the primary).
    pub fn idlest(&self) -> Option<PathBuf> {
        self.held.iter().filter(|(_, h)| !h.primary && h.in_flight == 0).min_by_key(|(_, h)| h.last_used).map(|(k, _)| k.clone())
    }

    /// Marks `k` as being evicted if it is still idle (then no request can
    /// start on it before the engine drops it); false if it is not.
    pub fn start_evicting(&mut self, k: &Path) -> bool {
        match self.held.get_mut(k) {
            Some(h) if !h.primary && h.in_flight == 0 => {
                h.evicting = true;
                true
            }
            _ => false,
        }
    }

    /// Models the server loaded (not the app's), for a server that stops.
    pub fn residents(&self) -> Vec<PathBuf> {
        self.held.iter().filter(|(_, h)| !h.primary).map(|(k, _)| k.clone()).collect()
    }

    /// Models whose time to live ran out (`default`: the server's).
    pub fn expired(&self, default: Option<Duration>) -> Vec<PathBuf> {
        self.held
            .iter()
            .filter(|(_, h)| !h.primary && h.in_flight == 0)
            .filter(|(_, h)| match h.keep.or(default.map(Keep::For)) {
                Some(Keep::For(t)) => h.last_used.elapsed() >= t,
                Some(Keep::Forever) | None => false,
            })
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn new_held(info: ModelInfo, size: u64, primary: bool) -> Held {
    Held { info, size, primary, in_flight: 0, last_used: Instant::now(), keep: None, loaded_at_ms: now_ms(), evicting: false }
}

/// A request's use of a model: while it lives the model is not evicted;
/// dropping it ends the use (and starts the idle time).
pub struct Use {
    pool: Shared,
    changed: Arc<watch::Sender<u64>>,
    key: PathBuf,
}

impl Use {
    /// Counts a use of `key` if it is held (setting its time to live).
    pub fn take(pool: &Shared, changed: &Arc<watch::Sender<u64>>, key: &Path, keep: Option<Keep>) -> Option<(Use, Box<ModelInfo>)> {
        let mut st = lock(pool);
        let h = st.held.get_mut(key).filter(|h| !h.evicting)?;
        h.in_flight += 1;
        h.last_used = Instant::now();
        // Each request's own time to live (none: the server's default), as Ollama's keep_alive.
        h.keep = keep;
        let info = Box::new(h.info.clone());
        Some((Use { pool: pool.clone(), changed: changed.clone(), key: key.to_path_buf() }, info))
    }
}

impl Drop for Use {
    fn drop(&mut self) {
        if let Some(h) = lock(&self.pool).held.get_mut(&self.key) {
            h.in_flight = h.in_flight.saturating_sub(1);
            h.last_used = Instant::now();
        }
        self.changed.send_modify(|v| *v += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keep_alive_reads_ollamas_durations() {
        let k = |v| Keep::from_ollama(&v).unwrap();
        assert_eq!(k(json!("5m")), Some(Keep::For(Duration::from_secs(300))));
        assert_eq!(k(json!("1h30m")), Some(Keep::For(Duration::from_secs(5400))));
        assert_eq!(k(json!(10)), Some(Keep::For(Duration::from_secs(10))));
        assert_eq!(k(json!("0")), Some(Keep::For(Duration::ZERO)));
        assert_eq!(k(json!(-1)), Some(Keep::Forever));
        assert_eq!(k(json!("-1m")), Some(Keep::Forever));
        assert_eq!(k(json!(null)), None);
        for bad in [json!("soon"), json!("5x"), json!("m"), json!([1])] {
            assert!(Keep::from_ollama(&bad).unwrap_err().contains("is not a duration"), "{bad}");
        }
    }
}

//! The server's end of the engine thread: one dispatcher thread reads the
//! engine's events and routes each request's to the task serving it, and
//! applies the engine's answers to the pool of models held (`pool`). Requests
//! on a model held run at once, batched by the engine per model; a model not
//! held is loaded beside the others (evicting idle ones under the memory
//! budget). Each request has its own cancel flag, so a client that goes
//! away stops its generation within one step.

use crate::chat::params::{GenerateParams, GenerationStats, TokenLogprob};
use crate::chat::reply::Part;
use crate::engine::protocol::{EngineError, ErrorKind, MemoryStats};
use crate::engine::{Command, EngineHandle, Event, Prompt};
use crate::models::load::{ModelInfo, Precision};
use super::pool::{self, Keep, Use};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

/// What the engine holds, as the server sees it.
#[derive(Debug, Clone)]
pub enum ModelStatus {
    Empty,
    Loading,
    Loaded(Box<ModelInfo>),
    Failed(String),
    /// The engine thread died; nothing more will run.
    Crashed(String),
}

/// One request's stream of engine events.
pub enum Update {
    /// The prompt's length in tokens, before the first text.
    /// (and how many of them the prefix cache held).
    Started(usize, usize),
    /// A piece of the reply as typed parts, and its tokens' log-probabilities
    /// (if asked for).
    Reply(Vec<Part>, Vec<TokenLogprob>),
    Done(GenerationStats),
    Failed(EngineError),
}

type Routes = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Update>>>>;

pub struct Bridge {
    /// Shared with the app's chat when the app runs the server.
    engine: Arc<EngineHandle>,
    routes: Routes,
    /// The primary model's status (the app's chat model): what the app shows.
    status: watch::Receiver<ModelStatus>,
    /// The models held for requests (`pool`).
    pub(super) pool: pool::Shared,
    /// Bumped at every change of the pool: an answer from the engine, a
    /// request that ends.
    changed: Arc<watch::Sender<u64>>,
    /// One load or eviction at a time.
    loading: tokio::sync::Mutex<()>,
    context_length: Option<usize>,
    /// Bytes the models held may take (their files' sizes); None: no bound.
    budget: Option<u64>,
    /// The engine's last memory report (after each load and reply).
    memory: Arc<Mutex<MemoryStats>>,
}

impl Bridge {
    /// `events`: every event of `engine` (its own receiver when the server is
    /// alone, a subscription beside the app's chat).
    /// `initial`: what the engine holds now (a model the app's chat loaded).
    pub fn new(
        engine: Arc<EngineHandle>,
        events: crossbeam_channel::Receiver<Event>,
        initial: ModelStatus,
        context_length: Option<usize>,
        budget: Option<u64>,
    ) -> Arc<Self> {
        let routes: Routes = Arc::default();
        let pool: pool::Shared = Arc::default();
        if let ModelStatus::Loaded(info) = &initial {
            pool::lock(&pool).primary_loaded((**info).clone());
        }
        let (tx, rx) = watch::channel(initial);
        let changed = Arc::new(watch::channel(0u64).0);
        let r = Arc::downgrade(&routes);
        let memory = Arc::new(Mutex::new(MemoryStats::default()));
        let (m, p, c) = (memory.clone(), pool.clone(), changed.clone());
        std::thread::Builder::new()
            .name("hearth-server-events".into())
            .spawn(move || dispatch(events, r, tx, m, p, c))
            .expect("spawning the server's event thread");
        Arc::new(Bridge { engine, routes, status: rx, pool, changed, loading: Default::default(), context_length, budget, memory })
    }

    /// MLX's and the process's memory as the engine last reported them.
    pub fn memory(&self) -> MemoryStats {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> ModelStatus {
        self.status.borrow().clone()
    }

    /// The models held now, by path.
    pub fn held(&self) -> Vec<(PathBuf, pool::Held)> {
        pool::lock(&self.pool).held.iter().map(|(k, h)| (k.clone(), h.clone())).collect()
    }

    fn crashed(&self) -> Option<String> {
        match self.status() {
            ModelStatus::Crashed(e) => Some(format!("the engine crashed: {e}")),
            _ => None,
        }
    }

    /// A use of the model at `path` (`size` bytes on disk), loaded just in
    /// time: held already, it is shared at once; else, under the load lock,
    /// room is made within the budget and the engine holds it. `keep` sets
    /// its idle time to live.
    pub async fn enter(&self, path: &Path, size: u64, keep: Option<Keep>) -> Result<(Use, Box<ModelInfo>), String> {
        let k = pool::key(path);
        if let Some(u) = Use::take(&self.pool, &self.changed, &k, keep) {
            return Ok(u);
        }
        let _loading = self.loading.lock().await;
        if let Some(u) = Use::take(&self.pool, &self.changed, &k, keep) {
            return Ok(u);
        }
        self.make_room(size).await?;
        let mut rx = self.changed.subscribe();
        {
            let mut st = pool::lock(&self.pool);
            st.answers.remove(&k);
            st.sizes.insert(k.clone(), size);
        }
        self.engine.send(Command::Reside { path: path.to_path_buf(), precision: Precision::Auto, context_length: self.context_length });
        loop {
            // (The lock is released before `take` locks again.)
            let answer = pool::lock(&self.pool).answers.remove(&k);
            if let Some(answer) = answer {
                answer?;
                // Taken under the load lock: nothing evicts it before.
                return Use::take(&self.pool, &self.changed, &k, keep).ok_or_else(|| "the model was unloaded as it loaded".to_string());
            }
            if let Some(e) = self.crashed() {
                return Err(e);
            }
            if rx.changed().await.is_err() {
                return Err("the engine stopped".into());
            }
        }
    }

    /// Evicts idle models, least recently used first, until `size` more
    /// bytes fit the budget; waits for requests to end when every model
    /// that could go is in use. Caller holds the load lock.
    async fn make_room(&self, size: u64) -> Result<(), String> {
        let Some(budget) = self.budget else { return Ok(()) };
        let mut rx = self.changed.subscribe();
        loop {
            let (total, idlest, busy) = {
                let st = pool::lock(&self.pool);
                (st.total(), st.idlest(), st.held.values().any(|h| !h.primary && h.in_flight > 0))
            };
            if total + size <= budget {
                return Ok(());
            }
            match idlest {
                Some(k) => self.evict(&k).await?,
                // Only models in use could make room: wait for one to finish.
                None if busy => {
                    if rx.changed().await.is_err() {
                        return Err("the engine stopped".into());
                    }
                }
                // Nothing more can go (the app's model stays): load over the budget.
                None => return Ok(()),
            }
        }
    }

    /// Has the engine drop a resident model and waits until it did; nothing
    /// if a request started on it meanwhile. Caller holds the load lock.
    async fn evict(&self, k: &Path) -> Result<(), String> {
        let mut rx = self.changed.subscribe();
        if !pool::lock(&self.pool).start_evicting(k) {
            return Ok(());
        }
        self.engine.send(Command::Evict { path: k.to_path_buf() });
        while pool::lock(&self.pool).held.get(k).is_some_and(|h| !h.primary) {
            if let Some(e) = self.crashed() {
                return Err(e);
            }
            if rx.changed().await.is_err() {
                return Err("the engine stopped".into());
            }
        }
        Ok(())
    }

    /// Evicts the models whose idle time to live ran out (`default`: the
    /// server's); returns their paths.
    pub async fn expire(&self, default: Option<std::time::Duration>) -> Vec<PathBuf> {
        let _loading = self.loading.lock().await;
        let expired = pool::lock(&self.pool).expired(default);
        let mut gone = Vec::new();
        for k in expired {
            // Still idle and expired now that the load lock is ours (the
            // pool's own lock is released before the eviction awaits).
            let still = pool::lock(&self.pool).expired(default).contains(&k);
            if still && self.evict(&k).await.is_ok() {
                gone.push(k);
            }
        }
        gone
    }

    /// Drops the models the server loaded (the app's chat model stays): a
    /// server that stops gives their memory back.
    pub fn release_all(&self) {
        for k in pool::lock(&self.pool).residents() {
            self.engine.send(Command::Evict { path: k });
        }
    }

    /// A request to unload `path` now (Ollama's `keep_alive: 0` with no
    /// prompt): it goes at the next expiry check if it is idle; one not held
    /// is not loaded for it.
    pub fn unload_soon(&self, path: &Path) {
        if let Some(h) = pool::lock(&self.pool).held.get_mut(&pool::key(path)) {
            h.keep = Some(Keep::For(std::time::Duration::ZERO));
        }
    }

    /// Queues a generation on `model`; its updates arrive on the returned channel.
    pub fn submit(&self, prompt: Prompt, params: GenerateParams, model: &Path) -> (mpsc::UnboundedReceiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        // The route exists before the engine can answer: the dispatcher waits on this lock.
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let (id, cancel) = self.engine.submit(prompt, params, Some(model.to_path_buf()));
        routes.insert(id, tx);
        (rx, cancel)
    }
}

impl Bridge {
    /// Asks the engine to count `prompt`'s tokens on `model`; the answer
    /// arrives as `Update::Started` on the returned channel.
    pub fn count(&self, prompt: Prompt, model: &Path) -> mpsc::UnboundedReceiver<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let id = self.engine.count_tokens(prompt, Some(model.to_path_buf()));
        routes.insert(id, tx);
        rx
    }
}

/// Cancels a generation when dropped before it finished (the client went away).
pub struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl CancelOnDrop {
    pub fn new(flag: Arc<AtomicBool>) -> Self {
        CancelOnDrop(Some(flag))
    }

    /// The generation finished: dropping this no longer cancels anything.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.store(true, Ordering::Relaxed);
        }
    }
}

/// Routes events until the engine stops or the bridge is dropped (checked at
/// least every second).
fn dispatch(
    events: crossbeam_channel::Receiver<Event>,
    routes: std::sync::Weak<Mutex<HashMap<u64, mpsc::UnboundedSender<Update>>>>,
    status: watch::Sender<ModelStatus>,
    memory: Arc<Mutex<MemoryStats>>,
    pool: pool::Shared,
    changed: Arc<watch::Sender<u64>>,
) {
    loop {
        let ev = match events.recv_timeout(std::time::Duration::from_secs(1)) {
            Ok(ev) => ev,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) if routes.strong_count() > 0 => continue,
            Err(_) => return,
        };
        let Some(routes) = routes.upgrade() else { return };
        let route = |id: u64, u: Update, last: bool| {
            let mut r = routes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = r.get(&id) {
                let _ = tx.send(u);
            }
            if last {
                r.remove(&id);
            }
        };
        // What loads and evictions wait on (not every token).
        let pool_event = matches!(
            ev,
            Event::LoadProgress { .. } | Event::Loaded(_) | Event::LoadFailed(_) | Event::Unloaded | Event::Resident { .. } | Event::Evicted { .. } | Event::Crashed(_)
        );
        match ev {
            Event::PromptReady { id, tokens, cached } => route(id, Update::Started(tokens, cached), false),
            Event::Token { id, parts, logprobs, .. } => route(id, Update::Reply(parts, logprobs), false),
            Event::Finished { id, stats } => route(id, Update::Done(stats), true),
            Event::Error { id: Some(id), error } => route(id, Update::Failed(error), true),
            Event::LoadProgress { .. } => {
                // The engine dropped the app's last model as this load began.
                pool::lock(&pool).primary_unloaded();
                if !matches!(*status.borrow(), ModelStatus::Loading) {
                    status.send_replace(ModelStatus::Loading);
                }
            }
            Event::Loaded(info) => {
                pool::lock(&pool).primary_loaded(info.clone());
                status.send_replace(ModelStatus::Loaded(Box::new(info)));
            }
            Event::LoadFailed(e) => {
                pool::lock(&pool).primary_unloaded();
                status.send_replace(ModelStatus::Failed(e.message));
            }
            Event::Unloaded => {
                pool::lock(&pool).primary_unloaded();
                status.send_replace(ModelStatus::Empty);
            }
            Event::Resident { path, result } => pool::lock(&pool).resident(&path, result),
            Event::Evicted { path } => pool::lock(&pool).evicted(&path),
            Event::Crashed(msg) => {
                let failed = EngineError { kind: ErrorKind::Compute, message: format!("the engine crashed: {msg}") };
                for (_, tx) in routes.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                    let _ = tx.send(Update::Failed(failed.clone()));
                }
                status.send_replace(ModelStatus::Crashed(msg));
            }
            Event::Memory(m) => *memory.lock().unwrap_or_else(|e| e.into_inner()) = m,
            // The app's context meter asks for measures; the APIs never do.
            Event::Error { id: None, .. } | Event::ContextTrimmed { .. } | Event::DraftLoaded(_) | Event::Measured { .. } => {}
        }
        if pool_event {
            changed.send_modify(|v| *v += 1);
        }
    }
}

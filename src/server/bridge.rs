//! The server's end of the engine thread: one dispatcher thread reads the
//! engine's events and routes each request's to the task serving it; model
//! loads are awaited through a watch channel. Requests on the loaded model
//! run at once, batched by the engine; a request for another model waits
//! until they end (a read-write gate: generations read, loads write). Each
//! has its own cancel flag, so a client that goes away stops its generation
//! within one step.

use crate::chat::params::{GenerateParams, GenerationStats, TokenLogprob};
use crate::chat::reply::Part;
use crate::engine::protocol::{EngineError, ErrorKind, MemoryStats};
use crate::engine::{Command, EngineHandle, Event, Prompt};
use crate::models::load::{ModelInfo, Precision};
use std::collections::HashMap;
use std::path::Path;
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
    status: watch::Receiver<ModelStatus>,
    /// Held for the whole of a request: shared by generations on the loaded
    /// model, exclusive for a load, so a model is never swapped under a
    /// running request. Tokio's lock is fair: a waiting load holds back
    /// the requests that come after it.
    pub gate: Arc<tokio::sync::RwLock<()>>,
    context_length: Option<usize>,
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
    ) -> Arc<Self> {
        let routes: Routes = Arc::default();
        let (tx, rx) = watch::channel(initial);
        let r = Arc::downgrade(&routes);
        let memory = Arc::new(Mutex::new(MemoryStats::default()));
        let m = memory.clone();
        std::thread::Builder::new()
            .name("hearth-server-events".into())
            .spawn(move || dispatch(events, r, tx, m))
            .expect("spawning the server's event thread");
        Arc::new(Bridge { engine, routes, status: rx, gate: Arc::default(), context_length, memory })
    }

    /// MLX's and the process's memory as the engine last reported them.
    pub fn memory(&self) -> MemoryStats {
        *self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn status(&self) -> ModelStatus {
        self.status.borrow().clone()
    }

    /// Loads `path` unless it is the model already loaded; waits for the
    /// result. Callers hold `gate` for writing, so the load answered is this one.
    pub async fn ensure_loaded(&self, path: &Path) -> Result<Box<ModelInfo>, String> {
        if let Some(info) = self.loaded(path) {
            return Ok(info);
        }
        let mut rx = self.status.clone();
        rx.mark_unchanged();
        self.engine.load(path, Precision::Auto, self.context_length);
        loop {
            if rx.changed().await.is_err() {
                return Err("the engine stopped".into());
            }
            match rx.borrow_and_update().clone() {
                ModelStatus::Loaded(info) => return Ok(info),
                ModelStatus::Failed(error) => return Err(error),
                ModelStatus::Crashed(e) => return Err(format!("the engine crashed: {e}")),
                ModelStatus::Empty | ModelStatus::Loading => {}
            }
        }
    }

    /// The loaded model's details if it is `path`.
    pub fn loaded(&self, path: &Path) -> Option<Box<ModelInfo>> {
        match self.status() {
            ModelStatus::Loaded(info) if info.path.canonicalize().ok() == path.canonicalize().ok() => Some(info),
            _ => None,
        }
    }

    /// Waits for a request's turn: shared when `path` is loaded, else
    /// exclusive while it loads (then shared). Returns the guard and the
    /// model's details or the load's error.
    pub async fn enter(&self, path: &Path) -> (tokio::sync::OwnedRwLockReadGuard<()>, Result<Box<ModelInfo>, String>) {
        let shared = self.gate.clone().read_owned().await;
        if let Some(info) = self.loaded(path) {
            return (shared, Ok(info));
        }
        drop(shared);
        let only = self.gate.clone().write_owned().await;
        let r = self.ensure_loaded(path).await;
        (only.downgrade(), r)
    }

    pub fn unload(&self) {
        self.engine.send(Command::Unload);
    }

    /// Queues a generation; its updates arrive on the returned channel.
    pub fn submit(&self, prompt: Prompt, params: GenerateParams) -> (mpsc::UnboundedReceiver<Update>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        // The route exists before the engine can answer: the dispatcher waits on this lock.
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let (id, cancel) = self.engine.submit(prompt, params);
        routes.insert(id, tx);
        (rx, cancel)
    }
}

impl Bridge {
    /// Asks the engine to count `prompt`'s tokens; the answer arrives as
    /// `Update::Started` on the returned channel.
    pub fn count(&self, prompt: Prompt) -> mpsc::UnboundedReceiver<Update> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let id = self.engine.count_tokens(prompt);
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
        match ev {
            Event::PromptReady { id, tokens, cached } => route(id, Update::Started(tokens, cached), false),
            Event::Token { id, parts, logprobs, .. } => route(id, Update::Reply(parts, logprobs), false),
            Event::Finished { id, stats } => route(id, Update::Done(stats), true),
            Event::Error { id: Some(id), error } => route(id, Update::Failed(error), true),
            Event::LoadProgress { .. } => {
                if !matches!(*status.borrow(), ModelStatus::Loading) {
                    status.send_replace(ModelStatus::Loading);
                }
            }
            Event::Loaded(info) => {
                status.send_replace(ModelStatus::Loaded(Box::new(info)));
            }
            Event::LoadFailed(e) => {
                status.send_replace(ModelStatus::Failed(e.message));
            }
            Event::Unloaded => {
                status.send_replace(ModelStatus::Empty);
            }
            Event::Crashed(msg) => {
                let failed = EngineError { kind: ErrorKind::Compute, message: format!("the engine crashed: {msg}") };
                for (_, tx) in routes.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                    let _ = tx.send(Update::Failed(failed.clone()));
                }
                status.send_replace(ModelStatus::Crashed(msg));
            }
            Event::Memory(m) => *memory.lock().unwrap_or_else(|e| e.into_inner()) = m,
            Event::Error { id: None, .. } | Event::ContextTrimmed { .. } | Event::DraftLoaded(_) => {}
        }
    }
}

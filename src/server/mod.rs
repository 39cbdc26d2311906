//! The local API server other tools talk to (`hearth serve`): OpenAI- (chat,
//! completions, Responses), Anthropic- and Ollama-compatible endpoints (`openai`, `anthropic`,
//! `ollama`), on the same engine thread a chat uses (`bridge`). Private by
//! default: it binds to loopback, checks the Host header against DNS
//! rebinding, sends no CORS headers, caps request bodies, serves only installed
//! models by name (never a path from a request), and when opened to other
//! machines requires an API key (Bearer or x-api-key).

pub mod anthropic;
mod anthropic_request;
mod body_limit;
mod context_edits;
mod error;
pub mod bridge;
pub mod key;
pub mod ollama;
pub mod openai;
pub mod pool;
mod openai_request;
pub mod responses;
mod responses_request;
pub mod tools;

pub use error::ApiError;

use crate::engine::EngineHandle;
use crate::library::installed;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bridge::Bridge;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The port `hearth serve` uses unless told otherwise.
pub const DEFAULT_PORT: u16 = 8768;
/// The largest request body accepted (a long conversation is well under this).
pub const MAX_BODY: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub host: IpAddr,
    pub port: u16,
    /// Required as `Authorization: Bearer …` when set; must be set to bind
    /// anywhere but loopback.
    pub api_key: Option<String>,
    /// The models folder (installed models are served by name).
    pub models_dir: PathBuf,
    /// The shared Hugging Face cache (models there are served by repo id).
    pub hf_cache: Option<PathBuf>,
    /// The model served when a request names none (shown as its name).
    pub default_model: Option<PathBuf>,
    pub context_length: Option<usize>,
    /// Unload a model after this long without requests (None: keep it),
    /// unless a request set its own time to live.
    pub idle_unload: Option<std::time::Duration>,
    /// Bytes the models held at once may take (their files' sizes); a load
    /// that would pass it evicts idle models first. None: no bound.
    pub memory_budget: Option<u64>,
    /// Names clients send (a "small, fast model" an agent asks for) and the
    /// installed models they mean.
    pub aliases: Vec<(String, String)>,
}

/// A model a request may name.
#[derive(Debug, Clone)]
pub struct ServedModel {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
    /// From the file headers; None if unreadable.
    pub card: Option<crate::library::card::ModelCard>,
}

/// One request admitted to the engine: its updates, its place in the queue
/// (held until dropped) and its cancel guard (dropping it cancels).
pub struct Job {
    pub rx: tokio::sync::mpsc::UnboundedReceiver<bridge::Update>,
    pub queued: Slot,
    pub cancel: bridge::CancelOnDrop,
    pub model: ServedModel,
    pub info: Box<crate::models::load::ModelInfo>,
    /// Seconds spent loading the model for this request (0 if it was loaded).
    pub load_s: f64,
    pub started: std::time::Instant,
}

pub struct Server {
    pub bridge: Arc<Bridge>,
    config: ServerConfig,
    next: AtomicU64,
    log: Mutex<Vec<String>>,
    /// Requests admitted and not yet finished (`Slot`s alive, or waiting for one).
    requests: Arc<std::sync::atomic::AtomicUsize>,
    /// The Responses API's stored responses (`previous_response_id`).
    pub(crate) responses: crate::store::responses::ResponseStore,
}

/// A request's turn on the engine: its use of the model (never evicted
/// while it runs), and its place in the in-flight count; both end when the
/// reply does (or the client leaves).
pub struct Slot {
    _use: pool::Use,
    _counted: Counted,
}

struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Counted {
    fn new(n: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A UTC time as RFC 3339 (`2026-11-26T02:20:05Z`), from seconds since 1970.
pub(crate) fn rfc3339(secs: u64) -> String {
    // Days to a civil date (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Server {
    /// A server on `engine`, reading its `events`; `initial` is what the
    /// engine holds now.
    pub fn new(config: ServerConfig, engine: Arc<EngineHandle>, events: crossbeam_channel::Receiver<crate::engine::Event>, initial: bridge::ModelStatus) -> Arc<Self> {
        let bridge = Bridge::new(engine, events, initial, config.context_length, config.memory_budget);
        Arc::new(Server {
            bridge,
            config,
            next: AtomicU64::new(1),
            log: Mutex::new(Vec::new()),
            requests: Arc::default(),
            responses: crate::store::responses::ResponseStore::in_data_dir(),
        })
    }

    /// Requests waiting for the engine or being answered.
    pub fn requests_in_flight(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps the last requests for the app's server panel (and prints them,
    /// timed, for a terminal or the daemon's log).
    pub(crate) fn log(&self, line: String) {
        eprintln!("{} {line}", rfc3339(now_secs()));
        let mut l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.push(line);
        let n = l.len();
        if n > 200 {
            l.drain(..n - 200);
        }
    }

    pub fn recent_log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every model a request may name: the default, installed ones, and
    /// Hugging Face cache snapshots (by repo id).
    pub fn models(&self) -> Vec<ServedModel> {
        let mut out = Vec::new();
        if let Some(p) = &self.config.default_model {
            let (size, card) = installed::card_and_size(p);
            out.push(ServedModel { id: crate::models::load::display_name(p), path: p.clone(), size, card: card.ok() });
        }
        let all = match &self.config.hf_cache {
            Some(cache) => installed::installed_with_cache(&self.config.models_dir, cache),
            None => installed::installed(&self.config.models_dir),
        };
        for m in all {
            let id = m.name.strip_suffix(".gguf").unwrap_or(&m.name).to_string();
            if !out.iter().any(|o: &ServedModel| o.id == id) {
                out.push(ServedModel { id, path: m.path, size: m.size, card: m.card });
            }
        }
        out
    }

    /// Waits for the request's turn, loads its model if needed, and starts the
    /// generation `build` describes for that model.
    pub async fn start(
        &self,
        model: Option<&str>,
        keep: Option<pool::Keep>,
        kind: &str,
        build: impl FnOnce(&crate::models::load::ModelInfo) -> Result<(crate::engine::Prompt, crate::chat::params::GenerateParams), ApiError>,
    ) -> Result<Job, ApiError> {
        let started = std::time::Instant::now();
        let (model, queued, info, load_s) = self.enter(model, keep).await?;
        let (prompt, params) = build(&info)?;
        let (rx, cancel) = self.bridge.submit(prompt, params, &model.path);
        self.log(format!("{kind}: {}", model.id));
        Ok(Job { rx, queued, cancel: bridge::CancelOnDrop::new(cancel), model, info, load_s, started })
    }

    /// The model a request names, loaded (just in time) and held for the
    /// request (`Slot`), with how long its load took.
    pub(crate) async fn enter(&self, model: Option<&str>, keep: Option<pool::Keep>) -> Result<(ServedModel, Slot, Box<crate::models::load::ModelInfo>, f64), ApiError> {
        let model = self.find_model(model)?;
        let counted = Counted::new(&self.requests);
        let t = std::time::Instant::now();
        let (used, info) = self.bridge.enter(&model.path, model.size, keep).await.map_err(ApiError::model_failed)?;
        let queued = Slot { _use: used, _counted: counted };
        Ok((model, queued, info, t.elapsed().as_secs_f64()))
    }

    /// How many tokens the prompt `build` makes renders to on the model a
    /// request names (loaded for it if need be); nothing is generated.
    pub async fn count_tokens(
        &self,
        model: Option<&str>,
        kind: &str,
        build: impl FnOnce(&crate::models::load::ModelInfo) -> Result<crate::engine::Prompt, ApiError>,
    ) -> Result<usize, ApiError> {
        let (model, _queued, info, _) = self.enter(model, None).await?;
        let mut rx = self.bridge.count(build(&info)?, &model.path);
        self.log(format!("{kind}: {}", model.id));
        loop {
            match rx.recv().await {
                Some(bridge::Update::Started(n, _)) => return Ok(n),
                Some(bridge::Update::Failed(e)) => return Err(ApiError::engine(e)),
                Some(_) => {}
                None => return Err(ApiError::internal("the engine stopped")),
            }
        }
    }

    /// Unloads the models whose idle time to live ran out (a request's, or
    /// `idle`, the server's default), checked every second; a model a
    /// request is using never goes.
    async fn expirer(self: Arc<Self>, idle: Option<std::time::Duration>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            for k in self.bridge.expire(idle).await {
                self.log(format!("unloaded {} after its idle time", k.display()));
            }
        }
    }

    pub fn aliases(&self) -> &[(String, String)] {
        &self.config.aliases
    }

    /// How long an idle model stays unless a request said otherwise.
    pub fn default_keep(&self) -> Option<pool::Keep> {
        self.config.idle_unload.map(pool::Keep::For)
    }

    /// The model a request names (exactly, or ignoring case), or the default.
    pub fn find_model(&self, name: Option<&str>) -> Result<ServedModel, ApiError> {
        let all = self.models();
        // Ollama clients add a tag; Hearth's models have none.
        let name = name.map(|n| n.strip_suffix(":latest").unwrap_or(n));
        // An alias names the model it stands for.
        let name = name.map(|n| self.config.aliases.iter().find(|(a, _)| a == n || a.eq_ignore_ascii_case(n)).map_or(n, |(_, m)| m.as_str()));
        let found = match name.filter(|n| !n.is_empty()) {
            None => all.first().cloned(),
            Some(n) => all.iter().find(|m| m.id == n).or_else(|| all.iter().find(|m| m.id.eq_ignore_ascii_case(n))).cloned(),
        };
        found.ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
            ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "not_found_error",
                message: format!(
                    "model '{}' is not installed; installed: {}",
                    name.unwrap_or(""),
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                ),
            }
        })
    }
}

/// Host-header check (a web page that rebinds its name to 127.0.0.1 still
/// sends its own name), the API key, and the body's declared size
/// (`body_limit`; a body without one is capped by `DefaultBodyLimit`).
async fn guard(State(server): State<Arc<Server>>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    let loopback_name = matches!(name, "localhost" | "127.0.0.1" | "[::1]" | "::1");
    if server.config.host.is_loopback() && !loopback_name {
        return ApiError { status: StatusCode::FORBIDDEN, kind: "permission_error", message: format!("host '{host}' is not this server") }
            .in_dialect_of(req.uri().path());
    }
    if let Some(key) = &server.config.api_key {
        // Bearer (OpenAI, Ollama clients) or x-api-key (Anthropic's).
        let bearer = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer "));
        let x_api_key = req.headers().get("x-api-key").and_then(|h| h.to_str().ok());
        if bearer != Some(key.as_str()) && x_api_key != Some(key.as_str()) {
            return ApiError { status: StatusCode::UNAUTHORIZED, kind: "authentication_error", message: "a valid API key is required".into() }
                .in_dialect_of(req.uri().path());
        }
    }
    if let Some(length) = body_limit::oversized(&req) {
        return body_limit::refuse(req, length).await;
    }
    next.run(req).await
}

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v1/models", get(openai::models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/responses/{id}", get(responses::retrieve).delete(responses::delete))
        .route("/v1/responses/{id}/input_items", get(responses::input_items))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(server.clone(), guard))
        .with_state(server)
}

/// Refuses a non-loopback address without a key (`key_from` says where one
/// is set), then binds.
fn bind(config: &ServerConfig, key_from: &str) -> crate::Result<std::net::TcpListener> {
    if !config.host.is_loopback() && config.api_key.as_deref().is_none_or(str::is_empty) {
        return Err(crate::Error::InvalidArgument(format!(
            "serving on {} opens Hearth to other machines: set an API key ({key_from}) first",
            config.host
        )));
    }
    let addr = SocketAddr::new(config.host, config.port);
    let listener = std::net::TcpListener::bind(addr).map_err(|e| crate::Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
    listener.set_nonblocking(true).map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    Ok(listener)
}

fn runtime() -> crate::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::InvalidArgument(format!("cannot start the server: {e}")))
}

/// Serves on the engine alone until the process ends (`hearth serve`; a
/// daemon shares the engine with the apps attached to it); `on_ready` gets
/// the address actually bound (port 0 picks one).
pub fn run(config: ServerConfig, engine: Arc<EngineHandle>, on_ready: impl FnOnce(SocketAddr)) -> crate::Result<()> {
    let std_listener = bind(&config, "HEARTH_API_KEY")?;
    let bound = std_listener.local_addr().map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        let idle = config.idle_unload;
        let events = engine.events.clone();
        let server = Server::new(config, engine, events, bridge::ModelStatus::Empty);
        tokio::spawn(server.clone().expirer(idle));
        on_ready(bound);
        axum::serve(listener, router(server)).await.map_err(|e| crate::Error::InvalidArgument(format!("server stopped: {e}")))
    })
}

/// The app's server, on the chat's engine, in a thread of its own until
/// stopped (or dropped).
pub struct Running {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops listening and cuts the requests in progress (their generations
    /// are cancelled); returns once the port is free again.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
            // The models it loaded beside the chat's go with it.
            self.server.bridge.release_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts serving beside the app's chat: binds at once (so a port in use is
/// an error here), then answers requests on `engine` in a background thread.
/// Streams in progress when it stops are cut.
pub fn spawn(config: ServerConfig, engine: Arc<EngineHandle>, initial: bridge::ModelStatus) -> crate::Result<Running> {
    let std_listener = bind(&config, "the Server panel")?;
    let addr = std_listener.local_addr().map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    let rt = runtime()?;
    let events = engine.subscribe();
    let server = Server::new(config, engine, events, initial);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    let thread = std::thread::Builder::new()
        .name("hearth-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else { return };
                tokio::spawn(s.clone().expirer(s.config.idle_unload));
                let serve = axum::serve(listener, router(s));
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            })
        })
        .map_err(|e| crate::Error::InvalidArgument(format!("cannot start the server: {e}")))?;
    Ok(Running { addr, server, stop: Some(stop), thread: Some(thread) })
}

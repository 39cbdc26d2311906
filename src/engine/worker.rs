//! The inference thread: owns the models and all MLX state; talks only through
//! channels, and serves each model's admitted requests in one batch (`batch`,
//! `pool`); commands other than generations are in `control`.

use super::batch::{Out, Sequence};
use super::control::{control, not_held};
use super::pool::{Pool, Resident};
use super::protocol::{Command, EngineError, Event, MemoryStats, Prompt, RequestId};
use super::EngineConfig;
use crate::chat::params::{FinishReason, GenerateParams, GenerationStats};
use crate::chat::template::TemplateOptions;
use crate::chat::reply::{prompt_opens_reasoning, ReplyReader};
use crate::error::Error;
use crate::models::load::Precision;
use crossbeam_channel::{unbounded, Receiver, Sender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Called by the engine thread after each event, so a UI can wake up for it
/// instead of polling.
pub type Waker = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// More readers of the engine's events besides `EngineHandle::events` (the
/// app's local server beside its chat): each gets every event.
pub(crate) type Subscribers = Arc<Mutex<Vec<Sender<Event>>>>;

/// The UI's (or CLI's) end of the engine.
pub struct EngineHandle {
    waker: Waker,
    commands: Sender<Command>,
    pub events: Receiver<Event>,
    subscribers: Subscribers,
    next_id: AtomicU64,
    current_cancel: Mutex<Option<Arc<AtomicBool>>>,
    thread: Option<JoinHandle<()>>,
    /// The engine is a daemon's, reached over its socket (`remote::client`).
    attached: bool,
}

impl EngineHandle {
    /// An engine with the environment's settings (`EngineConfig::from_env`).
    pub fn spawn() -> Self {
        Self::spawn_config(EngineConfig::from_env())
    }

    /// `spawn` with room for `limit` sequences at once (interactive requests
    /// get one more).
    pub fn spawn_with(limit: usize) -> Self {
        Self::spawn_config(EngineConfig { max_batch: limit, ..EngineConfig::from_env() })
    }

    pub fn spawn_config(config: EngineConfig) -> Self {
        let (ctx, crx) = unbounded::<Command>();
        let (etx, erx) = unbounded::<Event>();
        let waker: Waker = Arc::new(Mutex::new(None));
        let subscribers: Subscribers = Arc::default();
        let subs = subscribers.clone();
        let w = waker.clone();
        let thread = std::thread::Builder::new()
            .name("hearth-engine".into())
            .spawn(move || {
                let events = etx.clone();
                let w2 = w.clone();
                let subs2 = subs.clone();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(crx, etx, w2, subs2, config)));
                if let Err(p) = r {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    broadcast(&subs, &events, &w, Event::Crashed(msg));
                }
            })
            .expect("spawning the engine thread");
        EngineHandle {
            waker,
            commands: ctx,
            events: erx,
            subscribers,
            next_id: AtomicU64::new(1),
            current_cancel: Mutex::new(None),
            thread: Some(thread),
            attached: false,
        }
    }

    /// A handle on a daemon's engine: `commands` go to `thread`, which
    /// carries them there, and `events` come back (`remote::client`).
    pub(crate) fn attached(commands: Sender<Command>, events: Receiver<Event>, waker: Waker, subscribers: Subscribers, thread: JoinHandle<()>) -> Self {
        EngineHandle { waker, commands, events, subscribers, next_id: AtomicU64::new(1), current_cancel: Mutex::new(None), thread: Some(thread), attached: true }
    }

    /// Whether this handle reaches a daemon's engine rather than one of its own.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// A request id no other request of this engine has (for commands
    /// built by hand, as a daemon does for an attached app's).
    pub fn next_request_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Another reader of every event from now on (until it is dropped).
    pub fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = unbounded();
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }

    /// Installs the function the engine calls after sending events.
    pub fn set_waker(&self, f: impl Fn() + Send + 'static) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    pub fn send(&self, c: Command) {
        // A send only fails if the thread is gone; the Crashed event says so.
        let _ = self.commands.send(c);
    }

    pub fn load(&self, path: impl Into<std::path::PathBuf>, precision: Precision, context_length: Option<usize>) {
        self.send(Command::Load { path: path.into(), precision, context_length });
    }

    /// Sets the draft model for speculative decoding (`Command::SetDraft`).
    pub fn set_draft(&self, draft: Option<(std::path::PathBuf, Precision)>) {
        self.send(Command::SetDraft(draft));
    }

    /// Starts a generation; returns its id. Cancels nothing already running:
    /// it joins the batch beside them (or waits for room, in order).
    pub fn generate(&self, prompt: Prompt, params: GenerateParams) -> RequestId {
        let id = self.next_request_id();
        let cancel = Arc::new(AtomicBool::new(false));
        *self.current_cancel.lock().unwrap_or_else(|e| e.into_inner()) = Some(cancel.clone());
        self.send(Command::Generate { id, prompt, params, cancel, interactive: true, model: None });
        id
    }

    /// Starts a generation with its own cancel flag (a server runs several
    /// clients' requests, each cancelled alone); returns its id and the flag.
    /// `model`: the model it runs on (None: the primary).
    pub fn submit(&self, prompt: Prompt, params: GenerateParams, model: Option<PathBuf>) -> (RequestId, Arc<AtomicBool>) {
        let id = self.next_request_id();
        let cancel = Arc::new(AtomicBool::new(false));
        self.send(Command::Generate { id, prompt, params, cancel: cancel.clone(), interactive: false, model });
        (id, cancel)
    }

    /// Asks how many tokens `prompt` renders to (`Command::CountTokens`);
    /// the answer comes as `PromptReady` for the returned id.
    pub fn count_tokens(&self, prompt: Prompt, model: Option<PathBuf>) -> RequestId {
        let id = self.next_request_id();
        self.send(Command::CountTokens { id, prompt, model });
        id
    }

    /// Asks how `prompt` fits the context with `reserve` tokens kept for the
    /// answer (`Command::Measure`); the answer comes as `Measured` for the returned id.
    pub fn measure(&self, prompt: Prompt, reserve: usize) -> RequestId {
        let id = self.next_request_id();
        self.send(Command::Measure { id, prompt, reserve, model: None });
        id
    }

    /// Stops the latest generation at the next token.
    pub fn cancel(&self) {
        if let Some(c) = self.current_cancel.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            c.store(true, Ordering::Relaxed);
        }
    }

    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.cancel();
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands `e` to every subscriber and the handle's own reader, then wakes the
/// UI: how an engine's events go out, in process or from a daemon (`remote::client`).
pub(crate) fn broadcast(subscribers: &Subscribers, events: &Sender<Event>, waker: &Waker, e: Event) {
    let mut subs = subscribers.lock().unwrap_or_else(|e| e.into_inner());
    // A reader that went away is forgotten.
    subs.retain(|s| s.send(e.clone()).is_ok());
    drop(subs);
    let _ = events.send(e);
    wake(waker);
}

fn wake(w: &Waker) {
    if let Some(f) = w.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        f();
    }
}

/// The engine's loop: commands are taken in arrival order between steps of
/// the batch. Generations join the batch while it has room; a load or an
/// unload waits until the batch is empty (the sequences before it finish on
/// the model they started on); settings apply to the requests after them.
fn run(commands: Receiver<Command>, events: Sender<Event>, waker: Waker, subscribers: Subscribers, mut config: EngineConfig) {
    let limit = config.max_batch.max(1);
    if let Some(b) = config.mlx_cache_bytes {
        let _ = mlx_rs::memory::set_cache_limit(b as usize);
    }
    let mut pool = Pool::default();
    // Kept across loads: the template variables the user chose.
    let mut template_options = TemplateOptions::default();
    // Kept across loads too: the draft model the user chose, if any.
    let mut draft: Option<(PathBuf, Precision)> = None;
    let send = |e: Event| broadcast(&subscribers, &events, &waker, e);
    let mut waiting: VecDeque<Command> = VecDeque::new();
    let mut steps = 0usize;
    loop {
        if !pool.any_busy() && waiting.is_empty() {
            match commands.recv() {
                Ok(c) => waiting.push_back(c),
                Err(_) => break,
            }
        }
        waiting.extend(commands.try_iter());
        if waiting.iter().any(|c| matches!(c, Command::Shutdown)) {
            pool.cancel_all();
            break;
        }
        // Counting only renders: it answers now, ahead of generations waiting
        // for room (never of a load: it counts for the model loaded before it).
        let mut i = 0;
        while i < waiting.len() && !matches!(waiting[i], Command::Load { .. } | Command::Unload) {
            if matches!(waiting[i], Command::CountTokens { .. } | Command::Measure { .. }) {
                let cmd = waiting.remove(i).expect("in range");
                control(cmd, &mut pool, &mut template_options, &mut draft, &mut config, &send);
            } else {
                i += 1;
            }
        }
        // An interactive request goes ahead of the generations queued before
        // it (never of a load: it must run on the model loaded before it),
        // and may take one row past the limit.
        let chat = waiting.iter().take_while(|c| matches!(c, Command::Generate { .. })).position(|c| matches!(c, Command::Generate { interactive: true, .. }));
        if let Some(i) = chat.filter(|&i| room(&pool, &waiting[i], limit) > 0) {
            if let Some(Command::Generate { id, prompt, params, cancel, model, .. }) = waiting.remove(i) {
                admit(&mut pool, model.as_deref(), id, prompt, params, cancel, &send);
            }
        }
        while let Some(cmd) = waiting.pop_front() {
            let wait = match &cmd {
                Command::Generate { .. } => room(&pool, &cmd, limit) <= 0,
                // The primary's sequences finish on the model they started on.
                Command::Load { .. } | Command::Unload | Command::SetDraft(_) => pool.primary_busy(),
                // Rows of one batch merge caches stored alike: a new KV width waits for all.
                Command::SetKvBits(_) => pool.any_busy(),
                Command::Evict { path } => pool.find(Some(path)).is_some_and(|i| !pool.models[i].batch.is_empty()),
                _ => false,
            };
            if wait {
                waiting.push_front(cmd);
                break;
            }
            match cmd {
                Command::Generate { id, prompt, params, cancel, model, .. } => admit(&mut pool, model.as_deref(), id, prompt, params, cancel, &send),
                cmd => control(cmd, &mut pool, &mut template_options, &mut draft, &mut config, &send),
            }
        }
        for r in pool.models.iter_mut().filter(|r| !r.batch.is_empty()) {
            step(r, &send);
        }
        steps += 1;
        if steps % 32 == 0 {
            send(Event::Memory(MemoryStats::now()));
        }
    }
}

/// Rows left in the batch of the model a generation names (interactive
/// ones may take one past the limit); a model not held has room (the
/// request fails at once).
fn room(pool: &Pool, cmd: &Command, limit: usize) -> isize {
    let Command::Generate { model, interactive, .. } = cmd else { return 1 };
    match pool.find(model.as_deref()) {
        Some(i) => (limit + *interactive as usize) as isize - pool.models[i].batch.len() as isize,
        None => 1,
    }
}

/// One decode step of a model's batch, its outputs sent as events.
fn step(r: &mut Resident, send: &dyn Fn(Event)) {
    {
        for o in r.batch.step(&mut r.session) {
            match o {
                Out::Text { id, text, parts, logprobs } => send(Event::Token { id, text, parts, logprobs }),
                Out::Done { id, stats, .. } => {
                    send(Event::Finished { id, stats });
                    send(Event::Memory(MemoryStats::now()));
                }
                Out::Failed { id, error } => {
                    send(Event::Error { id: Some(id), error: EngineError::from(&error) });
                    send(Event::Memory(MemoryStats::now()));
                }
            }
        }
    }
}

/// Renders a request's prompt and adds it to the batch; a request that
/// cannot run (no model, a template error, a prompt too long, bad
/// parameters) gets its error at once and the batch goes on without it.
fn admit(pool: &mut Pool, model: Option<&std::path::Path>, id: RequestId, prompt: Prompt, params: GenerateParams, cancel: Arc<AtomicBool>, send: &dyn Fn(Event)) {
    let Some(i) = pool.find(model) else {
        send(Event::Error { id: Some(id), error: EngineError::from(&not_held(model)) });
        return;
    };
    let Resident { session: s, batch, .. } = &mut pool.models[i];
    if cancel.load(Ordering::Relaxed) {
        send(Event::Finished { id, stats: GenerationStats { finish_reason: Some(FinishReason::Cancelled), ..Default::default() } });
        return;
    }
    let result = (|| {
        // A chat prompt's reply is read for reasoning, and for tool calls
        // when the request offered tools; a raw prompt's is all content.
        let (tokens, dropped, tools_offered) = match &prompt {
            Prompt::Chat(msgs) => {
                let (t, d) = s.prompt_for_messages_with(msgs, params.max_tokens, !params.keep_turns)?;
                (t, d, Some(s.loaded.template.options.offers_tools()))
            }
            Prompt::ChatWith(msgs, options) => {
                let saved = s.loaded.template.options.clone();
                s.loaded.template.options = saved.with(options);
                let offered = s.loaded.template.options.offers_tools();
                let rendered = s.prompt_for_messages_with(msgs, params.max_tokens, !params.keep_turns);
                s.loaded.template.options = saved;
                let (t, d) = rendered?;
                (t, d, Some(offered))
            }
            Prompt::Raw(text) => {
                if text.is_empty() {
                    return Err(Error::EmptyPrompt);
                }
                (s.loaded.tokenizer.encode_prompt(text)?, 0, None)
            }
        };
        let n = tokens.len();
        let reader = tools_offered.map(|offered| {
            // The generation prompt may have opened the reasoning block itself (Qwen3.5).
            // 16 tokens hold the tag even for a byte-level tokenizer.
            let tail = s.loaded.tokenizer.decode(&tokens[n.saturating_sub(16)..]);
            let format = offered.then(|| s.loaded.template.call_markup.reader());
            let prefix = if params.call_id_prefix.is_empty() { format!("call_{id}_") } else { params.call_id_prefix.clone() };
            ReplyReader::chat(prompt_opens_reasoning(&tail), format, prefix)
        });
        let t0 = std::time::Instant::now();
        let restored = params.prompt_file.as_deref().map(|dir| s.restore_prompt_file(dir, &tokens));
        let mut seq = Sequence::new(s, id, tokens, params, cancel)?;
        // Reading the cache from disk counts in the time to the first token.
        seq.started_at(t0);
        match restored {
            Some(Ok(n)) => seq.stats.prompt_file_tokens = n,
            Some(Err(Error::InvalidArgument(why))) => seq.stats.prompt_file_error = Some(why),
            Some(Err(e)) => seq.stats.prompt_file_error = Some(e.to_string()),
            None => {}
        }
        if let Some(r) = reader {
            seq.read_replies(r);
        }
        seq.trimmed_messages = dropped;
        Ok((seq, n, dropped))
    })();
    match result {
        Ok((seq, n, dropped)) => {
            if dropped > 0 {
                send(Event::ContextTrimmed { id, dropped_messages: dropped });
            }
            send(Event::PromptReady { id, tokens: n, cached: seq.stats.reused_tokens });
            batch.push(seq);
        }
        Err(e) => send(Event::Error { id: Some(id), error: EngineError::from(&e) }),
    }
}


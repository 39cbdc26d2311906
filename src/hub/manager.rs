//! The download thread: a tokio runtime that runs searches and downloads off
//! the UI thread. Commands in, events out (crossbeam), a waker to repaint.
//! Unfinished downloads are saved (with their plan) so they can resume after
//! the app restarts.

use super::client::{Hub, Options};
use super::plan::{Control, Plan, Progress, SearchHit, SearchKind};
use crate::models::load::fit::{self, Verdict};
use super::HubError;
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Clone)]
pub enum HubCommand {
    Search { query: String, kind: SearchKind },
    /// `confirmed`: go ahead even when the estimate says it won't fit.
    Start { id: String, only: Option<Vec<String>>, confirmed: bool },
    Pause(String),
    Resume(String),
    Cancel(String),
    SetToken(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    SearchResults { query: String, result: Result<Vec<SearchHit>, HubError> },
    Planned { id: String, total: u64, present: u64, need: u64, verdict: Verdict },
    /// The estimate says it won't fit: nothing is fetched until the user confirms.
    NeedsConfirm { id: String, need: u64, memory: u64 },
    Progress { id: String, progress: Progress },
    Paused { id: String, done: u64, total: u64 },
    Finished { id: String, path: PathBuf },
    Failed { id: String, error: HubError },
    Cancelled { id: String },
}

#[derive(Debug, Clone)]
pub struct HubConfig {
    pub endpoint: Option<String>,
    pub cache_dir: Option<PathBuf>,
    /// Where unfinished downloads are remembered.
    pub jobs_file: PathBuf,
    /// Context length the fit estimate assumes.
    pub context: u64,
    pub options: Options,
    pub offline: bool,
}

impl HubConfig {
    pub fn from_env(context: u64) -> HubConfig {
        HubConfig {
            endpoint: None,
            cache_dir: None,
            jobs_file: crate::paths::data_dir().join("downloads.json"),
            context,
            options: Options::default(),
            offline: super::offline_from_env(),
        }
    }
}

/// Set once the UI exists; called after every event so the window repaints.
pub type Waker = Arc<Mutex<Option<Box<dyn Fn() + Send + Sync>>>>;

pub struct HubHandle {
    tx: mpsc::UnboundedSender<HubCommand>,
    pub events: Receiver<HubEvent>,
    pub cache_dir: PathBuf,
    waker: Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HubHandle {
    pub fn spawn(cfg: HubConfig) -> HubHandle {
        let waker: Waker = Default::default();
        let w = waker.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let (etx, erx) = crossbeam_channel::unbounded();
        let cache_dir = cfg.cache_dir.clone().unwrap_or_else(hf_hub::resolve_cache_dir);
        let thread = std::thread::Builder::new()
            .name("hearth-downloads".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = etx.send(HubEvent::Failed { id: String::new(), error: HubError::Io(e.to_string()) });
                        return;
                    }
                };
                rt.block_on(run(cfg, rx, Events { tx: etx, waker: w }));
            })
            .expect("spawning the download thread");
        HubHandle { tx, events: erx, cache_dir, waker, thread: Some(thread) }
    }

    pub fn set_waker(&self, f: impl Fn() + Send + Sync + 'static) {
        *self.waker.lock().unwrap() = Some(Box::new(f));
    }

    pub fn send(&self, cmd: HubCommand) {
        let _ = self.tx.send(cmd);
    }
}

impl Drop for HubHandle {
    fn drop(&mut self) {
        // Closing the channel ends the loop; running downloads stop where they
        // are and resume next time (their .incomplete files stay).
        let (dead, _) = mpsc::unbounded_channel();
        self.tx = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Events {
    tx: Sender<HubEvent>,
    waker: Waker,
}

impl Events {
    fn send(&self, e: HubEvent) {
        let _ = self.tx.send(e);
        if let Some(w) = self.waker.lock().unwrap().as_ref() {
            w();
        }
    }
}

/// Unfinished downloads, persisted as their plans.
#[derive(Clone)]
struct Jobs {
    file: PathBuf,
    plans: Arc<Mutex<HashMap<String, Plan>>>,
}

impl Jobs {
    fn load(file: PathBuf) -> Jobs {
        // Read as untrusted: a FIFO or a huge file here must not block or swamp the start.
        let plans: Vec<Plan> = crate::files::read_small(&file, 64 << 20)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Jobs { file, plans: Arc::new(Mutex::new(plans.into_iter().map(|p| (p.id.clone(), p)).collect())) }
    }
    fn save(&self) {
        let plans: Vec<Plan> = self.plans.lock().unwrap().values().cloned().collect();
        if let Ok(bytes) = serde_json::to_vec_pretty(&plans) {
            let _ = crate::store::write_atomic(&self.file, &bytes);
        }
    }
    fn put(&self, p: Plan) {
        self.plans.lock().unwrap().insert(p.id.clone(), p);
        self.save();
    }
    fn remove(&self, id: &str) {
        self.plans.lock().unwrap().remove(id);
        self.save();
    }
    fn get(&self, id: &str) -> Option<Plan> {
        self.plans.lock().unwrap().get(id).cloned()
    }
}

fn build_hub(cfg: &HubConfig, token: Option<String>) -> Result<Arc<Hub>, HubError> {
    let mut hub = Hub::new(cfg.endpoint.clone(), token, cfg.cache_dir.clone())?;
    hub.options = cfg.options.clone();
    if cfg.offline {
        hub.set_offline(true);
    }
    Ok(Arc::new(hub))
}

async fn run(cfg: HubConfig, mut rx: mpsc::UnboundedReceiver<HubCommand>, events: Events) {
    let mut hub = match build_hub(&cfg, super::token::load()) {
        Ok(h) => h,
        Err(e) => {
            events.send(HubEvent::Failed { id: String::new(), error: e });
            return;
        }
    };
    let jobs = Jobs::load(cfg.jobs_file.clone());
    // Downloads cut short last time show up paused, with what is already on disk.
    let saved: Vec<Plan> = jobs.plans.lock().unwrap().values().cloned().collect();
    for p in saved {
        events.send(HubEvent::Paused { id: p.id.clone(), done: hub.bytes_present(&p), total: p.total() });
    }
    let running: Arc<Mutex<HashMap<String, watch::Sender<Control>>>> = Default::default();
    while let Some(cmd) = rx.recv().await {
        match cmd {
            HubCommand::Search { query, kind } => {
                if cfg.offline {
                    events.send(HubEvent::SearchResults { query, result: Err(HubError::offline_mode()) });
                    continue;
                }
                let (hub, events) = (hub.clone(), events.clone());
                tokio::spawn(async move {
                    let result = hub.search(&query, kind, 30).await;
                    events.send(HubEvent::SearchResults { query, result });
                });
            }
            HubCommand::Start { id, only, confirmed } => {
                if cfg.offline {
                    events.send(HubEvent::Failed { id, error: HubError::offline_mode() });
                    continue;
                }
                start(&hub, &cfg, &jobs, &running, &events, id, only, confirmed, None);
            }
            HubCommand::Resume(id) => {
                if cfg.offline {
                    events.send(HubEvent::Failed { id, error: HubError::offline_mode() });
                    continue;
                }
                let plan = jobs.get(&id);
                start(&hub, &cfg, &jobs, &running, &events, id, None, true, plan);
            }
            HubCommand::Pause(ref id) | HubCommand::Cancel(ref id) if running.lock().unwrap().contains_key(id) => {
                let c = if matches!(cmd, HubCommand::Pause(_)) { Control::Pause } else { Control::Cancel };
                if let Some(tx) = running.lock().unwrap().get(id) {
                    let _ = tx.send(c);
                }
            }
            HubCommand::Cancel(id) => {
                // Not running (paused, or left from last time): clean up directly.
                if let Some(plan) = jobs.get(&id) {
                    let _ = hub.discard(&plan);
                    jobs.remove(&id);
                }
                events.send(HubEvent::Cancelled { id });
            }
            HubCommand::Pause(_) => {}
            HubCommand::SetToken(t) => match build_hub(&cfg, t) {
                Ok(h) => hub = h,
                Err(e) => events.send(HubEvent::Failed { id: String::new(), error: e }),
            },
        }
    }
    // The app is closing: stop downloads as pauses, so they resume next time.
    for tx in running.lock().unwrap().values() {
        let _ = tx.send(Control::Pause);
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    hub: &Arc<Hub>,
    cfg: &HubConfig,
    jobs: &Jobs,
    running: &Arc<Mutex<HashMap<String, watch::Sender<Control>>>>,
    events: &Events,
    id: String,
    only: Option<Vec<String>>,
    confirmed: bool,
    saved_plan: Option<Plan>,
) {
    if let Err(e) = crate::library::ids::check_repo_id(&id) {
        events.send(HubEvent::Failed { id, error: e.into() });
        return;
    }
    let (ctl_tx, mut ctl_rx) = watch::channel(Control::Run);
    {
        let mut r = running.lock().unwrap();
        if r.contains_key(&id) {
            return;
        }
        r.insert(id.clone(), ctl_tx);
    }
    let (hub, jobs, running, events, context) = (hub.clone(), jobs.clone(), running.clone(), events.clone(), cfg.context);
    tokio::spawn(async move {
        let outcome = async {
            let plan = match saved_plan {
                Some(p) => p,
                None => hub.plan(&id, only.as_deref()).await?,
            };
            let memory = crate::sys::total_memory();
            let need = plan.need(context, crate::sys::device(), memory);
            let verdict = fit::verdict(need, memory);
            events.send(HubEvent::Planned {
                id: id.clone(),
                total: plan.total(),
                present: hub.bytes_present(&plan),
                need,
                verdict,
            });
            if verdict == Verdict::WontFit && !confirmed {
                events.send(HubEvent::NeedsConfirm { id: id.clone(), need, memory });
                return Ok(None);
            }
            jobs.put(plan.clone());
            let ev = events.clone();
            let idc = id.clone();
            let mut on_progress = move |p: &Progress| ev.send(HubEvent::Progress { id: idc.clone(), progress: p.clone() });
            match hub.download(&plan, &mut ctl_rx, &mut on_progress).await {
                Ok(path) => Ok(Some((plan, path))),
                Err(HubError::Cancelled) => {
                    let _ = hub.discard(&plan);
                    Err(HubError::Cancelled)
                }
                Err(e) => {
                    if e == HubError::Paused {
                        events.send(HubEvent::Paused { id: id.clone(), done: hub.bytes_present(&plan), total: plan.total() });
                    }
                    Err(e)
                }
            }
        }
        .await;
        running.lock().unwrap().remove(&id);
        match outcome {
            Ok(Some((_, path))) => {
                jobs.remove(&id);
                events.send(HubEvent::Finished { id, path });
            }
            Ok(None) => {}
            Err(HubError::Cancelled) => {
                jobs.remove(&id);
                events.send(HubEvent::Cancelled { id });
            }
            Err(HubError::Paused) => {}
            // Failures keep the job (and its partial files) so Resume can go on.
            Err(error) => events.send(HubEvent::Failed { id, error }),
        }
    });
}

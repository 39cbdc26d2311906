//! The daemon's end: listens on the socket, and for each attached app
//! forwards its commands to the daemon's engine (its request ids mapped to
//! the engine's, so they never meet the API server's) and sends back every
//! event but other clients' replies.

use super::{receive, send, socket_path, DaemonHello, Down, Up, PROTOCOL};
use crate::engine::protocol::{Command, Event, RequestId};
use crate::engine::EngineHandle;
use crate::models::load::ModelInfo;
use std::collections::HashMap;
use std::io::BufReader;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An attached app's requests: the engine's id → (the app's id, its cancel flag).
type Routes = Arc<Mutex<HashMap<RequestId, (RequestId, Arc<AtomicBool>)>>>;

/// The primary model as the daemon's events tell it: what a hello reports.
#[derive(Default)]
struct Primary {
    model: Option<ModelInfo>,
    loading: bool,
}

/// What every connection reads: the engine, the primary model now, and how
/// many apps are attached.
struct Shared {
    engine: Arc<EngineHandle>,
    url: String,
    primary: Mutex<Primary>,
    clients: AtomicUsize,
    on_stop: Box<dyn Fn(i32) + Send + Sync>,
}

/// Listens on `data`'s socket (the caller holds the daemon's lock and
/// cleared what a dead one left) in threads of its own, for as long as the
/// process lives. `on_stop(code)` ends the process: 0 when `hearth service
/// stop` asks, 1 when the engine crashed (a service manager then restarts
/// the daemon; a daemon with a dead engine would only fail every request).
pub fn serve(engine: Arc<EngineHandle>, data: &Path, url: String, on_stop: impl Fn(i32) + Send + Sync + 'static) -> std::io::Result<()> {
    let path = socket_path(data);
    // A folder only the user may enter: the socket is never reachable by
    // others, not even between its creation and a chmod.
    let dir = path.parent().unwrap_or(data);
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    let shared = Arc::new(Shared { engine, url, primary: Mutex::default(), clients: AtomicUsize::new(0), on_stop: Box::new(on_stop) });
    let (s, events) = (shared.clone(), shared.engine.subscribe());
    std::thread::Builder::new().name("hearth-daemon-model".into()).spawn(move || {
        for e in events {
            let mut p = s.primary.lock().unwrap_or_else(|p| p.into_inner());
            match e {
                Event::LoadProgress { .. } => p.loading = true,
                Event::Loaded(info) => *p = Primary { model: Some(info), loading: false },
                Event::Unloaded | Event::LoadFailed(_) => *p = Primary::default(),
                Event::Crashed(why) => {
                    drop(p);
                    eprintln!("the engine crashed ({why}); the daemon stops so that it can be started afresh");
                    (s.on_stop)(1);
                }
                _ => {}
            }
        }
    })?;
    std::thread::Builder::new().name("hearth-daemon-socket".into()).spawn(move || loop {
        match listener.accept() {
            Ok((conn, _)) => {
                let s = shared.clone();
                let _ = std::thread::Builder::new().name("hearth-daemon-app".into()).spawn(move || client(s, conn));
            }
            // Out of descriptors or the like: wait instead of spinning on it.
            Err(e) => {
                eprintln!("the daemon's socket could not accept a connection: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    })?;
    Ok(())
}

/// One socket's writer, shared by the event pump and the refusals so their
/// lines never interleave.
type Writer = Arc<Mutex<UnixStream>>;

fn say(w: &Writer, msg: &Down) -> std::io::Result<()> {
    send(&w.lock().unwrap_or_else(|p| p.into_inner()), msg)
}

/// One attached app (or `hearth service`), until it hangs up.
fn client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    // A peer that connects and says nothing is let go.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let writer: Writer = Arc::new(Mutex::new(stream));
    let refuse = |why: String| drop(say(&writer, &Down::Refused(why)));
    match receive::<Up>(&mut reader) {
        Ok(Some(Up::Hello { protocol, .. })) if protocol == PROTOCOL => {}
        Ok(Some(Up::Hello { protocol, version })) => {
            return refuse(format!("this daemon speaks protocol {PROTOCOL} (Hearth {}), the app {protocol} (Hearth {version})", env!("CARGO_PKG_VERSION")));
        }
        _ => return refuse("the first message must be a hello".into()),
    }
    if !shared.engine.is_alive() {
        return refuse("the daemon's engine has stopped".into());
    }
    let _ = reader.get_ref().set_read_timeout(None);
    // Subscribed before the hello is answered: no event after it is missed.
    let events = shared.engine.subscribe();
    let clients = shared.clients.fetch_add(1, Ordering::SeqCst) + 1;
    let (model, loading) = {
        let p = shared.primary.lock().unwrap_or_else(|p| p.into_inner());
        (p.model.clone(), p.loading)
    };
    let hello = DaemonHello { version: env!("CARGO_PKG_VERSION").into(), pid: std::process::id(), url: shared.url.clone(), model, loading, clients };
    let routes: Routes = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    if say(&writer, &Down::Hello(hello)).is_ok() {
        let (w, r, d) = (writer.clone(), routes.clone(), done.clone());
        let pump = std::thread::Builder::new().name("hearth-daemon-events".into()).spawn(move || pump(w, events, r, d)).ok();
        read_commands(&shared, &writer, &mut reader, &routes);
        done.store(true, Ordering::SeqCst);
        if let Some(p) = pump {
            let _ = p.join();
        }
    }
    // Whatever this app still had running is of no use to anyone now.
    for (_, (_, cancel)) in routes.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        cancel.store(true, Ordering::Relaxed);
    }
    shared.clients.fetch_sub(1, Ordering::SeqCst);
}

/// The app's messages until it hangs up (or sends one that does not read).
fn read_commands(shared: &Shared, writer: &Writer, reader: &mut BufReader<UnixStream>, routes: &Routes) {
    loop {
        let msg = match receive::<Up>(reader) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                let _ = say(writer, &Down::Refused(e.to_string()));
                return;
            }
        };
        match msg {
            Up::Command(c) => forward(shared, c, routes),
            Up::Cancel(app_id) => {
                let r = routes.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((_, cancel)) = r.values().find(|(id, _)| *id == app_id) {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
            Up::Stop => (shared.on_stop)(0),
            Up::Hello { .. } => {}
        }
    }
}

/// Sends an app's command to the engine under ids of the engine's own.
fn forward(shared: &Shared, c: Command, routes: &Routes) {
    let engine = &shared.engine;
    let route = |app_id: RequestId, cancel: Arc<AtomicBool>| {
        let id = engine.next_request_id();
        routes.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (app_id, cancel));
        id
    };
    match c {
        Command::Generate { id, prompt, mut params, interactive, model, .. } => {
            // The daemon writes prompt caches only inside its own folder for them.
            params.prompt_file = params.prompt_file.filter(|p| within(p, &crate::paths::prompt_cache_dir()));
            let cancel = Arc::new(AtomicBool::new(false));
            let id = route(id, cancel.clone());
            engine.send(Command::Generate { id, prompt, params, cancel, interactive, model });
        }
        Command::CountTokens { id, prompt, model } => {
            let id = route(id, Arc::default());
            engine.send(Command::CountTokens { id, prompt, model });
        }
        Command::Measure { id, prompt, reserve, model } => {
            let id = route(id, Arc::default());
            engine.send(Command::Measure { id, prompt, reserve, model });
        }
        // The daemon outlives every app: an app quitting only hangs up.
        Command::Shutdown => {}
        // Engine-wide settings are the daemon's (its command line), shared
        // by every API client: an app's own (sent for an engine of its own)
        // stay with the app, which sends what it needs with each request.
        Command::SetTemplateOptions(_) | Command::SetKvBits(_) | Command::SetDraft(_) | Command::SetContextLength(_) | Command::ResetCache => {}
        other => engine.send(other),
    }
}

/// Sends the app every event but the replies to others' requests, its own
/// under the ids it chose; ends when the app hangs up or stops reading.
fn pump(out: Writer, events: crossbeam_channel::Receiver<Event>, routes: Routes, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        let e = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(e) = route_event(e, &routes) {
            if say(&out, &Down::Event(e)).is_err() {
                let _ = out.lock().unwrap_or_else(|p| p.into_inner()).shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// `e` as this app should see it, or None when it answers someone else.
fn route_event(e: Event, routes: &Routes) -> Option<Event> {
    let id = match &e {
        Event::ContextTrimmed { id, .. } | Event::PromptReady { id, .. } | Event::Token { id, .. } | Event::Finished { id, .. } | Event::Measured { id, .. } => *id,
        Event::Error { id: Some(id), .. } => *id,
        _ => return Some(e),
    };
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    let app_id = r.get(&id)?.0;
    if matches!(e, Event::Finished { .. } | Event::Error { .. } | Event::Measured { .. }) {
        r.remove(&id);
    }
    drop(r);
    Some(match e {
        Event::ContextTrimmed { dropped_messages, .. } => Event::ContextTrimmed { id: app_id, dropped_messages },
        Event::PromptReady { tokens, cached, .. } => Event::PromptReady { id: app_id, tokens, cached },
        Event::Token { text, parts, logprobs, .. } => Event::Token { id: app_id, text, parts, logprobs },
        Event::Finished { stats, .. } => Event::Finished { id: app_id, stats },
        Event::Measured { result, .. } => Event::Measured { id: app_id, result },
        Event::Error { error, .. } => Event::Error { id: Some(app_id), error },
        other => other,
    })
}

/// Whether `path` lies inside `root` (by its components: no `..` leaves it).
fn within(path: &std::path::Path, root: &std::path::Path) -> bool {
    use std::path::Component;
    path.starts_with(root) && !path.components().any(|c| matches!(c, Component::ParentDir))
}

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

/// What every connection reads: the engine, the primary model now, and how
/// many apps are attached.
struct Shared {
    engine: Arc<EngineHandle>,
    url: String,
    primary: Mutex<Option<ModelInfo>>,
    clients: AtomicUsize,
    on_stop: Box<dyn Fn() + Send + Sync>,
}

/// Listens on `data`'s socket (a stale one from a crash is replaced; the
/// caller checked that no daemon answers there) in threads of its own, for
/// as long as the process lives. `on_stop` runs when `hearth service stop`
/// asks (it ends the process).
pub fn serve(engine: Arc<EngineHandle>, data: &Path, url: String, on_stop: impl Fn() + Send + Sync + 'static) -> std::io::Result<()> {
    let path = socket_path(data);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let shared = Arc::new(Shared { engine, url, primary: Mutex::new(None), clients: AtomicUsize::new(0), on_stop: Box::new(on_stop) });
    // The primary model, followed from the engine's events for each hello.
    let (s, events) = (shared.clone(), shared.engine.subscribe());
    std::thread::Builder::new().name("hearth-daemon-model".into()).spawn(move || {
        for e in events {
            match e {
                Event::Loaded(info) => *s.primary.lock().unwrap_or_else(|p| p.into_inner()) = Some(info),
                Event::Unloaded | Event::LoadFailed(_) | Event::Crashed(_) => *s.primary.lock().unwrap_or_else(|p| p.into_inner()) = None,
                _ => {}
            }
        }
    })?;
    std::thread::Builder::new().name("hearth-daemon-socket".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = shared.clone();
            let _ = std::thread::Builder::new().name("hearth-daemon-app".into()).spawn(move || client(s, conn));
        }
    })?;
    Ok(())
}

/// One attached app (or `hearth service`), until it hangs up.
fn client(shared: Arc<Shared>, stream: UnixStream) {
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    // A peer that connects and says nothing is let go.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    match receive::<Up>(&mut reader) {
        Ok(Some(Up::Hello { protocol, .. })) if protocol == PROTOCOL => {}
        Ok(Some(Up::Hello { protocol, version })) => {
            let why = format!("this daemon speaks protocol {PROTOCOL} (Hearth {}), the app {protocol} (Hearth {version})", env!("CARGO_PKG_VERSION"));
            let _ = send(&stream, &Down::Refused(why));
            return;
        }
        _ => {
            let _ = send(&stream, &Down::Refused("the first message must be a hello".into()));
            return;
        }
    }
    let _ = stream.set_read_timeout(None);
    // Subscribed before the hello is answered: no event after it is missed.
    let events = shared.engine.subscribe();
    let clients = shared.clients.fetch_add(1, Ordering::SeqCst) + 1;
    let hello = DaemonHello {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        url: shared.url.clone(),
        model: shared.primary.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        clients,
    };
    let routes: Routes = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    if send(&stream, &Down::Hello(hello)).is_ok() {
        let (out, r, d) = (stream.try_clone(), routes.clone(), done.clone());
        let pump = out.ok().and_then(|out| {
            std::thread::Builder::new().name("hearth-daemon-events".into()).spawn(move || pump(out, events, r, d)).ok()
        });
        read_commands(&shared, &stream, &mut reader, &routes);
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
fn read_commands(shared: &Shared, stream: &UnixStream, reader: &mut BufReader<UnixStream>, routes: &Routes) {
    loop {
        let msg = match receive::<Up>(reader) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(e) => {
                let _ = send(stream, &Down::Refused(e.to_string()));
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
            Up::Stop => (shared.on_stop)(),
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
        Command::Generate { id, prompt, params, interactive, model, .. } => {
            let cancel = Arc::new(AtomicBool::new(false));
            let id = route(id, cancel.clone());
            engine.send(Command::Generate { id, prompt, params, cancel, interactive, model });
        }
        Command::CountTokens { id, prompt, model } => {
            let id = route(id, Arc::default());
            engine.send(Command::CountTokens { id, prompt, model });
        }
        // The daemon outlives every app: an app quitting only hangs up.
        Command::Shutdown => {}
        other => engine.send(other),
    }
}

/// Sends the app every event but the replies to others' requests, its own
/// under the ids it chose; ends when the app hangs up or stops reading.
fn pump(out: UnixStream, events: crossbeam_channel::Receiver<Event>, routes: Routes, done: Arc<AtomicBool>) {
    while !done.load(Ordering::SeqCst) {
        let e = match events.recv_timeout(Duration::from_millis(200)) {
            Ok(e) => e,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        };
        if let Some(e) = route_event(e, &routes) {
            if send(&out, &Down::Event(e)).is_err() {
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }
}

/// `e` as this app should see it, or None when it answers someone else.
fn route_event(e: Event, routes: &Routes) -> Option<Event> {
    let id = match &e {
        Event::ContextTrimmed { id, .. } | Event::PromptReady { id, .. } | Event::Token { id, .. } | Event::Finished { id, .. } => *id,
        Event::Error { id: Some(id), .. } => *id,
        _ => return Some(e),
    };
    let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
    let app_id = r.get(&id)?.0;
    if matches!(e, Event::Finished { .. } | Event::Error { .. }) {
        r.remove(&id);
    }
    drop(r);
    Some(match e {
        Event::ContextTrimmed { dropped_messages, .. } => Event::ContextTrimmed { id: app_id, dropped_messages },
        Event::PromptReady { tokens, cached, .. } => Event::PromptReady { id: app_id, tokens, cached },
        Event::Token { text, parts, logprobs, .. } => Event::Token { id: app_id, text, parts, logprobs },
        Event::Finished { stats, .. } => Event::Finished { id: app_id, stats },
        Event::Error { error, .. } => Event::Error { id: Some(app_id), error },
        other => other,
    })
}

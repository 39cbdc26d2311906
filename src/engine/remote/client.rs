//! The app's end: an `EngineHandle` whose commands go to the daemon's engine
//! and whose events come back from it, so the chat, the settings and the
//! panels work as they do on an engine of their own.

use super::{connect, receive, send, DaemonHello, Down, Up};
use crate::engine::protocol::{Command, Event, RequestId};
use crate::engine::worker::{broadcast, EngineHandle, Subscribers, Waker};
use crossbeam_channel::{unbounded, RecvTimeoutError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the forwarder looks for cancelled requests while any are in
/// flight (a cancel flag is set by the chat, not sent as a command), and
/// whether the daemon went away while none are.
const CANCEL_POLL: Duration = Duration::from_millis(40);
const IDLE_POLL: Duration = Duration::from_secs(1);

type InFlight = Arc<Mutex<HashMap<RequestId, Arc<AtomicBool>>>>;

impl EngineHandle {
    /// Attaches to the daemon serving from `data` (`hearth serve --daemon`):
    /// the handle and the daemon's hello, or why none answered within
    /// `timeout`. The daemon never stops for this handle: dropping it
    /// cancels its requests in flight and hangs up.
    pub fn attach(data: &Path, timeout: Duration) -> Result<(EngineHandle, DaemonHello), String> {
        let (stream, mut reader, hello) = connect(data, timeout)?;
        stream.set_read_timeout(None).map_err(|e| e.to_string())?;
        // Bounded so a daemon that stops reading cannot hang the app's exit.
        stream.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        let (ctx, crx) = unbounded::<Command>();
        let (etx, erx) = unbounded::<Event>();
        let waker: Waker = Arc::new(Mutex::new(None));
        let subscribers: Subscribers = Arc::default();
        let in_flight: InFlight = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let (w, subs, flights, gone) = (waker.clone(), subscribers.clone(), in_flight.clone(), closed.clone());
        std::thread::Builder::new()
            .name("hearth-attach-events".into())
            .spawn(move || {
                let why = loop {
                    match receive::<Down>(&mut reader) {
                        Ok(Some(Down::Event(e))) => {
                            if let Event::Finished { id, .. } | Event::Error { id: Some(id), .. } = &e {
                                flights.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
                            }
                            broadcast(&subs, &etx, &w, e);
                        }
                        Ok(Some(Down::Refused(why))) => break format!("it refused a message: {why}"),
                        Ok(Some(Down::Hello(_))) => {}
                        Ok(None) => break "it closed the connection".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                if !gone.swap(true, Ordering::SeqCst) {
                    let msg = format!("The Hearth daemon went away ({why}). Restart the engine to attach again, or to start the app's own.");
                    broadcast(&subs, &etx, &w, Event::Crashed(msg));
                }
            })
            .map_err(|e| e.to_string())?;

        let forwarder = std::thread::Builder::new()
            .name("hearth-attach".into())
            .spawn(move || {
                let mut hung_up = false;
                while !closed.load(Ordering::SeqCst) {
                    let idle = in_flight.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                    let sent = match crx.recv_timeout(if idle { IDLE_POLL } else { CANCEL_POLL }) {
                        Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                            hung_up = true;
                            break;
                        }
                        Ok(c) => {
                            if let Command::Generate { id, cancel, .. } = &c {
                                in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(*id, cancel.clone());
                            }
                            send(&stream, &Up::Command(c))
                        }
                        Err(RecvTimeoutError::Timeout) => Ok(()),
                    };
                    let mut cancelled: Vec<RequestId> = Vec::new();
                    in_flight.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, c| {
                        let on = !c.load(Ordering::Relaxed);
                        if !on {
                            cancelled.push(*id);
                        }
                        on
                    });
                    if sent.is_err() || cancelled.iter().any(|id| send(&stream, &Up::Cancel(*id)).is_err()) {
                        break;
                    }
                }
                // The reader sees the end too, and reports it unless this side hung up.
                if hung_up {
                    closed.store(true, Ordering::SeqCst);
                }
                let _ = stream.shutdown(std::net::Shutdown::Both);
            })
            .map_err(|e| e.to_string())?;
        Ok((EngineHandle::attached(ctx, erx, waker, subscribers, forwarder), hello))
    }
}

//! The engine over a local socket. A daemon (`hearth serve --daemon`) holds the
//! one engine; the app attaches to it (`client`) instead of starting a second
//! one, and its commands and events cross a Unix socket in the data folder
//! (`host` is the daemon's end). The socket is the user's alone (mode 0600),
//! so it needs no key; each message is one line of JSON.
//!
//! `daemon.json` beside the socket records the daemon (pid, address, log),
//! written once it serves and removed when it stops; a record left by a
//! crash is recognised because nothing answers on its socket.

pub mod client;
pub mod host;

use super::protocol::{Command, Event, RequestId};
use crate::models::load::ModelInfo;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bumped whenever a message changes shape: an app and a daemon of
/// different protocols do not attach.
pub const PROTOCOL: u32 = 1;

/// The longest line either side reads: a whole conversation with its tools
/// fits many times over; anything longer is a broken or hostile peer.
const MAX_LINE: usize = 64 << 20;

/// What an attached app (or `hearth service`) sends the daemon; one per
/// request, so `Command`'s size costs nothing worth a Box (as in `Command`).
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub(crate) enum Up {
    Hello { protocol: u32, version: String },
    /// A command for the daemon's engine, with the app's own request ids
    /// (the daemon maps them to its own). `Shutdown` is never forwarded.
    Command(Command),
    /// The app cancelled its request `id`.
    Cancel(RequestId),
    /// Stop the daemon (`hearth service stop`).
    Stop,
}

/// What the daemon sends back.
#[derive(Serialize, Deserialize)]
pub(crate) enum Down {
    Hello(DaemonHello),
    Event(Event),
    /// The daemon will not talk to this peer (another protocol, a bad message).
    Refused(String),
}

/// The daemon's answer to a hello: who it is and what it holds now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonHello {
    pub version: String,
    pub pid: u32,
    /// Where its API server listens.
    pub url: String,
    /// The model requests without a model run on (what the app's chat shows).
    pub model: Option<ModelInfo>,
    /// A model is loading as the primary (the app waits for it rather than load its own).
    #[serde(default)]
    pub loading: bool,
    /// Apps attached now, this connection included.
    pub clients: usize,
}

/// `daemon.json`: a running daemon, for `hearth service status` and the app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonRecord {
    pub pid: u32,
    pub url: String,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub version: String,
    /// Seconds since the Unix epoch.
    pub started: u64,
}

pub fn record_path(data: &Path) -> PathBuf {
    data.join("daemon.json")
}

/// In `run/`, a folder only the user may enter (`host::serve` makes it so).
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("run").join("daemon.sock")
}

/// Whether anything accepts connections on `data`'s socket (a daemon,
/// perhaps of another version or hung), as against a file a dead one left.
pub fn listening(data: &Path) -> bool {
    UnixStream::connect(socket_path(data)).is_ok()
}

impl DaemonRecord {
    /// The record in `data`, if one is there and reads (a torn or foreign
    /// file counts as none: the socket decides whether a daemon runs).
    pub fn read(data: &Path) -> Option<DaemonRecord> {
        let bytes = crate::files::read_small(&record_path(data), 1 << 16).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Writes the record atomically (a reader never sees half of it).
    pub fn write(&self, data: &Path) -> crate::error::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| crate::error::Error::InvalidArgument(format!("the daemon's record: {e}")))?;
        crate::files::write_atomic(&record_path(data), &json)
    }

    /// Removes the record and the socket (the daemon stopping, or one found dead).
    pub fn remove(data: &Path) {
        let _ = std::fs::remove_file(record_path(data));
        let _ = std::fs::remove_file(socket_path(data));
    }
}

/// Connects to the daemon of `data` and says hello; its answer within
/// `timeout`, or why no daemon answered.
pub(crate) fn connect(data: &Path, timeout: Duration) -> Result<(UnixStream, BufReader<UnixStream>, DaemonHello), String> {
    let path = socket_path(data);
    let stream = UnixStream::connect(&path).map_err(|e| format!("no Hearth daemon answers at {}: {e}", path.display()))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    send(&stream, &Up::Hello { protocol: PROTOCOL, version: env!("CARGO_PKG_VERSION").into() })
        .map_err(|e| format!("the Hearth daemon did not take a hello: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    match receive::<Down>(&mut reader) {
        Ok(Some(Down::Hello(h))) => Ok((stream, reader, h)),
        Ok(Some(Down::Refused(why))) => Err(format!("the Hearth daemon refused: {why}")),
        Ok(Some(_)) => Err("the Hearth daemon answered out of turn".into()),
        Ok(None) => Err("the Hearth daemon closed the connection".into()),
        Err(e) => Err(format!("the Hearth daemon did not answer: {e}")),
    }
}

/// Who the daemon of `data` is, if one runs (a hello and goodbye).
pub fn probe(data: &Path, timeout: Duration) -> Result<DaemonHello, String> {
    connect(data, timeout).map(|(_, _, h)| h)
}

/// Asks the daemon of `data` to stop; returns its pid once asked.
pub fn request_stop(data: &Path, timeout: Duration) -> Result<u32, String> {
    let (stream, _, hello) = connect(data, timeout)?;
    send(&stream, &Up::Stop).map_err(|e| format!("could not ask the daemon to stop: {e}"))?;
    Ok(hello.pid)
}

/// Writes one message as a line.
pub(crate) fn send(mut w: &UnixStream, msg: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line)
}

/// Reads one message; None at the end of the stream. A line over
/// `MAX_LINE` or one that does not parse is an error, never a panic.
pub(crate) fn receive<T: DeserializeOwned>(r: &mut BufReader<UnixStream>) -> std::io::Result<Option<T>> {
    let mut line = Vec::new();
    let n = r.by_ref().take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        let why = if line.len() > MAX_LINE { "a message over 64 MB" } else { "a message cut off" };
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("a message that does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_and_garbled_lines_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut r = BufReader::new(b);
        (&a).write_all(b"{not json}\n").unwrap();
        let e = receive::<Down>(&mut r).err().unwrap();
        assert!(e.to_string().contains("does not parse"), "{e}");
        (&a).write_all(b"\"Stop\"\n").unwrap();
        assert!(matches!(receive::<Up>(&mut r).unwrap(), Some(Up::Stop)));
        drop(a);
        assert!(receive::<Up>(&mut r).unwrap().is_none());
    }

    #[test]
    fn a_record_round_trips_and_a_torn_one_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert!(DaemonRecord::read(d.path()).is_none());
        let rec = DaemonRecord { pid: 7, url: "http://127.0.0.1:1".into(), socket: socket_path(d.path()), log: d.path().join("l"), version: "x".into(), started: 1 };
        rec.write(d.path()).unwrap();
        assert_eq!(DaemonRecord::read(d.path()).unwrap().pid, 7);
        std::fs::write(record_path(d.path()), b"{\"pid\": 7, \"url\"").unwrap();
        assert!(DaemonRecord::read(d.path()).is_none());
        DaemonRecord::remove(d.path());
        assert!(!record_path(d.path()).exists());
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let e = probe(d.path(), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("no Hearth daemon answers"), "{e}");
    }
}

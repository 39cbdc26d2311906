//! `hearth serve --daemon`: the server without the window, in the
//! background. The command starts a copy of itself in a session of its own
//! (`--foreground`, what a service manager runs too) and returns once that
//! copy serves; the daemon writes its output to `<data>/logs/daemon.log`
//! (rotated at 10 MB, three old files kept) and publishes its engine on the
//! data folder's socket, where the app attaches instead of starting another.

use anyhow::{bail, Context, Result};
use hearth::engine::remote::{self, DaemonRecord};
use hearth::engine::EngineHandle;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A log past this size is rotated (checked at start and every minute).
const LOG_MAX: u64 = 10 << 20;
/// Rotated logs kept: daemon.log.1 (the newest) to daemon.log.3.
const LOG_KEEP: u32 = 3;
/// The exit status of a daemon that found another serving (EX_TEMPFAIL);
/// the systemd unit does not restart on it.
pub const ANOTHER_SERVES: i32 = 75;
/// How long a starting daemon may take to serve (it binds before loading a model).
const START_WAIT: Duration = Duration::from_secs(60);

pub fn log_path(data: &Path) -> PathBuf {
    data.join("logs").join("daemon.log")
}

/// Fails when anything answers on `data`'s socket: a daemon (its address
/// named), or one that does not speak this Hearth's protocol or is hung
/// (never replaced behind its back: its port and memory would stay taken).
pub fn refuse_second(data: &Path) -> Result<()> {
    if !remote::listening(data) {
        return Ok(());
    }
    match remote::probe(data, Duration::from_secs(5)) {
        Ok(h) => bail!("a Hearth daemon already serves at {} (pid {}); `hearth service stop` stops it", h.url, h.pid),
        Err(why) => {
            let pid = DaemonRecord::read(data).map(|r| format!(" (pid {})", r.pid)).unwrap_or_default();
            bail!("a process{pid} holds {} but does not answer as this Hearth expects: {why}; stop it first", remote::socket_path(data).display())
        }
    }
}

/// In the daemon itself: a lock on `daemon.lock` held until the process
/// ends, so two starting at once cannot both serve (the kernel drops it
/// when a daemon dies, however it dies); then `refuse_second`, and what a
/// dead daemon left is cleared (only here, under the lock).
pub fn claim(data: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(data.join("daemon.lock")).context("cannot open daemon.lock")?;
    // SAFETY: flock on a descriptor this function owns.
    let taken = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0;
    let second = if taken { Err(anyhow::anyhow!("another Hearth daemon is starting or running from {}", data.display())) } else { refuse_second(data) };
    if let Err(e) = second {
        // Not a failure to restart on: the service is up, in the other one.
        eprintln!("{e:#}");
        std::process::exit(ANOTHER_SERVES);
    }
    DaemonRecord::remove(data);
    // Held for the rest of the process.
    std::mem::forget(lock);
    Ok(())
}

/// Starts the daemon in the background and returns once it serves.
pub fn detach(data: &Path) -> Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    refuse_second(data)?;
    // Where the child's first words will be: an error from its start shows from here on.
    let log = log_path(data);
    let start_len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    // Its own session: closing the terminal (or the app that ran this) does not end it.
    // SAFETY: setsid is async-signal-safe and touches no memory of this process.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let end = Instant::now() + START_WAIT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the daemon stopped as it started ({status}); it wrote to {}:\n{}", log.display(), tail(&log, start_len));
        }
        if let Some(rec) = DaemonRecord::read(data).filter(|r| r.pid == child.id()) {
            if remote::probe(data, Duration::from_secs(2)).is_ok() {
                // The line scripts wait for, as `hearth serve` prints it.
                println!("listening on {}", rec.url);
                println!("Hearth daemon running (pid {}); log: {}; `hearth service stop` stops it", rec.pid, rec.log.display());
                return Ok(());
            }
        }
        if Instant::now() > end {
            let _ = child.kill();
            bail!("the daemon did not start serving within {} s; it wrote to {}:\n{}", START_WAIT.as_secs(), log.display(), tail(&log, start_len));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// In the daemon itself: standard output and error go to the log (rotated
/// now and every minute from here on).
pub fn log_to_file(data: &Path) -> Result<PathBuf> {
    let log = log_path(data);
    std::fs::create_dir_all(log.parent().unwrap_or(data)).with_context(|| format!("cannot create the log folder for {}", log.display()))?;
    reopen(&log, true)?;
    let l = log.clone();
    std::thread::Builder::new().name("hearth-daemon-log".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(60));
        if let Err(e) = reopen(&l, false) {
            eprintln!("log rotation failed: {e:#}");
        }
    })?;
    Ok(log)
}

/// Rotates `log` if it is past `LOG_MAX`; then (or when `always`) points
/// this process's standard output and error at a fresh handle on it.
fn reopen(log: &Path, always: bool) -> Result<()> {
    let big = std::fs::metadata(log).map(|m| m.len() > LOG_MAX).unwrap_or(false);
    if big {
        for n in (1..LOG_KEEP).rev() {
            let _ = std::fs::rename(rotated(log, n), rotated(log, n + 1));
        }
        std::fs::rename(log, rotated(log, 1)).with_context(|| format!("cannot rotate {}", log.display()))?;
    }
    if big || always {
        use std::os::fd::AsRawFd;
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("cannot open {}", log.display()))?;
        // SAFETY: dup2 onto the standard descriptors; `f` stays open until both are copies.
        let ok = unsafe { libc::dup2(f.as_raw_fd(), 1) >= 0 && libc::dup2(f.as_raw_fd(), 2) >= 0 };
        if !ok {
            bail!("cannot write to {}: {}", log.display(), std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// The last lines the child wrote to the log (past `from` bytes, or the
/// whole file if it was rotated meanwhile), for an error message.
fn tail(log: &Path, from: u64) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    let from = if (bytes.len() as u64) < from { 0 } else { from as usize };
    let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Once the server listens: the engine goes on the socket and the record
/// says where the daemon serves. `hearth service stop` ends the process.
pub fn publish(data: &Path, engine: Arc<EngineHandle>, url: String, log: PathBuf) -> Result<()> {
    let d = data.to_path_buf();
    remote::host::serve(engine, data, url.clone(), move |code| {
        if code == 0 {
            eprintln!("stopping: asked by `hearth service stop`");
        }
        DaemonRecord::remove(&d);
        // At once, without running MLX's static destructors under a busy
        // engine thread (a crash at exit would read as a failure to a
        // service manager); 1 after an engine crash, so one restarts it.
        unsafe { libc::_exit(code) }
    })
    .with_context(|| format!("cannot listen on {}", remote::socket_path(data).display()))?;
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let rec = DaemonRecord { pid: std::process::id(), url, socket: remote::socket_path(data), log, version: env!("CARGO_PKG_VERSION").into(), started };
    rec.write(data).with_context(|| format!("cannot write {}", remote::record_path(data).display()))?;
    eprintln!("daemon serving at {} (pid {}), Hearth {}", rec.url, rec.pid, rec.version);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_three_and_starts_fresh() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("daemon.log");
        for n in 1..=LOG_KEEP {
            std::fs::write(rotated(&log, n), format!("old {n}")).unwrap();
        }
        std::fs::write(&log, vec![b'x'; LOG_MAX as usize + 1]).unwrap();
        // Rotating points this test process's stdout/stderr at the log: keep copies to restore.
        let (out, err) = unsafe { (libc::dup(1), libc::dup(2)) };
        reopen(&log, false).unwrap();
        unsafe {
            libc::dup2(out, 1);
            libc::dup2(err, 2);
        }
        assert_eq!(std::fs::metadata(rotated(&log, 1)).unwrap().len(), LOG_MAX + 1);
        assert_eq!(std::fs::read_to_string(rotated(&log, 2)).unwrap(), "old 1");
        assert_eq!(std::fs::read_to_string(rotated(&log, 3)).unwrap(), "old 2");
        assert!(!rotated(&log, 4).exists(), "only three old logs are kept");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
    }
}

//! Conversations and settings on disk. Every write is atomic (temp file, fsync,
//! rename), so a crash mid-save leaves the old file or the new one, never half.

pub mod branches;
pub mod conversations;
pub mod responses;
pub mod settings;

use std::path::{Path, PathBuf};

// One atomic write for every file Hearth saves (the daemon's record too, outside this room).
pub use crate::files::write_atomic;

/// Removes what a save cut short left behind: `write_atomic`'s temporaries
/// (`.tmp*`, tempfile's names) older than a minute, in `dir` only.
pub fn remove_stale_temporaries(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(meta) = e.metadata() else { continue };
        if name.starts_with(".tmp") && meta.is_file() && meta.modified().is_ok_and(|t| t < minute_ago) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes files on a background thread so the UI never waits on the disk.
/// Failures come back on `errors` for the UI to show.
pub struct Saver {
    tx: crossbeam_channel::Sender<SaveJob>,
    pending: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub errors: crossbeam_channel::Receiver<String>,
}

enum SaveJob {
    Write(PathBuf, Vec<u8>),
    Delete(PathBuf),
}

impl Saver {
    pub fn spawn() -> Self {
        use std::sync::atomic::Ordering;
        let (tx, rx) = crossbeam_channel::unbounded::<SaveJob>();
        let (etx, erx) = crossbeam_channel::unbounded();
        let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("hearth-saver".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let r = match &job {
                        SaveJob::Write(path, b) => write_atomic(path, b).map_err(|e| e.to_string()),
                        SaveJob::Delete(path) => match std::fs::remove_file(path) {
                            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                Err(format!("deleting {}: {e}", path.display()))
                            }
                            _ => Ok(()),
                        },
                    };
                    if let Err(e) = r {
                        let _ = etx.send(e);
                    }
                    p.fetch_sub(1, Ordering::SeqCst);
                }
            })
            .expect("spawning the saver thread");
        Saver { tx, pending, errors: erx }
    }

    fn send(&self, job: SaveJob) {
        self.pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.tx.send(job).is_err() {
            self.pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    pub fn write(&self, path: PathBuf, bytes: Vec<u8>) {
        self.send(SaveJob::Write(path, bytes));
    }

    pub fn delete(&self, path: PathBuf) {
        self.send(SaveJob::Delete(path));
    }

    /// Waits (up to 10 s) until everything queued is on disk: on exit and in tests.
    pub fn flush(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.pending.load(std::sync::atomic::Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

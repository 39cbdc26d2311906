//! The byte transfer: each file streams into `blobs/<etag>.incomplete` and
//! resumes with an HTTP Range request after a pause, a dropped or stalled
//! connection or a restart (retries with doubling backoff); it becomes a blob
//! only after its checksum matches, and the snapshot links appear only when
//! every file is in, so a cut-off download never looks installed.

use super::client::{classify, io, transient, Hub};
use crate::library::ids::check_repo_file;
use super::plan::{Control, Phase, Plan, PlanFile, Progress};
use super::verify::checksum;
use super::HubError;
use futures::StreamExt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A plan's commit and etags are hex and its file names stay inside the repo.
fn check_plan(plan: &Plan) -> Result<(), HubError> {
    let hex = |s: &str| !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_hexdigit());
    if !hex(&plan.commit) {
        return Err(HubError::BadId(format!("the saved download of {} has an invalid commit id", plan.id)));
    }
    for f in &plan.files {
        check_repo_file(&f.path)?;
        if !hex(&f.etag) {
            return Err(HubError::BadId(format!("the saved download of {} has an invalid checksum for {}", plan.id, f.path)));
        }
    }
    Ok(())
}

/// Where one attempt at a file starts: the bytes already in its part, and
/// when the last real progress was (the give-up clock runs across attempts).
#[derive(Clone, Copy)]
struct Attempt {
    have: u64,
    last_progress: Instant,
}

/// One file of a download in flight: what every progress report repeats.
struct FileJob<'a> {
    repo: &'a hf_hub::HFRepository<hf_hub::repository::RepoTypeModel>,
    plan: &'a Plan,
    file: &'a PlanFile,
    /// Bytes of the plan's earlier files, and of the whole plan.
    done_before: u64,
    total: u64,
}

impl FileJob<'_> {
    fn progress(&self, file_done: u64, bytes_per_sec: f64, phase: Phase) -> Progress {
        Progress {
            file: self.file.path.clone(),
            file_done,
            file_total: self.file.size,
            done: self.done_before + file_done,
            total: self.total,
            bytes_per_sec,
            phase,
        }
    }
}

/// Moving-window transfer speed (the last ~3 s).
struct Speed {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Speed {
    fn new() -> Self {
        Speed { samples: Default::default() }
    }
    fn add(&mut self, total: u64) -> f64 {
        let now = Instant::now();
        self.samples.push_back((now, total));
        while self.samples.len() > 2 && now.duration_since(self.samples[0].0) > Duration::from_secs(3) {
            self.samples.pop_front();
        }
        let (t0, b0) = self.samples[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt > 0.05 {
            (total - b0) as f64 / dt
        } else {
            0.0
        }
    }
}

impl Hub {
    /// Fetches every file of the plan; returns the snapshot folder.
    pub async fn download(
        &self,
        plan: &Plan,
        ctl: &mut watch::Receiver<Control>,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<PathBuf, HubError> {
        self.check_online()?;
        // A saved plan (downloads.json) is data from disk: its commit and etags
        // become path components, so they are checked again here.
        check_plan(plan)?;
        let repo = self.repo(&plan.id)?;
        let repo_dir = self.repo_dir(&plan.id);
        let blobs = repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let total = plan.total();
        let present = self.bytes_present(plan);
        if let Some(free) = crate::sys::free_space(&blobs) {
            let need = total - present;
            // Keep 256 MB spare so the system does not run dry.
            if need + (256 << 20) > free {
                return Err(HubError::NoSpace(format!(
                    "{} needs {} more on disk but only {} is free in {}",
                    plan.id,
                    crate::units::bytes(need),
                    crate::units::bytes(free),
                    blobs.display()
                )));
            }
        }
        let mut done_before = 0u64;
        let mut speed = Speed::new();
        for f in &plan.files {
            let blob = blobs.join(&f.etag);
            if !(blob.is_file() && blob.metadata().map(|m| m.len()).ok() == Some(f.size)) {
                let job = FileJob { repo: &repo, plan, file: f, done_before, total };
                self.fetch_file(&job, &blob, &mut speed, ctl, on_progress).await?;
            }
            done_before += f.size;
        }
        // All files in: link the snapshot, then point refs/main at it.
        let snap = repo_dir.join("snapshots").join(&plan.commit);
        for f in &plan.files {
            let link = snap.join(&f.path);
            let parent = link.parent().unwrap_or(&snap).to_path_buf();
            std::fs::create_dir_all(&parent).map_err(io(&parent))?;
            let depth = f.path.matches('/').count() + 2;
            let target = PathBuf::from("../".repeat(depth)).join("blobs").join(&f.etag);
            let _ = std::fs::remove_file(&link);
            #[cfg(unix)]
            std::os::unix::fs::symlink(&target, &link).map_err(io(&link))?;
            #[cfg(not(unix))]
            std::fs::copy(blobs.join(&f.etag), &link).map_err(io(&link))?;
        }
        let refs = repo_dir.join("refs");
        std::fs::create_dir_all(&refs).map_err(io(&refs))?;
        crate::store::write_atomic(&refs.join("main"), plan.commit.as_bytes()).map_err(|e| HubError::Io(e.to_string()))?;
        Ok(snap)
    }

    async fn fetch_file(
        &self,
        job: &FileJob<'_>,
        blob: &Path,
        speed: &mut Speed,
        ctl: &mut watch::Receiver<Control>,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<(), HubError> {
        let (plan, f) = (job.plan, job.file);
        let part = PathBuf::from(format!("{}.incomplete", blob.display()));
        // Appending to a FIFO or a device would block or never end.
        if let Ok(m) = std::fs::symlink_metadata(&part) {
            if !m.is_file() {
                return Err(HubError::Io(format!("{} is not a regular file; remove it and download again", part.display())));
            }
        }
        let mut failures = 0u32;
        let mut last_progress = Instant::now();
        loop {
            match *ctl.borrow() {
                Control::Cancel => return Err(HubError::Cancelled),
                Control::Pause => return Err(HubError::Paused),
                Control::Run => {}
            }
            let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            if have > f.size {
                std::fs::remove_file(&part).map_err(io(&part))?;
                have = 0;
            }
            let result = if have == f.size {
                Ok(())
            } else {
                self.stream_into(job, &part, Attempt { have, last_progress }, speed, ctl, on_progress).await
            };
            let now = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            match result {
                Ok(()) => {}
                Err(e) if transient(&e) => {
                    // Only real progress earns fresh retries: a trickle of a
                    // few bytes per attempt must not retry for ever.
                    if now >= have + self.options.min_bytes {
                        failures = 0;
                        last_progress = Instant::now();
                    }
                    failures += 1;
                    if failures > self.options.retries {
                        return Err(e);
                    }
                    if last_progress.elapsed() >= self.options.give_up {
                        return Err(HubError::Stalled(format!(
                            "{e}; no progress in {:.0?}, so the download stopped ({} of {} bytes kept: it resumes from there)",
                            self.options.give_up, now, f.size
                        )));
                    }
                    let wait = (self.options.backoff * 2u32.pow(failures - 1)).min(Duration::from_secs(30));
                    on_progress(&job.progress(now, 0.0, Phase::Retrying { attempt: failures, wait, reason: e.to_string() }));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctl.changed() => {}
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
            on_progress(&job.progress(f.size, 0.0, Phase::Verifying));
            let (expected, actual) = {
                let (p, f2) = (part.clone(), f.clone());
                tokio::task::spawn_blocking(move || checksum(&p, &f2))
                    .await
                    .map_err(|e| HubError::Io(e.to_string()))?
                    .map_err(io(&part))?
            };
            if expected != actual {
                // A bad file is never kept: the next attempt starts clean.
                let _ = std::fs::remove_file(&part);
                return Err(HubError::Checksum(format!(
                    "{} from {} is corrupt (checksum {actual}, expected {expected}); it was deleted, download again",
                    f.path, plan.id
                )));
            }
            std::fs::rename(&part, blob).map_err(io(blob))?;
            return Ok(());
        }
    }

    async fn stream_into(
        &self,
        job: &FileJob<'_>,
        part: &Path,
        Attempt { have, last_progress }: Attempt,
        speed: &mut Speed,
        ctl: &mut watch::Receiver<Control>,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<(), HubError> {
        let (plan, f) = (job.plan, job.file);
        let req = job
            .repo
            .download_file_stream()
            .filename(f.path.clone())
            .revision(plan.commit.clone())
            .range(have..f.size)
            .send();
        // Every wait ends by the give-up deadline too, so a silent server
        // cannot outlast it by one more stall timeout.
        let wait = || {
            let left = self.options.give_up.saturating_sub(last_progress.elapsed());
            self.options.stall_timeout.min(left.max(Duration::from_millis(100)))
        };
        let (_, mut stream) = tokio::select! {
            r = tokio::time::timeout(wait(), req) => match r {
                Ok(r) => r.map_err(|e| classify(e, &plan.id, self.token.is_some()))?,
                Err(_) => return Err(HubError::Stalled(format!("no answer from the server for {}", f.path))),
            },
            _ = ctl.changed() => return Err(self.stopped(ctl)),
        };
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(part).map_err(io(part))?;
        let mut pos = have;
        let mut last_emit = Instant::now() - Duration::from_secs(1);
        // Bytes must keep coming: see `Options::too_slow`.
        let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(wait(), stream.next()) => n,
                _ = ctl.changed() => {
                    out.flush().map_err(io(part))?;
                    return Err(self.stopped(ctl));
                }
            };
            let chunk = match next {
                Err(_) => return Err(HubError::Stalled(format!("the download of {} stalled", f.path))),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(HubError::Network(format!("connection dropped during {}: {e}", f.path))),
                Ok(Some(Ok(c))) => c,
            };
            if pos + chunk.len() as u64 > f.size {
                // The server ignored the Range header and sent the whole file again.
                drop(out);
                let _ = std::fs::remove_file(part);
                return Err(HubError::Network(format!("the server sent more of {} than expected", f.path)));
            }
            out.write_all(&chunk).map_err(io(part))?;
            pos += chunk.len() as u64;
            window_bytes += chunk.len() as u64;
            if window_start.elapsed() >= self.options.rate_window() {
                if self.options.too_slow(window_bytes, f.size - pos) {
                    out.flush().map_err(io(part))?;
                    return Err(HubError::Stalled(format!(
                        "the download of {} slowed to {window_bytes} bytes in {:.0?}",
                        f.path,
                        window_start.elapsed()
                    )));
                }
                (window_start, window_bytes) = (Instant::now(), 0);
            }
            let bps = speed.add(job.done_before + pos);
            if last_emit.elapsed() >= Duration::from_millis(100) || pos == f.size {
                last_emit = Instant::now();
                on_progress(&job.progress(pos, bps, Phase::Downloading));
            }
        }
        out.sync_all().map_err(io(part))?;
        if pos < f.size {
            return Err(HubError::Network(format!("the connection closed {} bytes early in {}", f.size - pos, f.path)));
        }
        Ok(())
    }

    fn stopped(&self, ctl: &watch::Receiver<Control>) -> HubError {
        match *ctl.borrow() {
            Control::Cancel => HubError::Cancelled,
            Control::Pause => HubError::Paused,
            // A spurious wake (sender dropped): treat as a pause, nothing is lost.
            Control::Run => HubError::Paused,
        }
    }
}

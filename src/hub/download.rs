//! Downloads through hf-hub into the Hugging Face cache layout
//! (`models--owner--name/{blobs,snapshots,refs}`), so models fetched by mlx-lm
//! are reused and ours are usable by it. Each file streams into
//! `blobs/<etag>.incomplete` (the name huggingface_hub uses too); a pause, a
//! dropped connection or a restart resumes from that file's length with an HTTP
//! Range request. A file becomes a blob only after its checksum matches, and the
//! snapshot links appear only when every file is in, so a cut-off download
//! never looks installed.

use super::ids::{check_repo_file, check_repo_id, repo_folder};
use super::HubError;
use futures::StreamExt;
use hf_hub::{HFClient, HFError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Options {
    /// No byte for this long counts as a stalled connection: drop it and retry.
    pub stall_timeout: Duration,
    /// Consecutive failed attempts (without progress) before giving up.
    pub retries: u32,
    /// First retry delay; doubles each time, capped at 30 s.
    pub backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { stall_timeout: Duration::from_secs(30), retries: 6, backoff: Duration::from_secs(1) }
    }
}

/// What the UI (or CLI) tells a running download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Run,
    Pause,
    Cancel,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanFile {
    pub path: String,
    pub size: u64,
    /// Cache blob name: the LFS sha256, or the git blob id for small files.
    pub etag: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub id: String,
    pub commit: String,
    pub files: Vec<PlanFile>,
    /// config.json, when the repo has one (for the fit estimate before download).
    pub config: Option<serde_json::Value>,
}

impl Plan {
    pub fn total(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn is_gguf(&self) -> bool {
        self.files.iter().any(|f| f.path.ends_with(".gguf"))
    }

    /// Memory the model will need at `context` tokens on this machine.
    pub fn need(&self, context: u64, device: super::fit::Device, mem: u64) -> u64 {
        let weights: u64 = self
            .files
            .iter()
            .filter(|f| f.path.ends_with(".safetensors") || f.path.ends_with(".gguf"))
            .map(|f| f.size)
            .sum();
        let bits = self
            .config
            .as_ref()
            .and_then(|c| c["quantization"]["bits"].as_u64().or(c["quantization_config"]["bits"].as_u64()));
        // Parameters from bytes: 4.5 bits each for 4-bit (8.5 for 8-bit) with group
        // scales; two bytes each for 16-bit checkpoints; GGUF counted as ~4.5 bits.
        let params = match (bits, self.is_gguf()) {
            (Some(b), _) => weights * 8 * 2 / (2 * b + 1),
            (None, true) => weights * 16 / 9,
            (None, false) => weights / 2,
        };
        match self.config.as_ref().and_then(|c| super::fit::Shape::from_config(c, params)) {
            Some(shape) => super::fit::estimate(&shape, context, device, mem).total(),
            None => {
                let w = if device == super::fit::Device::Cpu && params * 4 <= mem / 2 { params * 4 } else { weights };
                w + w / 8
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Downloading,
    /// Waiting `wait` before attempt `attempt` after `reason`.
    Retrying { attempt: u32, wait: Duration, reason: String },
    Verifying,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub file: String,
    pub file_done: u64,
    pub file_total: u64,
    pub done: u64,
    pub total: u64,
    pub bytes_per_sec: f64,
    pub phase: Phase,
}

impl Progress {
    pub fn eta(&self) -> Option<Duration> {
        (self.bytes_per_sec > 1.0).then(|| Duration::from_secs_f64((self.total - self.done) as f64 / self.bytes_per_sec))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchKind {
    Mlx,
    Gguf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub id: String,
    pub downloads: u64,
    pub likes: u64,
    pub gated: bool,
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

#[derive(Deserialize)]
struct TreeLfs {
    oid: Option<String>,
    sha256: Option<String>,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    size: u64,
    path: String,
    lfs: Option<TreeLfs>,
}

pub struct Hub {
    client: HFClient,
    http: reqwest::Client,
    token: Option<String>,
    cache_dir: PathBuf,
    pub options: Options,
}

fn classify(e: HFError, id: &str, has_token: bool) -> HubError {
    match e {
        HFError::AuthRequired { .. } => classify_status(401, id, has_token),
        HFError::Forbidden { .. } => classify_status(403, id, has_token),
        HFError::RepoNotFound { .. } | HFError::RevisionNotFound { .. } => classify_status(404, id, has_token),
        HFError::EntryNotFound { path, .. } => HubError::NotFound(format!("{path} was not found in {id}")),
        HFError::Request { source, .. } if source.is_connect() => {
            HubError::Offline(format!("cannot reach Hugging Face ({source}); downloads need a connection"))
        }
        other => HubError::Network(other.to_string()),
    }
}

fn classify_status(status: u16, id: &str, has_token: bool) -> HubError {
    match status {
        401 if has_token => HubError::NeedsToken(format!("{id} refused the saved Hugging Face token; check it in Settings")),
        401 => HubError::NeedsToken(format!(
            "{id} needs a Hugging Face token (it is gated or private), or it does not exist; add a token in Settings"
        )),
        403 => HubError::Forbidden(format!("your token does not give access to {id}: accept its licence on huggingface.co first")),
        404 => HubError::NotFound(format!("{id} was not found on Hugging Face")),
        s => HubError::Network(format!("Hugging Face answered HTTP {s} for {id}")),
    }
}

/// Transient failures worth another attempt: timeouts, dropped connections, 5xx.
fn transient(e: &HubError) -> bool {
    matches!(e, HubError::Network(_) | HubError::Offline(_) | HubError::Stalled(_))
}

/// The files Hearth needs from a repo; for GGUF repos one quantization
/// (the preferred one, or the one named in `only`).
pub fn select_files(all: &[String], only: Option<&[String]>) -> Vec<String> {
    if let Some(only) = only {
        return all.iter().filter(|f| only.contains(f)).cloned().collect();
    }
    let ggufs: Vec<&String> = all.iter().filter(|f| f.ends_with(".gguf") && !f.contains("mmproj")).collect();
    let has_safetensors = all.iter().any(|f| f.ends_with(".safetensors"));
    if !ggufs.is_empty() && !has_safetensors {
        let rank = |f: &str| {
            let u = f.to_uppercase();
            ["Q4_K_M", "Q4_0", "Q4_K_S", "Q5_K_M", "Q8_0", "Q6_K"].iter().position(|q| u.contains(q)).unwrap_or(99)
        };
        let best = ggufs.iter().min_by_key(|f| (rank(f), f.len())).unwrap();
        return vec![(*best).clone()];
    }
    let wanted = |f: &str| {
        let name = f.rsplit('/').next().unwrap_or(f);
        !f.starts_with("original/")
            && (name.ends_with(".safetensors")
                || name.ends_with(".json")
                || name.ends_with(".jinja")
                || name.ends_with(".tiktoken")
                || name == "tokenizer.model"
                || name == "merges.txt"
                || name == "vocab.txt")
    };
    all.iter().filter(|f| wanted(f)).cloned().collect()
}

/// Free bytes on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0 {
            return Some(s.f_bavail as u64 * s.f_frsize as u64);
        }
    }
    let _ = dir;
    None
}

/// sha256 (LFS) or git blob sha1 (small files) of a file, as hex.
fn checksum(path: &Path, f: &PlanFile) -> std::io::Result<(String, String)> {
    let mut file = std::fs::File::open(path)?;
    match &f.sha256 {
        Some(expected) => Ok((expected.clone(), hash_rest::<sha2::Sha256>(&mut file, b"")?)),
        None => {
            let header = format!("blob {}\0", file.metadata()?.len());
            Ok((f.etag.clone(), hash_rest::<sha1::Sha1>(&mut file, header.as_bytes())?))
        }
    }
}

/// Hex digest of `prefix` followed by the rest of `file`, read in 1 MiB pieces.
fn hash_rest<D: Digest>(file: &mut std::fs::File, prefix: &[u8]) -> std::io::Result<String> {
    let mut h = D::new();
    h.update(prefix);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn io(what: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |e| {
        if e.raw_os_error() == Some(28) {
            HubError::NoSpace(format!("the disk filled up while writing {}", what.display()))
        } else {
            HubError::Io(format!("{}: {e}", what.display()))
        }
    }
}

impl Hub {
    /// `endpoint` None: `HF_ENDPOINT` or huggingface.co. `cache_dir` None: HF_HUB_CACHE / HF_HOME/hub / ~/.cache/huggingface/hub.
    pub fn new(endpoint: Option<String>, token: Option<String>, cache_dir: Option<PathBuf>) -> Result<Hub, HubError> {
        let cache_dir = cache_dir.unwrap_or_else(hf_hub::resolve_cache_dir);
        let mut b = HFClient::builder().cache_dir(cache_dir.clone()).user_agent(format!("hearth/{}", env!("CARGO_PKG_VERSION")));
        if let Some(ep) = endpoint {
            b = b.endpoint(ep);
        }
        if let Some(t) = &token {
            b = b.token(t.clone());
        }
        let client = b.build().map_err(|e| HubError::Network(format!("bad Hugging Face endpoint: {e}")))?;
        let http = reqwest::Client::builder()
            .user_agent(format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| HubError::Network(e.to_string()))?;
        Ok(Hub { client, http, token, cache_dir, options: Options::default() })
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    fn repo(&self, id: &str) -> Result<hf_hub::HFRepository<hf_hub::repository::RepoTypeModel>, HubError> {
        let (owner, name) = check_repo_id(id)?;
        Ok(self.client.model(owner, name))
    }

    pub async fn search(&self, query: &str, kind: SearchKind, limit: usize) -> Result<Vec<SearchHit>, HubError> {
        let filter = match kind {
            SearchKind::Mlx => "mlx",
            SearchKind::Gguf => "gguf",
        };
        let stream = self
            .client
            .list_models()
            .search(query.to_string())
            .filter(filter.to_string())
            .sort("downloads".to_string())
            .limit(limit)
            .send()
            .map_err(|e| classify(e, "search", self.token.is_some()))?;
        futures::pin_mut!(stream);
        let mut out = Vec::new();
        while let Some(m) = stream.next().await {
            let m = m.map_err(|e| classify(e, "search", self.token.is_some()))?;
            // Ids from the network are checked like typed ones.
            if check_repo_id(&m.id).is_err() {
                continue;
            }
            out.push(SearchHit {
                gated: m.gated.as_ref().is_some_and(|g| g.as_bool() != Some(false)),
                id: m.id,
                downloads: m.downloads.unwrap_or(0),
                likes: m.likes.unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// The repo's commit and file list with sizes and checksums, and config.json.
    pub async fn plan(&self, id: &str, only: Option<&[String]>) -> Result<Plan, HubError> {
        let repo = self.repo(id)?;
        let err = |e| classify(e, id, self.token.is_some());
        let info = repo.info().send().await.map_err(err)?;
        let commit = info.sha.clone().ok_or_else(|| HubError::Network(format!("{id}: the Hub gave no commit")))?;
        if !commit.chars().all(|c| c.is_ascii_hexdigit()) || commit.len() < 7 {
            return Err(HubError::Network(format!("{id}: odd commit id from the server")));
        }
        let mut entries = Vec::new();
        for e in self.tree(id, &commit).await? {
            if e.kind != "file" {
                continue;
            }
            check_repo_file(&e.path)?;
            let sha256 = e.lfs.and_then(|l| l.oid.or(l.sha256)).filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()));
            let etag = sha256.clone().unwrap_or(e.oid);
            if etag.is_empty() || !etag.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(HubError::Network(format!("{id}: odd checksum for {}", e.path)));
            }
            entries.push(PlanFile { path: e.path, size: e.size, etag, sha256 });
        }
        let names: Vec<String> = entries.iter().map(|f| f.path.clone()).collect();
        let chosen = select_files(&names, only);
        let files: Vec<PlanFile> = entries.into_iter().filter(|f| chosen.contains(&f.path)).collect();
        if !files.iter().any(|f| f.path.ends_with(".safetensors") || f.path.ends_with(".gguf")) {
            return Err(HubError::NoModelFiles(format!(
                "{id} has no .safetensors or .gguf weights Hearth can load"
            )));
        }
        let config = if files.iter().any(|f| f.path == "config.json") {
            let bytes = repo
                .download_file_to_bytes()
                .filename("config.json".to_string())
                .revision(commit.clone())
                .send()
                .await
                .map_err(err)?;
            serde_json::from_slice(&bytes).ok()
        } else {
            None
        };
        Ok(Plan { id: id.to_string(), commit, files, config })
    }

    /// `GET /api/models/{id}/tree/{commit}?recursive=true`, following `Link: rel="next"` pages.
    async fn tree(&self, id: &str, commit: &str) -> Result<Vec<TreeEntry>, HubError> {
        let mut url = format!("{}/api/models/{id}/tree/{commit}?recursive=true", self.endpoint());
        let mut out = Vec::new();
        for _ in 0..1000 {
            let mut req = self.http.get(&url);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() {
                    HubError::Offline(format!("cannot reach Hugging Face ({e}); downloads need a connection"))
                } else {
                    HubError::Network(e.to_string())
                }
            })?;
            match resp.status().as_u16() {
                200 => {}
                s => return Err(classify_status(s, id, self.token.is_some())),
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.split(',').find(|p| p.contains("rel=\"next\"")))
                .and_then(|p| p.split(['<', '>']).nth(1))
                .map(String::from);
            let page: Vec<TreeEntry> = resp.json().await.map_err(|e| HubError::Network(format!("{id}: bad file list: {e}")))?;
            out.extend(page);
            match next {
                // Only follow pages on the same server.
                Some(n) if n.starts_with(self.endpoint()) => url = n,
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    pub fn repo_dir(&self, id: &str) -> PathBuf {
        self.cache_dir.join(repo_folder(id))
    }

    /// Bytes of the plan already on disk (complete blobs and partial files).
    pub fn bytes_present(&self, plan: &Plan) -> u64 {
        let blobs = self.repo_dir(&plan.id).join("blobs");
        plan.files
            .iter()
            .map(|f| {
                let blob = blobs.join(&f.etag);
                if blob.is_file() {
                    f.size
                } else {
                    std::fs::metadata(blobs.join(format!("{}.incomplete", f.etag))).map(|m| m.len().min(f.size)).unwrap_or(0)
                }
            })
            .sum()
    }

    /// Fetches every file of the plan; returns the snapshot folder.
    pub async fn download(
        &self,
        plan: &Plan,
        ctl: &mut watch::Receiver<Control>,
        on_progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<PathBuf, HubError> {
        let repo = self.repo(&plan.id)?;
        for f in &plan.files {
            check_repo_file(&f.path)?;
        }
        let repo_dir = self.repo_dir(&plan.id);
        let blobs = repo_dir.join("blobs");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        let total = plan.total();
        let present = self.bytes_present(plan);
        if let Some(free) = free_space(&blobs) {
            let need = total - present;
            // Keep 256 MB spare so the system does not run dry.
            if need + (256 << 20) > free {
                return Err(HubError::NoSpace(format!(
                    "{} needs {} more on disk but only {} is free in {}",
                    plan.id,
                    super::fit::gb(need),
                    super::fit::gb(free),
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
        let mut failures = 0u32;
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
                self.stream_into(job, &part, have, speed, ctl, on_progress).await
            };
            let now = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
            match result {
                Ok(()) => {}
                Err(e) if transient(&e) => {
                    if now > have {
                        failures = 0;
                    }
                    failures += 1;
                    if failures > self.options.retries {
                        return Err(e);
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
        have: u64,
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
        let (_, mut stream) = tokio::select! {
            r = tokio::time::timeout(self.options.stall_timeout, req) => match r {
                Ok(r) => r.map_err(|e| classify(e, &plan.id, self.token.is_some()))?,
                Err(_) => return Err(HubError::Stalled(format!("no answer from the server for {}", f.path))),
            },
            _ = ctl.changed() => return Err(self.stopped(ctl)),
        };
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(part).map_err(io(part))?;
        let mut pos = have;
        let mut last_emit = Instant::now() - Duration::from_secs(1);
        loop {
            let next = tokio::select! {
                n = tokio::time::timeout(self.options.stall_timeout, stream.next()) => n,
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

    /// Removes what a cancelled download left: its partial files, and the whole
    /// repo folder if no snapshot of it was ever completed.
    pub fn discard(&self, plan: &Plan) -> std::io::Result<()> {
        let repo_dir = self.repo_dir(&plan.id);
        let blobs = repo_dir.join("blobs");
        for f in &plan.files {
            let _ = std::fs::remove_file(blobs.join(format!("{}.incomplete", f.etag)));
        }
        let has_snapshot = std::fs::read_dir(repo_dir.join("snapshots")).map(|mut d| d.next().is_some()).unwrap_or(false);
        if !has_snapshot && repo_dir.starts_with(&self.cache_dir) && repo_dir.exists() {
            std::fs::remove_dir_all(&repo_dir)?;
        }
        Ok(())
    }
}

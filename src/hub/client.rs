//! The Hugging Face client: model info, search and the repo's file list
//! (hf-hub 1.0, plus one direct tree call because hf-hub drops the tree API's
//! `lfs.oid`, the sha256), HTTP errors turned into plain messages, and the
//! cache folders a plan lands in. The byte transfer is `transfer.rs`.

use super::plan::{select_files, Plan, PlanFile, SearchHit, SearchKind};
use super::HubError;
use crate::library::ids::{check_repo_file, check_repo_id, repo_folder};
use futures::StreamExt;
use hf_hub::{HFClient, HFError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Options {
    /// No byte for this long counts as a stalled connection: drop it and retry.
    /// It is also the deadline for each API answer. A download must bring
    /// `min_bytes` per `stall_timeout` (checked in thirds of it, and only as
    /// much as is left of the file): a server that trickles a byte a second
    /// is as stalled as a silent one, whatever the file's size.
    pub stall_timeout: Duration,
    pub min_bytes: u64,
    /// No real progress (`min_bytes` gained) for this long across retries
    /// ends the download with the last error; the part already fetched is
    /// kept and resumes next time.
    pub give_up: Duration,
    /// Consecutive failed attempts (without progress) before giving up.
    pub retries: u32,
    /// First retry delay; doubles each time, capped at 30 s.
    pub backoff: Duration,
}

/// Rate checks per stall window.
const RATE_CHECKS: u32 = 3;

impl Options {
    /// The window a download's rate is checked over: a third of the stall
    /// window, so the floor per check is a third of `min_bytes`.
    pub fn rate_window(&self) -> Duration {
        self.stall_timeout / RATE_CHECKS
    }

    /// Whether `got` bytes in one `rate_window` is too slow with `left` bytes
    /// of the file still to come: under the floor (`min_bytes` per
    /// `stall_timeout`), or, for a file smaller than the floor, under what is
    /// left of it, so a 10 kB file at 1 B/s fails as surely as a 10 GB one.
    pub fn too_slow(&self, got: u64, left: u64) -> bool {
        let floor = self.min_bytes / RATE_CHECKS as u64;
        left > 0 && got < floor.min(left).max(1)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stall_timeout: Duration::from_secs(30),
            min_bytes: 16 << 10,
            give_up: Duration::from_secs(45),
            retries: 6,
            backoff: Duration::from_secs(1),
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
    pub(super) client: HFClient,
    http: reqwest::Client,
    pub(super) token: Option<String>,
    cache_dir: PathBuf,
    /// HF_HUB_OFFLINE: no request at all, for anything.
    offline: bool,
    pub options: Options,
}

pub(super) fn classify(e: HFError, id: &str, has_token: bool) -> HubError {
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
pub(super) fn transient(e: &HubError) -> bool {
    matches!(e, HubError::Network(_) | HubError::Offline(_) | HubError::Stalled(_))
}

pub(super) fn io(what: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
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
        Ok(Hub { client, http, token, cache_dir, offline: super::offline_from_env(), options: Options::default() })
    }

    /// Turns every request off (the app's offline setting, tests).
    pub fn set_offline(&mut self, offline: bool) {
        self.offline = offline;
    }

    /// Refuses before any request when Hearth is offline.
    pub(super) fn check_online(&self) -> Result<(), HubError> {
        if self.offline {
            Err(HubError::offline_mode())
        } else {
            Ok(())
        }
    }

    /// `fut` with the stall deadline: a server that accepts and never answers
    /// is an error after `stall_timeout`, not a hang.
    pub(super) async fn deadline<T>(&self, what: &str, fut: impl std::future::Future<Output = Result<T, HubError>>) -> Result<T, HubError> {
        match tokio::time::timeout(self.options.stall_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(HubError::Stalled(format!("no answer from the server for {what}"))),
        }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    pub(super) fn repo(&self, id: &str) -> Result<hf_hub::HFRepository<hf_hub::repository::RepoTypeModel>, HubError> {
        let (owner, name) = check_repo_id(id)?;
        Ok(self.client.model(owner, name))
    }

    pub async fn search(&self, query: &str, kind: SearchKind, limit: usize) -> Result<Vec<SearchHit>, HubError> {
        self.check_online()?;
        self.deadline("the search", self.search_inner(query, kind, limit)).await
    }

    async fn search_inner(&self, query: &str, kind: SearchKind, limit: usize) -> Result<Vec<SearchHit>, HubError> {
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
        self.check_online()?;
        let repo = self.repo(id)?;
        let err = |e| classify(e, id, self.token.is_some());
        let info = self.deadline(id, async { repo.info().send().await.map_err(err) }).await?;
        let commit = info.sha.clone().ok_or_else(|| HubError::Network(format!("{id}: the Hub gave no commit")))?;
        if !commit.chars().all(|c| c.is_ascii_hexdigit()) || commit.len() < 7 {
            return Err(HubError::Network(format!("{id}: odd commit id from the server")));
        }
        let mut entries = Vec::new();
        for e in self.deadline(id, self.tree(id, &commit)).await? {
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
            let req = repo.download_file_to_bytes().filename("config.json".to_string()).revision(commit.clone()).send();
            let bytes = self.deadline(id, async { req.await.map_err(err) }).await?;
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

#[cfg(test)]
mod tests {
    use super::Options;

    #[test]
    fn the_rate_floor_fits_every_file_size() {
        let o = Options::default();
        // 16 kB per 30 s is 5461 bytes per 10 s window.
        assert!(o.too_slow(10, 10_000), "a 10 kB file at 1 B/s");
        assert!(o.too_slow(1_000, 1 << 20), "a 1 MB file at 100 B/s");
        assert!(o.too_slow(1_000, 10 << 30), "a 10 GB file at 100 B/s");
        assert!(!o.too_slow(6_000, 10 << 30), "a 10 GB file at 600 B/s is slow but alive");
        // A small remainder only has to arrive: 300 bytes left, 300 came.
        assert!(!o.too_slow(300, 300));
        assert!(o.too_slow(0, 1), "the last byte must come too");
        assert!(!o.too_slow(0, 0));
        assert!(o.give_up < std::time::Duration::from_secs(60), "a stalled download ends within a minute");
    }
}

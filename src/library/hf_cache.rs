//! Models already in the Hugging Face cache (ours, or fetched by mlx-lm and
//! other tools): `models--owner--name/refs/main` names the snapshot to use.

use super::ids::{check_repo_id, repo_folder};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct CachedModel {
    pub id: String,
    pub snapshot: PathBuf,
}

/// Complete, loadable snapshots in `cache_dir` (newest ref of each repo).
pub fn cached_models(cache_dir: &Path) -> Vec<CachedModel> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(cache_dir) else { return out };
    for e in rd.flatten() {
        let folder = e.file_name().to_string_lossy().to_string();
        let Some(rest) = folder.strip_prefix("models--") else { continue };
        let Some((owner, name)) = rest.split_once("--") else { continue };
        let id = format!("{owner}/{name}");
        if check_repo_id(&id).is_err() {
            continue;
        }
        let Some(snap) = snapshot(cache_dir, &id) else { continue };
        if super::installed::validate(&snap).is_ok() && complete(&snap) {
            out.push(CachedModel { id, snapshot: snap });
        }
    }
    out.sort_by_key(|m| m.id.to_lowercase());
    out
}

/// The snapshot `refs/main` points at, if present.
pub fn snapshot(cache_dir: &Path, id: &str) -> Option<PathBuf> {
    let repo = cache_dir.join(repo_folder(id));
    let commit = crate::files::read_small_text(&repo.join("refs/main"), 256).ok()??;
    let commit = commit.trim();
    if commit.is_empty() || !commit.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let snap = repo.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// Every weight shard the index names is present (links resolve), so a
/// half-fetched repo from another tool is not offered.
fn complete(snap: &Path) -> bool {
    let idx = snap.join("model.safetensors.index.json");
    if let Ok(Some(text)) = crate::files::read_small_text(&idx, 64 << 20) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
        let Some(map) = v["weight_map"].as_object() else { return false };
        return map.values().filter_map(|f| f.as_str()).all(|f| snap.join(f).is_file());
    }
    if snap.join("config.json").is_file() {
        return snap.join("model.safetensors").is_file();
    }
    true
}

/// Whether `path` is a snapshot inside `cache_dir`; returns its repo folder.
pub fn repo_of(path: &Path, cache_dir: &Path) -> Option<PathBuf> {
    let canon = path.canonicalize().ok()?;
    let root = cache_dir.canonicalize().ok()?;
    let snapshots = canon.parent()?;
    let repo = snapshots.parent()?;
    (snapshots.file_name()? == "snapshots"
        && repo.parent()? == root
        && repo.file_name()?.to_string_lossy().starts_with("models--"))
    .then(|| repo.to_path_buf())
}

/// Deletes a cached model's whole repo folder (blobs included); returns bytes freed.
pub fn delete(path: &Path, cache_dir: &Path) -> std::io::Result<u64> {
    let repo = repo_of(path, cache_dir)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a model in the Hugging Face cache"))?;
    let size = super::installed::dir_size(&repo.join("blobs"));
    std::fs::remove_dir_all(&repo)?;
    Ok(size)
}

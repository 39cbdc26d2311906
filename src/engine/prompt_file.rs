//! The prompt cache on disk: a conversation's caches saved after each reply
//! into a folder of its own, so the conversation reopened after a restart (or
//! after other models were used) prefills only what is new.
//!
//! The folder holds `manifest.json` (the tokens the caches hold, the model
//! they came from, every file with its SHA-256) and safetensors files:
//! *chunks* of the full KV layers, each covering a run of positions, and one
//! *tail* with the layers that cannot be cut into runs (sliding-window KV
//! layers and the state of linear-attention layers, both small). A save
//! keeps the chunks whose positions the new tokens still share and writes
//! one chunk for the rest, so a turn writes its new tokens' share, not the
//! whole cache. New files are written first and the manifest last (atomic
//! rename), then the files it no longer names are removed: a crash mid-save
//! leaves the previous save whole.
//!
//! Reading checks everything before MLX sees a byte: the manifest's model
//! stamp (the weight files' names, sizes and modification times, and the
//! compute type), the layer layout, each file's hash, each array's shape. A
//! file that fails is refused with the reason; the caller removes the entry
//! and the prompt is computed again.

use super::step::PromptCache;
use crate::error::{Error, Result};
use crate::models::cache::{CacheKind, CacheState, LayerCache};
use crate::models::LanguageModel;
use mlx_rs::ops::indexing::IndexOp;
use mlx_rs::Array;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MANIFEST: &str = "manifest.json";
const VERSION: u32 = 1;
/// Past this many chunks a save writes the whole cache as one again (each
/// turn adds one; reading many small files costs more than one big one).
const MAX_CHUNKS: usize = 32;
/// The largest manifest read (the token list of a very long conversation).
const MAX_MANIFEST: u64 = 64 << 20;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct FileRef {
    file: String,
    sha256: String,
    bytes: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Chunk {
    start: usize,
    end: usize,
    #[serde(flatten)]
    file: FileRef,
}

/// A layer kept whole in the tail file: its kind, its meta and which of its
/// arrays are present.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct TailLayer {
    layer: usize,
    state: bool,
    meta: Vec<i32>,
    present: Vec<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Manifest {
    version: u32,
    model: String,
    /// Per layer: "kv" (chunked), "tail".
    layout: Vec<String>,
    /// Bits and group of a quantized KV cache (0, 0 for the model's type).
    kv_bits: (i32, i32),
    tokens: Vec<u32>,
    chunks: Vec<Chunk>,
    tail: Option<FileRef>,
    tail_layers: Vec<TailLayer>,
    /// Numbers the next file's name.
    next: u64,
}

/// What identifies the weights and their compute type: a cache from other
/// weights (a model replaced in place, another precision) is stale.
pub fn model_stamp(model_path: &Path, compute: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut files: Vec<PathBuf> = if model_path.is_dir() {
        std::fs::read_dir(model_path).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    } else {
        vec![model_path.to_path_buf()]
    };
    files.sort();
    for f in files {
        if let Some(m) = std::fs::metadata(&f).ok().filter(|m| m.is_file()) {
            let mtime = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            h.update(format!("{}\0{}\0{}\n", f.file_name().unwrap_or_default().to_string_lossy(), m.len(), mtime));
        }
    }
    h.update(compute.as_bytes());
    hex(&h.finalize())
}

/// Whether layer state `s` is a full KV cache of one sequence from position
/// 0 (cut into runs of positions); the rest go whole into the tail.
fn chunked(s: &CacheState) -> bool {
    s.kind == CacheKind::Kv && s.meta.len() == 5 && s.meta[1] == 0 && s.meta[2] == -1
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let Some(text) = crate::files::read_small_text(&dir.join(MANIFEST), MAX_MANIFEST)? else { return Ok(None) };
    let m: Manifest = serde_json::from_str(&text).map_err(|e| refused(dir, &format!("its manifest is unreadable ({e})")))?;
    if m.version != VERSION {
        return Err(refused(dir, &format!("it is format {} (this Hearth writes {VERSION})", m.version)));
    }
    Ok(Some(m))
}

fn refused(dir: &Path, why: &str) -> Error {
    Error::InvalidArgument(format!("the prompt cache in {} was not used: {why}", dir.display()))
}

/// A file's name as the manifest may give it: ours, inside the folder.
fn valid_name(n: &str) -> bool {
    (n.starts_with('c') || n.starts_with('t'))
        && n.ends_with(".safetensors")
        && n.len() <= 32
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_of(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = crate::files::open_regular(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(crate::error::io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Writes `arrays` as `dir/name` (through a temporary and a rename) and
/// returns its reference.
fn write_file(dir: &Path, name: String, arrays: &[(String, Array)]) -> Result<FileRef> {
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.part.safetensors"));
    let written = (|| {
        Array::save_safetensors(arrays.iter().map(|(k, v)| (k.as_str(), v)), None, &tmp).map_err(|e| {
            // MLX's message, without the source locations it appends.
            let m = e.to_string();
            let m = m.split(" at /").next().unwrap_or(&m).trim_matches(|c| c == '"' || c == ' ').to_string();
            Error::Io { path: path.clone(), source: std::io::Error::other(m) }
        })?;
        let bytes = std::fs::metadata(&tmp).map_err(crate::error::io_err(&tmp))?.len();
        let sha256 = sha256_of(&tmp)?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(crate::error::io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(crate::error::io_err(&path))?;
        Ok(FileRef { file: name, sha256, bytes })
    })();
    if written.is_err() {
        // A full disk leaves no half-written file behind.
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Saves `cache` into `dir` (created if need be), writing only the positions
/// the last save does not hold; returns the bytes written. The model's
/// stamp is `model_stamp`'s.
pub fn save(dir: &Path, cache: &PromptCache, stamp: &str) -> Result<u64> {
    let n = cache.tokens.len();
    if n == 0 {
        return Ok(0);
    }
    std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    let states: Vec<CacheState> = cache.layers.iter().map(|c| c.state()).collect();
    let layout: Vec<String> = states.iter().map(|s| if chunked(s) { "kv" } else { "tail" }.to_string()).collect();
    let kv_bits = cache.kv_quant.map_or((0, 0), |q| (q.bits, q.group_size));
    // The previous save, where it is of the same model and layout.
    let old = read_manifest(dir).ok().flatten().filter(|m| m.model == stamp && m.layout == layout && m.kv_bits == kv_bits);
    let shared = old.as_ref().map_or(0, |m| super::step::common_prefix(&m.tokens, &cache.tokens));
    let mut chunks: Vec<Chunk> = Vec::new();
    // A chunk the shared tokens end inside is kept for its shared part: its
    // file holds more positions than the manifest then counts.
    for c in old.iter().flat_map(|m| m.chunks.iter()) {
        if c.start != chunks.last().map_or(0, |l: &Chunk| l.end) || c.start >= shared {
            break;
        }
        chunks.push(Chunk { end: c.end.min(shared), ..c.clone() });
    }
    if chunks.len() >= MAX_CHUNKS {
        chunks.clear();
    }
    let mut next = old.as_ref().map_or(0, |m| m.next);
    let mut written = 0;
    let from = chunks.last().map_or(0, |c| c.end);
    let full: Vec<usize> = (0..states.len()).filter(|&i| chunked(&states[i])).collect();
    if from < n && !full.is_empty() {
        let mut arrays = Vec::new();
        for &i in &full {
            for (j, a) in states[i].arrays.iter().enumerate() {
                let a = a.as_ref().ok_or_else(|| Error::Config(format!("layer {i}'s cache holds no keys")))?;
                arrays.push((format!("{i}.{j}"), a.index((.., .., from as i32..n as i32, ..))));
            }
        }
        let f = write_file(dir, format!("c{next:06}.safetensors"), &arrays)?;
        next += 1;
        written += f.bytes;
        chunks.push(Chunk { start: from, end: n, file: f });
    }
    let mut tail_layers = Vec::new();
    let mut tail_arrays = Vec::new();
    for (i, s) in states.iter().enumerate().filter(|(_, s)| !chunked(s)) {
        for (j, a) in s.arrays.iter().enumerate() {
            if let Some(a) = a {
                tail_arrays.push((format!("{i}.{j}"), a.clone()));
            }
        }
        tail_layers.push(TailLayer { layer: i, state: s.kind == CacheKind::State, meta: s.meta.clone(), present: s.arrays.iter().map(Option::is_some).collect() });
    }
    let tail = if tail_arrays.is_empty() {
        None
    } else {
        let f = write_file(dir, format!("t{next:06}.safetensors"), &tail_arrays)?;
        next += 1;
        written += f.bytes;
        Some(f)
    };
    let m = Manifest { version: VERSION, model: stamp.to_string(), layout, kv_bits, tokens: cache.tokens.clone(), chunks, tail, tail_layers, next };
    let text = serde_json::to_vec(&m).map_err(|e| Error::Config(e.to_string()))?;
    crate::files::write_atomic(&dir.join(MANIFEST), &text)?;
    written += text.len() as u64;
    // Files the manifest no longer names (earlier chunks and tails).
    let named: Vec<&str> = m.chunks.iter().map(|c| c.file.file.as_str()).chain(m.tail.iter().map(|t| t.file.as_str())).collect();
    remove_ours(dir, |n| !named.contains(&n));
    Ok(written)
}

/// Removes the files of ours in `dir` that `drop` picks (never another file).
fn remove_ours(dir: &Path, drop: impl Fn(&str) -> bool) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ours = valid_name(&name) || (name.starts_with('.') && name.ends_with(".part.safetensors"));
        if ours && drop(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes a prompt cache's files (a refused one, or at the user's word):
/// only the files Hearth writes there, so a folder given by mistake loses
/// nothing else. Returns the bytes freed.
pub fn remove(dir: &Path) -> u64 {
    let bytes = size(dir);
    remove_ours(dir, |_| true);
    let _ = std::fs::remove_file(dir.join(MANIFEST));
    let _ = std::fs::remove_dir(dir);
    bytes
}

/// The folder a store of prompt caches is named (`paths::prompt_cache_dir`):
/// an entry saved inside one is counted against the store's bound.
pub const STORE_FOLDER: &str = "prompt-cache";

/// Removes every entry of a store (the app's "Clear"); returns bytes freed.
pub fn clear_store(root: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(root) else { return 0 };
    rd.flatten().map(|e| e.path()).filter(|p| p.join(MANIFEST).is_file() || p.is_dir()).map(|p| remove(&p)).sum()
}

/// After a save into `entry`: where its parent is a store (`STORE_FOLDER`),
/// removes the least recently used entries (by their manifests' times; never
/// `entry`) until the store holds at most `max_bytes`. Returns the entries removed.
pub fn evict(entry: &Path, max_bytes: u64) -> usize {
    let Some(root) = entry.parent().filter(|p| p.file_name().is_some_and(|n| n == STORE_FOLDER)) else { return 0 };
    let Ok(rd) = std::fs::read_dir(root) else { return 0 };
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| {
            let t = std::fs::metadata(p.join(MANIFEST)).ok().filter(|m| m.is_file())?.modified().ok()?;
            Some((t, size(&p), p))
        })
        .collect();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    let mut removed = 0;
    for (_, bytes, p) in entries {
        if total <= max_bytes {
            break;
        }
        if p != entry {
            remove(&p);
            total = total.saturating_sub(bytes);
            removed += 1;
        }
    }
    removed
}

/// Marks an entry used now (its manifest's time), for `evict`'s order.
fn touch(dir: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(dir.join(MANIFEST)) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Bytes a prompt cache's files take.
pub fn size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().filter(|e| e.file_name() == MANIFEST || valid_name(&e.file_name().to_string_lossy())).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum()
}

/// The tokens a saved cache holds, if `dir` has a readable manifest for
/// this model (no weights read): what the caller weighs before loading.
pub fn saved_tokens(dir: &Path, stamp: &str) -> Result<Option<Vec<u32>>> {
    match read_manifest(dir)? {
        Some(m) if m.model != stamp => Err(refused(dir, "it was made with other weights or another compute type")),
        Some(m) => Ok(Some(m.tokens)),
        None => Ok(None),
    }
}

/// Reads one of the manifest's files after checking its size and hash.
fn read_checked(dir: &Path, f: &FileRef) -> Result<HashMap<String, Array>> {
    if !valid_name(&f.file) {
        return Err(refused(dir, &format!("its manifest names a file '{}' Hearth does not write", f.file)));
    }
    let path = dir.join(&f.file);
    let len = std::fs::metadata(&path).map_err(|_| refused(dir, &format!("{} is missing", f.file)))?.len();
    if len != f.bytes {
        return Err(refused(dir, &format!("{} is {len} bytes, {} were written", f.file, f.bytes)));
    }
    if sha256_of(&path)? != f.sha256 {
        return Err(refused(dir, &format!("{} does not hold what was written (its checksum differs)", f.file)));
    }
    crate::formats::safetensors::header(&path).map_err(|e| refused(dir, &e.to_string()))?;
    Array::load_safetensors(&path).map_err(|e| refused(dir, &format!("{}: {e}", f.file)))
}

/// The cache saved in `dir` for `model` (stamp as `model_stamp`), or None
/// where nothing is saved; an error says why a saved one was refused.
pub fn load(dir: &Path, model: &dyn LanguageModel, stamp: &str, kv_quant: Option<crate::models::cache::KvQuant>) -> Result<Option<PromptCache>> {
    let Some(m) = read_manifest(dir)? else { return Ok(None) };
    if m.model != stamp {
        return Err(refused(dir, "it was made with other weights or another compute type"));
    }
    let mut cache = PromptCache::with_kv_quant(model, kv_quant);
    let n = m.tokens.len();
    if m.layout.len() != cache.layers.len() || m.kv_bits != kv_quant.map_or((0, 0), |q| (q.bits, q.group_size)) {
        return Err(refused(dir, "its layers are not this model's (or its KV cache width is not this one's)"));
    }
    let mut start = 0;
    for c in &m.chunks {
        if c.start != start || c.end <= c.start {
            return Err(refused(dir, "its chunks do not follow one another"));
        }
        start = c.end;
    }
    let chunked_layers: Vec<usize> = (0..m.layout.len()).filter(|&i| m.layout[i] == "kv").collect();
    if (!chunked_layers.is_empty() && start != n) || n == 0 {
        return Err(refused(dir, &format!("its chunks hold {start} positions of {n}")));
    }
    let parts: Vec<HashMap<String, Array>> = m.chunks.iter().map(|c| read_checked(dir, &c.file)).collect::<Result<_>>()?;
    let width = if kv_quant.is_some() { 6 } else { 2 };
    let (bits, group) = m.kv_bits;
    for &i in &chunked_layers {
        let mut arrays = Vec::with_capacity(width);
        for j in 0..width {
            let mut runs = Vec::with_capacity(parts.len());
            for (p, c) in parts.iter().zip(&m.chunks) {
                let len = (c.end - c.start) as i32;
                let a = p.get(&format!("{i}.{j}")).filter(|a| a.ndim() == 4 && a.shape()[2] >= len);
                let a = a.ok_or_else(|| refused(dir, &format!("layer {i}'s keys are missing from {}", c.file.file)))?;
                runs.push(a.index((.., .., 0..len, ..)));
            }
            let a = mlx_rs::ops::concatenate(&runs, 2).map_err(|e| refused(dir, &e.to_string()))?;
            arrays.push(Some(a));
        }
        let state = CacheState { kind: CacheKind::Kv, arrays, meta: vec![n as i32, 0, -1, bits, group] };
        cache.layers[i].set_state(state).map_err(|e| refused(dir, &format!("layer {i}: {e}")))?;
    }
    if let Some(t) = &m.tail {
        let arrays = read_checked(dir, t)?;
        for tl in &m.tail_layers {
            if tl.layer >= cache.layers.len() || m.layout[tl.layer] != "tail" {
                return Err(refused(dir, "its tail names a layer it should not"));
            }
            let list = tl.present.iter().enumerate().map(|(j, &p)| if p { arrays.get(&format!("{}.{j}", tl.layer)).cloned().map(Some) } else { Some(None) }).collect::<Option<Vec<_>>>();
            let list = list.ok_or_else(|| refused(dir, &format!("layer {}'s state is missing", tl.layer)))?;
            let kind = if tl.state { CacheKind::State } else { CacheKind::Kv };
            cache.layers[tl.layer].set_state(CacheState { kind, arrays: list, meta: tl.meta.clone() }).map_err(|e| refused(dir, &format!("layer {}: {e}", tl.layer)))?;
        }
    }
    if cache.layers.iter().any(|l| l.offset() != n as i32) {
        return Err(refused(dir, "its layers do not all hold the saved tokens"));
    }
    cache.tokens = m.tokens;
    touch(dir);
    mlx_rs::transforms::eval(cache.layers.iter().flat_map(|c| c.arrays())).map_err(|e| refused(dir, &e.to_string()))?;
    cache.snapshot();
    Ok(Some(cache))
}

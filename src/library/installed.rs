//! The models directory: what is installed, importing (validated first) and deleting.

use super::card::{card, ModelCard};
use super::hf_cache;
use crate::error::{io_err, Error, Result};
use crate::formats::gguf;
use crate::formats::gguf_header::GgufHeader;
use crate::models::load::display_name;
use crate::models::registry;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Read from the file headers without loading weights; None if unreadable.
    pub card: Option<ModelCard>,
    /// Why the card could not be read (a FIFO where the weights should be, a
    /// corrupt header, the scan's deadline), for the list to show.
    pub problem: Option<String>,
}

impl InstalledModel {
    fn scanned(name: String, path: PathBuf, deadline: Instant) -> InstalledModel {
        if Instant::now() > deadline {
            let problem = Some(format!("not read: the scan of the models ran past its {} s deadline", SCAN_DEADLINE.as_secs()));
            return InstalledModel { name, path, size: 0, card: None, problem };
        }
        let (size, read) = card_and_size(&path);
        let (card, problem) = match read {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        InstalledModel { name, size, card, problem, path }
    }
}

/// A model's card and its bytes on disk. The card is read again only when
/// the files changed (their names, sizes and modification times, from `stat`):
/// the server lists the installed models on every request, and reading a
/// GGUF's header costs milliseconds a model.
pub fn card_and_size(path: &Path) -> (u64, std::result::Result<ModelCard, String>) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Read = (u64, u64, std::result::Result<ModelCard, String>);
    static CARDS: Mutex<Option<HashMap<PathBuf, Read>>> = Mutex::new(None);
    let (size, stamp) = size_and_stamp(path);
    if let Some((_, s, c)) = CARDS.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|m| m.get(path)).filter(|(s, _, _)| *s == stamp) {
        return (*s, c.clone());
    }
    let read = card(path).map_err(|e| e.to_string());
    let mut cards = CARDS.lock().unwrap_or_else(|e| e.into_inner());
    let map = cards.get_or_insert_with(HashMap::new);
    // Bounded: a folder of many models read once each, not an ever-growing map.
    if map.len() > 4096 {
        map.clear();
    }
    map.insert(path.to_path_buf(), (stamp, size, read.clone()));
    (size, read)
}

/// How long one scan of the models may read headers; past it the rest are
/// listed by name only. Nothing here opens a FIFO or device (`files::open_regular`),
/// so only a very slow disk comes near it.
pub const SCAN_DEADLINE: Duration = Duration::from_secs(5);

/// Bytes under `p`. Links are followed to their files (the Hugging Face
/// cache's snapshots link into its blobs), each folder is entered once and
/// at most 32 deep (a link loop cannot recurse for ever), and a FIFO,
/// socket or device counts as nothing: sizes come from `stat`, nothing is opened.
pub fn dir_size(p: &Path) -> u64 {
    size_and_stamp(p).0
}

/// `dir_size`, and a hash of every file's path, size and modification time
/// (what changes when a model's files do).
fn size_and_stamp(p: &Path) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    fn under(p: &Path, seen: &mut HashSet<(u64, u64)>, depth: u32, h: &mut std::collections::hash_map::DefaultHasher) -> u64 {
        let Ok(meta) = std::fs::metadata(p) else { return 0 };
        if meta.is_file() {
            p.hash(h);
            meta.len().hash(h);
            meta.modified().ok().hash(h);
            return meta.len();
        }
        if !meta.is_dir() || depth > 32 {
            return 0;
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if !seen.insert((meta.dev(), meta.ino())) {
                return 0;
            }
        }
        let Ok(rd) = std::fs::read_dir(p) else { return 0 };
        // Sorted, so the stamp does not depend on the order the folder lists.
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        entries.iter().map(|e| under(e, seen, depth + 1, h)).sum()
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let size = under(p, &mut HashSet::new(), 0, &mut h);
    (size, h.finish())
}

/// Entries of the models folder that are not models and never will be, said
/// by name: a FIFO, socket or device, a link that leads nowhere or in a loop.
/// (Hidden entries and plain files of other kinds are not reported.)
pub fn odd_entries(models_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(models_dir) else { return vec![] };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            match std::fs::metadata(&p) {
                Err(err) => Some(format!("{name}: a link that cannot be followed ({err})")),
                Ok(m) if !m.is_file() && !m.is_dir() => Some(format!("{name} {}", crate::files::kind_of(&m))),
                Ok(_) => None,
            }
        })
        .collect();
    out.sort();
    out
}

fn is_model(p: &Path) -> bool {
    if p.is_file() {
        return p.extension().is_some_and(|e| e == "gguf");
    }
    p.join("config.json").is_file() || !gguf::files_in(p).is_empty()
}

pub fn installed(models_dir: &Path) -> Vec<InstalledModel> {
    scan(models_dir, Instant::now() + SCAN_DEADLINE)
}

fn scan(models_dir: &Path, deadline: Instant) -> Vec<InstalledModel> {
    let mut out: Vec<InstalledModel> = std::fs::read_dir(models_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .filter(|p| is_model(p))
                .map(|p| InstalledModel::scanned(display_name(&p), p, deadline))
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|m| m.name.to_lowercase());
    out
}

/// The models folder plus complete models in the Hugging Face cache (named by repo id).
pub fn installed_with_cache(models_dir: &Path, hf_cache: &Path) -> Vec<InstalledModel> {
    let deadline = Instant::now() + SCAN_DEADLINE;
    let mut out = scan(models_dir, deadline);
    for m in hf_cache::cached_models(hf_cache) {
        out.push(InstalledModel::scanned(m.id, m.snapshot, deadline));
    }
    out
}

/// Checks that a file or folder is a model Hearth can load, without reading weights.
pub fn validate(src: &Path) -> Result<()> {
    if src.is_file() {
        let h = GgufHeader::read(src)?;
        gguf::check_tensor_types(&h)?;
        registry::check_supported(h.architecture()?)?;
        gguf::config_from_metadata(&h)?;
        return Ok(());
    }
    if src.is_dir() {
        let cfg = src.join("config.json");
        if cfg.is_file() {
            let text = crate::files::read_small_text(&cfg, 16 << 20)?.unwrap_or_default();
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
            registry::check_supported(registry::model_type(&v)?)?;
            return Ok(());
        }
        let ggufs = gguf::files_in(src);
        if ggufs.len() == 1 {
            return validate(&ggufs[0]);
        }
    }
    Err(Error::ModelNotFound(format!("{} is not a .gguf file or a model folder", src.display())))
}

/// Copies `src` to `dst`: regular files and folders only. A link is followed
/// only when it stays inside `root` (the folder being imported; a Hugging Face
/// snapshot links into its own blobs); one that leads out of it, a FIFO or a
/// device is refused with its name, so an import never copies a file the user
/// did not mean to hand over.
fn copy_tree(src: &Path, dst: &Path, root: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(io_err(src))?;
    let real = if meta.file_type().is_symlink() {
        let target = src.canonicalize().map_err(io_err(src))?;
        if !target.starts_with(root) {
            return Err(Error::InvalidArgument(format!(
                "{} links to {}, outside the folder being imported; not copied",
                src.display(),
                target.display()
            )));
        }
        target
    } else {
        src.to_path_buf()
    };
    let meta = std::fs::metadata(&real).map_err(io_err(&real))?;
    if meta.is_file() {
        std::fs::copy(&real, dst).map_err(io_err(dst))?;
        return Ok(());
    }
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{} is not a regular file or folder; not copied", src.display())));
    }
    std::fs::create_dir_all(dst).map_err(io_err(dst))?;
    for e in std::fs::read_dir(&real).map_err(io_err(&real))?.flatten() {
        copy_tree(&e.path(), &dst.join(e.file_name()), root)?;
    }
    Ok(())
}

/// Copies a validated model into `models_dir`. The copy goes to a hidden
/// temporary name first, so a failed copy (disk full) never looks installed.
pub fn import(src: &Path, models_dir: &Path, if_missing: bool) -> Result<Option<PathBuf>> {
    validate(src)?;
    let name = src
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{} has no file name", src.display())))?;
    let dst = models_dir.join(name);
    if dst.exists() {
        if if_missing {
            return Ok(None);
        }
        return Err(Error::InvalidArgument(format!("{} is already installed", dst.display())));
    }
    std::fs::create_dir_all(models_dir).map_err(io_err(models_dir))?;
    let tmp = models_dir.join(format!(".importing-{}", name.to_string_lossy()));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_file(&tmp);
    // For a folder, links may point anywhere inside it; a single file the user
    // picked is followed wherever it is.
    let canon = src.canonicalize().map_err(io_err(src))?;
    let root = if canon.is_dir() { canon.clone() } else { canon.parent().unwrap_or(Path::new("/")).to_path_buf() };
    if let Err(e) = copy_tree(src, &tmp, &root) {
        let _ = std::fs::remove_dir_all(&tmp);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    Ok(Some(dst))
}

/// Deletes an installed model; returns the bytes freed. Only paths inside
/// `models_dir` are accepted.
pub fn delete(path: &Path, models_dir: &Path) -> Result<u64> {
    let canon = path.canonicalize().map_err(io_err(path))?;
    let root = models_dir.canonicalize().map_err(io_err(models_dir))?;
    if canon.parent() != Some(root.as_path()) {
        return Err(Error::InvalidArgument(format!("{} is not an installed model", path.display())));
    }
    let size = dir_size(&canon);
    if canon.is_dir() {
        std::fs::remove_dir_all(&canon).map_err(io_err(&canon))?;
    } else {
        std::fs::remove_file(&canon).map_err(io_err(&canon))?;
    }
    Ok(size)
}

//! The models directory: what is installed, importing (validated first) and deleting.

use super::gguf_file::GgufHeader;
use super::{gguf, registry};
use crate::error::{io_err, Error, Result};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Read from the file headers without loading weights; None if unreadable.
    pub card: Option<ModelCard>,
}

/// What the model manager shows for a model that is not loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCard {
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    /// For the memory-fit estimate; None when the config lacks the numbers.
    pub shape: Option<crate::hub::fit::Shape>,
}

/// Architecture, parameter count and quantization from headers only.
pub fn card(path: &Path) -> Result<ModelCard> {
    let gguf = if path.is_file() {
        Some(path.to_path_buf())
    } else if !path.join("config.json").is_file() {
        ggufs_in(path).into_iter().next()
    } else {
        None
    };
    if let Some(g) = gguf {
        let h = GgufHeader::read(&g)?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for t in &h.tensors {
            *counts.entry(t.type_name()).or_default() += t.n_elements();
        }
        let quantization = counts.iter().max_by_key(|(_, n)| **n).map(|(k, _)| k.clone()).unwrap_or_default();
        let parameters = h.tensors.iter().map(|t| t.n_elements()).sum();
        let mut shape = gguf::config_from_metadata(&h).ok().and_then(|c| crate::hub::fit::Shape::from_config(&c, parameters));
        if let Some(s) = shape.as_mut() {
            // GGUF blocks hold 4 to 8 bits a weight; count the common 4-bit case.
            s.bits = Some(4);
        }
        return Ok(ModelCard { architecture: h.architecture()?.to_string(), parameters, quantization, shape });
    }
    let cfg_path = path.join("config.json");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?)
        .map_err(|e| Error::Config(format!("config.json: {e}")))?;
    let q = if cfg["quantization"].is_object() { &cfg["quantization"] } else { &cfg["quantization_config"] };
    let bits = q["bits"].as_u64();
    let mut parameters = 0u64;
    for e in std::fs::read_dir(path).map_err(io_err(path))?.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "safetensors") {
            continue;
        }
        for (name, dtype, n) in safetensors_shapes(&p)? {
            if name.ends_with(".scales") || name.ends_with(".biases") {
                continue;
            }
            // Packed quantized weights hold 32/bits values per uint32.
            parameters += match (dtype.as_str(), bits) {
                ("U32", Some(b)) if b > 0 => n * 32 / b,
                _ => n,
            };
        }
    }
    Ok(ModelCard {
        architecture: cfg["model_type"].as_str().unwrap_or("unknown").to_string(),
        shape: crate::hub::fit::Shape::from_config(&cfg, parameters),
        parameters,
        quantization: match bits {
            Some(b) => format!("{b}-bit (group {})", q["group_size"].as_u64().unwrap_or(64)),
            None => cfg["torch_dtype"].as_str().unwrap_or("float").to_string(),
        },
    })
}

/// (name, dtype, element count) of every tensor in a safetensors file.
fn safetensors_shapes(p: &Path) -> Result<Vec<(String, String, u64)>> {
    Ok(super::loader::safetensors_header(p)?
        .into_iter()
        .map(|(k, t)| {
            let n = t["shape"].as_array().map(|s| s.iter().filter_map(|d| d.as_u64()).product()).unwrap_or(0);
            (k, t["dtype"].as_str().unwrap_or("").to_string(), n)
        })
        .collect())
}

/// The .gguf files directly inside `dir` (sorted).
pub fn ggufs_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "gguf"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub fn dir_size(p: &Path) -> u64 {
    if p.is_file() {
        return p.metadata().map(|m| m.len()).unwrap_or(0);
    }
    std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

fn is_model(p: &Path) -> bool {
    if p.is_file() {
        return p.extension().is_some_and(|e| e == "gguf");
    }
    p.join("config.json").is_file() || !ggufs_in(p).is_empty()
}

pub fn installed(models_dir: &Path) -> Vec<InstalledModel> {
    let mut out: Vec<InstalledModel> = std::fs::read_dir(models_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .filter(|p| is_model(p))
                .map(|p| InstalledModel {
                    name: super::loader::display_name(&p),
                    size: dir_size(&p),
                    card: card(&p).ok(),
                    path: p,
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()));
    out
}

/// The models folder plus complete models in the Hugging Face cache (named by repo id).
pub fn installed_with_cache(models_dir: &Path, hf_cache: &Path) -> Vec<InstalledModel> {
    let mut out = installed(models_dir);
    for m in crate::hub::cache::cached_models(hf_cache) {
        out.push(InstalledModel { name: m.id, size: dir_size(&m.snapshot), card: card(&m.snapshot).ok(), path: m.snapshot });
    }
    out
}

/// Checks that a file or folder is a model Hearth can load, without reading weights.
pub fn validate(src: &Path) -> Result<()> {
    if src.is_file() {
        let h = GgufHeader::read(src)?;
        gguf::check_tensor_types(&h)?;
        gguf::config_from_metadata(&h)?;
        return Ok(());
    }
    if src.is_dir() {
        let cfg = src.join("config.json");
        if cfg.is_file() {
            let text = std::fs::read_to_string(&cfg).map_err(io_err(&cfg))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
            registry::check_supported(registry::model_type(&v)?)?;
            return Ok(());
        }
        let ggufs = ggufs_in(src);
        if ggufs.len() == 1 {
            return validate(&ggufs[0]);
        }
    }
    Err(Error::ModelNotFound(format!("{} is not a .gguf file or a model folder", src.display())))
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    if src.is_file() {
        std::fs::copy(src, dst).map_err(io_err(dst))?;
        return Ok(());
    }
    std::fs::create_dir_all(dst).map_err(io_err(dst))?;
    for e in std::fs::read_dir(src).map_err(io_err(src))?.flatten() {
        copy_tree(&e.path(), &dst.join(e.file_name()))?;
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
    if let Err(e) = copy_tree(src, &tmp) {
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

//! Model ids and repo file names come from the user and from the network, so
//! both are checked before they touch a path: nothing may land outside the
//! cache or models directory.

/// A model id or repo file name that could leave its folder, said plainly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadId(pub String);

/// `owner/name` with the characters the Hub allows; returns (owner, name).
pub fn check_repo_id(id: &str) -> Result<(&str, &str), BadId> {
    let bad = |why: &str| BadId(format!("“{id}” is not a model id ({why}); expected owner/name"));
    let (owner, name) = id.split_once('/').ok_or_else(|| bad("no owner/ part"))?;
    for part in [owner, name] {
        if part.is_empty() || part.len() > 96 {
            return Err(bad("empty or too long part"));
        }
        if part.starts_with(['.', '-']) || part.ends_with('.') || part.contains("..") || part.contains("--") {
            return Err(bad("dots or dashes in a forbidden place"));
        }
        if !part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return Err(bad("characters other than letters, digits, - _ ."));
        }
    }
    Ok((owner, name))
}

/// A file path inside a repo: relative, forward slashes, no `..`, no empty or
/// hidden-dir components that could escape the snapshot folder.
pub fn check_repo_file(path: &str) -> Result<(), BadId> {
    let bad = || BadId(format!("the server listed an unsafe file name “{path}”"));
    if path.is_empty() || path.len() > 512 || path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return Err(bad());
    }
    for comp in path.split('/') {
        if comp.is_empty() || comp == "." || comp == ".." || comp.contains(':') {
            return Err(bad());
        }
    }
    Ok(())
}

/// The Hub cache folder for a model repo: `models--owner--name`.
pub fn repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_repo_id("mlx-community/Qwen3-0.6B-4bit").is_ok());
        assert!(check_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct").is_ok());
        for bad in ["../../x", "/etc/passwd", "a/../b", "a", "a/b/c", "a/", "/b", "..", "a/..", "a b/c", "a/b\\c", "a/.hidden", "o/n\0"] {
            assert!(check_repo_id(bad).is_err(), "{bad} accepted");
        }
        assert!(check_repo_file("model.safetensors").is_ok());
        assert!(check_repo_file("sub/dir/tokenizer.json").is_ok());
        for bad in ["../x", "a/../../x", "/abs", "a//b", "c:\\x", "a\\b", "", "./a"] {
            assert!(check_repo_file(bad).is_err(), "{bad} accepted");
        }
    }
}

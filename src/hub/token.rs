//! The optional Hugging Face token for gated models: one file only the user can
//! read (0600), never logged, shown masked.

use std::path::{Path, PathBuf};

pub fn token_file() -> PathBuf {
    crate::paths::data_dir().join("hf_token")
}

/// Hearth's own token, else `HF_TOKEN`, else the file `huggingface-cli login` writes.
pub fn load() -> Option<String> {
    // Only a small regular file: a FIFO named hf_token would block the start.
    let from_file = |p: &Path| {
        crate::files::read_small_text(p, 4096).ok().flatten().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    };
    from_file(&token_file())
        .or_else(|| std::env::var("HF_TOKEN").ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()))
        .or_else(|| from_file(&hf_hub::hf_home().join("token")))
}

/// Writes the token with mode 0600 from the first byte (temp file + rename).
pub fn save(token: &str) -> std::io::Result<()> {
    save_to(&token_file(), token)
}

pub fn save_to(path: &Path, token: &str) -> std::io::Result<()> {
    crate::files::write_secret(path, token)
}

pub fn clear() -> std::io::Result<()> {
    match std::fs::remove_file(token_file()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `hf_…wxyz`: enough to recognise, not enough to use.
pub fn mask(token: &str) -> String {
    let tail: String = token.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let head: String = token.chars().take(3).collect();
    if token.chars().count() <= 8 {
        return "•••".into();
    }
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn saved_token_is_private_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hf_token");
        super::save_to(&p, " hf_abcdefghijklmnop\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hf_abcdefghijklmnop");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(super::mask("hf_abcdefghijklmnop"), "hf_…mnop");
        assert!(super::save_to(&p, "two words").is_err());
    }
}

//! The API key other machines must send when the app's server is open to the
//! network: random, kept in one file only the user can read (0600, written
//! like the Hugging Face token), shown masked.

use std::io::Read;
use std::path::{Path, PathBuf};

pub fn key_file() -> PathBuf {
    crate::paths::data_dir().join("server_key")
}

pub fn load() -> Option<String> {
    load_from(&key_file())
}

pub fn load_from(path: &Path) -> Option<String> {
    crate::files::read_small_text(path, 4096).ok().flatten().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A new random key (`hearth-` and 32 hex digits from the system's random
/// source), saved in place of the old one.
pub fn generate() -> std::io::Result<String> {
    generate_at(&key_file())
}

pub fn generate_at(path: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let key = format!("hearth-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    crate::files::write_secret(path, &key)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_random_private_and_replace_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server_key");
        let a = super::generate_at(&p).unwrap();
        let b = super::generate_at(&p).unwrap();
        assert!(a.starts_with("hearth-") && a.len() == 39 && a != b, "{a} {b}");
        assert_eq!(super::load_from(&p).as_deref(), Some(b.as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}

//! Where Hearth keeps things: the platform data dir from `directories`
//! (~/Library/Application Support/Hearth on macOS, ~/.local/share/hearth on
//! Linux), or `HEARTH_HOME` when set (tests and portable installs).

use std::path::PathBuf;

pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("HEARTH_HOME") {
        return PathBuf::from(home);
    }
    directories::ProjectDirs::from("", "", "Hearth")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".hearth"))
}

pub fn models_dir() -> PathBuf {
    data_dir().join("models")
}

/// The conversations' prompt caches on disk (`engine::prompt_file`), one
/// folder each, within the engine's bound (`HEARTH_PROMPT_CACHE_MB`); the
/// app's are under its own data folder, this is the daemon's.
pub fn prompt_cache_dir() -> PathBuf {
    data_dir().join(crate::engine::prompt_file::STORE_FOLDER)
}

/// The `hearth` program itself, which the app runs to start its daemon:
/// this executable, or `HEARTH_EXE` (tests, whose executable is the test).
pub fn hearth_exe() -> std::io::Result<PathBuf> {
    match std::env::var_os("HEARTH_EXE") {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe(),
    }
}

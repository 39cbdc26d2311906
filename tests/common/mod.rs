//! Shared test fixtures: the real SmolLM2 model installed by scripts/setup.sh.
#![allow(dead_code)]

use hearth::engine::Session;
use hearth::models::load::{self, Precision};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub mod hub_server;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn smollm2_gguf() -> PathBuf {
    let p = root().join(".deps/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

pub fn python() -> PathBuf {
    std::env::var_os("HEARTH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/venv/bin/python"))
}

/// MLX work from parallel test threads is serialized through this lock.
pub fn mlx_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One SmolLM2 session per test binary (loading costs seconds).
pub fn session() -> MutexGuard<'static, Session> {
    static S: OnceLock<Mutex<Session>> = OnceLock::new();
    S.get_or_init(|| {
        let loaded = load::load(&smollm2_gguf(), Precision::Auto).expect("loading SmolLM2");
        Mutex::new(Session::new(loaded, Some(2048)))
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

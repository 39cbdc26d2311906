//! Where MLX's Metal library comes from when Hearth runs as Hearth.app.
//!
//! MLX loads `mlx.metallib` from next to the code that contains MLX (the
//! executable: mlx-sys links MLX statically), then from the build machine's
//! path baked in at compile time, which does not exist on a user's Mac. The
//! bundle therefore carries Contents/Resources/mlx.metallib with a link to it
//! in Contents/MacOS, and Hearth checks for it before the first MLX call so a
//! damaged bundle says so instead of failing inside Metal.

use std::path::{Path, PathBuf};

/// The `.app` directory if `exe` is `X.app/Contents/MacOS/<exe>`.
pub fn app_bundle(exe: &Path) -> Option<PathBuf> {
    let macos = exe.parent()?;
    let contents = macos.parent()?;
    let app = contents.parent()?;
    let is_bundle = macos.file_name()? == "MacOS"
        && contents.file_name()? == "Contents"
        && app.extension().is_some_and(|e| e == "app");
    is_bundle.then(|| app.to_path_buf())
}

/// The metallib locations MLX will try for this executable, in order.
pub fn metallib_candidates(exe: &Path) -> Vec<PathBuf> {
    let mut v = vec![];
    if let Some(dir) = exe.parent() {
        v.push(dir.join("mlx.metallib"));
    }
    if let Some(app) = app_bundle(exe) {
        v.push(app.join("Contents/Resources/mlx.metallib"));
    }
    v
}

/// Inside a bundle, the colocated metallib must exist (it is what MLX reads).
/// Outside one (`cargo run`), MLX falls back to its build-time path.
pub fn check_metallib(exe: &Path) -> Result<(), String> {
    if app_bundle(exe).is_none() {
        return Ok(());
    }
    let colocated = exe.with_file_name("mlx.metallib");
    if colocated.exists() {
        return Ok(());
    }
    Err(format!(
        "Hearth.app is incomplete: MLX's Metal library was not found at {}. Reinstall Hearth.",
        colocated.display()
    ))
}

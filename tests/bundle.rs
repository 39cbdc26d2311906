//! The macOS bundle's metadata and layout, checked on any OS; and the Linux tarball.

mod common;

use plist::Value;
use std::path::Path;
use std::process::Command;

fn dict(path: &str) -> plist::Dictionary {
    match Value::from_file(common::root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}")) {
        Value::Dictionary(d) => d,
        other => panic!("{path} is not a dictionary: {other:?}"),
    }
}

fn s<'a>(d: &'a plist::Dictionary, k: &str) -> &'a str {
    d.get(k).and_then(|v| v.as_string()).unwrap_or_else(|| panic!("Info.plist lacks string {k}"))
}

#[test]
fn info_plist_has_every_required_key_and_matches_cargo() {
    let d = dict("Info.plist");
    for k in [
        "CFBundleName",
        "CFBundleDisplayName",
        "CFBundleIdentifier",
        "CFBundleVersion",
        "CFBundleShortVersionString",
        "CFBundleExecutable",
        "CFBundleIconFile",
        "CFBundlePackageType",
        "LSMinimumSystemVersion",
        "LSApplicationCategoryType",
        "NSHumanReadableCopyright",
    ] {
        assert!(!s(&d, k).is_empty(), "{k} is empty");
    }
    assert_eq!(s(&d, "CFBundleVersion"), env!("CARGO_PKG_VERSION"));
    assert_eq!(s(&d, "CFBundleShortVersionString"), env!("CARGO_PKG_VERSION"));
    // The executable named in the plist is the binary cargo builds.
    let bin = Path::new(env!("CARGO_BIN_EXE_hearth")).file_name().unwrap().to_str().unwrap();
    assert_eq!(s(&d, "CFBundleExecutable"), bin);
    assert_eq!(s(&d, "CFBundlePackageType"), "APPL");
    assert!(s(&d, "CFBundleIdentifier").contains('.'));
    assert_eq!(d.get("NSHighResolutionCapable").and_then(|v| v.as_boolean()), Some(true));
    let archs = d.get("LSArchitecturePriority").and_then(|v| v.as_array()).expect("LSArchitecturePriority");
    assert_eq!(archs.iter().filter_map(|v| v.as_string()).collect::<Vec<_>>(), ["arm64"], "Apple Silicon only");
    let min: f32 = s(&d, "LSMinimumSystemVersion").parse().unwrap();
    assert!(min >= 13.5, "MLX needs macOS 13.5 or later");
    assert!(common::root().join("assets/icon.png").is_file());
}

#[test]
fn entitlements_grant_nothing_beyond_the_hardened_runtime() {
    // Developer ID distribution without the App Sandbox (as LM Studio, Ollama
    // and Jan ship): a sandboxed app would see ~/.cache/huggingface inside its
    // container, not the cache mlx-lm and other tools share, which the README
    // promises. The hardened runtime stays on (build.sh signs with it); no
    // exception to it is needed, so nothing is granted.
    let d = dict("entitlements.plist");
    assert!(d.is_empty(), "unexpected entitlements: {:?}", d.keys().collect::<Vec<_>>());
    let build = std::fs::read_to_string(common::root().join("bundle/build.sh")).unwrap();
    assert!(build.contains("--options runtime"), "signed with the hardened runtime");
}

#[test]
fn dry_run_assembles_the_app_layout() {
    let out = tempfile::tempdir().unwrap();
    let st = Command::new("bash")
        .arg(common::root().join("bundle/build.sh"))
        .args(["--dry-run", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(st.success());
    let app = out.path().join("Hearth.app/Contents");
    let exe = app.join("MacOS/hearth");
    assert!(exe.is_file(), "binary");
    assert_eq!(std::fs::read(app.join("Info.plist")).unwrap(), std::fs::read(common::root().join("Info.plist")).unwrap());
    let icns = std::fs::read(app.join("Resources/AppIcon.icns")).unwrap();
    assert_eq!(&icns[..4], b"icns");
    assert_eq!(u32::from_be_bytes(icns[4..8].try_into().unwrap()) as usize, icns.len());
    let ic10 = icns.windows(4).position(|w| w == b"ic10").expect("1024px entry");
    assert_eq!(&icns[ic10 + 8..ic10 + 12], b"\x89PNG");
    assert!(app.join("Resources/mlx.metallib").is_file());
    // MLX reads the metallib next to the executable; the bundle links it there.
    let link = std::fs::read_link(app.join("MacOS/mlx.metallib")).unwrap();
    assert_eq!(link, Path::new("../Resources/mlx.metallib"));
    assert!(app.join("MacOS/mlx.metallib").exists());
    // Hearth's own check agrees with the layout, and catches a missing metallib.
    assert_eq!(hearth::bundle::app_bundle(&exe).unwrap(), out.path().join("Hearth.app"));
    assert!(hearth::bundle::check_metallib(&exe).is_ok());
    let candidates = hearth::bundle::metallib_candidates(&exe);
    assert_eq!(candidates[0], app.join("MacOS/mlx.metallib"));
    assert_eq!(candidates[1], out.path().join("Hearth.app/Contents/Resources/mlx.metallib"));
    std::fs::remove_file(app.join("MacOS/mlx.metallib")).unwrap();
    assert!(hearth::bundle::check_metallib(&exe).unwrap_err().contains("mlx.metallib"));
    // Outside a bundle (cargo run) there is nothing to check.
    assert!(hearth::bundle::check_metallib(Path::new(env!("CARGO_BIN_EXE_hearth"))).is_ok());
}

#[test]
fn linux_tarball_runs_from_a_fresh_directory_and_answers() {
    let _g = common::mlx_lock();
    let out = Command::new("bash").arg(common::root().join("bundle/check_tarball.sh")).output().unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    assert!(log.contains("tarball OK") && log.contains("Paris"), "{log}");
}

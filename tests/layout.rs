//! The source tree's shape, checked: dependencies between folders run one way
//! (no `use crate::` of a folder a room must not see), and no file grows past
//! ~450 lines without saying why in its first comment.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level rooms (`crate::X`) a file refers to, from `use crate::` lines
/// and inline `crate::X::` paths alike.
fn rooms_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let room: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if !room.is_empty() {
            out.insert(room);
        }
        // `use crate::{a, b::c}` groups.
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                let room: String = part.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !room.is_empty() {
                    out.insert(room);
                }
            }
        }
    }
    out
}

/// Which rooms each room must not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("sys", &["formats", "chat", "models", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("formats", &["chat", "models", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("chat", &["models", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("models", &["engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("engine", &["library", "hub", "store", "server", "mcp", "ui"]),
    ("library", &["engine", "hub", "store", "server", "mcp", "ui"]),
    ("store", &["engine", "models", "library", "hub", "server", "mcp", "ui"]),
    ("hub", &["engine", "server", "mcp", "ui"]),
    ("server", &["ui", "hub", "mcp"]),
    // MCP clients know tools (chat), nothing of the engine or the app.
    ("mcp", &["models", "engine", "library", "hub", "store", "server", "ui"]),
];

#[test]
fn dependencies_run_one_way() {
    let root = src_root();
    let mut files = vec![];
    sources(&root, &mut files);
    let mut bad = vec![];
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let room = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let Some((_, forbidden)) = FORBIDDEN.iter().find(|(r, _)| *r == room) else { continue };
        let text = std::fs::read_to_string(f).unwrap();
        for used in rooms_used(&text) {
            if forbidden.contains(&used.as_str()) {
                bad.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    assert!(bad.is_empty(), "dependencies that run the wrong way:\n{}", bad.join("\n"));
}

#[test]
fn the_checker_sees_inline_paths_and_groups() {
    let r = rooms_used("use crate::{hub::x, store};\nfn f() { crate::ui::run(); }");
    assert_eq!(r.into_iter().collect::<Vec<_>>(), ["hub", "store", "ui"]);
}

#[test]
fn long_files_say_why() {
    let root = src_root();
    let mut files = vec![];
    sources(&root, &mut files);
    let mut bad = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let lines = text.lines().count();
        let first_comment: String =
            text.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        if lines > 450 && !first_comment.contains("Longer than") {
            bad.push(format!("{} has {lines} lines", f.strip_prefix(&root).unwrap().display()));
        }
    }
    assert!(bad.is_empty(), "files over 450 lines without a reason in their first comment:\n{}", bad.join("\n"));
}

/// Architecture files (those that implement `LanguageModel`) reach fused
/// kernels only through `models::kernels` or the shared parts, never a CUDA
/// or Metal kernel module by name: one dispatch point per op, with its fallback beside it.
#[test]
fn architecture_files_never_import_a_kernel_module() {
    let dir = src_root().join("models");
    let mut files = vec![];
    sources(&dir, &mut files);
    let mut archs = 0;
    let mut bad = vec![];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if !text.contains("impl LanguageModel for") {
            continue;
        }
        archs += 1;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if ["_cuda", "cuda_kernel", "_metal", "metal_kernel"].iter().any(|k| code.contains(k)) {
                bad.push(format!("{}:{}: {}", f.strip_prefix(&dir).unwrap().display(), n + 1, line.trim()));
            }
        }
    }
    assert!(archs >= 8, "found only {archs} architecture files");
    assert!(bad.is_empty(), "architecture files naming a kernel module (use models::kernels):\n{}", bad.join("\n"));
}

#[test]
fn the_kernel_check_sees_a_kernel_import() {
    let line = "        let y = super::moe_cuda::route(x)?; // comment";
    assert!(line.split("//").next().unwrap().contains("_cuda"));
    assert!(!"// a comment about attention_cuda".split("//").next().unwrap().contains("_cuda"));
}

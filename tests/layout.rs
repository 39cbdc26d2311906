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
    ("sys", &["formats", "chat", "models", "synth", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("formats", &["chat", "models", "synth", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("chat", &["models", "synth", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("models", &["synth", "engine", "library", "hub", "store", "server", "mcp", "ui"]),
    ("engine", &["synth", "library", "hub", "store", "server", "mcp", "ui"]),
    ("library", &["synth", "engine", "hub", "store", "server", "mcp", "ui"]),
    ("store", &["synth", "engine", "models", "library", "hub", "server", "mcp", "ui"]),
    ("hub", &["synth", "engine", "server", "mcp", "ui"]),
    ("server", &["synth", "ui", "hub", "mcp"]),
    // Random-weight models for tests and benchmarks: the CLI's `hearth synth`
    // and the tests use them; nothing in the app does.
    ("synth", &["engine", "library", "hub", "store", "server", "mcp", "ui"]),
    // MCP clients know tools (chat), nothing of the engine or the app.
    ("mcp", &["models", "synth", "engine", "library", "hub", "store", "server", "ui"]),
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

/// The rooms inside `models/` and what each must not reach (production code;
/// a kernel's tests beside it may compare it with the layer's MLX ops).
/// `arch` builds on `nn`, `cache` and `kernels`' dispatch entries; `nn` on
/// `kernels` and `cache`; `forward` (the pass's input, context and output)
/// on `cache`; `load` reads weights and builds through `registry`;
/// `cache` and `kernels` stand on MLX alone (`mlx_c`).
const MODELS_FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "arch",
        &["registry", "load", "kernels::cuda", "kernels::metal"],
    ),
    (
        "nn",
        &[
            "arch",
            "registry",
            "load::convert",
            "load::fit",
            "load::load",
        ],
    ),
    ("cache", &["arch", "nn", "kernels", "load", "registry"]),
    ("forward", &["arch", "nn", "kernels", "load", "registry"]),
    ("kernels", &["arch", "nn", "cache", "load", "registry"]),
    ("load", &["arch"]),
    (
        "mlx_c",
        &["arch", "nn", "cache", "kernels", "load", "registry"],
    ),
];

/// The `models::` paths a text names (`models::nn::layers`, `models::kernels::cuda`),
/// from `crate::models::` paths (how rooms name each other here), groups
/// included; `load`'s own
/// items (not a sub-module) read as `load::load`.
fn models_paths_used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let path = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect()
    };
    for (i, _) in text.match_indices("crate::models::") {
        let rest = &text[i + "crate::models::".len()..];
        let mut heads = vec![path(rest)];
        if let Some(group) = rest.strip_prefix('{') {
            heads = group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|p| path(p.trim()))
                .collect();
        } else if let Some(g) = rest
            .find("::{")
            .filter(|&g| g == heads[0].trim_end_matches(':').len())
        {
            let base = &rest[..g];
            let group = &rest[g + 3..];
            heads = group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .map(|p| format!("{base}::{}", path(p.trim())))
                .collect();
        }
        for h in heads {
            let h = h.trim_end_matches(':').to_string();
            let parts: Vec<&str> = h.split("::").collect();
            match parts.as_slice() {
                ["load", sub, ..] if !["weights", "convert", "fit"].contains(sub) => {
                    out.insert("load::load".into())
                }
                ["load"] => out.insert("load::load".into()),
                [a, b, ..] => out.insert(format!("{a}::{b}")),
                [a] if !a.is_empty() => out.insert(a.to_string()),
                _ => false,
            };
        }
    }
    out
}

fn production_code(text: &str) -> &str {
    &text[..text.find("#[cfg(test)]").unwrap_or(text.len())]
}

#[test]
fn rooms_inside_models_depend_one_way() {
    let dir = src_root().join("models");
    let mut files = vec![];
    sources(&dir, &mut files);
    let mut bad = vec![];
    for f in &files {
        let rel = f.strip_prefix(&dir).unwrap();
        let room = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let Some((_, forbidden)) = MODELS_FORBIDDEN.iter().find(|(r, _)| *r == room) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            !production_code(&text).contains("super::super"),
            "{}: name the room (crate::models::...)",
            rel.display()
        );
        for used in models_paths_used(production_code(&text)) {
            if forbidden.iter().any(|x| {
                used == *x
                    || used.starts_with(&format!("{x}::"))
                    || used.split("::").next() == Some(x)
            }) {
                bad.push(format!("models/{} uses models::{used}", rel.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "dependencies inside models/ that run the wrong way:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_models_checker_reads_paths_groups_and_loads_own_items() {
    let r = models_paths_used(
        "use crate::models::nn::{attention::Mask, rope};\nuse crate::models::{cache::Cache, Weights};\nfn f() { crate::models::load::load_from(p); crate::models::load::weights::x(); crate::models::kernels::cuda::moe::go(); }",
    );
    assert_eq!(
        r.into_iter().collect::<Vec<_>>(),
        [
            "Weights",
            "cache::Cache",
            "kernels::cuda",
            "load::load",
            "load::weights",
            "nn::attention",
            "nn::rope"
        ]
    );
}

/// Architecture files (those that implement `LanguageModel`, all in
/// `models/arch/`) reach fused kernels only through `models::kernels`'
/// dispatch entries or the shared parts, never a CUDA or Metal kernel module
/// by name: one dispatch point per op, with its fallback beside it.
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
        let rel = f.strip_prefix(&dir).unwrap();
        if !rel.starts_with("arch") {
            bad.push(format!(
                "{}: an architecture outside models/arch/",
                rel.display()
            ));
        }
        archs += 1;
        for (n, line) in text.lines().enumerate() {
            if names_a_kernel_module(line) {
                bad.push(format!("{}:{}: {}", rel.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(archs >= 8, "found only {archs} architecture files");
    assert!(
        bad.is_empty(),
        "architecture files naming a kernel module (use models::kernels):\n{}",
        bad.join("\n")
    );
}

fn names_a_kernel_module(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    ["cuda", "metal"].iter().any(|k| {
        code.contains(&format!("{k}::"))
            || code.contains(&format!("kernels::{k}"))
            || code.contains(&format!("kernels::{{{k}"))
    })
}

#[test]
fn the_kernel_check_sees_a_kernel_import() {
    assert!(names_a_kernel_module(
        "        let y = crate::models::kernels::cuda::moe::route(x)?; // comment"
    ));
    assert!(names_a_kernel_module(
        "use crate::models::kernels::{cuda, gated_delta};"
    ));
    assert!(names_a_kernel_module("    metal::delta::run(x)"));
    assert!(names_a_kernel_module(
        "use crate::models::kernels::cuda as fused;"
    ));
    assert!(!names_a_kernel_module(
        "    kernels::gated_delta(&inputs)? // not cuda::delta"
    ));
}

//! The prompt cache on disk (`hearth generate --prompt-cache DIR`), each run
//! its own process, so every reopening is a real restart: the follow-up
//! prefills only its new tokens and answers as a cold start does; a corrupt,
//! truncated or stale cache is refused, removed and computed again; a turn
//! writes its new tokens' share; a store past its bound drops the oldest.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// A long raw prompt (a few hundred tokens) and a follow-up that extends it.
fn passage(lines: usize) -> String {
    (1..=lines).map(|i| format!("Line {i}: the tide rises and falls on the shore of island {i}.")).collect::<Vec<_>>().join("\n")
}

struct Run {
    text: String,
    stats: Value,
    stderr: String,
}

/// `hearth generate` on `prompt` (raw, greedy, 8 tokens, stats), with the
/// prompt cache in `cache` if given.
fn command(model: &Path, cache: Option<&Path>, prompt: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.args(["generate", "--raw", "--temperature", "0", "--max-tokens", "8", "--stats", "--model"]).arg(model);
    if let Some(d) = cache {
        c.arg("--prompt-cache").arg(d);
    }
    c.arg(prompt);
    c
}

/// Runs it; it must succeed and print its stats.
fn run(mut c: Command) -> Run {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with('{')).expect("stats on stderr");
    Run { text: String::from_utf8(out.stdout).unwrap(), stats: serde_json::from_str(line).unwrap(), stderr }
}

/// `env`: variables, or `--flag value` pairs passed as arguments.
fn generate(model: &Path, cache: Option<&Path>, prompt: &str, env: &[(&str, &str)]) -> Run {
    let mut c = command(model, cache, prompt);
    for (k, v) in env {
        if k.starts_with("--") {
            c.args([k, v]);
        } else {
            c.env(k, v);
        }
    }
    run(c)
}

/// `generate` with the cache in `dir`, its writes limited to `limit` bytes a
/// file (a disk that fills up: writes past it fail with EFBIG).
fn generate_limited(model: &Path, dir: &Path, prompt: &str, limit: u64) -> Run {
    use std::os::unix::process::CommandExt;
    let mut c = command(model, Some(dir), prompt);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::getrlimit(libc::RLIMIT_FSIZE, &mut l);
            l.rlim_cur = (limit as libc::rlim_t).min(l.rlim_max);
            if libc::setrlimit(libc::RLIMIT_FSIZE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run(c)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('c')).collect();
    v.sort();
    v
}

#[test]
fn a_saved_prompt_cache_survives_restarts_and_a_bad_one_is_refused_and_recomputed() {
    let _g = common::mlx_lock();
    let tmp = tempfile::tempdir().unwrap();
    // A copy of the model, so the stale case can change its file.
    let model = tmp.path().join("SmolLM2.gguf");
    std::fs::copy(common::smollm2_gguf(), &model).unwrap();
    let store = tmp.path().join("prompt-cache");
    let dir = store.join("conversation-1");
    let first = passage(24);
    let follow = format!("{first}\nLine 25: and the boats come home at dusk.\nWhich island is named last?");

    let cold = generate(&model, None, &follow, &[]);
    assert_eq!(n(&cold.stats, "reused_tokens"), 0);

    // Turn one saves the cache; the restart's follow-up prefills only what is new.
    let a = generate(&model, Some(&dir), &first, &[]);
    let p1 = n(&a.stats, "prompt_tokens");
    assert!(p1 > 300, "{}", a.stats);
    assert_eq!(n(&a.stats, "prompt_file_tokens"), 0);
    let whole = n(&a.stats, "prompt_file_written");
    assert!(whole > 1 << 20, "{}", a.stats);
    let b = generate(&model, Some(&dir), &follow, &[]);
    assert_eq!(b.text, cold.text, "a restored cache answers as a cold start");
    assert!(n(&b.stats, "prompt_file_tokens") >= p1 - 1, "{}", b.stats);
    assert!(n(&b.stats, "reused_tokens") >= p1 - 1, "{}", b.stats);
    assert!(n(&b.stats, "prefilled_tokens") < 40, "only the follow-up is prefilled: {}", b.stats);
    // The turn wrote its new tokens' share: a second chunk, far smaller than the first save.
    let written = n(&b.stats, "prompt_file_written");
    assert!(written * 5 < whole, "turn two wrote {written} bytes, turn one {whole}");
    assert_eq!(chunk_files(&dir).len(), 2);

    // A full disk during the save (here the process's file-size limit, 64 kB):
    // the reply is whole, the save fails with a clear word, nothing
    // half-written stays, and the last good save is still the one used.
    let before: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    let full = generate_limited(&model, &dir, &format!("{follow} And the first?"), 64 << 10);
    assert!(full.stderr.contains("warning: the prompt cache was not saved"), "{}", full.stderr);
    assert!(n(&full.stats, "generated_tokens") > 0 && n(&full.stats, "prompt_file_tokens") > 0, "{}", full.stats);
    assert!(full.stderr.contains("Unable to write") && !full.stderr.contains("io.cpp"), "the words, not MLX's source lines: {}", full.stderr);
    let after: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(after, before, "no file added or lost");
    assert_eq!(generate(&model, Some(&dir), &follow, &[]).text, cold.text);

    // A flipped byte: refused by its checksum, removed, computed again, saved anew.
    let chunk = chunk_files(&dir)[0].clone();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&chunk, &bytes).unwrap();
    let c = generate(&model, Some(&dir), &follow, &[]);
    assert!(c.stderr.contains("warning: the prompt cache in") && c.stderr.contains("checksum differs"), "{}", c.stderr);
    assert_eq!((n(&c.stats, "prompt_file_tokens"), n(&c.stats, "reused_tokens")), (0, 0), "{}", c.stats);
    assert_eq!(c.text, cold.text);
    assert!(n(&c.stats, "prompt_file_written") > 1 << 20, "saved again whole: {}", c.stats);
    assert_eq!(n(&generate(&model, Some(&dir), &follow, &[]).stats, "prompt_file_tokens"), n(&c.stats, "prompt_tokens"), "the new save is used");

    // Truncated.
    let chunk = chunk_files(&dir)[0].clone();
    let len = std::fs::metadata(&chunk).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&chunk).unwrap().set_len(len / 3).unwrap();
    let d = generate(&model, Some(&dir), &follow, &[]);
    assert!(d.stderr.contains("bytes,") && d.stderr.contains("were written"), "{}", d.stderr);
    assert_eq!((n(&d.stats, "reused_tokens"), d.text.as_str()), (0, cold.text.as_str()));

    // A manifest that is not JSON.
    std::fs::write(dir.join("manifest.json"), b"{\"version\": 1, \"tokens\": [1, 2").unwrap();
    let e = generate(&model, Some(&dir), &follow, &[]);
    assert!(e.stderr.contains("manifest is unreadable"), "{}", e.stderr);
    assert_eq!(e.text, cold.text);

    // Stale: the model's file changed since the save.
    let f = std::fs::File::options().append(true).open(&model).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    drop(f);
    let s = generate(&model, Some(&dir), &follow, &[]);
    assert!(s.stderr.contains("other weights"), "{}", s.stderr);
    assert_eq!((n(&s.stats, "reused_tokens"), s.text.as_str()), (0, cold.text.as_str()));

    // The store's bound: a second conversation's save pushes the first (the
    // least recently used) out; the one just written always stays.
    let other = store.join("conversation-2");
    let size = |d: &Path| std::fs::read_dir(d).map(|rd| rd.flatten().map(|e| e.metadata().unwrap().len()).sum::<u64>()).unwrap_or(0);
    let mb = (size(&dir) >> 20) + 1;
    let g = generate(&model, Some(&other), &passage(20), &[("HEARTH_PROMPT_CACHE_MB", &mb.to_string())]);
    assert!(n(&g.stats, "prompt_file_written") > 0);
    assert!(!dir.exists(), "the oldest entry went");
    assert!(other.join("manifest.json").is_file());

    // Only Hearth's own files are ever removed from a folder given by the user.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep me").unwrap();
    std::fs::write(mine.join("manifest.json"), b"not a manifest").unwrap();
    let h = generate(&model, Some(&mine), &first, &[]);
    assert!(h.stderr.contains("manifest is unreadable"), "{}", h.stderr);
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"keep me");
}

#[test]
fn a_quantized_kv_cache_is_saved_and_restored_alike() {
    let _g = common::mlx_lock();
    let tmp = tempfile::tempdir().unwrap();
    let model = common::smollm2_gguf();
    let dir = tmp.path().join("q8");
    let first = passage(12);
    let follow = format!("{first}\nWhich island is named first?");
    let env = [("--kv-bits", "8")];
    let cold = generate(&model, None, &follow, &env);
    generate(&model, Some(&dir), &first, &env);
    let b = generate(&model, Some(&dir), &follow, &env);
    assert!(n(&b.stats, "prompt_file_tokens") > 100, "{}", b.stats);
    assert_eq!(b.text, cold.text);
    // Saved at 8 bits, read with the model's own type: refused, not mixed.
    let c = generate(&model, Some(&dir), &follow, &[]);
    assert!(c.stderr.contains("KV cache width"), "{}", c.stderr);
    assert_eq!(n(&c.stats, "reused_tokens"), 0);
}

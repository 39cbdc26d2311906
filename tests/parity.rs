//! Hearth vs Python mlx-lm on the same libmlx and the same weights: the first 32
//! greedy token ids must match exactly.

mod common;

use hearth::engine::{GenerateParams, SamplingParams, Session};
use hearth::models::load::{self, Precision};
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn hearth_ids(path: &std::path::Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let loaded = load::load(path, Precision::Float32).unwrap();
    let mut s = Session::new(loaded, Some(1024));
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: n, stop: vec![], ignore_eos: true, constraint: None, logprobs: None, ..Default::default() };
    s.generate(prompt, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    s.last_tokens.clone()
}

#[test]
fn first_32_greedy_tokens_match_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("smollm2-f32");
    hearth::models::load::convert::convert(&common::smollm2_gguf(), &dir, Precision::Float32).unwrap();

    let loaded = load::load(&dir, Precision::Float32).unwrap();
    let s = Session::new(loaded, Some(1024));
    let (prompt, _) = s
        .prompt_for_messages(&[hearth::chat::Message::user("Explain in two sentences why the sky is blue.")], 32)
        .unwrap();
    drop(s);

    let ours = hearth_ids(&dir, &prompt, 32);
    let from_gguf = hearth_ids(&common::smollm2_gguf(), &prompt, 32);
    assert_eq!(ours, from_gguf, "the converted directory and the GGUF must agree");

    let reference = common::mlx_lm_greedy(&dir, 32, &prompt);
    eprintln!("hearth: {ours:?}\nmlx-lm: {reference:?}");
    assert_eq!(ours.len(), 32);
    assert_eq!(ours, reference);
}

/// `hearth generate --temperature 0` with no other flag answers exactly as
/// mlx-lm's greedy decoding does: the defaults add nothing (no repetition
/// penalty) to plain argmax.
#[test]
fn cli_greedy_defaults_match_mlx_lm_on_three_questions() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("smollm2-f32");
    let s = {
        let _g = common::mlx_lock();
        hearth::models::load::convert::convert(&common::smollm2_gguf(), &dir, Precision::Float32).unwrap();
        Session::new(load::load(&dir, Precision::Float32).unwrap(), Some(1024))
    };
    for q in ["What is 2+2?", "What is the capital of France?", "Name three primary colors."] {
        let (prompt, _) = s.prompt_for_messages(&[hearth::chat::Message::user(q)], 32).unwrap();
        let _g = common::mlx_lock();
        let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(["generate", "--temperature", "0", "--max-tokens", "32", "--model"])
            .arg(&dir)
            .arg(q)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ours = String::from_utf8(out.stdout).unwrap();
        let ours = ours.strip_suffix('\n').unwrap_or(&ours);
        let mut ids = common::mlx_lm_greedy(&dir, 32, &prompt);
        let tok = &s.loaded.tokenizer;
        if let Some(end) = ids.iter().position(|i| tok.eos_ids.contains(i)) {
            ids.truncate(end);
        }
        assert_eq!(ours, tok.decode(&ids), "{q}");
        eprintln!("{q} -> {ours:?}");
    }
}

/// `hearth eval perplexity` over Debian's GPL-3 text gives the perplexity
/// Python mlx-lm's own `eval_ppl` computes over the same 512-token windows
/// (within 0.5 %), and through 8- and 4-bit KV caches what mlx-lm's
/// QuantizedKVCache gives; absurd windows, widths and missing files are
/// refused plainly.
#[test]
fn perplexity_matches_mlx_lm_over_the_same_windows() {
    let text_file = std::path::Path::new("/usr/share/common-licenses/GPL-3");
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("smollm2-f32");
    let tok = {
        let _g = common::mlx_lock();
        hearth::models::load::convert::convert(&common::smollm2_gguf(), &dir, Precision::Float32).unwrap();
        load::read_chat_parts(&dir).unwrap().0
    };
    let eval = |args: &[&str]| {
        let _g = common::mlx_lock();
        Command::new(env!("CARGO_BIN_EXE_hearth")).args(["eval", "perplexity", "--precision", "f32", "--model"]).arg(&dir).args(args).output().unwrap()
    };
    let out = eval(&[text_file.to_str().unwrap(), "--window", "512", "--windows", "4", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((ours["tokens"].as_u64(), ours["windows"].as_u64()), (Some(4 * 511), Some(4)));

    let ids = tok.encode(&std::fs::read_to_string(text_file).unwrap()).unwrap();
    let reference = |bits: &str, windows: usize| {
        let ids_file = t.path().join(format!("ids-{windows}.json"));
        std::fs::write(&ids_file, serde_json::to_string(&ids[..windows * 512]).unwrap()).unwrap();
        let _g = common::mlx_lock();
        let r = Command::new(common::python()).arg(common::root().join("tests/reference/mlx_lm_perplexity.py")).arg(&dir).arg("512").arg(&ids_file).arg(bits).output().unwrap();
        assert!(r.status.success(), "mlx-lm: {}", String::from_utf8_lossy(&r.stderr));
        serde_json::from_slice::<serde_json::Value>(&r.stdout).unwrap()
    };
    let theirs = reference("0", 4);
    let (a, b) = (ours["perplexity"].as_f64().unwrap(), theirs["perplexity"].as_f64().unwrap());
    eprintln!("GPL-3, 4 x 512 tokens: hearth {a:.4} ± {:.4}, mlx-lm {b:.4} ± {:.4}", ours["standard_error"], theirs["standard_error"]);
    assert!(a > 1.0 && (a - b).abs() <= 0.005 * b, "hearth {a} vs mlx-lm {b}");

    // Through a quantized KV cache (two windows: MLX's quantized matmuls are
    // slow on CPUs): what mlx-lm's QuantizedKVCache gives on the same
    // windows; 8 bits cost at most 1 %.
    let out = eval(&[text_file.to_str().unwrap(), "--windows", "2", "--json"]);
    let a = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["perplexity"].as_f64().unwrap();
    for bits in ["8", "4"] {
        let out = eval(&[text_file.to_str().unwrap(), "--windows", "2", "--json", "--kv-bits", bits]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let q = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["perplexity"].as_f64().unwrap();
        let r = reference(bits, 2)["perplexity"].as_f64().unwrap();
        eprintln!("{bits}-bit KV cache: hearth {q:.4} ({:+.2} % over the full cache), mlx-lm {r:.4}", (q / a - 1.0) * 100.0);
        assert!((q - r).abs() <= 0.005 * r, "{bits}-bit KV cache: hearth {q} vs mlx-lm {r}");
        if bits == "8" {
            assert!(q < 1.01 * a, "8-bit KV cache: {q} against {a}");
        }
    }
    for (args, says) in [(vec![text_file.to_str().unwrap(), "--window", "1"], "at least 2 tokens"), (vec!["/nonexistent/text.txt"], "does not exist"), (vec![text_file.to_str().unwrap(), "--kv-bits", "3"], "8 or 4")] {
        let out = eval(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
    }
}

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
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: n, stop: vec![], ignore_eos: true };
    s.generate(prompt, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    s.last_tokens.clone()
}

#[test]
fn first_32_greedy_tokens_match_mlx_lm() {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("smollm2-f32");
    hearth::models::convert::convert(&common::smollm2_gguf(), &dir, Precision::Float32).unwrap();

    let loaded = load::load(&dir, Precision::Float32).unwrap();
    let s = Session::new(loaded, Some(1024));
    let (prompt, _) = s
        .prompt_for_messages(&[hearth::chat::Message::user("Explain in two sentences why the sky is blue.")], 32)
        .unwrap();
    drop(s);

    let ours = hearth_ids(&dir, &prompt, 32);
    let from_gguf = hearth_ids(&common::smollm2_gguf(), &prompt, 32);
    assert_eq!(ours, from_gguf, "the converted directory and the GGUF must agree");

    let out = Command::new(common::python())
        .arg(common::root().join("tests/reference/mlx_lm_greedy.py"))
        .arg(&dir)
        .arg("32")
        .args(prompt.iter().map(|t| t.to_string()))
        .output()
        .expect("running Python mlx-lm (scripts/setup.sh installs it)");
    assert!(out.status.success(), "mlx-lm failed: {}", String::from_utf8_lossy(&out.stderr));
    let reference: Vec<u32> = serde_json::from_slice(&out.stdout).expect("mlx-lm printed token ids");
    eprintln!("hearth: {ours:?}\nmlx-lm: {reference:?}");
    assert_eq!(ours.len(), 32);
    assert_eq!(ours, reference);
}

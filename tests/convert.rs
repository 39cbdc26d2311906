//! `hearth convert` output (mlx-community layout, re-quantized with --q-bits)
//! loads in Python mlx-lm and gives the same greedy tokens as Hearth, for
//! SmolLM2 (GGUF Q4_1) and Gemma 3 270M (GGUF Q4_K_M).

mod common;

use hearth::models::load::convert::{convert_with, Quantize};
use hearth::engine::{GenerateParams, SamplingParams, Session};
use hearth::models::load::{self, Precision};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

fn hearth_ids(dir: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    // Native: the same quantized matmuls mlx-lm runs.
    let loaded = load::load(dir, Precision::Native).unwrap();
    let mut s = Session::new(loaded, Some(1024));
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: n, stop: vec![], ignore_eos: true, constraint: None, logprobs: None, ..Default::default() };
    s.generate(prompt, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    s.last_tokens.clone()
}

fn mlx_lm_ids(dir: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let out = Command::new(common::python())
        .arg(common::root().join("tests/reference/mlx_lm_greedy.py"))
        .arg(dir)
        .arg(n.to_string())
        .args(prompt.iter().map(|t| t.to_string()))
        .output()
        .unwrap();
    assert!(out.status.success(), "mlx-lm could not run the converted model: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn check(src: &Path, q: Quantize, prompt: &str, n: usize) {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("out");
    let report = convert_with(src, &dir, Precision::Auto, Some(q)).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["quantization"]["bits"], q.bits);
    assert_eq!(cfg["quantization"]["group_size"], q.group_size);
    let tok = hearth::chat::tokenizer::TextTokenizer::from_dir(&dir).unwrap().0;
    let ids = tok.encode_prompt(prompt).unwrap();
    let ours = hearth_ids(&dir, &ids, n);
    let theirs = mlx_lm_ids(&dir, &ids, n);
    eprintln!("{} ({} tensors, {:.0} MB): hearth {ours:?}\n  mlx-lm {theirs:?}\n  text {:?}", src.display(), report.tensors, report.bytes as f64 / 1e6, tok.decode(&ours));
    assert_eq!(ours.len(), n);
    assert_eq!(ours, theirs);
}

#[test]
fn smollm2_converted_to_8bit_matches_mlx_lm() {
    check(&common::smollm2_gguf(), Quantize::new(8, 64).unwrap(), "The capital of France is", 16);
}

#[test]
fn gemma3_converted_to_4bit_matches_mlx_lm() {
    let gemma = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    check(&gemma, Quantize::new(4, 64).unwrap(), "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of France?\nA:", 8);
}

#[test]
fn bad_quantization_settings_are_refused() {
    assert!(Quantize::new(3, 64).is_err());
    assert!(Quantize::new(4, 48).is_err());
}

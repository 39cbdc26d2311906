//! ggml block formats decoded in Rust match gguf-py's reference dequantizer,
//! on random blocks of every type and on the real Gemma 3 Q4_K_M file.

mod common;

use hearth::formats::dequant::dequantize;
use hearth::formats::gguf_header::{ggml_type_info, read_tensor_bytes, GgufHeader};
use std::process::Command;

fn reference(name: &str, raw: &[u8]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in.bin"), dir.path().join("out.f32"));
    std::fs::write(&src, raw).unwrap();
    let script = common::root().join("tests/reference/gguf_dequant.py");
    let out = Command::new(common::python()).arg(script).arg(name).arg(&src).arg(&dst).output().unwrap();
    assert!(out.status.success(), "gguf-py failed: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(&dst).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn compare(name: &str, ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "{name}: length");
    let mut max = 0f32;
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        if !a.is_finite() || !b.is_finite() {
            assert_eq!(a.is_finite(), b.is_finite(), "{name}[{i}]: {a} vs {b}");
            continue;
        }
        let d = (a - b).abs() / b.abs().max(1.0);
        max = max.max(d);
    }
    max
}

#[test]
fn every_block_format_matches_gguf_py_on_random_blocks() {
    // A fixed xorshift stream, so a failure reproduces.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for ty in [2u32, 3, 6, 7, 8, 10, 11, 12, 13, 14] {
        let (name, block, bytes) = ggml_type_info(ty).unwrap();
        let blocks = 64;
        let raw: Vec<u8> = (0..blocks * bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let ours = dequantize(ty, &raw, (blocks * block) as usize).unwrap();
        let theirs = reference(name, &raw);
        let diff = compare(name, &ours, &theirs);
        eprintln!("{name}: max relative difference {diff:e} over {} values", ours.len());
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn gemma_q4_k_m_tensors_match_gguf_py() {
    let path = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    let h = GgufHeader::read(&path).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for t in &h.tensors {
        let name = t.type_name();
        if t.n_elements() > 2_000_000 || !seen.insert(name.clone()) {
            continue;
        }
        let raw = read_tensor_bytes(&h, t).unwrap();
        let ours = dequantize(t.ggml_type, &raw, t.n_elements() as usize).unwrap();
        let diff = compare(&t.name, &ours, &reference(&name, &raw));
        eprintln!("{} ({name}): max relative difference {diff:e}", t.name);
        assert!(diff < 1e-6);
    }
    for ty in ["F32", "Q5_0", "Q4_K", "Q6_K", "Q8_0"] {
        assert!(seen.contains(ty), "{ty} not covered: {seen:?}");
    }
}

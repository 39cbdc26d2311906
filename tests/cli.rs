//! The `hearth` binary end to end.

mod common;

use std::process::Command;

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

#[test]
fn generate_answers_paris_greedily() {
    let _g = common::mlx_lock();
    let out = hearth()
        .args(["generate", "--temperature", "0", "--max-tokens", "48", "--stats", "--model"])
        .arg(common::smollm2_gguf())
        .arg("What is the capital of France?")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Paris"), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stats_line = stderr.lines().find(|l| l.starts_with('{')).expect("stats JSON on stderr");
    let v: serde_json::Value = serde_json::from_str(stats_line).unwrap();
    assert!(v["prompt_tokens"].as_u64().unwrap() > 5);
    assert_eq!(v["finish_reason"], "eos");
}

#[test]
fn bad_model_path_is_an_error_with_nonzero_exit() {
    let out = hearth().args(["generate", "--model", "/no/such/model.gguf", "hi"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error:") && err.contains("/no/such/model.gguf"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bench_prints_one_json_line_per_case() {
    let _g = common::mlx_lock();
    let out = hearth()
        .args(["bench", "--prompt-tokens", "16,32", "--gen-tokens", "8", "--reps", "1", "--model"])
        .arg(common::smollm2_gguf())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (l, n) in lines.iter().zip([16, 32]) {
        assert_eq!(l["prompt_tokens"], n);
        assert!(l["decode_tps"].as_f64().unwrap() > 0.0);
        assert!(l["ttft_s"].as_f64().unwrap() > 0.0);
        assert!(l["peak_memory_mb"].as_f64().unwrap() > 100.0);
    }
}

#[test]
fn import_validates_and_installs() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("bad.gguf");
    std::fs::write(&bad, b"garbage").unwrap();
    let out = hearth().env("HEARTH_HOME", home.path()).args(["models", "import"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(!home.path().join("models/bad.gguf").exists(), "a bad file is never installed");
    let out = hearth()
        .env("HEARTH_HOME", home.path())
        .args(["models", "import"])
        .arg(common::smollm2_gguf())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = hearth().env("HEARTH_HOME", home.path()).args(["models", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("SmolLM2-135M-Instruct.Q4_1"));
}

//! gpt-oss's harmony format: its real chat template (llama.cpp's copy of
//! OpenAI's, fetched by scripts/setup.sh) renders a multi-turn history with the
//! reasoning of earlier turns dropped byte for byte as Python's jinja2 renders
//! it, with the reasoning effort the user chose.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn template() -> PathBuf {
    let p = common::root().join(".deps/templates/gpt-oss.jinja");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

/// The conversation as Hearth stores it: reasoning inline in `<think>` tags.
const HEARTH_MESSAGES: &str = r#"[
  {"role": "system", "content": "Answer in one sentence."},
  {"role": "user", "content": "What is 2+2?"},
  {"role": "assistant", "content": "<think>Simple arithmetic: 2+2=4.</think>2+2 is 4."},
  {"role": "user", "content": "And doubled?"}
]"#;

/// The same conversation as the template documents it: reasoning in `thinking`.
const REFERENCE_MESSAGES: &str = r#"[
  {"role": "system", "content": "Answer in one sentence."},
  {"role": "user", "content": "What is 2+2?"},
  {"role": "assistant", "content": "2+2 is 4.", "thinking": "Simple arithmetic: 2+2=4."},
  {"role": "user", "content": "And doubled?"}
]"#;

fn python_render(effort: Option<&str>) -> String {
    // As transformers sets jinja2 up for chat templates.
    let script = r#"
import sys, json, datetime, jinja2
def raise_exception(m):
    raise jinja2.exceptions.TemplateError(m)
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
env.globals["raise_exception"] = raise_exception
t = env.from_string(open(sys.argv[1]).read())
kw = {"reasoning_effort": sys.argv[3]} if len(sys.argv) > 3 else {}
sys.stdout.write(t.render(messages=json.loads(sys.argv[2]), add_generation_prompt=True, **kw))
"#;
    let mut cmd = Command::new(common::python());
    cmd.args(["-c", script]).arg(template()).arg(REFERENCE_MESSAGES).env("TZ", "UTC");
    if let Some(e) = effort {
        cmd.arg(e);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn hearth_render(effort: Option<&str>) -> String {
    let t = tempfile::tempdir().unwrap();
    let messages = t.path().join("m.json");
    std::fs::write(&messages, HEARTH_MESSAGES).unwrap();
    let model = common::smollm2_gguf();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(["render", "--model", model.to_str().unwrap(), "--template"])
        .arg(template())
        .arg("--messages")
        .arg(&messages)
        .env("TZ", "UTC");
    if let Some(e) = effort {
        cmd.args(["--reasoning-effort", e]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_gpt_oss_template_renders_history_as_jinja2_does_with_reasoning_dropped() {
    for effort in [Some("high"), Some("low"), None] {
        let (mut ours, mut theirs) = (hearth_render(effort), python_render(effort));
        if ours != theirs {
            // The date may have turned between the two renders: once more.
            (ours, theirs) = (hearth_render(effort), python_render(effort));
        }
        assert_eq!(ours, theirs, "reasoning effort {effort:?}");
        let want = format!("Reasoning: {}", effort.unwrap_or("medium"));
        assert!(ours.contains(&want), "{ours}");
        // Earlier reasoning never goes back to the model; the answer does, on
        // the final channel, and the prompt ends where the model's reply starts.
        assert!(!ours.contains("Simple arithmetic"), "{ours}");
        assert!(ours.contains("<|start|>assistant<|channel|>final<|message|>2+2 is 4.<|end|>"), "{ours}");
        assert!(ours.ends_with("<|start|>user<|message|>And doubled?<|end|><|start|>assistant"), "{ours}");
    }
}

#[test]
fn a_bad_reasoning_effort_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let messages = t.path().join("m.json");
    std::fs::write(&messages, HEARTH_MESSAGES).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["render", "--model", common::smollm2_gguf().to_str().unwrap(), "--template"])
        .arg(template())
        .arg("--messages")
        .arg(&messages)
        .args(["--reasoning-effort", "extreme"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("extreme") && err.contains("low, medium or high"), "{err}");
}

//! Thinking on/off: the real Qwen3.5 and SmolLM3 chat templates (llama.cpp's
//! copies, fetched by scripts/setup.sh) render `enable_thinking` on, off and
//! unset byte for byte as Python's jinja2 renders them, through `hearth render
//! --thinking`.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn template(name: &str) -> PathBuf {
    let p = common::root().join(format!(".deps/templates/{name}.jinja"));
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

/// A conversation as Hearth stores it: earlier reasoning inline in `<think>`.
const MESSAGES: &str = r#"[
  {"role": "system", "content": "Answer in one sentence."},
  {"role": "user", "content": "What is 2+2?"},
  {"role": "assistant", "content": "<think>\nSimple arithmetic: 2+2=4.\n</think>\n\n2+2 is 4."},
  {"role": "user", "content": "And doubled?"}
]"#;

fn python_render(name: &str, thinking: Option<bool>) -> String {
    // As transformers sets jinja2 up for chat templates.
    let script = r#"
import sys, json, datetime, jinja2
def raise_exception(m):
    raise jinja2.exceptions.TemplateError(m)
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
env.globals["raise_exception"] = raise_exception
t = env.from_string(open(sys.argv[1]).read())
kw = {"enable_thinking": sys.argv[3] == "on"} if len(sys.argv) > 3 else {}
sys.stdout.write(t.render(messages=json.loads(sys.argv[2]), add_generation_prompt=True, **kw))
"#;
    let mut cmd = Command::new(common::python());
    cmd.args(["-c", script]).arg(template(name)).arg(MESSAGES).env("TZ", "UTC");
    if let Some(on) = thinking {
        cmd.arg(if on { "on" } else { "off" });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn hearth_render(name: &str, thinking: Option<bool>) -> String {
    let t = tempfile::tempdir().unwrap();
    let messages = t.path().join("m.json");
    std::fs::write(&messages, MESSAGES).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(["render", "--model", common::smollm2_gguf().to_str().unwrap(), "--template"])
        .arg(template(name))
        .arg("--messages")
        .arg(&messages)
        .env("TZ", "UTC");
    if let Some(on) = thinking {
        cmd.args(["--thinking", if on { "on" } else { "off" }]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn same_as_jinja2(name: &str, thinking: Option<bool>) -> String {
    let (mut ours, mut theirs) = (hearth_render(name, thinking), python_render(name, thinking));
    if ours != theirs {
        // A template that prints today's date may have seen midnight pass.
        (ours, theirs) = (hearth_render(name, thinking), python_render(name, thinking));
    }
    assert_eq!(ours, theirs, "{name}, thinking {thinking:?}");
    ours
}

#[test]
fn qwen3_5_template_renders_thinking_on_and_off_as_jinja2_does() {
    let on = same_as_jinja2("qwen3.5", Some(true));
    let off = same_as_jinja2("qwen3.5", Some(false));
    let default = same_as_jinja2("qwen3.5", None);
    // Off pre-fills an empty reasoning block so the model answers at once.
    assert!(off.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"), "{off}");
    assert!(!on.ends_with("</think>\n\n"), "{on}");
    assert_eq!(default, on, "Qwen3.5 thinks unless told not to");
    // Earlier reasoning is not sent back.
    assert!(!on.contains("Simple arithmetic"), "{on}");
}

#[test]
fn smollm3_template_renders_thinking_on_and_off_as_jinja2_does() {
    let on = same_as_jinja2("smollm3", Some(true));
    let off = same_as_jinja2("smollm3", Some(false));
    same_as_jinja2("smollm3", None);
    assert_ne!(on, off);
    assert!(on.contains("/think") && off.contains("/no_think"), "{on}\n---\n{off}");
}

#[test]
fn a_bad_thinking_value_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let messages = t.path().join("m.json");
    std::fs::write(&messages, MESSAGES).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["render", "--model", common::smollm2_gguf().to_str().unwrap(), "--template"])
        .arg(template("qwen3.5"))
        .arg("--messages")
        .arg(&messages)
        .args(["--thinking", "maybe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("thinking must be on or off"), "{err}");
}

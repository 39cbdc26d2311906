//! Thinking on/off: the real Qwen3.5 and SmolLM3 chat templates (llama.cpp's
//! copies, fetched by scripts/setup.sh) render `enable_thinking` on, off and
//! unset byte for byte as Python's jinja2 renders them, through `hearth render
//! --thinking`.

mod common;


/// A conversation as Hearth stores it: earlier reasoning inline in `<think>`.
const MESSAGES: &str = r#"[
  {"role": "system", "content": "Answer in one sentence."},
  {"role": "user", "content": "What is 2+2?"},
  {"role": "assistant", "content": "<think>\nSimple arithmetic: 2+2=4.\n</think>\n\n2+2 is 4."},
  {"role": "user", "content": "And doubled?"}
]"#;

fn python_render(name: &str, thinking: Option<bool>) -> String {
    let vars = match thinking {
        Some(on) => serde_json::json!({"enable_thinking": on}),
        None => serde_json::json!({}),
    };
    common::jinja2_render(&common::template(name), MESSAGES, &vars)
}

fn hearth_render(name: &str, thinking: Option<bool>) -> String {
    let flags: Vec<&str> = thinking.map(|on| vec!["--thinking", if on { "on" } else { "off" }]).unwrap_or_default();
    common::hearth_render(&common::template(name), MESSAGES, &flags).unwrap()
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
    let err = common::hearth_render(&common::template("qwen3.5"), MESSAGES, &["--thinking", "maybe"]).unwrap_err();
    assert!(err.contains("thinking must be on or off"), "{err}");
}

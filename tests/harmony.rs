//! gpt-oss's harmony format: its real chat template (llama.cpp's copy of
//! OpenAI's, fetched by scripts/setup.sh) renders a multi-turn history with the
//! reasoning of earlier turns dropped byte for byte as Python's jinja2 renders
//! it, with the reasoning effort the user chose.

mod common;


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
    let vars = match effort {
        Some(e) => serde_json::json!({"reasoning_effort": e}),
        None => serde_json::json!({}),
    };
    common::jinja2_render(&common::template("gpt-oss"), REFERENCE_MESSAGES, &vars)
}

fn hearth_render(effort: Option<&str>) -> String {
    let flags: Vec<&str> = effort.map(|e| vec!["--reasoning-effort", e]).unwrap_or_default();
    common::hearth_render(&common::template("gpt-oss"), HEARTH_MESSAGES, &flags).unwrap()
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
    let err = common::hearth_render(&common::template("gpt-oss"), HEARTH_MESSAGES, &["--reasoning-effort", "extreme"]).unwrap_err();
    assert!(err.contains("extreme") && err.contains("low, medium or high"), "{err}");
}

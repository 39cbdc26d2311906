//! Tools in chat templates: a conversation with tool definitions, an
//! assistant's tool call and the tool's result renders through `hearth render`
//! byte for byte as transformers' jinja2 setup renders it, for templates that
//! take tools (Qwen3.5's XML calls, gpt-oss's harmony namespace); a template
//! that takes none (SmolLM2's, Gemma's) gets the tools described in the
//! system message and the earlier call and result written as text.

mod common;

/// OpenAI's shapes: tools as `{"type": "function", "function": …}`, the call
/// with JSON-text arguments (as the OpenAI SDK sends them back), the result
/// as a `tool` message naming the call. Key order is not alphabetical, the
/// description has markup and non-ASCII text: `tojson` must keep both as
/// Python's json.dumps does.
const CONVERSATION: &str = r#"{
 "tools": [
  {"type": "function", "function": {"name": "get_weather", "description": "Forecast for a <city> — in °C",
   "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
   "days": {"type": "integer", "minimum": 1}, "units": {"type": "string", "enum": ["metric", "imperial"]}},
   "required": ["city"]}}},
  {"type": "function", "function": {"name": "local_time", "description": "The time in a time zone",
   "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
 ],
 "messages": [
  {"role": "system", "content": "You are terse."},
  {"role": "user", "content": "Weather in Paris for 2 days?"},
  {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function",
    "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"days\": 2, \"extra\": {\"b\": 1, \"a\": [true, null]}}"}}]},
  {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
  {"role": "assistant", "content": "21 °C and clear."},
  {"role": "user", "content": "And the time there?"}
 ]
}"#;

/// The conversation as transformers hands it to the template: arguments parsed
/// to an object (Hearth keeps them as objects too).
fn python_messages() -> (String, serde_json::Value) {
    let mut v: serde_json::Value = serde_json::from_str(CONVERSATION).unwrap();
    let args = &mut v["messages"][2]["tool_calls"][0]["function"]["arguments"];
    *args = serde_json::from_str(args.as_str().unwrap()).unwrap();
    (v["messages"].to_string(), serde_json::json!({"tools": v["tools"]}))
}

fn same_as_jinja2(name: &str) -> String {
    let template = common::template(name);
    let (messages, vars) = python_messages();
    let render = || {
        let ours = common::hearth_render(&template, CONVERSATION, &[]).unwrap();
        (ours, common::jinja2_render(&template, &messages, &vars))
    };
    let (mut ours, mut theirs) = render();
    if ours != theirs {
        // A template that prints today's date may have seen midnight pass.
        (ours, theirs) = render();
    }
    assert_eq!(ours, theirs, "{name}");
    ours
}

#[test]
fn qwen3_5_renders_tools_calls_and_results_as_transformers_does() {
    let text = same_as_jinja2("qwen3.5");
    // The tools as json.dumps writes them, in their own key order, unescaped.
    assert!(text.contains(r#"{"type": "function", "function": {"name": "get_weather", "description": "Forecast for a <city> — in °C""#), "{text}");
    // The earlier call in Qwen's XML form, nested arguments as JSON.
    assert!(text.contains("<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n<parameter=extra>\n{\"b\": 1, \"a\": [true, null]}\n</parameter>"), "{text}");
    assert!(text.contains("<tool_response>\n{\"temp\": 21, \"sky\": \"clear\"}\n</tool_response>"), "{text}");
}

#[test]
fn gpt_oss_renders_the_functions_namespace_and_calls_as_transformers_does() {
    let text = same_as_jinja2("gpt-oss");
    assert!(text.contains("namespace functions {"), "{text}");
    assert!(text.contains("type get_weather = (_: {"), "{text}");
    assert!(text.contains("to=functions.get_weather"), "{text}");
    assert!(text.contains("<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>"), "{text}");
}

#[test]
fn a_template_without_tools_gets_them_described_and_the_history_written_out() {
    let text = common::hearth_render_smollm2(CONVERSATION, &[]).unwrap();
    assert!(text.starts_with("<|im_start|>system\nYou are terse.\n\nYou can call these functions"), "{text}");
    assert!(text.contains(r#"{"type":"function","function":{"name":"local_time""#), "{text}");
    // The call the assistant made, in the form the model is asked to write.
    assert!(
        text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\",\"days\":2,\"extra\":{\"b\":1,\"a\":[true,null]}}}\n</tool_call><|im_end|>"),
        "{text}"
    );
    // SmolLM2's ChatML template prints any role: the result stays a tool turn.
    assert!(text.contains("<|im_start|>tool\n{\"temp\": 21, \"sky\": \"clear\"}<|im_end|>"), "{text}");
    // A template that prints only system, user and assistant turns would drop
    // it: there the result becomes a user turn in tags.
    let dir = tempfile::tempdir().unwrap();
    let three_roles = dir.path().join("t.jinja");
    std::fs::write(
        &three_roles,
        "{% for m in messages %}{% if m.role == 'user' %}[U]{{ m.content }}{% elif m.role == 'assistant' %}[A]{{ m.content }}\
         {% elif m.role == 'system' %}[S]{{ m.content }}{% endif %}{% endfor %}[A]",
    )
    .unwrap();
    let text = common::hearth_render(&three_roles, CONVERSATION, &[]).unwrap();
    assert!(text.contains("[U]<tool_response>\n{\"temp\": 21, \"sky\": \"clear\"}\n</tool_response>[A]21 °C and clear."), "{text}");
    // A tool call whose arguments are not JSON is refused, naming the call.
    let bad = CONVERSATION.replace(r#""{\"city\": \"Paris\", \"days\": 2, \"extra\": {\"b\": 1, \"a\": [true, null]}}""#, r#""{city: Paris""#);
    let err = common::hearth_render_smollm2(&bad, &[]).unwrap_err();
    assert!(err.contains("arguments of the call to 'get_weather' are not a JSON object"), "{err}");
}

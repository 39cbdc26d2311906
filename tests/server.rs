//! `hearth serve` on the real SmolLM2 model, driven by the official `openai`
//! Python SDK: models, a completion that answers Paris, the same streamed with
//! usage last, typed errors for unknown models and unsupported fields, a client
//! that disconnects mid-stream (its generation stops; the next request is
//! answered at once), the Host check against DNS rebinding, and API keys.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::{serve_model, Serve};

fn serve(extra_env: &[(&str, &str)], args: &[&str]) -> Result<Serve, String> {
    serve_model(&common::smollm2_gguf(), extra_env, args)
}

/// `hearth serve` on SmolLM2, a Python snippet run against it with the
/// official SDK, and the JSON object the snippet prints last.
fn sdk_json(body: &str) -> serde_json::Value {
    let s = serve(&[], &[]).unwrap();
    let out = python(s.port, "unused", body);
    serde_json::from_str(out.trim().lines().last().unwrap()).unwrap()
}

/// Runs a Python snippet with `client` (the official SDK) pointed at the server.
fn python(port: u16, key: &str, body: &str) -> String {
    let script = format!(
        "import json, time, openai\nclient = openai.OpenAI(base_url='http://127.0.0.1:{port}/v1', api_key='{key}', max_retries=0, timeout=120)\n{body}"
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_openai_sdk_lists_models_chats_and_streams_with_usage() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
models = [m.id for m in client.models.list()]
print(json.dumps({"models": models}))
r = client.chat.completions.create(model=models[0], temperature=0, max_tokens=48,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
print(json.dumps({"answer": r.choices[0].message.content, "finish": r.choices[0].finish_reason,
                  "usage": [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
                  "cached": r.usage.prompt_tokens_details.cached_tokens}))
chunks = list(client.chat.completions.create(model=models[0], temperature=0, max_tokens=48, stream=True,
    stream_options={"include_usage": True}, messages=[{"role": "user", "content": "What is the capital of France?"}]))
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
print(json.dumps({"streamed": text, "finishes": finishes, "last_usage": chunks[-1].usage.completion_tokens if chunks[-1].usage else None,
                  "cached": chunks[-1].usage.prompt_tokens_details.cached_tokens,
                  "last_has_choices": bool(chunks[-1].choices)}))
c = client.completions.create(model=models[0], prompt="The capital of France is", max_tokens=8, temperature=0)
cs = "".join(x.choices[0].text for x in client.completions.create(model=models[0], prompt="The capital of France is",
                                                                   max_tokens=8, temperature=0, stream=True))
print(json.dumps({"completion": c.choices[0].text, "finish": c.choices[0].finish_reason, "prompt": c.usage.prompt_tokens, "streamed": cs}))
"#,
    );
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["models"][0], "SmolLM2-135M-Instruct.Q4_1", "{out}");
    let answer = lines[1]["answer"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(lines[1]["finish"], "stop");
    let u = &lines[1]["usage"];
    assert!(u[0].as_u64().unwrap() > 5 && u[1].as_u64().unwrap() > 0);
    assert_eq!(u[2].as_u64(), Some(u[0].as_u64().unwrap() + u[1].as_u64().unwrap()));
    // Greedy: the stream says exactly what the whole reply said.
    assert_eq!(lines[2]["streamed"], lines[1]["answer"], "{out}");
    assert_eq!(lines[2]["finishes"], serde_json::json!(["stop"]));
    assert_eq!(lines[2]["last_usage"], u[1], "usage comes in the last chunk");
    // The same prompt again: all of it but the last token came from the prefix cache.
    assert_eq!((lines[1]["cached"].as_u64(), lines[2]["cached"].as_u64()), (Some(0), Some(u[0].as_u64().unwrap() - 1)), "{out}");
    assert_eq!(lines[2]["last_has_choices"], false);
    // /v1/completions: the prompt as is, no template (5 tokens, not a chat turn).
    assert!(lines[3]["completion"].as_str().unwrap().contains("Paris"), "{out}");
    assert_eq!(lines[3]["finish"], "length");
    assert_eq!(lines[3]["prompt"], 5);
    assert_eq!(lines[3]["streamed"], lines[3]["completion"]);
}

#[test]
fn unknown_models_and_unsupported_fields_are_typed_errors() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
msgs = [{"role": "user", "content": "Hi"}]
for kw in [dict(model="no-such-model"), dict(model="SmolLM2-135M-Instruct.Q4_1", n=2),
           dict(model="SmolLM2-135M-Instruct.Q4_1", logit_bias={"1": 5}),
           dict(model="SmolLM2-135M-Instruct.Q4_1", temperature=-1),
           dict(model="../../../etc/passwd")]:
    try:
        client.chat.completions.create(messages=msgs, max_tokens=4, **kw)
        print(json.dumps({"status": 200}))
    except openai.APIStatusError as e:
        print(json.dumps({"status": e.status_code, "message": e.body["message"] if isinstance(e.body, dict) else str(e.body)}))
"#,
    );
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["status"], 404, "{out}");
    assert!(lines[0]["message"].as_str().unwrap().contains("SmolLM2-135M-Instruct.Q4_1"), "lists what is installed: {out}");
    assert_eq!(lines[1]["status"], 400);
    assert!(lines[1]["message"].as_str().unwrap().contains("n > 1"));
    assert_eq!(lines[2]["status"], 400);
    assert!(lines[2]["message"].as_str().unwrap().contains("logit_bias"));
    assert_eq!(lines[3]["status"], 400);
    assert!(lines[3]["message"].as_str().unwrap().contains("temperature"));
    assert_eq!(lines[4]["status"], 404, "a path is never a model name: {out}");
}

#[test]
fn a_client_that_leaves_mid_stream_stops_its_generation() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
stream = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=2000, stream=True,
    temperature=1.0, seed=1, messages=[{"role": "user", "content": "Write a very long story about a dragon."}])
got = 0
for c in stream:
    got += 1
    if got == 3:
        break
stream.close()
t0 = time.time()
r = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=16,
    messages=[{"role": "user", "content": "What is the capital of France?"}])
print(json.dumps({"waited": time.time() - t0, "answer": r.choices[0].message.content}))
"#,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // 2000 tokens would take ~20 s here; a cancelled one frees the queue at once.
    assert!(v["waited"].as_f64().unwrap() < 8.0, "{out}");
    assert!(v["answer"].as_str().unwrap().contains("Paris"), "{out}");
}

fn raw(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn rebinding_hosts_oversized_bodies_and_missing_keys_are_refused() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let r = raw(s.port, "GET /v1/models HTTP/1.1\r\nHost: attacker.example:8768\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    // Refusals before any route runs come in each API's own error shape.
    let r = raw(s.port, "POST /v1/messages HTTP/1.1\r\nHost: attacker.example\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 403") && r.contains(r#""type":"error""#) && r.contains("permission_error"), "Anthropic's shape: {r}");
    let r = raw(s.port, "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200") && !r.to_lowercase().contains("access-control-allow-origin"), "{r}");
    // 9 MB of body (the cap is 8 MB): refused with 413 in each API's error
    // shape, read to the end (not into memory) so the client gets the answer
    // rather than a reset connection while it still sends.
    let t0 = Instant::now();
    let out = Command::new(common::python())
        .args(["-c", &format!(
            "import json, urllib.request, urllib.error\n\
             for path in ['/v1/chat/completions', '/v1/messages', '/api/chat']:\n\
             \x20   req = urllib.request.Request('http://127.0.0.1:{}' + path, data=b'a' * (9 << 20), headers={{'Content-Type': 'application/json'}})\n\
             \x20   try:\n        urllib.request.urlopen(req); print(200)\n\
             \x20   except urllib.error.HTTPError as e:\n        print(e.code, json.dumps(json.loads(e.read())))",
            s.port
        )])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(lines.iter().all(|l| l.starts_with("413 ") && l.contains("limit is 8388608")), "{text}");
    assert!(lines[0].contains(r#""type": "invalid_request_error""#), "OpenAI's shape: {text}");
    assert!(lines[1].contains(r#""type": "error""#) && lines[1].contains("request_too_large"), "Anthropic's shape: {text}");
    assert!(lines[2].starts_with(r#"413 {"error": "the request body"#), "Ollama's shape: {text}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    drop(s);

    // Other machines only with a key.
    let e = serve(&[], &["--host", "0.0.0.0"]).err().expect("refused without a key");
    assert!(e.contains("HEARTH_API_KEY"), "{e}");
    let s = serve(&[("HEARTH_API_KEY", "s3cret-key")], &[]).unwrap();
    let r = raw(s.port, "GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    let r = raw(s.port, "GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 401") && r.contains(r#"{"error":"a valid API key is required"}"#), "Ollama's shape: {r}");
    let out = python(s.port, "s3cret-key", "print(len(list(client.models.list())))");
    assert_eq!(out.trim(), "1");
}

#[test]
fn the_ollama_sdk_lists_shows_chats_and_generates() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let script = format!(
        r#"
import json, ollama
c = ollama.Client(host="http://127.0.0.1:{port}")
tags = c.list()
name = tags.models[0].model
print(json.dumps({{"name": name, "format": tags.models[0].details.format, "size": tags.models[0].size}}))
show = c.show(name + ":latest")
print(json.dumps({{"template": "im_start" in (show.template or ""), "arch": show.modelinfo.get("general.architecture")}}))
q = [{{"role": "user", "content": "What is the capital of France?"}}]
r = c.chat(model=name, messages=q, options={{"temperature": 0, "num_predict": 48}}, stream=False)
parts = list(c.chat(model=name, messages=q, options={{"temperature": 0, "num_predict": 48}}, stream=True))
g = c.generate(model=name, prompt="What is the capital of France?", options={{"temperature": 0, "num_predict": 48}})
print(json.dumps({{"chat": r.message.content, "done": r.done_reason, "evals": r.eval_count, "prompt": r.prompt_eval_count,
                  "streamed": "".join(p.message.content for p in parts), "last_done": parts[-1].done,
                  "generate": g.response}}))
try:
    c.chat(model=name, messages=q, options={{"mirostat": 2}})
    print(json.dumps({{"status": 200}}))
except ollama.ResponseError as e:
    print(json.dumps({{"status": e.status_code, "error": e.error}}))
"#,
        port = s.port
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(l[0]["name"], "SmolLM2-135M-Instruct.Q4_1", "{text}");
    assert_eq!(l[0]["format"], "gguf");
    assert!(l[0]["size"].as_u64().is_some_and(|n| n > 50_000_000), "{text}");
    assert_eq!(l[1]["template"], true, "the model's own chat template: {text}");
    assert_eq!(l[1]["arch"], "llama");
    let chat = l[2]["chat"].as_str().unwrap();
    assert!(chat.contains("Paris"), "{text}");
    assert_eq!(l[2]["done"], "stop");
    assert!(l[2]["evals"].as_u64().unwrap() > 0 && l[2]["prompt"].as_u64().unwrap() > 5);
    assert_eq!(l[2]["streamed"], l[2]["chat"], "greedy: the same text streamed");
    assert_eq!(l[2]["last_done"], true);
    assert!(l[2]["generate"].as_str().unwrap().contains("Paris"), "{text}");
    assert_eq!(l[3]["status"], 400);
    assert!(l[3]["error"].as_str().unwrap().contains("mirostat"), "{text}");
}

#[test]
fn the_anthropic_sdk_gets_messages_whole_and_as_the_event_sequence() {
    let _g = common::mlx_lock();
    // With a key: Anthropic's SDK sends it as x-api-key.
    let s = serve(&[("HEARTH_API_KEY", "k-123")], &[]).unwrap();
    let script = format!(
        r#"
import json, anthropic
c = anthropic.Anthropic(base_url="http://127.0.0.1:{port}", api_key="k-123", max_retries=0)
q = [{{"role": "user", "content": "What is the capital of France?"}}]
m = c.messages.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=48, temperature=0, messages=q,
                      system="You are a helpful assistant.")
print(json.dumps({{"text": m.content[-1].text, "stop": m.stop_reason, "in": m.usage.input_tokens, "out": m.usage.output_tokens}}))
events = list(c.messages.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=48, temperature=0, messages=q,
                                system="You are a helpful assistant.", stream=True))
types = [e.type for e in events]
text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
print(json.dumps({{"types": types, "text": text, "start_in": events[0].message.usage.input_tokens,
                  "start_cached": events[0].message.usage.cache_read_input_tokens, "end": events[-2].usage.to_dict()}}))
with c.messages.stream(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=48, temperature=0, messages=q) as st:
    streamed = "".join(st.text_stream)
    final = st.get_final_message()
print(json.dumps({{"helper": streamed, "final": final.content[-1].text, "stop": final.stop_reason}}))
try:
    c.messages.create(model="SmolLM2-135M-Instruct.Q4_1", max_tokens=8, messages=[{{"role": "user", "content": [
        {{"type": "image", "source": {{"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}}}]}}])
    print(json.dumps({{"status": 200}}))
except anthropic.BadRequestError as e:
    print(json.dumps({{"status": e.status_code, "message": e.body["error"]["message"]}}))
try:
    anthropic.Anthropic(base_url="http://127.0.0.1:{port}", api_key="wrong", max_retries=0).messages.create(
        model="SmolLM2-135M-Instruct.Q4_1", max_tokens=8, messages=q)
except anthropic.AuthenticationError as e:
    print(json.dumps({{"status": e.status_code, "body": e.body}}))
# count_tokens: the same request's input tokens, without generating; tools
# rendered into the prompt count too.
# cache_control (top level, on a system block) is accepted: the prefix cache caches every prompt.
counted = c.messages.count_tokens(model="SmolLM2-135M-Instruct.Q4_1", messages=q, extra_body={{"cache_control": {{"type": "ephemeral"}}}},
                                  system=[{{"type": "text", "text": "You are a helpful assistant.", "cache_control": {{"type": "ephemeral"}}}}])
tool = {{"name": "get_weather", "description": "Weather in a city", "input_schema": {{"type": "object", "properties": {{"city": {{"type": "string"}}}}}}}}
with_tools = c.messages.count_tokens(model="SmolLM2-135M-Instruct.Q4_1", messages=q, tools=[tool])
plain = c.messages.count_tokens(model="SmolLM2-135M-Instruct.Q4_1", messages=q)
try:
    c.messages.count_tokens(model="SmolLM2-135M-Instruct.Q4_1", messages=[])
    bad = None
except anthropic.BadRequestError as e:
    bad = [e.status_code, e.body["error"]["type"], e.body["error"]["message"]]
print(json.dumps({{"counted": counted.input_tokens, "with_tools": with_tools.input_tokens, "plain": plain.input_tokens, "bad": bad}}))
"#,
        port = s.port
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(l[0]["text"].as_str().unwrap().contains("Paris"), "{text}");
    assert_eq!(l[0]["stop"], "end_turn");
    assert!(l[0]["in"].as_u64().unwrap() > 5 && l[0]["out"].as_u64().unwrap() > 0);
    let types: Vec<&str> = l[1]["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"message_start"), "{text}");
    assert_eq!(types[1], "content_block_start");
    assert_eq!(&types[types.len() - 3..], &["content_block_stop", "message_delta", "message_stop"]);
    assert!(types[2..types.len() - 3].iter().all(|t| *t == "content_block_delta"), "{types:?}");
    assert_eq!(l[1]["text"], l[0]["text"], "greedy: the same text streamed");
    // The same prompt again: all but its last token came from the prefix cache,
    // reported apart as Anthropic does (message_start and message_delta agree).
    let n = l[0]["in"].as_u64().unwrap();
    assert_eq!((l[1]["start_in"].as_u64(), l[1]["start_cached"].as_u64()), (Some(1), Some(n - 1)), "{text}");
    assert_eq!((&l[1]["end"]["input_tokens"], &l[1]["end"]["cache_read_input_tokens"]), (&l[1]["start_in"], &l[1]["start_cached"]), "{text}");
    assert_eq!(l[2]["final"], l[2]["helper"]);
    assert_eq!(l[2]["stop"], "end_turn");
    assert_eq!(l[3]["status"], 400);
    assert!(l[3]["message"].as_str().unwrap().contains("'image' content blocks are not supported in user turns"), "{text}");
    assert_eq!(l[4]["status"], 401);
    assert_eq!(l[4]["body"]["type"], "error", "a refused key in Anthropic's error shape: {text}");
    assert_eq!(l[4]["body"]["error"]["type"], "authentication_error", "{text}");
    assert_eq!(l[5]["counted"], l[0]["in"], "count_tokens equals the input tokens the reply reported: {text}");
    assert!(l[5]["with_tools"].as_u64().unwrap() > l[5]["plain"].as_u64().unwrap() + 10, "the tools' description is counted: {text}");
    assert_eq!(l[5]["bad"][0], 400, "{text}");
    assert_eq!(l[5]["bad"][1], "invalid_request_error", "{text}");
    assert!(l[5]["bad"][2].as_str().unwrap().contains("messages is empty"), "{text}");
}

#[test]
fn a_broken_installed_model_is_a_clear_500_and_the_server_keeps_serving() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    // An installed "model" whose GGUF header lies about its tensors.
    let models = s.home.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let mut bad = b"GGUF".to_vec();
    bad.extend_from_slice(&3u32.to_le_bytes());
    bad.extend_from_slice(&u64::MAX.to_le_bytes());
    bad.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(models.join("broken.gguf"), bad).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
q = [{"role": "user", "content": "What is the capital of France?"}]
print(json.dumps(sorted(m.id for m in client.models.list())))
try:
    client.chat.completions.create(model="broken", messages=q, max_tokens=4)
    print(json.dumps({"status": 200}))
except openai.APIStatusError as e:
    print(json.dumps({"status": e.status_code, "message": e.body["message"]}))
r = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=16, messages=q)
print(json.dumps({"answer": r.choices[0].message.content}))
"#,
    );
    let l: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(l[0], serde_json::json!(["SmolLM2-135M-Instruct.Q4_1", "broken"]), "{out}");
    assert_eq!(l[1]["status"], 500, "{out}");
    assert!(l[1]["message"].as_str().unwrap().contains("did not load"), "{out}");
    assert!(l[2]["answer"].as_str().unwrap().contains("Paris"), "{out}");
}

#[test]
fn an_idle_model_is_unloaded_and_comes_back_on_the_next_request() {
    let _g = common::mlx_lock();
    let s = serve(&[], &["--idle-unload", "2"]).unwrap();
    let script = format!(
        r#"
import json, time, ollama
c = ollama.Client(host="http://127.0.0.1:{port}")
q = [{{"role": "user", "content": "What is the capital of France?"}}]
before = len(c.ps().models)
c.chat(model="SmolLM2-135M-Instruct.Q4_1", messages=q, options={{"temperature": 0, "num_predict": 8}})
loaded = [m.model for m in c.ps().models]
time.sleep(4.5)
after = len(c.ps().models)
r = c.chat(model="SmolLM2-135M-Instruct.Q4_1", messages=q, options={{"temperature": 0, "num_predict": 16}})
print(json.dumps({{"before": before, "loaded": loaded, "after": after, "again": r.message.content}}))
"#,
        port = s.port
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["before"], 0, "nothing is loaded before the first request: {v}");
    assert_eq!(v["loaded"], serde_json::json!(["SmolLM2-135M-Instruct.Q4_1"]));
    assert_eq!(v["after"], 0, "unloaded after 2 s idle: {v}");
    assert!(v["again"].as_str().unwrap().contains("Paris"), "{v}");
}

/// Thinking on/off per request through all three APIs, on a tiny Qwen3 model
/// that carries the real Qwen3.5 template: off pre-fills the empty reasoning
/// block (11 more prompt tokens with its byte-level tokenizer), on and unset
/// do not; an unknown template variable is a 400 that names it.
#[test]
fn api_clients_turn_thinking_on_and_off_per_request() {
    let _g = common::mlx_lock();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-qwen3");
    let cfg = serde_json::json!({"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 257, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 4096});
    hearth::synth::write_config(cfg, &model, 0, 32, mlx_rs::Dtype::Float32).unwrap();
    let tc = model.join("tokenizer_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tc).unwrap()).unwrap();
    v["chat_template"] = serde_json::json!(std::fs::read_to_string(common::template("qwen3.5")).unwrap());
    std::fs::write(&tc, v.to_string()).unwrap();
    let s = serve_model(&model, &[], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        &format!(
            r#"
import anthropic, ollama
m = client.models.list().data[0].id
msgs = [{{"role": "user", "content": "Hi"}}]
def oa(**kw):
    return client.chat.completions.create(model=m, messages=msgs, max_tokens=2, temperature=0, **kw).usage.prompt_tokens
res = {{"openai": [oa(), oa(extra_body={{"chat_template_kwargs": {{"enable_thinking": True}}}}),
                   oa(extra_body={{"chat_template_kwargs": {{"enable_thinking": False}}}})]}}
try:
    oa(extra_body={{"chat_template_kwargs": {{"tools_in_system": 1}}}})
    res["bad"] = None
except openai.BadRequestError as e:
    res["bad"] = str(e)
o = ollama.Client(host="http://127.0.0.1:{port}")
# Ollama counts the tokens it evaluated; one generated token leaves the cache
# holding the prompt alone, so each turn evaluates what differs from the last.
res["ollama"] = [o.chat(model=m, messages=msgs, think=t, options={{"num_predict": 1, "temperature": 0}}).prompt_eval_count
                 for t in (True, False, None)]
a = anthropic.Anthropic(base_url="http://127.0.0.1:{port}", api_key="x", max_retries=0)
# Anthropic's input counts what the prefix cache held apart (cache reads).
res["anthropic"] = [(lambda u: u.input_tokens + u.cache_read_input_tokens)(a.messages.create(model=m, max_tokens=2, messages=msgs, **kw).usage)
                    for kw in ({{}}, {{"thinking": {{"type": "disabled"}}}})]
# A thinking budget: past 4 tokens the block is closed for the model (11
# forced byte tokens), which then answers; a budget it never reaches changes nothing.
def shape(x):
    return [[c.type, len(getattr(c, "thinking", None) or getattr(c, "text", None) or "")] for c in x.content], x.usage.output_tokens, x.stop_reason
res["budget"] = [shape(a.messages.create(model=m, max_tokens=30, messages=msgs, temperature=0, thinking={{"type": "enabled", "budget_tokens": b}}))
                 for b in (4, 1024)]
# The Responses API: effort "none" turns thinking off; tokens written inside
# the open block count as reasoning tokens (in the chat API's usage too).
res["responses"] = []
for kw in ({{}}, {{"reasoning": {{"effort": "none"}}}}):
    x = client.responses.create(model=m, input="Hi", max_output_tokens=3, temperature=0, store=False, **kw)
    res["responses"].append([x.usage.input_tokens, x.usage.output_tokens, x.usage.output_tokens_details.reasoning_tokens,
                             [o.type for o in x.output]])
u = client.chat.completions.create(model=m, messages=msgs, max_tokens=3, temperature=0).usage
res["chat_reasoning"] = [u.completion_tokens, u.completion_tokens_details.reasoning_tokens]
print(json.dumps(res))
"#,
            port = s.port
        ),
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    let n = |k: &str, i: usize| r[k][i].as_u64().unwrap();
    let (on, off) = (n("openai", 0), n("openai", 2));
    assert_eq!(n("openai", 1), on, "{r}");
    assert_eq!(off, on + "\n</think>\n\n".len() as u64, "{r}");
    // on after off: all but the last token reused; off after on: the 11 new ones.
    assert_eq!((n("ollama", 0), n("ollama", 1), n("ollama", 2)), (1, off - on, 1), "{r}");
    assert_eq!((n("anthropic", 0), n("anthropic", 1)), (on, off), "{r}");
    assert!(r["bad"].as_str().unwrap().contains("chat_template_kwargs.tools_in_system"), "{r}");
    let (cut, free) = (&r["budget"][0], &r["budget"][1]);
    // (The random model's answer is bytes that may not decode to text: the thought's length is what tells.)
    assert_eq!((&free[0][0][0], &free[1], &free[2]), (&serde_json::json!("thinking"), &serde_json::json!(30), &serde_json::json!("max_tokens")), "{r}");
    assert!(free[0][0][1].as_u64().unwrap() >= 20, "without a budget it thinks to the end: {r}");
    assert_eq!((&cut[0][0][0], &cut[1]), (&serde_json::json!("thinking"), &serde_json::json!(30)), "{r}");
    assert!(cut[0][0][1].as_u64().unwrap() <= 6, "four tokens of thought (one more drawn as the budget ran out, and the closing newline), then the rest outside: {r}");
    let x = &r["responses"];
    assert_eq!((x[0][0].as_u64(), x[1][0].as_u64()), (Some(on), Some(off)), "{r}");
    assert!(x[0][1].as_u64().unwrap() > 0 && x[0][2] == x[0][1] && x[0][3][0] == "reasoning", "all inside the block: {r}");
    assert_eq!(x[1][2], 0, "{r}");
    assert!(r["chat_reasoning"][0].as_u64().unwrap() > 0 && r["chat_reasoning"][0] == r["chat_reasoning"][1], "{r}");
}

/// Structured output: `response_format` with a JSON schema (a nested object,
/// an enum, an array, an integer range) constrains SmolLM2 token by token, so
/// 20 of 20 seeded replies parse and validate (the `jsonschema` package);
/// `json_object` gives an object; a schema llguidance cannot use is a 400;
/// Ollama's `format` takes a schema too (the `ollama` SDK).
#[test]
fn structured_output_follows_the_json_schema_every_time() {
    let _g = common::mlx_lock();
    let r = sdk_json(
        r##"
import jsonschema
schema = {"type": "object", "additionalProperties": False,
  "required": ["city", "country", "population_millions", "landmarks", "climate"],
  "properties": {
    "city": {"type": "string", "maxLength": 20},
    "country": {"type": "object", "additionalProperties": False, "required": ["name", "continent"],
                "properties": {"name": {"type": "string", "maxLength": 20},
                               "continent": {"enum": ["Europe", "Asia", "Africa", "America", "Oceania"]}}},
    "population_millions": {"type": "integer", "minimum": 0, "maximum": 40},
    "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 3},
    "climate": {"enum": ["mild", "hot", "cold"]}}}
m = client.models.list().data[0].id
ok, bad = 0, []
t0 = time.time()
for seed in range(20):
    r = client.chat.completions.create(model=m, seed=seed, temperature=0.8, max_tokens=160,
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    text = r.choices[0].message.content
    try:
        jsonschema.validate(json.loads(text), schema)
        ok += 1
    except Exception as e:
        bad.append([seed, text, str(e)[:200]])
r = client.chat.completions.create(model=m, temperature=0, max_tokens=300, response_format={"type": "json_object"},
    messages=[{"role": "user", "content": "Give a JSON object with a name."}])
text = r.choices[0].message.content
# Cut short by max_tokens it is still the start of an object; finished, an object.
obj = json.loads(text) if r.choices[0].finish_reason == "stop" else ({} if text.lstrip().startswith("{") else text)
try:
    client.chat.completions.create(model=m, max_tokens=8, messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}}})
    refused = None
except openai.BadRequestError as e:
    refused = str(e)
import ollama
small = {"type": "object", "additionalProperties": False, "required": ["answer"],
         "properties": {"answer": {"enum": ["yes", "no"]}}}
o = ollama.Client(host=str(client.base_url).rsplit("/v1", 1)[0])
reply = o.chat(model=m, messages=[{"role": "user", "content": "Is Paris in France?"}], format=small,
               options={"num_predict": 32, "temperature": 0}).message.content
jsonschema.validate(json.loads(reply), small)
print(json.dumps({"ok": ok, "bad": bad, "object": isinstance(obj, dict), "refused": refused, "schema_s": time.time() - t0,
                  "ollama": reply}))
"##,
    );
    assert_eq!(r["ok"], 20, "{r}");
    assert_eq!(r["object"], true, "{r}");
    assert!(r["refused"].as_str().is_some_and(|e| e.contains("JSON schema")), "{r}");
}

#[test]
fn tools_are_called_through_the_openai_anthropic_and_ollama_sdks() {
    let _g = common::mlx_lock();
    let r = sdk_json(
        r##"
import jsonschema, anthropic, ollama
base = str(client.base_url).rsplit("/v1", 1)[0]
m = client.models.list().data[0].id
weather = {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
           "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"enum": ["celsius", "fahrenheit"]}}}
add = {"type": "object", "additionalProperties": False, "required": ["a", "b"],
       "properties": {"a": {"type": "integer", "minimum": -100, "maximum": 100}, "b": {"type": "integer", "minimum": -100, "maximum": 100}}}
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": weather}},
         {"type": "function", "function": {"name": "add", "description": "Add two integers", "parameters": add}}]
schemas = {"get_weather": weather, "add": add}
res = {}

# OpenAI: a call forced by name, its arguments valid, then the answer from its result.
msgs = [{"role": "user", "content": "What is the weather in Paris?"}]
r = client.chat.completions.create(model=m, temperature=0, max_tokens=100, messages=msgs, tools=tools,
    tool_choice={"type": "function", "function": {"name": "get_weather"}})
call = r.choices[0].message.tool_calls[0]
jsonschema.validate(json.loads(call.function.arguments), weather)
res["forced"] = [r.choices[0].finish_reason, call.function.name, r.choices[0].message.content]
msgs.append(r.choices[0].message.model_dump(exclude_none=True))
msgs.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "sunny"})})
r = client.chat.completions.create(model=m, temperature=0, max_tokens=60, messages=msgs, tools=tools)
res["answer"] = [r.choices[0].finish_reason, r.choices[0].message.content, r.choices[0].message.tool_calls]

# "required" over both tools, seeded and sampled: every call is one of them with valid arguments; streamed.
valid = 0
for seed in range(6):
    chunks = list(client.chat.completions.create(model=m, seed=seed, temperature=0.9, max_tokens=100, stream=True,
        messages=[{"role": "user", "content": "Add 2 and 3, or tell me the weather in Oslo."}], tools=tools, tool_choice="required"))
    calls = [tc for c in chunks if c.choices and c.choices[0].delta.tool_calls for tc in c.choices[0].delta.tool_calls]
    assert chunks[-1].choices[0].finish_reason == "tool_calls", chunks[-1]
    assert len(calls) == 1 and calls[0].id and calls[0].index == 0, calls
    jsonschema.validate(json.loads(calls[0].function.arguments), schemas[calls[0].function.name])
    valid += 1
res["required_valid"] = valid
try:
    client.chat.completions.create(model=m, max_tokens=4, messages=msgs[:1], tools=tools,
        tool_choice={"type": "function", "function": {"name": "rm_rf"}})
except openai.BadRequestError as e:
    res["unknown_tool"] = e.body["message"]

# Anthropic: a forced tool_use block, streamed as its event sequence, then the answer from a tool_result.
a = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
atools = [{"name": "get_weather", "description": "Current weather in a city", "input_schema": weather}]
amsgs = [{"role": "user", "content": "What is the weather in Lyon?"}]
with a.messages.stream(model=m, max_tokens=100, temperature=0, messages=amsgs, tools=atools,
                       tool_choice={"type": "tool", "name": "get_weather"}) as st:
    kinds = [e.type for e in st]
    final = st.get_final_message()
use = [b for b in final.content if b.type == "tool_use"][0]
jsonschema.validate(use.input, weather)
res["anthropic"] = [final.stop_reason, use.name, [k for k in kinds if k != "text" and not k.endswith("_json")]]
amsgs.append({"role": "assistant", "content": [b.model_dump() for b in final.content]})
amsgs.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "{\"temperature\": 12, \"sky\": \"rain\"}"}]})
r = a.messages.create(model=m, max_tokens=60, temperature=0, messages=amsgs, tools=atools)
res["anthropic_answer"] = [r.stop_reason, [b.type for b in r.content], r.content[0].text if r.content[0].type == "text" else None]

# Ollama: the tools and an earlier call with its result, answered streaming.
o = ollama.Client(host=base)
omsgs = [{"role": "user", "content": "What is the weather in Rome?"},
         {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}}]},
         {"role": "tool", "content": "{\"temperature\": 25, \"sky\": \"clear\"}", "tool_name": "get_weather"}]
parts = list(o.chat(model=m, messages=omsgs, tools=tools, stream=True, options={"temperature": 0, "num_predict": 60}))
res["ollama"] = ["".join(p.message.content or "" for p in parts), parts[-1].done]
print(json.dumps(res, default=str))
"##,
    );
    assert_eq!(r["forced"], serde_json::json!(["tool_calls", "get_weather", null]), "{r}");
    // The answer uses the result (SmolLM2 says the weather is sunny).
    let answer = &r["answer"];
    assert_eq!(answer[0], "stop", "{r}");
    assert!(answer[1].as_str().is_some_and(|a| a.to_lowercase().contains("sunny")), "{r}");
    assert!(answer[2].is_null(), "{r}");
    assert_eq!(r["required_valid"], 6, "{r}");
    assert!(r["unknown_tool"].as_str().is_some_and(|e| e.contains("'rm_rf', which is not among the tools")), "{r}");
    assert_eq!(r["anthropic"][0], "tool_use", "{r}");
    assert_eq!(r["anthropic"][1], "get_weather", "{r}");
    assert_eq!(
        r["anthropic"][2],
        serde_json::json!(["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]),
        "{r}"
    );
    assert_eq!(r["anthropic_answer"][0], "end_turn", "{r}");
    assert!(r["anthropic_answer"][2].as_str().is_some_and(|t| !t.trim().is_empty()), "{r}");
    assert!(r["ollama"][0].as_str().is_some_and(|t| !t.trim().is_empty()) && r["ollama"][1] == true, "{r}");
}

#[test]
fn log_probabilities_and_penalties_through_the_openai_sdk() {
    let _g = common::mlx_lock();
    let r = sdk_json(
        r##"
import math
m = client.models.list().data[0].id
q = [{"role": "user", "content": "What is the capital of France?"}]
r = client.chat.completions.create(model=m, temperature=0, max_tokens=16, messages=q, logprobs=True, top_logprobs=3)
c = r.choices[0]
lp = c.logprobs.content
res = {"content": c.message.content, "joined": "".join(t.token for t in lp),
       # Greedy: each token is its own best alternative, alternatives in order, probabilities under 1.
       "greedy_best": all(t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 for t in lp),
       "ordered": all(t.top_logprobs[i].logprob >= t.top_logprobs[i + 1].logprob for t in lp for i in range(2)),
       "mass": max(sum(math.exp(x.logprob) for x in t.top_logprobs) for t in lp),
       "bytes": all(bytes(t.bytes).decode("utf-8", "replace") == t.token for t in lp if t.bytes)}
chunks = list(client.chat.completions.create(model=m, temperature=0, max_tokens=16, messages=q, logprobs=True, top_logprobs=3, stream=True))
streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
res["stream_same"] = [(t.token, round(t.logprob, 5)) for t in streamed] == [(t.token, round(t.logprob, 5)) for t in lp]
t = client.completions.create(model=m, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2)
res["completion"] = [t.choices[0].logprobs.tokens[0], list(t.choices[0].logprobs.top_logprobs[0].keys()), t.choices[0].logprobs.text_offset]
rep = [{"role": "user", "content": "List fruits: apple, apple, apple,"}]
plain = client.chat.completions.create(model=m, temperature=0, max_tokens=40, messages=rep).choices[0].message.content
pen = client.chat.completions.create(model=m, temperature=0, max_tokens=40, messages=rep, frequency_penalty=1.5).choices[0].message.content
pres = client.chat.completions.create(model=m, temperature=0, max_tokens=40, messages=rep, presence_penalty=2.0).choices[0].message.content
res["apples"] = [plain.lower().count("apple"), pen.lower().count("apple"), pres.lower().count("apple")]
try:
    client.chat.completions.create(model=m, max_tokens=4, messages=q, presence_penalty=3)
except openai.BadRequestError as e:
    res["range"] = e.body["message"]
try:
    client.chat.completions.create(model=m, max_tokens=4, messages=q, logprobs=True, top_logprobs=21)
except openai.BadRequestError as e:
    res["top_range"] = e.body["message"]
print(json.dumps(res))
"##,
    );
    assert!(r["content"].as_str().unwrap().contains("Paris"), "{r}");
    assert_eq!(r["joined"], r["content"], "the tokens spell the reply: {r}");
    for k in ["greedy_best", "ordered", "bytes", "stream_same"] {
        assert_eq!(r[k], true, "{k}: {r}");
    }
    assert!(r["mass"].as_f64().unwrap() <= 1.0 + 1e-4, "{r}");
    assert_eq!(r["completion"][0], " Paris", "{r}");
    assert_eq!(r["completion"][2][0], 0, "{r}");
    // SmolLM2 repeats "apple" to the end of its budget; the penalties stop that.
    let apples: Vec<u64> = r["apples"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(apples[0] >= 10 && apples[1] * 3 < apples[0] && apples[2] * 3 < apples[0], "{r}");
    assert!(r["range"].as_str().is_some_and(|e| e.contains("between -2 and 2")), "{r}");
    assert!(r["top_range"].as_str().is_some_and(|e| e.contains("out of range")), "{r}");
}

/// With room for one sequence (`HEARTH_MAX_BATCH=1`), a second client
/// waits for the first: requests beyond the batch queue in order.
#[test]
fn two_clients_at_once_are_served_in_turn_with_their_own_tokens() {
    let _g = common::mlx_lock();
    let s = serve(&[("HEARTH_MAX_BATCH", "1")], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        r##"
import threading
m = client.models.list().data[0].id
asks = {"a": "What is the capital of France?", "b": "Name three colors."}
def run(key, out):
    chunks = []
    for c in client.chat.completions.create(model=m, temperature=0, max_tokens=40, stream=True,
            messages=[{"role": "user", "content": asks[key]}]):
        if c.choices and c.choices[0].delta.content:
            chunks.append((time.time(), c.choices[0].delta.content))
    out[key] = chunks
alone = {}
for k in asks:
    run(k, alone)
together = {}
threads = [threading.Thread(target=run, args=(k, together)) for k in asks]
for t in threads:
    t.start()
for t in threads:
    t.join()
text = lambda d, k: "".join(p for _, p in d[k])
first, second = sorted(asks, key=lambda k: together[k][0][0])
print(json.dumps({"same": all(text(together, k) == text(alone, k) for k in asks),
                  "in_turn": together[first][-1][0] <= together[second][0][0],
                  "texts": [text(together, k) for k in asks]}))
"##,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    // Greedy replies equal to each client's alone: no token of one went to the other.
    assert_eq!(r["same"], true, "{r}");
    // One sequence at a time: the second client's text starts after the first's ends.
    assert_eq!(r["in_turn"], true, "{r}");
    assert!(r["texts"][0].as_str().unwrap().contains("Paris"), "{r}");
}

/// Eight clients of the official SDK at once are served at once: the engine
/// decodes them in one batch (the replies' `timings.batch_rows`), and each
/// gets the greedy reply it gets alone.
#[test]
fn eight_concurrent_clients_are_batched_and_each_gets_its_own_reply() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
import threading
topics = ["the sea", "a forest at night", "mountains", "baking bread", "rain", "cats", "a city street", "a lighthouse"]
def ask(topic):
    r = client.chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", temperature=0, max_tokens=48,
        messages=[{"role": "user", "content": f"Write a long paragraph about {topic}."}])
    return r.choices[0].message.content, r.model_extra["timings"]["batch_rows"]
alone = [ask(t)[0] for t in topics]
together = [None] * len(topics)
start = threading.Barrier(len(topics))
def client_thread(i):
    start.wait()
    together[i] = ask(topics[i])
threads = [threading.Thread(target=client_thread, args=(i,)) for i in range(len(topics))]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"alone": alone, "together": [t[0] for t in together], "rows": [t[1] for t in together]}))
"#,
    );
    let v: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(v["alone"], v["together"], "a batched reply differs from the same request alone: {out}");
    let widest = v["rows"].as_array().unwrap().iter().filter_map(|r| r.as_u64()).max().unwrap();
    assert_eq!(widest, 8, "the eight requests were not decoded together: {out}");
}

/// The Responses API through the official openai SDK: a plain answer, the
/// streamed event sequence in order (text, and a forced function call), a
/// JSON schema kept 10 times out of 10, a function call answered through
/// `previous_response_id` and a conversation continued the same way (only
/// the new tokens prefilled), retrieve and delete, the store's bound, and
/// clear errors for what cannot be honoured.
#[test]
fn the_responses_api_answers_streams_calls_tools_and_continues_stored_conversations() {
    let _g = common::mlx_lock();
    let s = serve(&[("HEARTH_RESPONSE_STORE_MAX", "4")], &[]).unwrap();
    // A second installed model, to continue a conversation on the wrong one.
    std::fs::create_dir_all(s.home.path().join("models")).unwrap();
    let gemma = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    std::os::unix::fs::symlink(&gemma, s.home.path().join("models/gemma-3-270m.gguf")).unwrap();
    let out = python(
        s.port,
        "unused",
        r##"
import jsonschema, urllib.request, urllib.error
m = "SmolLM2-135M-Instruct.Q4_1"
out = {}
q = "What is the capital of France?"
r = client.responses.create(model=m, input=q, temperature=0, max_output_tokens=48)
out["plain"] = {"id": r.id, "text": r.output_text, "status": r.status, "types": [o.type for o in r.output],
                "usage": [r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens, r.usage.input_tokens_details.cached_tokens]}

def events(**kw):
    seen, text = [], ""
    with client.responses.stream(model=m, store=False, temperature=0, **kw) as s:
        for e in s:
            seen.append([e.type, e.sequence_number])
            if e.type == "response.output_text.delta":
                text += e.delta
        final = s.get_final_response()
    kinds = [t for i, (t, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != t]
    return {"kinds": kinds, "seq": [n for _, n in seen], "deltas": text, "final": final.output_text,
            "cached": final.usage.input_tokens_details.cached_tokens, "input": final.usage.input_tokens,
            "output": [o.to_dict() for o in final.output]}
out["stream"] = events(input=q, max_output_tokens=48)

tools = [{"type": "function", "name": "get_weather", "description": "The current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False},
          "strict": True}]
forced = {"type": "function", "name": "get_weather"}
out["call_stream"] = events(input="What is the weather in Paris?", tools=tools, tool_choice=forced, max_output_tokens=64)

schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
          "properties": {"city": {"type": "string", "maxLength": 20}, "country": {"type": "string", "maxLength": 20}}}
ok, bad = 0, []
for i in range(10):
    x = client.responses.create(model=m, input="Describe Paris as JSON.", temperature=0.8, max_output_tokens=120, store=False,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    try:
        jsonschema.validate(json.loads(x.output_text), schema)
        ok += 1
    except Exception as e:
        bad.append([x.output_text, str(e)[:200]])
out["schema"] = {"ok": ok, "bad": bad}

# An agent's turn: a forced call, then only its output, by previous_response_id.
c = client.responses.create(model=m, input="What is the weather in Paris?", tools=tools, tool_choice=forced, temperature=0, max_output_tokens=64)
call = [o for o in c.output if o.type == "function_call"][0]
c2 = client.responses.create(model=m, previous_response_id=c.id, tools=tools, temperature=0, max_output_tokens=32,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}])
out["tool"] = {"name": call.name, "call_id": call.call_id, "args": json.loads(call.arguments), "first_input": c.usage.input_tokens,
               "input": c2.usage.input_tokens, "cached": c2.usage.input_tokens_details.cached_tokens, "types": [o.type for o in c2.output]}
# The same turn stateless, as items.
c3 = client.responses.create(model=m, tools=tools, temperature=0, max_output_tokens=32, store=False, input=[
    {"role": "user", "content": "What is the weather in Paris?"},
    {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
    {"type": "function_call_output", "call_id": call.call_id, "output": "18 C and sunny"}])
out["tool"]["stateless_input"] = c3.usage.input_tokens
# What each stored response was given, as the SDK lists it back.
items = client.responses.input_items.list(c2.id)
plain_items = client.responses.input_items.list(r.id, order="asc")
out["input_items"] = {"c2": [[i.type, i.call_id, i.output] for i in items.data],
                      "plain": [[i.type, i.role, i.content[0].text, i.id.startswith("msg_")] for i in plain_items.data]}
try:
    client.responses.input_items.list("resp_nothere")
    out["input_items"]["missing"] = None
except openai.NotFoundError as e:
    out["input_items"]["missing"] = 404

a = client.responses.create(model=m, instructions="You are terse.", input="My name is Ada.", temperature=0, max_output_tokens=24)
b = client.responses.create(model=m, instructions="You are terse.", previous_response_id=a.id, input="What is my name?",
                            temperature=0, max_output_tokens=24)
out["continued"] = {"first_input": a.usage.input_tokens, "first_output": a.usage.output_tokens,
                    "input": b.usage.input_tokens, "cached": b.usage.input_tokens_details.cached_tokens, "previous": b.previous_response_id, "a": a.id}

def error(f):
    try:
        f()
        return None
    except openai.APIStatusError as e:
        return [e.status_code, e.message]
got = client.responses.retrieve(a.id)
out["retrieved"] = [got.id == a.id, got.output_text == a.output_text]
client.responses.delete(a.id)
out["deleted"] = [error(lambda: client.responses.retrieve(a.id)), error(lambda: client.responses.delete(a.id)),
                  error(lambda: client.responses.create(model=m, previous_response_id=a.id, input="x"))]
out["errors"] = {
    "item": error(lambda: client.responses.create(model=m, input=[{"type": "computer_call_output", "call_id": "x"}])),
    "escape": error(lambda: client.responses.create(model=m, previous_response_id="../../etc/passwd", input="x")),
    "other_model": error(lambda: client.responses.create(model="gemma-3-270m", previous_response_id=b.id, input="x")),
    "hosted_tool": error(lambda: client.responses.create(model=m, input="x", tools=[{"type": "web_search"}])),
}
deep = ('{"model": "%s", "input": ' % m) + "[" * 10000 + "]" * 10000 + "}"
req = urllib.request.Request(str(client.base_url) + "responses", data=deep.encode(), headers={"Content-Type": "application/json"})
try:
    urllib.request.urlopen(req, timeout=60)
    out["errors"]["deep"] = None
except urllib.error.HTTPError as e:
    out["errors"]["deep"] = [e.code, e.read().decode()[:300]]
# Four more stored responses: the store keeps four, so b (older) is dropped.
for i in range(4):
    client.responses.create(model=m, input="Hi", max_output_tokens=1)
out["bound"] = error(lambda: client.responses.retrieve(b.id))
print(json.dumps(out))
"##,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    let p = &r["plain"];
    assert!(p["text"].as_str().unwrap().contains("Paris") && p["status"] == "completed", "{r}");
    assert!(p["id"].as_str().unwrap().starts_with("resp_") && p["types"] == serde_json::json!(["message"]), "{r}");
    let u: Vec<u64> = p["usage"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(u[0] > 5 && u[1] > 0 && u[2] == u[0] + u[1] && u[3] == 0, "{r}");

    // The event sequence, in order, numbered from 0; greedy, it says what the whole reply said.
    let st = &r["stream"];
    let kinds = |v: &serde_json::Value| v["kinds"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(
        kinds(st),
        ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta",
         "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"],
        "{r}"
    );
    let seq: Vec<u64> = st["seq"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(seq, (0..seq.len() as u64).collect::<Vec<_>>());
    assert_eq!((&st["deltas"], &st["final"]), (&p["text"], &p["text"]), "{r}");
    assert_eq!(st["cached"].as_u64(), Some(st["input"].as_u64().unwrap() - 1), "the same prompt again comes from the prefix cache: {r}");
    let cs = &r["call_stream"];
    assert_eq!(
        kinds(cs),
        ["response.created", "response.in_progress", "response.output_item.added", "response.function_call_arguments.delta",
         "response.function_call_arguments.done", "response.output_item.done", "response.completed"],
        "{r}"
    );
    assert_eq!(cs["output"][0]["name"], "get_weather", "{r}");
    let args: serde_json::Value = serde_json::from_str(cs["output"][0]["arguments"].as_str().unwrap()).unwrap();
    assert!(args["city"].is_string(), "{r}");

    assert_eq!(r["schema"]["ok"], 10, "{r}");

    // The call's output went in after the stored history, which the prefix cache held.
    let t = &r["tool"];
    assert_eq!((&t["name"], t["args"]["city"].is_string()), (&serde_json::json!("get_weather"), true), "{r}");
    assert!(t["cached"].as_u64().unwrap() >= t["first_input"].as_u64().unwrap(), "{r}");
    assert_eq!(t["input"], t["stateless_input"], "the stored history renders as the items sent whole: {r}");
    // (The tiny model may well call the tool again: the reply's kind is its own choice.)
    assert!(!t["types"].as_array().unwrap().is_empty(), "{r}");
    // Input items: the continuation's one function_call_output; a string input as one user message.
    let items = &r["input_items"];
    assert_eq!(items["c2"], serde_json::json!([["function_call_output", t["call_id"], "18 C and sunny"]]), "{r}");
    assert_eq!(items["plain"], serde_json::json!([["message", "user", "What is the capital of France?", true]]), "{r}");
    assert_eq!(items["missing"], 404, "{r}");

    // A continuation prefills only its new tokens: the first turn (prompt and reply) was cached.
    let c = &r["continued"];
    let (first, cached, input) = (c["first_input"].as_u64().unwrap(), c["cached"].as_u64().unwrap(), c["input"].as_u64().unwrap());
    assert!(cached >= first + c["first_output"].as_u64().unwrap() - 1, "{r}");
    assert!(input - cached < 20, "only the new turn is prefilled: {r}");
    assert_eq!(c["previous"], c["a"]);

    assert_eq!(r["retrieved"], serde_json::json!([true, true]));
    for d in r["deleted"].as_array().unwrap() {
        assert_eq!(d[0], 404, "{r}");
    }
    let e = &r["errors"];
    assert!(e["item"][0] == 400 && e["item"][1].as_str().unwrap().contains("'computer_call_output' are not supported"), "{r}");
    assert!(e["escape"][0] == 400 && e["escape"][1].as_str().unwrap().contains("is not a response id"), "{r}");
    assert!(e["other_model"][0] == 400 && e["other_model"][1].as_str().unwrap().contains("was written by model"), "{r}");
    assert!(e["hosted_tool"][0] == 400 && e["hosted_tool"][1].as_str().unwrap().contains("'web_search'"), "{r}");
    assert!(e["deep"][0] == 400 && e["deep"][1].as_str().unwrap().contains("recursion limit"), "{r}");
    assert_eq!(r["bound"][0], 404, "the oldest stored response was dropped: {r}");
    // Nothing written outside the data folder's responses/.
    let stored = std::fs::read_dir(s.home.path().join("responses")).unwrap().count();
    assert_eq!(stored, 4);
}

/// What agent clients send the Messages API today, through the anthropic
/// SDK's beta client: context editing clears old tool results by its rules
/// (and says what it cleared), `count_tokens` applies the same edits, the
/// beta header, metadata, service tier and container are accepted,
/// `output_format` constrains the reply to a schema, `mcp_servers` is a
/// clear 400, and repeated context is reported as cache reads.
#[test]
fn agent_fields_of_the_messages_api_are_honoured_or_refused_clearly() {
    let _g = common::mlx_lock();
    let s = serve(&[], &[]).unwrap();
    let script = format!(
        r#"
import json, anthropic, jsonschema
c = anthropic.Anthropic(base_url="http://127.0.0.1:{port}", api_key="x", max_retries=0)
m = "SmolLM2-135M-Instruct.Q4_1"
tool = {{"name": "read_file", "description": "Read a file", "input_schema": {{"type": "object", "properties": {{"path": {{"type": "string"}}}}}}}}
msgs = [{{"role": "user", "content": "Summarise the five files."}}]
for i in range(5):
    msgs.append({{"role": "assistant", "content": [{{"type": "thinking", "thinking": "Read file %d next." % i, "signature": ""}},
                                                  {{"type": "tool_use", "id": "toolu_%d" % i, "name": "read_file", "input": {{"path": "f%d.txt" % i}}}}]}})
    msgs.append({{"role": "user", "content": [{{"type": "tool_result", "tool_use_id": "toolu_%d" % i,
                                               "content": ("Line %d of a long file. " % i) * 40}}]}})
edits = {{"edits": [{{"type": "clear_thinking_20251015", "keep": {{"type": "thinking_turns", "value": 1}}}},
                   {{"type": "clear_tool_uses_20250919", "trigger": {{"type": "tool_uses", "value": 3}}, "keep": {{"type": "tool_uses", "value": 1}}}}]}}
beta = ["context-management-2025-06-27"]
full = c.messages.count_tokens(model=m, messages=msgs, tools=[tool]).input_tokens
counted = c.beta.messages.count_tokens(model=m, messages=msgs, tools=[tool], betas=beta, context_management=edits)
r = c.beta.messages.create(model=m, max_tokens=8, temperature=0, messages=msgs, tools=[tool], betas=beta, context_management=edits,
                           metadata={{"user_id": "u1"}}, service_tier="auto", extra_body={{"container": None}})
out = {{"full": full, "counted": counted.input_tokens, "original": counted.context_management.original_input_tokens,
       "applied": [e.to_dict() for e in r.context_management.applied_edits],
       "usage": [r.usage.input_tokens, r.usage.cache_read_input_tokens]}}
again = c.messages.create(model=m, max_tokens=8, temperature=0, messages=msgs, tools=[tool])
again2 = c.messages.create(model=m, max_tokens=8, temperature=0, messages=msgs, tools=[tool])
out["again"] = [again.usage.input_tokens + again.usage.cache_read_input_tokens, again2.usage.input_tokens, again2.usage.cache_read_input_tokens]
schema = {{"type": "object", "additionalProperties": False, "required": ["capital"], "properties": {{"capital": {{"type": "string", "maxLength": 20}}}}}}
j = c.messages.create(model=m, max_tokens=60, temperature=0.7, messages=[{{"role": "user", "content": "The capital of France, as JSON."}}],
                      extra_body={{"output_format": {{"type": "json_schema", "schema": schema}}}})
jsonschema.validate(json.loads(j.content[-1].text), schema)
out["json"] = j.content[-1].text
try:
    c.beta.messages.create(model=m, max_tokens=8, messages=msgs[:1], betas=["mcp-client-2025-04-04"],
                           mcp_servers=[{{"type": "url", "url": "https://example.com/sse", "name": "x"}}])
    out["mcp"] = None
except anthropic.BadRequestError as e:
    out["mcp"] = e.body["error"]["message"]
try:
    c.beta.messages.create(model=m, max_tokens=8, messages=msgs, tools=[tool], betas=beta,
                           context_management={{"edits": edits["edits"][::-1]}})
    out["order"] = None
except anthropic.BadRequestError as e:
    out["order"] = e.body["error"]["message"]
print(json.dumps(out))
"#,
        port = s.port
    );
    let out = Command::new(common::python()).args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim().lines().last().unwrap()).unwrap();
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    // Five uses past a trigger of three, one kept: four results cleared, and
    // four turns' reasoning (one kept).
    // Applied in the order listed (Anthropic requires thinking first).
    let a = &r["applied"];
    assert_eq!((&a[0]["type"], n(&a[0]["cleared_thinking_turns"])), (&serde_json::json!("clear_thinking_20251015"), 4), "{r}");
    assert_eq!((&a[1]["type"], n(&a[1]["cleared_tool_uses"])), (&serde_json::json!("clear_tool_uses_20250919"), 4), "{r}");
    assert!(n(&a[1]["cleared_input_tokens"]) > 4 * 200, "four long results went: {r}");
    assert!(r["order"].as_str().unwrap().contains("must be listed first"), "{r}");
    // count_tokens applies the same edits and says what the prompt was before.
    assert_eq!(r["original"], r["full"], "{r}");
    assert_eq!(n(&r["counted"]) + n(&a[0]["cleared_input_tokens"]) + n(&a[1]["cleared_input_tokens"]), n(&r["full"]), "{r}");
    assert_eq!(n(&r["usage"][0]) + n(&r["usage"][1]), n(&r["counted"]), "the reply's input is the edited prompt: {r}");
    // Unedited, the same request twice: the second reads all but one token from the cache.
    assert_eq!(n(&r["again"][0]), n(&r["full"]), "{r}");
    assert_eq!((n(&r["again"][1]), n(&r["again"][2])), (1, n(&r["full"]) - 1), "{r}");
    assert!(r["json"].as_str().unwrap().contains("capital"), "{r}");
    assert!(r["mcp"].as_str().unwrap().contains("mcp_servers"), "{r}");
}

/// `/api/ps` as JSON, from Python (a snippet's helper).
const PS: &str = r#"
import threading, urllib.request
smol, gemma = "SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m"
def ps():
    return json.loads(urllib.request.urlopen(str(client.base_url).rsplit("/v1", 1)[0] + "/api/ps").read())["models"]
def ask(m, n=2, **kw):
    return client.chat.completions.create(model=m, max_tokens=n, temperature=0, messages=[{"role": "user", "content": "Hi"}], **kw)
"#;

/// Installs Gemma 3 beside the served SmolLM2 (as `gemma-3-270m`).
fn install_gemma(s: &Serve) {
    std::fs::create_dir_all(s.home.path().join("models")).unwrap();
    let gemma = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    std::os::unix::fs::symlink(&gemma, s.home.path().join("models/gemma-3-270m.gguf")).unwrap();
}

/// Several models held at once: two clients asking for two models at once
/// get each its own, both loaded once (the same load time after more
/// requests alternating); an alias names a model, an unknown name is a 404
/// that lists what is installed; a request's `ttl` unloads its idle model.
#[test]
fn two_models_are_held_at_once_loaded_once_and_unloaded_by_their_ttl() {
    let _g = common::mlx_lock();
    let s = serve(&[], &["--alias", "fast=SmolLM2-135M-Instruct.Q4_1"]).unwrap();
    install_gemma(&s);
    let out = python(
        s.port,
        "unused",
        &format!(
            r#"{PS}
got = {{smol: [], gemma: []}}
def run(m):
    for i in range(3):
        got[m].append(ask(m).model)
ts = [threading.Thread(target=run, args=(m,)) for m in (smol, gemma)]
[t.start() for t in ts]
[t.join() for t in ts]
first = {{p["name"]: p["hearth"]["loaded_at_ms"] for p in ps()}}
for m in (smol, gemma, smol, gemma):
    ask(m)
second = {{p["name"]: p["hearth"]["loaded_at_ms"] for p in ps()}}
alias = ask("fast").model
try:
    ask("no-such-model")
    unknown = None
except openai.NotFoundError as e:
    unknown = e.body["message"] if isinstance(e.body, dict) and "message" in e.body else str(e)
listed = {{m.id: getattr(m, "loaded", None) for m in client.models.list()}}
ask(gemma, extra_body={{"ttl": 2}})
time.sleep(4)
print(json.dumps({{"got": got, "first": first, "second": second, "alias": alias, "unknown": unknown, "listed": listed,
                  "after_ttl": sorted(p["name"] for p in ps())}}))
"#
        ),
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    for m in ["SmolLM2-135M-Instruct.Q4_1", "gemma-3-270m"] {
        assert_eq!(r["got"][m], serde_json::json!([m, m, m]), "each client gets its own model: {r}");
    }
    assert_eq!(r["first"].as_object().unwrap().len(), 2, "{r}");
    assert_eq!(r["first"], r["second"], "alternating requests reload nothing: {r}");
    assert_eq!(r["alias"], "SmolLM2-135M-Instruct.Q4_1", "{r}");
    let unknown = r["unknown"].as_str().unwrap();
    assert!(unknown.contains("'no-such-model' is not installed") && unknown.contains("gemma-3-270m"), "{r}");
    assert_eq!((&r["listed"]["gemma-3-270m"], &r["listed"]["fast"]), (&serde_json::json!(true), &serde_json::Value::Null), "{r}");
    assert_eq!(r["after_ttl"], serde_json::json!(["SmolLM2-135M-Instruct.Q4_1"]), "a ttl of 2 s unloaded the idle model: {r}");
}

/// A memory budget with room for one of the two models: a request for the
/// other waits while the first is streaming (a model in use is never
/// evicted), then evicts it; asking for the first again reloads it.
#[test]
fn a_memory_budget_evicts_the_idle_model_never_one_in_use() {
    let _g = common::mlx_lock();
    // SmolLM2's file is 94 MiB, Gemma's 241 MiB: 300 holds one.
    let s = serve(&[], &["--memory-budget-mb", "300"]).unwrap();
    install_gemma(&s);
    let out = python(
        s.port,
        "unused",
        &format!(
            r#"{PS}
long = {{}}
def stream():
    fin, n = None, 0
    for c in client.chat.completions.create(model=smol, max_tokens=96, temperature=0, stream=True, extra_body={{"ignore_eos": True}},
                                            stream_options={{"include_usage": True}}, messages=[{{"role": "user", "content": "Tell a story."}}]):
        if c.choices and c.choices[0].finish_reason:
            fin = c.choices[0].finish_reason
        if c.usage:
            n = c.usage.completion_tokens
    long.update(done=time.time(), finish=fin, tokens=n)
th = threading.Thread(target=stream)
th.start()
t0 = time.time()
while not any(p["name"] == smol and p["hearth"]["in_flight"] > 0 for p in ps()):
    assert time.time() - t0 < 120, "SmolLM2 never started"
    time.sleep(0.05)
ask(gemma)
gemma_done = time.time()
th.join()
after = sorted(p["name"] for p in ps())
ask(smol)
print(json.dumps({{"long": long, "gemma_after_stream": gemma_done >= long["done"], "after": after,
                  "final": sorted(p["name"] for p in ps())}}))
"#
        ),
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!((&r["long"]["finish"], &r["long"]["tokens"]), (&serde_json::json!("length"), &serde_json::json!(96)), "the stream ran whole: {r}");
    assert_eq!(r["gemma_after_stream"], true, "the model in use was not evicted under it: {r}");
    assert_eq!(r["after"], serde_json::json!(["gemma-3-270m"]), "{r}");
    assert_eq!(r["final"], serde_json::json!(["SmolLM2-135M-Instruct.Q4_1"]), "{r}");
}

#[test]
fn a_responses_conversation_over_the_context_fails_unless_truncation_is_auto() {
    let _g = common::mlx_lock();
    let s = serve(&[], &["--context-length", "512"]).unwrap();
    let out = python(
        s.port,
        "unused",
        r#"
m = client.models.list().data[0].id
turns = []
for i in range(4):
    turns += [{"role": "user", "content": f"Note {i}: " + "apple " * 150}, {"role": "assistant", "content": "Noted."}]
turns.append({"role": "user", "content": "Say hi."})
out = {}
try:
    client.responses.create(model=m, input=turns, max_output_tokens=4, temperature=0)
    out["disabled"] = None
except openai.BadRequestError as e:
    out["disabled"] = e.body["message"] if "message" in e.body else str(e.body)
r = client.responses.create(model=m, input=turns, max_output_tokens=4, temperature=0, truncation="auto")
out["auto"] = [r.status, r.truncation, r.usage.input_tokens]
print(json.dumps(out))
"#,
    );
    let r: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    // OpenAI's default ("disabled"): an error naming the sizes, no turn silently lost.
    assert!(r["disabled"].as_str().is_some_and(|m| m.contains("tokens but the context holds")), "{r}");
    // "auto": the oldest turns go and the reply comes.
    assert_eq!((&r["auto"][0], &r["auto"][1]), (&serde_json::json!("completed"), &serde_json::json!("auto")), "{r}");
    assert!(r["auto"][2].as_u64().unwrap() <= 512, "{r}");
}

//! The MCP client on its own, against a real MCP server written with the
//! official Python SDK: over stdio and over streamable HTTP it lists the tool
//! and runs a call; a command that does not exist, a server that exits at
//! once and a URL where nothing listens are each a clear failure of that
//! server, never a hang.

mod common;

use hearth::mcp::{McpEvent, McpHandle, ServerEntry};
use std::time::{Duration, Instant};

fn next_event(h: &McpHandle, secs: u64) -> McpEvent {
    h.events.recv_timeout(Duration::from_secs(secs)).expect("an MCP event in time")
}

fn server_script() -> String {
    common::root().join("tests/reference/mcp_weather_server.py").to_string_lossy().into_owned()
}

/// Connects to `entry`, checks its one tool, calls it for Oslo.
fn list_and_call(entry: ServerEntry) {
    let h = McpHandle::spawn();
    h.connect(vec![entry]);
    let tools = match next_event(&h, 60) {
        McpEvent::Connected { tools, .. } => tools,
        other => panic!("{other:?}"),
    };
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].spec.name, "get_weather");
    assert_eq!(tools[0].spec.parameters["required"], serde_json::json!(["city"]));
    h.call("call_1".into(), &tools[0], serde_json::json!({"city": "Oslo"}));
    match next_event(&h, 60) {
        McpEvent::Result { call_id, text, is_error } => {
            assert_eq!((call_id.as_str(), text.as_str(), is_error), ("call_1", "The weather in Oslo: sunny, 21 degrees Celsius.", false));
        }
        other => panic!("{other:?}"),
    }
    // Arguments the tool's schema refuses come back as the tool's error, not a crash.
    h.call("call_2".into(), &tools[0], serde_json::json!({"town": 3}));
    match next_event(&h, 60) {
        McpEvent::Result { call_id, is_error, .. } => assert_eq!((call_id.as_str(), is_error), ("call_2", true)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stdio_server_lists_its_tool_and_runs_a_call() {
    let args = vec![server_script()];
    list_and_call(ServerEntry::Stdio { name: "weather".into(), command: common::python().to_string_lossy().into_owned(), args, env: Default::default() });
}

#[test]
fn a_streamable_http_server_lists_its_tool_and_runs_a_call() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(common::python())
        .args([server_script(), "--http".into(), port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the HTTP MCP server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("http://127.0.0.1:{port}/mcp");
    let r = std::panic::catch_unwind(|| list_and_call(ServerEntry::Http { name: "weather".into(), url }));
    let _ = server.kill();
    let _ = server.wait();
    r.unwrap();
}

#[test]
fn servers_that_cannot_start_or_answer_fail_by_name() {
    let h = McpHandle::spawn();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    h.connect(vec![
        ServerEntry::Stdio { name: "missing".into(), command: "/nonexistent/mcp-server".into(), args: vec![], env: Default::default() },
        ServerEntry::Stdio { name: "quits".into(), command: "true".into(), args: vec![], env: Default::default() },
        ServerEntry::Http { name: "nobody".into(), url: format!("http://127.0.0.1:{port}/mcp") },
    ]);
    let t0 = Instant::now();
    let mut failed = std::collections::BTreeMap::new();
    while failed.len() < 3 {
        match next_event(&h, 60) {
            McpEvent::Failed { server, error } => {
                failed.insert(server, error);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert!(failed["missing"].contains("cannot start '/nonexistent/mcp-server'"), "{failed:?}");
    assert!(!failed["quits"].is_empty() && !failed["nobody"].is_empty(), "{failed:?}");
}

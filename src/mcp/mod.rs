//! MCP servers the user configured, as tools for the chat: the config in the
//! shape Claude Desktop and LM Studio use (`{"mcpServers": {name: {command,
//! args, env} | {url}}}`), and one thread with its own async runtime that
//! connects to them through rmcp (the official Rust SDK: stdio servers it
//! starts, streamable HTTP ones by URL), lists their tools and runs the calls
//! the user approved. The UI talks to it over channels and never waits on it.

use crate::chat::tool_prompt::ToolSpec;
use crossbeam_channel::{unbounded, Receiver, Sender};
use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a server may take to start and list its tools, and a tool to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The most text of one tool result kept for the model (the rest is cut, and says so).
const MAX_RESULT_BYTES: usize = 64 << 10;

/// One configured server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEntry {
    Stdio { name: String, command: String, args: Vec<String>, env: BTreeMap<String, String> },
    Http { name: String, url: String },
}

impl ServerEntry {
    pub fn name(&self) -> &str {
        match self {
            ServerEntry::Stdio { name, .. } | ServerEntry::Http { name, .. } => name,
        }
    }
}

/// Reads `{"mcpServers": {…}}`; an empty text is no servers.
pub fn parse_config(text: &str) -> Result<Vec<ServerEntry>, String> {
    if text.trim().is_empty() {
        return Ok(vec![]);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| format!("the MCP configuration is not JSON: {e}"))?;
    let servers = v.get("mcpServers").and_then(Value::as_object).ok_or("the MCP configuration needs an \"mcpServers\" object")?;
    let mut out = Vec::new();
    for (name, s) in servers {
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(format!("MCP server name '{name}' must be 1 to 64 letters, digits, '_', '-' or '.'"));
        }
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match s.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| x.as_str().map(String::from).ok_or_else(|| format!("{name}: every entry of {key} must be a string")))
                    .collect(),
                Some(_) => Err(format!("{name}: {key} must be a list of strings")),
            }
        };
        match (s.get("command").and_then(Value::as_str), s.get("url").and_then(Value::as_str)) {
            (Some(command), None) if !command.trim().is_empty() => {
                let mut env = BTreeMap::new();
                if let Some(e) = s.get("env").filter(|e| !e.is_null()) {
                    for (k, v) in e.as_object().ok_or_else(|| format!("{name}: env must be an object of strings"))? {
                        env.insert(k.clone(), v.as_str().ok_or_else(|| format!("{name}: env.{k} must be a string"))?.to_string());
                    }
                }
                out.push(ServerEntry::Stdio { name: name.clone(), command: command.to_string(), args: strings("args")?, env });
            }
            (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {
                out.push(ServerEntry::Http { name: name.clone(), url: url.to_string() })
            }
            (None, Some(url)) => return Err(format!("{name}: url must start with http:// or https://, not '{url}'")),
            _ => return Err(format!("{name}: give either a command (with args, env) or a url")),
        }
    }
    Ok(out)
}

/// A tool of a connected server, as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    pub server: String,
    /// The tool's name on its server.
    pub remote: String,
    /// The name, description and schema the model sees (the name gets the
    /// server's in front when two servers offer the same one).
    pub spec: ToolSpec,
}

#[derive(Debug, Clone, PartialEq)]
pub enum McpEvent {
    Connected { server: String, tools: Vec<McpTool> },
    Failed { server: String, error: String },
    /// A call's result: the text for the model, and whether the tool said it failed.
    Result { call_id: String, text: String, is_error: bool },
}

enum McpCommand {
    Connect(Vec<ServerEntry>),
    Call { call_id: String, server: String, tool: String, arguments: Value },
}

/// Called after each event, so a UI can wake up for it.
pub type Waker = Arc<Mutex<Option<Box<dyn Fn() + Send>>>>;

/// The UI's end of the MCP thread.
pub struct McpHandle {
    commands: tokio::sync::mpsc::UnboundedSender<McpCommand>,
    pub events: Receiver<McpEvent>,
    waker: Waker,
}

impl McpHandle {
    pub fn spawn() -> Self {
        let (ctx, crx) = tokio::sync::mpsc::unbounded_channel();
        let (etx, erx) = unbounded();
        let waker: Waker = Arc::default();
        let w = waker.clone();
        std::thread::Builder::new()
            .name("hearth-mcp".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(run(crx, etx, w));
            })
            .expect("spawning the MCP thread");
        McpHandle { commands: ctx, events: erx, waker }
    }

    pub fn set_waker(&self, f: impl Fn() + Send + 'static) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(f));
    }

    /// Disconnects from every server, then connects to these.
    pub fn connect(&self, servers: Vec<ServerEntry>) {
        let _ = self.commands.send(McpCommand::Connect(servers));
    }

    /// Runs an approved call; its result arrives as `McpEvent::Result`.
    pub fn call(&self, call_id: String, tool: &McpTool, arguments: Value) {
        let _ = self.commands.send(McpCommand::Call { call_id, server: tool.server.clone(), tool: tool.remote.clone(), arguments });
    }
}

type Client = RunningService<RoleClient, ()>;

async fn run(mut commands: tokio::sync::mpsc::UnboundedReceiver<McpCommand>, events: Sender<McpEvent>, waker: Waker) {
    let send = |e: McpEvent| {
        let _ = events.send(e);
        if let Some(f) = waker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f();
        }
    };
    let mut clients: HashMap<String, Arc<Client>> = HashMap::new();
    // Results come back on this channel from the calls' own tasks.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<McpEvent>();
    loop {
        let cmd = tokio::select! {
            c = commands.recv() => match c { Some(c) => c, None => break },
            Some(e) = done_rx.recv() => { send(e); continue; }
        };
        match cmd {
            McpCommand::Connect(servers) => {
                for (_, c) in clients.drain() {
                    if let Ok(c) = Arc::try_unwrap(c) {
                        let _ = c.cancel().await;
                    }
                }
                let mut listed: Vec<(String, Vec<rmcp::model::Tool>)> = Vec::new();
                for entry in servers {
                    let name = entry.name().to_string();
                    match tokio::time::timeout(CONNECT_TIMEOUT, connect(&entry)).await {
                        Ok(Ok((client, tools))) => {
                            clients.insert(name.clone(), Arc::new(client));
                            listed.push((name, tools));
                        }
                        Ok(Err(e)) => send(McpEvent::Failed { server: name, error: e }),
                        Err(_) => send(McpEvent::Failed { server: name, error: "did not answer within 30 s".into() }),
                    }
                }
                for (server, tools) in offered(&listed) {
                    send(McpEvent::Connected { server, tools });
                }
            }
            McpCommand::Call { call_id, server, tool, arguments } => {
                let Some(client) = clients.get(&server).cloned() else {
                    send(McpEvent::Result { call_id, text: format!("MCP server '{server}' is not connected"), is_error: true });
                    continue;
                };
                let done = done_tx.clone();
                tokio::spawn(async move {
                    let (text, is_error) = match tokio::time::timeout(CALL_TIMEOUT, call(&client, &tool, arguments)).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => (format!("The tool failed: {e}"), true),
                        Err(_) => ("The tool did not answer within 120 s.".to_string(), true),
                    };
                    let _ = done.send(McpEvent::Result { call_id, text, is_error });
                });
            }
        }
    }
}

async fn connect(entry: &ServerEntry) -> Result<(Client, Vec<rmcp::model::Tool>), String> {
    let client = match entry {
        ServerEntry::Stdio { command, args, env, .. } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env).kill_on_drop(true);
            let transport = TokioChildProcess::new(cmd).map_err(|e| format!("cannot start '{command}': {e}"))?;
            ().serve(transport).await.map_err(|e| format!("did not start an MCP session: {e}"))?
        }
        ServerEntry::Http { url, .. } => {
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            ().serve(transport).await.map_err(|e| format!("did not start an MCP session at {url}: {e}"))?
        }
    };
    let tools = client.list_all_tools().await.map_err(|e| format!("did not list its tools: {e}"))?;
    Ok((client, tools))
}

/// The tools as the model sees them: names unique across servers (a name two
/// servers share gets `server_` in front), schemas as given.
fn offered(listed: &[(String, Vec<rmcp::model::Tool>)]) -> Vec<(String, Vec<McpTool>)> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, tools) in listed {
        for t in tools {
            *count.entry(t.name.as_ref()).or_default() += 1;
        }
    }
    listed
        .iter()
        .map(|(server, tools)| {
            let offered = tools
                .iter()
                .filter_map(|t| {
                    let name = if count[t.name.as_ref()] > 1 { format!("{server}_{}", t.name) } else { t.name.to_string() };
                    let spec = serde_json::json!({"name": name, "description": t.description.as_deref().unwrap_or(""),
                                                  "parameters": Value::Object((*t.input_schema).clone())});
                    // A tool whose name or schema Hearth cannot offer is left out.
                    ToolSpec::from_value(&spec).ok().map(|spec| McpTool { server: server.clone(), remote: t.name.to_string(), spec })
                })
                .collect();
            (server.clone(), offered)
        })
        .collect()
}

async fn call(client: &Client, tool: &str, arguments: Value) -> Result<(String, bool), String> {
    let args = match arguments {
        Value::Object(o) => o,
        _ => return Err("the arguments are not a JSON object".into()),
    };
    let r = client.call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args)).await.map_err(|e| e.to_string())?;
    let mut text = String::new();
    for block in serde_json::to_value(&r.content).unwrap_or_default().as_array().into_iter().flatten() {
        if !text.is_empty() {
            text.push('\n');
        }
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or("")),
            Some(other) => text.push_str(&format!("[{other} content]")),
            None => {}
        }
    }
    if text.is_empty() {
        if let Some(s) = &r.structured_content {
            text = s.to_string();
        }
    }
    if text.len() > MAX_RESULT_BYTES {
        let mut cut = MAX_RESULT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[the result was cut at 64 kB]");
    }
    Ok((text, r.is_error == Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_in_claude_desktops_shape_are_read_and_bad_ones_named() {
        let ok = r#"{"mcpServers": {"weather": {"command": "python3", "args": ["server.py"], "env": {"KEY": "v"}},
                     "remote": {"url": "https://example.com/mcp"}}}"#;
        let servers = parse_config(ok).unwrap();
        assert_eq!(servers.len(), 2);
        assert!(matches!(&servers[0], ServerEntry::Stdio { name, command, args, env }
            if name == "weather" && command == "python3" && args == &["server.py"] && env["KEY"] == "v"));
        assert!(matches!(&servers[1], ServerEntry::Http { url, .. } if url == "https://example.com/mcp"));
        assert!(parse_config("").unwrap().is_empty());
        let err = |t: &str| parse_config(t).unwrap_err();
        assert!(err("{").contains("not JSON"));
        assert!(err(r#"{"servers": {}}"#).contains("mcpServers"));
        assert!(err(r#"{"mcpServers": {"a b": {"command": "x"}}}"#).contains("'a b'"));
        assert!(err(r#"{"mcpServers": {"a": {"command": "x", "args": [1]}}}"#).contains("args"));
        assert!(err(r#"{"mcpServers": {"a": {"url": "file:///etc/passwd"}}}"#).contains("http://"));
        assert!(err(r#"{"mcpServers": {"a": {}}}"#).contains("either a command"));
    }
}

//! An in-process HTTP server on 127.0.0.1 that serves model repos the way the
//! Hugging Face Hub does: the model info API with siblings, the tree API with
//! sizes and LFS sha256, search, `resolve/<rev>/<file>` with ETag / X-Repo-Commit,
//! LFS files redirected (302) to a CDN path with X-Linked-Etag / X-Linked-Size,
//! and Range requests. It logs every request and can cut a connection mid-file,
//! corrupt a byte, throttle, or demand a token.
#![allow(dead_code)]

use sha2::Digest;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TOKEN: &str = "hf_test_token_0123456789";

#[derive(Clone)]
pub struct File {
    pub path: String,
    pub bytes: Arc<Vec<u8>>,
    pub lfs: bool,
    pub sha256: String,
    pub git_oid: String,
}

impl File {
    pub fn new(path: &str, bytes: Vec<u8>) -> File {
        // The Hub stores big and binary files in LFS.
        let lfs = bytes.len() > 1 << 20 || path.ends_with(".safetensors") || path.ends_with(".gguf");
        let sha256 = hex(&sha2::Sha256::digest(&bytes));
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", bytes.len()).as_bytes());
        h.update(&bytes);
        File { path: path.into(), lfs, sha256, git_oid: hex(&h.finalize()), bytes: Arc::new(bytes) }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone)]
pub struct Repo {
    pub id: String,
    pub commit: String,
    pub files: Vec<File>,
    pub gated: bool,
    pub tags: Vec<String>,
}

impl Repo {
    /// Every file in `dir` (flat), as a repo.
    pub fn from_dir(id: &str, dir: &Path, tags: &[&str]) -> Repo {
        let mut files: Vec<File> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
            .map(|e| File::new(&e.file_name().to_string_lossy(), std::fs::read(e.path()).unwrap()))
            .collect();
        files.push(File::new("README.md", format!("# {id}\n").into_bytes()));
        files.push(File::new(".gitattributes", b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n".to_vec()));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Repo::new(id, files, tags)
    }

    pub fn new(id: &str, files: Vec<File>, tags: &[&str]) -> Repo {
        let commit = hex(&sha2::Sha256::digest(id.as_bytes()))[..40].to_string();
        Repo { id: id.into(), commit, files, gated: false, tags: tags.iter().map(|s| s.to_string()).collect() }
    }
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorized: bool,
}

#[derive(Default)]
struct State {
    repos: HashMap<String, Repo>,
    log: Vec<Logged>,
    /// file path → stop the next body of it after this many bytes (connection dropped).
    cut_once: HashMap<String, u64>,
    /// file paths whose served bytes have one byte flipped.
    corrupt: Vec<String>,
    /// bytes per second for bodies, None = as fast as possible.
    throttle: Option<u64>,
    /// Send the headers of a body, then nothing while this holds (closed after 120 s).
    hold_bodies: bool,
}

pub struct HubServer {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl HubServer {
    pub fn start(repos: Vec<Repo>) -> HubServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            repos: repos.into_iter().map(|r| (r.id.clone(), r)).collect(),
            ..Default::default()
        }));
        let (st, base) = (state.clone(), url.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, base) = (st.clone(), base.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, &st, &base);
                });
            }
        });
        HubServer { url, state }
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }
    pub fn cut_once(&self, file: &str, after: u64) {
        self.state.lock().unwrap().cut_once.insert(file.into(), after);
    }
    pub fn corrupt(&self, file: &str) {
        self.state.lock().unwrap().corrupt.push(file.into());
    }
    pub fn heal(&self) {
        self.state.lock().unwrap().corrupt.clear();
    }
    pub fn hold_bodies(&self, on: bool) {
        self.state.lock().unwrap().hold_bodies = on;
    }
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.state.lock().unwrap().throttle = bytes_per_sec;
    }
    pub fn repo(&self, id: &str) -> Repo {
        self.state.lock().unwrap().repos[id].clone()
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into()
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8], head: bool) -> std::io::Result<()> {
    let mut h = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k == "Content-Length") {
        h.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    h.push_str("\r\n");
    s.write_all(h.as_bytes())?;
    if !head {
        s.write_all(body)?;
    }
    s.flush()
}

fn json(s: &mut TcpStream, status: &str, v: serde_json::Value, extra: &[(String, String)]) -> std::io::Result<()> {
    let mut h = vec![("Content-Type".to_string(), "application/json".to_string())];
    h.extend_from_slice(extra);
    respond(s, status, &h, v.to_string().as_bytes(), false)
}

fn handle(mut conn: TcpStream, st: &Arc<Mutex<State>>, base: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut l = String::new();
        if reader.read_line(&mut l)? == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let path = decode(path);
    let query: HashMap<String, String> =
        query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), decode(v))).collect();
    let range = headers.get("range").cloned();
    let authorized = headers.get("authorization").is_some_and(|a| a == &format!("Bearer {TOKEN}"));
    st.lock().unwrap().log.push(Logged { method: method.clone(), path: path.clone(), range: range.clone(), authorized });
    let head = method == "HEAD";

    // Search: GET /api/models?search=&filter=
    if path == "/api/models" {
        let q = query.get("search").cloned().unwrap_or_default().to_lowercase();
        let filter = query.get("filter").cloned();
        let repos: Vec<Repo> = st.lock().unwrap().repos.values().cloned().collect();
        let mut hits: Vec<serde_json::Value> = repos
            .iter()
            .filter(|r| r.id.to_lowercase().contains(&q))
            .filter(|r| filter.as_ref().is_none_or(|f| r.tags.contains(f)))
            .map(|r| serde_json::json!({"id": r.id, "modelId": r.id, "downloads": 1000, "likes": 7, "tags": r.tags, "gated": if r.gated { serde_json::json!("manual") } else { serde_json::json!(false) }}))
            .collect();
        hits.sort_by_key(|h| h["id"].as_str().unwrap_or("").to_string());
        return json(&mut conn, "200 OK", serde_json::Value::Array(hits), &[]);
    }

    let (api, rest) = if let Some(r) = path.strip_prefix("/api/models/") {
        (true, r.to_string())
    } else if let Some(r) = path.strip_prefix("/cdn/") {
        return cdn(&mut conn, st, r, range.as_deref(), head);
    } else {
        (false, path.trim_start_matches('/').to_string())
    };
    let segs: Vec<&str> = rest.splitn(3, '/').collect();
    if segs.len() < 2 {
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "not found"}), &[]);
    }
    let id = format!("{}/{}", segs[0], segs[1]);
    let tail = segs.get(2).copied().unwrap_or("");
    let Some(repo) = st.lock().unwrap().repos.get(&id).cloned() else {
        let h = [("X-Error-Code".to_string(), "RepoNotFound".to_string())];
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "Repository not found"}), &h);
    };
    if repo.gated && !authorized {
        let h = [("X-Error-Code".to_string(), "GatedRepo".to_string())];
        let msg = format!("Access to model {id} is restricted. You must have access to it and be authenticated.");
        return json(&mut conn, "401 Unauthorized", serde_json::json!({"error": msg}), &h);
    }
    if api {
        if tail.is_empty() || tail.starts_with("revision/") {
            let siblings: Vec<_> = repo.files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect();
            return json(
                &mut conn,
                "200 OK",
                serde_json::json!({"_id": "abc", "id": id, "modelId": id, "sha": repo.commit, "private": false,
                    "gated": repo.gated, "tags": repo.tags, "downloads": 1000, "likes": 7, "siblings": siblings}),
                &[],
            );
        }
        if tail.starts_with("tree/") {
            let entries: Vec<_> = repo
                .files
                .iter()
                .map(|f| {
                    let mut e = serde_json::json!({"type": "file", "oid": f.git_oid, "size": f.bytes.len(), "path": f.path});
                    if f.lfs {
                        e["lfs"] = serde_json::json!({"oid": f.sha256, "size": f.bytes.len(), "pointerSize": 134});
                    }
                    e
                })
                .collect();
            return json(&mut conn, "200 OK", serde_json::Value::Array(entries), &[]);
        }
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "not found"}), &[]);
    }
    // /{owner}/{name}/resolve/{rev}/{file}
    let Some(rest) = tail.strip_prefix("resolve/") else {
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "not found"}), &[]);
    };
    let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
    if rev != "main" && rev != repo.commit {
        let h = [("X-Error-Code".to_string(), "RevisionNotFound".to_string())];
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "Invalid rev id"}), &h);
    }
    let Some(f) = repo.files.iter().find(|f| f.path == file) else {
        let h = [("X-Error-Code".to_string(), "EntryNotFound".to_string())];
        return json(&mut conn, "404 Not Found", serde_json::json!({"error": "Entry not found"}), &h);
    };
    if f.lfs {
        let h = vec![
            ("Location".to_string(), format!("{base}/cdn/{id}/{}", f.sha256)),
            ("X-Linked-Etag".to_string(), format!("\"{}\"", f.sha256)),
            ("X-Linked-Size".to_string(), f.bytes.len().to_string()),
            ("X-Repo-Commit".to_string(), repo.commit.clone()),
            ("ETag".to_string(), format!("\"{}\"", f.git_oid)),
        ];
        return respond(&mut conn, "302 Found", &h, b"", head);
    }
    let extra = vec![("X-Repo-Commit".to_string(), repo.commit.clone()), ("ETag".to_string(), format!("\"{}\"", f.git_oid))];
    body(&mut conn, st, f, range.as_deref(), head, extra)
}

/// The CDN side of an LFS redirect: /cdn/{owner}/{name}/{sha256}.
fn cdn(conn: &mut TcpStream, st: &Arc<Mutex<State>>, rest: &str, range: Option<&str>, head: bool) -> std::io::Result<()> {
    let segs: Vec<&str> = rest.splitn(3, '/').collect();
    let id = format!("{}/{}", segs[0], segs.get(1).unwrap_or(&""));
    let sha = segs.get(2).copied().unwrap_or("");
    let repo = st.lock().unwrap().repos.get(&id).cloned();
    let Some(f) = repo.and_then(|r| r.files.into_iter().find(|f| f.sha256 == sha)) else {
        return respond(conn, "404 Not Found", &[], b"NoSuchKey", head);
    };
    let extra = vec![("ETag".to_string(), format!("\"{}\"", f.sha256))];
    body(conn, st, &f, range, head, extra)
}

fn body(
    conn: &mut TcpStream,
    st: &Arc<Mutex<State>>,
    f: &File,
    range: Option<&str>,
    head: bool,
    mut headers: Vec<(String, String)>,
) -> std::io::Result<()> {
    let size = f.bytes.len() as u64;
    let (start, end) = match range.and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let a: u64 = a.parse().unwrap_or(0);
            let b: u64 = if b.is_empty() { size - 1 } else { b.parse().unwrap_or(size - 1).min(size - 1) };
            (a, b + 1)
        }
        None => (0, size),
    };
    if start >= size && size > 0 {
        return respond(conn, "416 Range Not Satisfiable", &[("Content-Range".into(), format!("bytes */{size}"))], b"", head);
    }
    let status = if range.is_some() {
        headers.push(("Content-Range".into(), format!("bytes {start}-{}/{size}", end - 1)));
        "206 Partial Content"
    } else {
        "200 OK"
    };
    headers.push(("Accept-Ranges".into(), "bytes".into()));
    headers.push(("Content-Length".into(), (end - start).to_string()));
    headers.push(("Content-Type".into(), "application/octet-stream".into()));
    respond(conn, status, &headers, b"", true)?;
    if head {
        return Ok(());
    }
    let held = std::time::Instant::now();
    while st.lock().unwrap().hold_bodies {
        if held.elapsed() > Duration::from_secs(120) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (cut, corrupt, throttle) = {
        let mut s = st.lock().unwrap();
        (s.cut_once.remove(&f.path), s.corrupt.contains(&f.path), s.throttle)
    };
    let mut data = f.bytes[start as usize..end as usize].to_vec();
    if corrupt && !data.is_empty() {
        let mid = data.len() / 2;
        data[mid] ^= 0x55;
    }
    let stop = cut.map(|c| (c.saturating_sub(start)) as usize).unwrap_or(data.len()).min(data.len());
    // Slow throttles trickle: `bps` bytes, then a second's pause.
    let chunk = throttle.map_or(64 * 1024, |bps| (bps as usize).clamp(1, 64 * 1024));
    let mut pos = 0;
    while pos < stop {
        let n = chunk.min(stop - pos);
        conn.write_all(&data[pos..pos + n])?;
        pos += n;
        if let Some(bps) = throttle {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / bps as f64));
        }
    }
    conn.flush()?;
    // A cut: close the socket with the promised bytes unsent.
    let _ = conn.shutdown(std::net::Shutdown::Both);
    Ok(())
}

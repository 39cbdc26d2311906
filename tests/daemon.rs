//! `hearth serve --daemon` on the real SmolLM2: it detaches and serves, a
//! second one is refused, the app attaches to its engine instead of starting
//! one (no engine thread in this process), the chat and an official-SDK
//! client get the same greedy answer from it, quitting the app leaves it
//! serving, and `hearth service` reports and stops it and writes its unit.

mod common;

use hearth::hub::manager::HubConfig;
use hearth::hub::Options;
use hearth::ui::state::{AppState, ModelState};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn hearth(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hearth")).args(args).env("HEARTH_HOME", home).env_remove("HEARTH_API_KEY").output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Kills the daemon if the test fails before stopping it (it outlives its parent by design).
struct Reaper(Option<u32>);
impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// Threads of this process named `hearth-engine`: an engine of its own
/// (Linux's /proc names them; elsewhere the handle's word stands). Only
/// where no engine ran here: MLX's workers inherit the name of the thread
/// that started them.
#[cfg(not(target_os = "linux"))]
fn engine_threads() -> usize {
    0
}
#[cfg(target_os = "linux")]
fn engine_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "hearth-engine"))
        .count()
}

/// The chat's question (after its system prompt) through the official
/// openai SDK: the daemon's own answer.
fn sdk_answer(port: u16, system: &str) -> String {
    let script = format!(
        "import openai, sys\nc = openai.OpenAI(base_url='http://127.0.0.1:{port}/v1', api_key='x', max_retries=0, timeout=120)\n\
         r = c.chat.completions.create(model='SmolLM2-135M-Instruct.Q4_1', temperature=0, max_tokens=48, messages=[{{'role': 'system', 'content': sys.argv[1]}}, {{'role': 'user', 'content': 'What is the capital of France?'}}])\n\
         print(r.choices[0].message.content)"
    );
    let out = Command::new(common::python()).args(["-c", &script, system]).output().unwrap();
    assert!(out.status.success(), "python failed: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim_end_matches('\n').to_string()
}

#[test]
fn the_app_attaches_to_the_daemon_and_quitting_it_leaves_the_daemon_serving() {
    let _g = common::mlx_lock();
    let home = common::data_dir_with_smollm2();
    let model = home.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = model.to_str().unwrap();

    // What a crashed daemon leaves (its record, a socket nobody listens on) is
    // reported as such, then cleared by the next one.
    std::fs::create_dir_all(home.path().join("run")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(home.path().join("run/daemon.sock")).unwrap());
    std::fs::write(home.path().join("daemon.json"), br#"{"pid": 999999, "url": "http://127.0.0.1:9", "socket": "x", "log": "y", "version": "0", "started": 0}"#).unwrap();
    let stale = hearth(home.path(), &["service", "status"]);
    assert!(stale.status.code() == Some(3) && text(&stale).contains("pid 999999 left a record"), "{}", text(&stale));

    // Detaches: the command returns once the daemon serves.
    let out = hearth(home.path(), &["serve", "--daemon", "--port", "0", "--model", m]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(home.path().join("daemon.json")).unwrap()).unwrap();
    let mut reaper = Reaper(record["pid"].as_u64().map(|p| p as u32));
    let url = record["url"].as_str().unwrap().to_string();
    assert!(text(&out).contains(&format!("listening on {url}")), "{}", text(&out));
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    assert!(home.path().join("logs/daemon.log").exists(), "the daemon logs into the data folder");

    // A peer that speaks nonsense on the socket is refused; the daemon goes on.
    {
        use std::io::{BufRead, Write};
        let mut peer = std::os::unix::net::UnixStream::connect(home.path().join("run/daemon.sock")).unwrap();
        peer.write_all(b"{\"Hello\": 12}\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(&peer).read_line(&mut line).unwrap();
        assert!(line.contains("Refused") && line.contains("hello"), "{line}");
    }

    // Never two.
    let second = hearth(home.path(), &["serve", "--daemon", "--port", "0", "--model", m]);
    assert!(!second.status.success() && text(&second).contains("already serves"), "{}", text(&second));

    // The app attaches: no engine of its own, the daemon's model is the chat's.
    let hub = HubConfig {
        endpoint: Some("http://127.0.0.1:9".into()),
        cache_dir: Some(home.path().join("hf-cache")),
        jobs_file: home.path().join("downloads.json"),
        context: 4096,
        options: Options::default(),
        offline: false,
    };
    let mut app = AppState::with_hub(home.path(), hub);
    assert!(app.engine.handle.is_attached() && app.engine.daemon.is_some(), "the app attached to the daemon");
    assert_eq!(engine_threads(), 0, "one engine: the daemon's");
    app.settings.sampling = hearth::engine::SamplingParams::greedy();
    app.settings.max_tokens = 48;
    app.autoload();
    let wait = |app: &mut AppState, what: &str, done: &dyn Fn(&AppState) -> bool| {
        let end = Instant::now() + Duration::from_secs(120);
        while !done(app) {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            app.poll();
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(&mut app, "the daemon's model", &|a| matches!(a.engine.model, ModelState::Ready(_)));
    let status = hearth(home.path(), &["service", "status"]);
    assert!(status.status.success() && text(&status).contains("apps attached: 1"), "{}", text(&status));

    app.chat.input = "What is the capital of France?".into();
    app.send_input();
    assert!(app.is_generating());
    wait(&mut app, "the reply", &|a| !a.is_generating());
    let reply = app.current_conversation().unwrap().messages.last().unwrap().content.clone();
    assert!(reply.contains("Paris"), "{reply}");
    assert_eq!(engine_threads(), 0, "still one engine after a reply");
    // Greedy on one engine: the API's answer is the chat's, word for word.
    let system = app.settings.system_prompt.clone();
    assert_eq!(sdk_answer(port, &system), reply);

    // Quitting the app hangs up; the daemon goes on serving.
    app.flush();
    drop(app);
    assert!(sdk_answer(port, &system).contains("Paris"));
    let log = std::fs::read_to_string(home.path().join("logs/daemon.log")).unwrap();
    assert!(log.contains("chat.completions: SmolLM2-135M-Instruct.Q4_1"), "the log holds the requests: {log}");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let s = text(&hearth(home.path(), &["service", "status"]));
        if s.contains("apps attached: 0") {
            break;
        }
        assert!(Instant::now() < end, "the app's connection outlived it: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stopped on request: the record and the socket go, the port closes.
    let stop = hearth(home.path(), &["service", "stop"]);
    assert!(stop.status.success() && text(&stop).contains("stopped"), "{}", text(&stop));
    reaper.0 = None;
    assert!(!home.path().join("daemon.json").exists() && !home.path().join("run/daemon.sock").exists());
    // Its sockets close as its last thread exits (`service stop` waits for that).
    let end = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < end, "the daemon's port stayed open after it stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = hearth(home.path(), &["service", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    assert!(text(&status).contains("not running"));
    // With no daemon the app starts its own engine.
    let app = AppState::new(home.path());
    assert!(!app.engine.handle.is_attached() && app.engine.daemon.is_none());
}

/// The systemd unit (macOS writes a launchd agent: `service.rs`'s unit test covers its text).
#[cfg(target_os = "linux")]
#[test]
fn the_service_unit_runs_the_daemon_in_the_foreground_and_uninstall_removes_it() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_hearth"))
            .args(args)
            .env("HEARTH_HOME", home.path().join("data"))
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", &config)
            .output()
            .unwrap()
    };
    let out = run(&["service", "install", "--no-enable", "--", "--port", "8123", "--idle-unload", "600"]);
    assert!(out.status.success(), "{}", text(&out));
    let unit = std::fs::read_to_string(config.join("systemd/user/hearth.service")).unwrap();
    let exe = env!("CARGO_BIN_EXE_hearth");
    assert!(unit.contains(&format!("ExecStart=\"{exe}\" \"serve\" \"--daemon\" \"--foreground\" \"--port\" \"8123\" \"--idle-unload\" \"600\"")), "{unit}");
    assert!(unit.contains("HEARTH_HOME=") && unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"), "{unit}");
    assert!(unit.contains("RestartPreventExitStatus=75"), "a daemon that finds another serving is not restarted: {unit}");
    // Options that would fight the unit's own are refused.
    let bad = run(&["service", "install", "--no-enable", "--", "--daemon"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    let out = run(&["service", "uninstall"]);
    assert!(out.status.success() && !config.join("systemd/user/hearth.service").exists(), "{}", text(&out));
}

/// The Server panel's "Keep serving in the background": the app starts the
/// daemon with its settings and its model, attaches to it, chats on it, and
/// "Stop the background server" brings back an engine of the app's own.
#[test]
fn the_app_starts_the_background_server_attaches_and_stops_it() {
    let _g = common::mlx_lock();
    let home = common::data_dir_with_smollm2();
    // The app runs `hearth`; in a test its own executable is the test.
    std::env::set_var("HEARTH_EXE", env!("CARGO_BIN_EXE_hearth"));
    let mut app = AppState::new(home.path());
    assert!(!app.engine.handle.is_attached());
    app.settings.sampling = hearth::engine::SamplingParams::greedy();
    app.settings.max_tokens = 16;
    app.settings.server.port = 0;
    app.autoload();
    let wait = |app: &mut AppState, what: &str, done: &dyn Fn(&AppState) -> bool| {
        let end = Instant::now() + Duration::from_secs(120);
        while !done(app) {
            assert!(Instant::now() < end, "timed out waiting for {what}; notices: {:?}", app.notices.iter().map(|n| &n.text).collect::<Vec<_>>());
            app.poll();
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(&mut app, "the app's own model", &|a| matches!(a.engine.model, ModelState::Ready(_)));
    app.start_daemon();
    wait(&mut app, "the daemon, attached, with the chat's model", &|a| a.engine.daemon.is_some() && matches!(a.engine.model, ModelState::Ready(_)));
    let pid = app.engine.daemon.as_ref().unwrap().pid;
    let _reaper = Reaper(Some(pid));
    assert!(app.engine.handle.is_attached() && app.server.running.is_none());
    // (MLX's worker threads, started from the app's engine thread, keep its
    // name after it ends: the model's memory is what tells here.)
    let held = mlx_rs::memory::active_memory().unwrap();
    assert!(held < 16 << 20, "the app's own model went with its engine ({held} bytes held): one engine, the daemon's");
    app.chat.input = "What is the capital of France?".into();
    app.send_input();
    wait(&mut app, "the reply", &|a| !a.is_generating());
    assert!(app.current_conversation().unwrap().messages.last().unwrap().content.contains("Paris"));

    app.stop_daemon();
    wait(&mut app, "the app's own engine again", &|a| a.engine.daemon.is_none() && matches!(a.engine.model, ModelState::Ready(_)));
    assert!(!app.engine.handle.is_attached());
    assert!(app.notices.iter().all(|n| n.kind != hearth::ui::state::NoticeKind::Error), "a stop asked for is no crash");
    assert!(!home.path().join("daemon.json").exists(), "the daemon removed its record as it stopped");
}

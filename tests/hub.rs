//! Downloads through hf-hub against a local server that behaves like the Hub:
//! full download that loads and answers, resume after a cut (from the server's
//! Range log), cancel, checksum, 404/401, unsafe ids, cache reuse, search,
//! resume after a restart, and the memory estimate against measured peak.

mod common;

use common::hub_server::{File, HubServer, Repo, TOKEN};
use hearth::chat::Message;
use hearth::engine::{GenerateParams, SamplingParams, Session};
use hearth::library::hf_cache::cached_models;
use hearth::hub::Options;
use hearth::hub::manager::{HubCommand, HubConfig, HubEvent, HubHandle};
use hearth::hub::{Control, Hub, HubError, SearchKind};
use hearth::models::load::{self, Precision};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

const ID: &str = "mlx-community/SmolLM2-135M-Instruct-4bit";

/// SmolLM2 converted to an mlx-community style folder (4-bit, as on the Hub).
fn model_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let _g = common::mlx_lock();
        hearth::models::load::convert::convert(&common::smollm2_gguf(), t.path(), Precision::Native).unwrap();
        t
    })
    .path()
}

fn server() -> HubServer {
    let smol = Repo::from_dir(ID, model_dir(), &["mlx", "safetensors"]);
    let mut gated = Repo::from_dir("meta-llama/Gated-Model", model_dir(), &["mlx"]);
    gated.gated = true;
    let gguf = Repo::new(
        "someone/tiny-GGUF",
        vec![File::new("tiny.Q8_0.gguf", vec![7u8; 4096]), File::new("README.md", b"hi".to_vec())],
        &["gguf"],
    );
    HubServer::start(vec![smol, gated, gguf])
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn hub(srv: &HubServer, cache: &Path, token: Option<&str>) -> Hub {
    let mut h = Hub::new(Some(srv.url.clone()), token.map(String::from), Some(cache.to_path_buf())).unwrap();
    h.options = Options {
        stall_timeout: Duration::from_secs(5),
        min_bytes: 16 << 10,
        give_up: Duration::from_secs(60),
        retries: 3,
        backoff: Duration::from_millis(50),
    };
    h
}

fn fetch(hub: &Hub, id: &str) -> Result<PathBuf, HubError> {
    let rt = rt();
    let (_tx, mut rx) = tokio::sync::watch::channel(Control::Run);
    rt.block_on(async {
        let plan = hub.plan(id, None).await?;
        hub.download(&plan, &mut rx, &mut |_| {}).await
    })
}

fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_named(&p, suffix));
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn full_download_lands_in_hf_cache_layout_then_loads_and_answers() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    let snap = fetch(&hub, ID).unwrap();
    let repo = cache.path().join("models--mlx-community--SmolLM2-135M-Instruct-4bit");
    let commit = srv.repo(ID).commit;
    assert_eq!(snap, repo.join("snapshots").join(&commit));
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), commit);
    // Snapshot entries are relative links into blobs/, named by LFS sha256 or git oid.
    for f in srv.repo(ID).files.iter().filter(|f| f.path != "README.md" && f.path != ".gitattributes") {
        let link = snap.join(&f.path);
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink(), "{}", f.path);
        let blob = if f.lfs { &f.sha256 } else { &f.git_oid };
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../blobs").join(blob));
        assert_eq!(std::fs::read(&link).unwrap(), *f.bytes);
    }
    // README and .gitattributes are not model files: not fetched.
    assert!(!snap.join("README.md").exists());
    assert!(files_named(cache.path(), ".incomplete").is_empty());
    assert_eq!(cached_models(cache.path()).iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), vec![ID]);

    let _g = common::mlx_lock();
    let loaded = load::load(&snap, Precision::Auto).unwrap();
    let mut s = Session::new(loaded, Some(1024));
    let (ids, _) = s.prompt_for_messages(&[Message::user("What is the capital of France?")], 40).unwrap();
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: 40, stop: vec![], ignore_eos: false, constraint: None, logprobs: None, ..Default::default() };
    let mut text = String::new();
    s.generate(&ids, &p, &AtomicBool::new(false), &mut |t| text.push_str(t)).unwrap();
    assert!(text.contains("Paris"), "{text:?}");
}

#[test]
fn a_connection_cut_mid_file_resumes_from_the_byte_where_it_stopped() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    let cut_at = 5_000_017u64;
    srv.cut_once("model.safetensors", cut_at);
    let mut retries = vec![];
    let rt = rt();
    let (_tx, mut rx) = tokio::sync::watch::channel(Control::Run);
    let snap = rt
        .block_on(async {
            let plan = hub.plan(ID, None).await?;
            hub.download(&plan, &mut rx, &mut |p| {
                if let hearth::hub::Phase::Retrying { .. } = p.phase {
                    retries.push((p.file.clone(), p.file_done));
                }
            })
            .await
        })
        .unwrap();
    assert_eq!(retries, vec![("model.safetensors".to_string(), cut_at)]);
    let weights = srv.repo(ID).files.into_iter().find(|f| f.path == "model.safetensors").unwrap();
    let size = weights.bytes.len();
    let ranges: Vec<String> = srv
        .log()
        .into_iter()
        .filter(|l| l.method == "GET" && l.path.ends_with(&weights.sha256))
        .filter_map(|l| l.range)
        .collect();
    assert_eq!(ranges, vec![format!("bytes=0-{}", size - 1), format!("bytes={cut_at}-{}", size - 1)]);
    let data = std::fs::read(snap.join("model.safetensors")).unwrap();
    assert_eq!(data.len(), size);
    assert_eq!(data, *srv.repo(ID).files.iter().find(|f| f.path == "model.safetensors").unwrap().bytes);
}

#[test]
fn a_corrupted_byte_is_caught_by_the_checksum_and_nothing_is_installed() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    srv.corrupt("model.safetensors");
    let err = fetch(&hub, ID).unwrap_err();
    assert!(matches!(err, HubError::Checksum(_)), "{err:?}");
    assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("corrupt"), "{err}");
    assert!(cached_models(cache.path()).is_empty());
    assert!(files_named(cache.path(), ".incomplete").is_empty(), "the bad bytes are deleted");
    // Small files are checked too (git blob sha1).
    srv.heal();
    srv.corrupt("config.json");
    let fresh = tempfile::tempdir().unwrap();
    let e = fetch(&self::hub(&srv, fresh.path(), None), ID).unwrap_err();
    assert!(matches!(&e, HubError::Checksum(m) if m.contains("config.json")), "{e:?}");
    srv.heal();
    fetch(&hub, ID).unwrap();
    assert_eq!(cached_models(cache.path()).len(), 1);
}

#[test]
fn a_cancelled_download_leaves_nothing_installed_and_no_partial_files() {
    let srv = server();
    srv.throttle(Some(4 << 20));
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    let rt = rt();
    let (tx, mut rx) = tokio::sync::watch::channel(Control::Run);
    let mut seen = 0u64;
    let err = rt
        .block_on(async {
            let plan = hub.plan(ID, None).await?;
            let r = hub
                .download(&plan, &mut rx, &mut |p| {
                    seen = p.done;
                    if p.file == "model.safetensors" && p.file_done > 2_000_000 {
                        let _ = tx.send(Control::Cancel);
                    }
                })
                .await;
            if matches!(r, Err(HubError::Cancelled)) {
                hub.discard(&plan).unwrap();
            }
            r
        })
        .unwrap_err();
    assert_eq!(err, HubError::Cancelled);
    assert!(seen > 2_000_000);
    assert!(cached_models(cache.path()).is_empty());
    assert!(files_named(cache.path(), "").is_empty(), "left behind: {:?}", files_named(cache.path(), ""));
}

#[test]
fn missing_gated_and_unsafe_ids_give_plain_errors() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let anon = hub(&srv, cache.path(), None);
    let e = fetch(&anon, "nobody/no-such-model").unwrap_err();
    assert!(matches!(e, HubError::NotFound(_)) && e.to_string() == "nobody/no-such-model was not found on Hugging Face", "{e}");
    let e = fetch(&anon, "meta-llama/Gated-Model").unwrap_err();
    assert!(matches!(e, HubError::NeedsToken(_)) && e.to_string().contains("needs a Hugging Face token"), "{e}");
    let wrong = hub(&srv, cache.path(), Some("hf_wrong_token_abcdef"));
    let e = fetch(&wrong, "meta-llama/Gated-Model").unwrap_err();
    assert!(e.to_string().contains("refused the saved Hugging Face token"), "{e}");
    // With the right token the gated model downloads; the token went only as a header.
    let authed = hub(&srv, cache.path(), Some(TOKEN));
    fetch(&authed, "meta-llama/Gated-Model").unwrap();

    srv.clear_log();
    for bad in ["../../x", "/etc/passwd", "a/../../b", "owner/name/../../..", "..\\..\\x", "ow ner/x"] {
        let e = fetch(&anon, bad).unwrap_err();
        assert!(matches!(e, HubError::BadId(_)), "{bad}: {e:?}");
    }
    assert!(srv.log().is_empty(), "an unsafe id must not reach the network");
    let outside: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(outside.iter().all(|n| n.to_string_lossy().starts_with("models--")), "{outside:?}");
}

#[test]
fn a_model_already_in_the_cache_is_reused_without_fetching() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    fetch(&hub, ID).unwrap();
    srv.clear_log();
    fetch(&hub, ID).unwrap();
    let gets: Vec<_> = srv.log().into_iter().filter(|l| l.method == "GET" && !l.path.starts_with("/api/")).collect();
    // Only config.json (read for the fit estimate before download), no weights.
    assert!(gets.iter().all(|l| l.path.ends_with("config.json")), "{gets:?}");
}

#[test]
fn gguf_repos_fetch_one_quantization_and_search_filters() {
    let srv = server();
    let cache = tempfile::tempdir().unwrap();
    let hub = hub(&srv, cache.path(), None);
    let plan = rt().block_on(hub.plan("someone/tiny-GGUF", None)).unwrap();
    assert_eq!(plan.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), vec!["tiny.Q8_0.gguf"]);
    let hits = rt().block_on(hub.search("smollm2", SearchKind::Mlx, 10)).unwrap();
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec![ID]);
    let hits = rt().block_on(hub.search("", SearchKind::Gguf, 10)).unwrap();
    assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), vec!["someone/tiny-GGUF"]);
}

fn wait_for(h: &HubHandle, mut pred: impl FnMut(&HubEvent) -> bool) -> Vec<HubEvent> {
    let mut seen = vec![];
    loop {
        let e = h.events.recv_timeout(Duration::from_secs(60)).expect("no event from the download thread");
        let done = pred(&e);
        seen.push(e);
        if done {
            return seen;
        }
    }
}

#[test]
fn a_paused_download_resumes_after_the_app_restarts() {
    let srv = server();
    srv.throttle(Some(8 << 20));
    let cache = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let cfg = HubConfig {
        endpoint: Some(srv.url.clone()),
        cache_dir: Some(cache.path().to_path_buf()),
        jobs_file: home.path().join("downloads.json"),
        context: 2048,
        options: Options::default(),
        offline: false,
    };
    let h = HubHandle::spawn(cfg.clone());
    h.send(HubCommand::Start { id: ID.into(), only: None, confirmed: false });
    let mut paused_sent = false;
    let events = wait_for(&h, |e| {
        if let HubEvent::Progress { progress, .. } = e {
            if progress.file_done > 3_000_000 && progress.file == "model.safetensors" && !paused_sent {
                paused_sent = true;
                h.send(HubCommand::Pause(ID.into()));
            }
        }
        matches!(e, HubEvent::Paused { .. })
    });
    assert!(events.iter().any(|e| matches!(e, HubEvent::Planned { verdict: hearth::models::load::fit::Verdict::Fits, .. })));
    drop(h); // the app quits
    srv.clear_log();
    srv.throttle(None);

    let h = HubHandle::spawn(cfg);
    let first = h.events.recv_timeout(Duration::from_secs(10)).unwrap();
    let HubEvent::Paused { id, done, total } = first else { panic!("{first:?}") };
    assert_eq!(id, ID);
    assert!(done > 3_000_000 && done < total, "{done} of {total}");
    h.send(HubCommand::Resume(ID.into()));
    let events = wait_for(&h, |e| matches!(e, HubEvent::Finished { .. } | HubEvent::Failed { .. }));
    let Some(HubEvent::Finished { path, .. }) = events.last() else { panic!("{events:?}") };
    assert!(path.join("model.safetensors").is_file());
    // The resumed request started past zero: the bytes on disk were kept.
    let range = srv.log().into_iter().find(|l| l.method == "GET" && l.path.starts_with("/cdn/")).and_then(|l| l.range).unwrap();
    let from: u64 = range.trim_start_matches("bytes=").split('-').next().unwrap().parse().unwrap();
    assert!(from > 3_000_000, "{range}");
    assert!(!home.path().join("downloads.json").exists() || std::fs::read_to_string(home.path().join("downloads.json")).unwrap().trim() == "[]");
}

#[test]
fn the_memory_estimate_brackets_measured_peak_memory() {
    use hearth::models::load::fit::{self, Shape};
    let dir = model_dir(); // before the lock: building it takes the lock too
    let _g = common::mlx_lock();
    let loaded = load::load(&common::smollm2_gguf(), Precision::Auto).unwrap();
    let params = loaded.info.parameters;
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let shape = Shape::from_config(&cfg, params).unwrap();
    let ctx = 2048u64;
    let mut s = Session::new(loaded, Some(ctx as usize));
    mlx_rs::memory::reset_peak_memory().unwrap();
    // Fill most of the context: a long prompt, then generation.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(180);
    let (ids, _) = s.prompt_for_messages(&[Message::user(&long)], 64).unwrap();
    assert!(ids.len() > 1500, "{}", ids.len());
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: 64, stop: vec![], ignore_eos: true, constraint: None, logprobs: None, ..Default::default() };
    s.generate(&ids, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let measured = mlx_rs::memory::peak_memory().unwrap() as u64;
    let need = fit::estimate(&shape, ctx, fit::Device::Cpu, hearth::sys::total_memory());
    let ratio = need.total() as f64 / measured as f64;
    eprintln!("estimate {} (weights {} kv {} working {}) vs measured peak {}: ratio {ratio:.2}", need.total(), need.weights, need.kv_cache, need.working, measured);
    assert!((1.0..1.3).contains(&ratio), "estimate {} vs measured {measured}", need.total());
}

/// A server that accepts and never answers, and one that sends a byte a second:
/// both end in a clear error within a bounded time, never a hang.
#[test]
fn silent_and_trickling_servers_end_in_bounded_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let h2 = held.clone();
    std::thread::spawn(move || {
        for c in silent.incoming().flatten().take(20) {
            h2.lock().unwrap().push(c); // keep it open, say nothing
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let mut h = Hub::new(Some(url), None, Some(cache.path().to_path_buf())).unwrap();
    h.options = Options { stall_timeout: Duration::from_secs(2), min_bytes: 1024, give_up: Duration::from_secs(60), retries: 1, backoff: Duration::from_millis(50) };
    let t = std::time::Instant::now();
    let e = fetch(&h, "someone/tiny-GGUF").unwrap_err();
    assert!(matches!(e, HubError::Stalled(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    let srv = server();
    srv.throttle(Some(1));
    let mut h = hub(&srv, cache.path(), None);
    h.options = Options { stall_timeout: Duration::from_secs(2), min_bytes: 1024, give_up: Duration::from_secs(60), retries: 1, backoff: Duration::from_millis(50) };
    let t = std::time::Instant::now();
    let e = fetch(&h, "someone/tiny-GGUF").unwrap_err();
    assert!(matches!(e, HubError::Stalled(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    srv.throttle(None);
}

/// Stall rules that fit every size: a 10 kB file at 1 B/s, a 1 MB file at
/// 100 B/s and a server that stops after the headers each end as stalled
/// once the give-up time passes without progress (not after minutes of
/// retries, as when the rule only fired for 16 kB windows); the part fetched
/// is kept and resumes with a Range request once the server is good again.
#[test]
fn trickles_and_silent_bodies_give_up_within_the_deadline_and_resume_later() {
    let srv = HubServer::start(vec![
        Repo::new("someone/small-GGUF", vec![File::new("small.gguf", vec![3u8; 10_000])], &["gguf"]),
        Repo::new("someone/medium-GGUF", vec![File::new("medium.gguf", vec![5u8; 1 << 20])], &["gguf"]),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let mut h = hub(&srv, cache.path(), None);
    h.options = Options {
        stall_timeout: Duration::from_secs(3),
        min_bytes: 16 << 10,
        give_up: Duration::from_secs(5),
        retries: 6,
        backoff: Duration::from_millis(50),
    };
    // Bounds far above the give-up time: they catch the old minutes of retries.
    let bound = Duration::from_secs(20);
    for (id, bps) in [("someone/small-GGUF", 1), ("someone/medium-GGUF", 100)] {
        srv.throttle(Some(bps));
        let t = std::time::Instant::now();
        let e = fetch(&h, id).unwrap_err();
        assert!(matches!(e, HubError::Stalled(_)) && e.to_string().contains("no progress"), "{id}: {e}");
        assert!(t.elapsed() < bound, "{id} at {bps} B/s ran {:?}", t.elapsed());
    }
    srv.throttle(None);
    srv.hold_bodies(true);
    let t = std::time::Instant::now();
    let e = fetch(&h, "someone/medium-GGUF").unwrap_err();
    assert!(matches!(e, HubError::Stalled(_)), "{e}");
    assert!(t.elapsed() < bound, "a silent body ran {:?}", t.elapsed());
    srv.hold_bodies(false);

    srv.clear_log();
    let snap = fetch(&h, "someone/medium-GGUF").unwrap();
    assert_eq!(std::fs::read(snap.join("medium.gguf")).unwrap(), vec![5u8; 1 << 20]);
    let range = srv.log().into_iter().find(|l| l.method == "GET" && l.path.starts_with("/cdn/")).and_then(|l| l.range).unwrap();
    assert!(!range.starts_with("bytes=0-"), "the trickled part is kept and resumed: {range}");
    let snap = fetch(&h, "someone/small-GGUF").unwrap();
    assert_eq!(std::fs::read(snap.join("small.gguf")).unwrap(), vec![3u8; 10_000]);
}

/// HF_HUB_OFFLINE=1 means no request at all, from the CLI too; a token file
/// that is a FIFO is skipped instead of blocking the start.
#[test]
fn offline_mode_sends_nothing_and_a_fifo_token_file_is_skipped() {
    let srv = server();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let hearth = |args: &[&str], offline: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"));
        c.args(args)
            .env("HEARTH_HOME", home.path())
            .env("HF_HUB_CACHE", cache.path())
            .env("HF_ENDPOINT", &srv.url)
            .env_remove("HF_TOKEN");
        if offline {
            c.env("HF_HUB_OFFLINE", "1");
        } else {
            c.env_remove("HF_HUB_OFFLINE");
        }
        let t = std::time::Instant::now();
        let out = c.output().unwrap();
        assert!(t.elapsed() < Duration::from_secs(30), "{args:?} took {:?}", t.elapsed());
        out
    };
    srv.clear_log();
    for args in [&["models", "download", "someone/tiny-GGUF"][..], &["models", "search", "smol"][..]] {
        let out = hearth(args, true);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("offline"), "{err}");
    }
    assert!(srv.log().is_empty(), "offline, yet the server saw {:?}", srv.log());

    let fifo = std::ffi::CString::new(home.path().join("hf_token").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let out = hearth(&["models", "search", "smol"], false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(ID));
}

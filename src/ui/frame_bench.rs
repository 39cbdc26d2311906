//! Measures the app's per-frame CPU time (UI code + layout + tessellation) while
//! a real reply streams in, with no window: `hearth ui-bench`. GPU painting is
//! left out; on a Mac it runs on the GPU. `history` puts that many messages
//! before it (every answer with a highlighted code block and a table), as a
//! long conversation the reply streams into. `minutes` keeps asking in the
//! same conversation until that long has passed (a soak of the app: the
//! process's memory after each reply is reported).

use super::state::{AppState, ModelState};
use super::HearthApp;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn run(model: &std::path::Path, prompt: &str, max_tokens: usize, history: usize, minutes: f64) -> anyhow::Result<serde_json::Value> {
    let home = tempfile::tempdir()?;
    let mut state = AppState::new(home.path());
    if history > 0 {
        use crate::chat::Role;
        use crate::store::conversations::{ChatMessage, Conversation};
        let mut c = Conversation::new("");
        c.title = "A long conversation".into();
        for i in 0..history {
            let (role, text) = if i % 2 == 0 {
                (Role::User, format!("Question {i}: how do I sum a slice in Rust?"))
            } else {
                (Role::Assistant, format!("Answer {i}:\n\n```rust\nfn sum(v: &[i64]) -> i64 {{\n    // adds them up\n    v.iter().sum()\n}}\n```\n\n| n | sum |\n|---|---|\n| {i} | {} |\n", i * (i + 1) / 2))
            };
            c.messages.push(ChatMessage::new(role, text));
        }
        state.chat.current = Some(c.id.clone());
        state.chat.conversations.insert(0, c);
    }
    state.settings.max_tokens = max_tokens;
    state.settings.sampling = crate::chat::params::SamplingParams::greedy();
    state.load_model(model.to_path_buf());
    let mut app = HearthApp::new(state);
    let ctx = egui::Context::default();
    let frame = |app: &mut HearthApp, t: f64| -> f64 {
        let input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(egui::Pos2::ZERO, egui::vec2(1100.0, 720.0))),
            time: Some(t),
            ..Default::default()
        };
        let t0 = Instant::now();
        let out = ctx.run_ui(input, |ui| app.ui(ui));
        let prims = ctx.tessellate(out.shapes, out.pixels_per_point);
        std::hint::black_box(prims);
        t0.elapsed().as_secs_f64() * 1000.0
    };
    let start = Instant::now();
    while !matches!(app.state.engine.model, ModelState::Ready(_)) {
        if let ModelState::Failed(e) = &app.state.engine.model {
            anyhow::bail!("{e}");
        }
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "model did not load");
        frame(&mut app, start.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut times = Vec::new();
    let mut rss_mb = Vec::new();
    let soak = Instant::now();
    loop {
        app.state.chat.input = prompt.to_string();
        app.state.send_input();
        anyhow::ensure!(app.state.is_generating(), "the reply did not start");
        while app.state.is_generating() {
            times.push(frame(&mut app, start.elapsed().as_secs_f64()));
            std::thread::sleep(Duration::from_millis(33));
        }
        if let Some(e) = app.state.current_conversation().and_then(|c| c.messages.last()).and_then(|m| m.error.clone()) {
            anyhow::bail!("reply {} failed: {e}", rss_mb.len() + 1);
        }
        rss_mb.push(crate::sys::process_rss() as f64 / 1e6);
        if soak.elapsed().as_secs_f64() >= minutes * 60.0 {
            break;
        }
    }
    // A few more frames with the finished, longest conversation on screen.
    for _ in 0..10 {
        times.push(frame(&mut app, start.elapsed().as_secs_f64()));
    }
    let reply = app.state.current_conversation().and_then(|c| c.messages.last()).map(|m| m.content.len()).unwrap_or(0);
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    Ok(json!({
        "frames": times.len(),
        "history_messages": history,
        "replies": rss_mb.len(),
        "rss_mb_after_first_reply": rss_mb.first(),
        "rss_mb_after_last_reply": rss_mb.last(),
        "rss_mb_max": rss_mb.iter().cloned().fold(0.0, f64::max),
        "rss_mb_by_reply": if rss_mb.len() > 1 { json!(rss_mb.iter().map(|m| (m * 10.0).round() / 10.0).collect::<Vec<_>>()) } else { json!(null) },
        "reply_chars": reply,
        "frame_ms_mean": times.iter().sum::<f64>() / times.len() as f64,
        "frame_ms_p50": pct(0.5),
        "frame_ms_p95": pct(0.95),
        "frame_ms_max": pct(1.0),
    }))
}

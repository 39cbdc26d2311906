//! The desktop app driven through egui_kittest (AccessKit) with the real model.

mod common;

use egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use hearth::engine::SamplingParams;
use hearth::ui::state::{AppState, ModelState, NoticeKind, View};
use hearth::ui::HearthApp;
use hearth::hub::Options;
use hearth::hub::manager::HubConfig;
use hearth::ui::state::DownloadStatus;
use std::path::Path;
use std::time::{Duration, Instant};

use common::data_dir_with_smollm2 as data_dir;

/// Writes a conversation into the data folder as the app saves it.
fn save_conversation(dir: &Path, c: &hearth::store::conversations::Conversation) {
    let convs = dir.join("conversations");
    std::fs::create_dir_all(&convs).unwrap();
    std::fs::write(convs.join(format!("{}.json", c.id)), hearth::store::conversations::serialize(c)).unwrap();
}

/// Hub settings that keep a test away from the user's Hugging Face cache and the network.
fn hub_config(dir: &Path, endpoint: &str) -> HubConfig {
    HubConfig {
        endpoint: Some(endpoint.to_string()),
        cache_dir: Some(dir.join("hf-cache")),
        jobs_file: dir.join("downloads.json"),
        context: 4096,
        options: Options::default(),
        offline: false,
    }
}

fn harness(dir: &Path) -> Harness<'static, HearthApp> {
    harness_with(AppState::with_hub(dir, hub_config(dir, "http://127.0.0.1:9")), [1100.0, 720.0])
}

fn harness_with(mut state: AppState, size: [f32; 2]) -> Harness<'static, HearthApp> {
    state.settings.sampling = SamplingParams::greedy();
    state.settings.max_tokens = 64;
    state.autoload();
    Harness::builder()
        .with_size(size)
        .build_ui_state(|ui, app: &mut HearthApp| app.ui(ui), HearthApp::new(state))
}

/// Installs Gemma 3 270M beside SmolLM2 in the data folder's models, named to
/// sort after it (SmolLM2 stays the model the app loads first); its path.
fn install_gemma(dir: &Path) -> std::path::PathBuf {
    let gemma = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    let dst = dir.join("models/zz-gemma-3-270m-q4_k_m.gguf");
    if std::fs::hard_link(&gemma, &dst).is_err() {
        std::fs::copy(&gemma, &dst).unwrap();
    }
    dst
}

/// Steps frames in real time until `done` or the timeout.
fn step_until(h: &mut Harness<'static, HearthApp>, secs: u64, what: &str, done: impl Fn(&HearthApp) -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done(h.state()) {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(15));
    }
    h.step();
}

fn wait_ready(h: &mut Harness<'static, HearthApp>) {
    step_until(h, 120, "the model to load", |a| matches!(a.state.engine.model, ModelState::Ready(_)));
}

fn ask(h: &mut Harness<'static, HearthApp>, text: &str) {
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text(text);
    h.step();
    h.key_press(egui::Key::Enter);
    h.step();
}

#[test]
fn typing_a_question_and_enter_streams_a_real_answer() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut h = harness(dir.path());
    wait_ready(&mut h);
    // The context meter under the input counts the prompt the draft would
    // make, in the engine's own count, once typing pauses.
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text("What is the capital of France?");
    h.step();
    let asked = meter_when(&mut h, |_| true);
    assert!(asked.fits && asked.dropped_messages == 0, "{asked:?}");
    assert!(h.query_by_label(&meter_label(&asked)).is_some(), "the meter shows {}", meter_label(&asked));
    h.key_press(egui::Key::Enter);
    h.step();
    assert!(h.state().state.is_generating(), "Enter sends the message");
    // Text appears while streaming, before the reply is finished.
    step_until(&mut h, 120, "the first streamed text", |a| {
        a.state.current_conversation().and_then(|c| c.messages.last()).is_some_and(|m| !m.content.is_empty())
    });
    step_until(&mut h, 120, "the reply to finish", |a| !a.state.is_generating());
    assert!(h.query_by_label_contains("Paris").is_some(), "the answer is shown in the window");
    let conv = h.state().state.current_conversation().unwrap().clone();
    assert_eq!(conv.messages.len(), 2);
    assert!(conv.messages[1].content.contains("Paris"));
    assert!(conv.messages[1].stats.as_ref().is_some_and(|s| s.tokens > 0 && s.decode_tps > 0.0));
    assert_eq!(conv.messages[1].stats.as_ref().unwrap().prompt_tokens, asked.tokens, "the meter counted the prompt the engine got");
    // The input was cleared and Shift+Enter makes a newline instead of sending.
    let input = h.get_by_role(Role::MultilineTextInput);
    input.focus();
    input.type_text("line one");
    h.step();
    h.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::Enter);
    h.step();
    assert!(!h.state().state.is_generating());
    assert!(h.state().state.chat.input.starts_with("line one"));

    // Near the limit the meter says what the overflow policy will drop: with
    // a context of 256 (64 kept for the answer) and a draft that only fits
    // without the first question and its answer, it names those two; the
    // engine then leaves out the same two.
    h.state_mut().state.chat.input.clear();
    h.state_mut().state.settings.context_length = 256;
    h.state().state.engine.handle.send(hearth::engine::Command::SetContextLength(256));
    let history = meter_when(&mut h, |f| f.context_length == 256);
    assert_eq!((history.context_length, history.budget), (256, 192), "{history:?}");
    // " apple" is one token each; the draft's own markup adds a few.
    let words = 192 + 12 - history.tokens;
    h.state_mut().state.chat.input = "apple ".repeat(words);
    let over = meter_when(&mut h, |f| f.tokens > history.tokens);
    assert!(over.tokens > 192 && over.fits && over.dropped_messages == 2, "{over:?} (history {history:?})");
    assert!(h.query_by_label_contains("the oldest 2 message(s) will be left out").is_some(), "the meter names what will be dropped");
    h.state_mut().state.send_input();
    step_until(&mut h, 120, "the trimmed reply", |a| !a.state.is_generating());
    let notice = h.state().state.notices.iter().rev().find(|n| n.text.contains("left out of the prompt")).map(|n| n.text.clone());
    assert!(notice.as_deref().is_some_and(|t| t.contains("the oldest 2 message(s)")), "the engine dropped what the meter said: {notice:?}");
    // A draft longer than the context on its own: no message left out would make it fit.
    h.state_mut().state.chat.input = "apple ".repeat(300);
    let too_long = meter_when(&mut h, |f| f.tokens > 300);
    assert!(!too_long.fits, "{too_long:?}");
    assert!(h.query_by_label_contains("Too long for the context").is_some());
}

/// Steps until the context meter's answer is one `wanted` accepts (an answer
/// about earlier inputs may still be on its way).
fn meter_when(h: &mut Harness<'static, HearthApp>, wanted: impl Fn(&hearth::engine::PromptFit) -> bool) -> hearth::engine::PromptFit {
    step_until(h, 30, "the context meter", |a| a.state.chat.meter.fit.as_ref().is_some_and(&wanted));
    h.step();
    h.state().state.chat.meter.fit.unwrap()
}

/// The meter's text for `fit`: "37 / 8,192 tokens".
fn meter_label(fit: &hearth::engine::PromptFit) -> String {
    format!("{} / {} tokens", hearth::units::count(fit.tokens), hearth::units::count(fit.context_length))
}

/// Settings → Speculative decoding: only installed models with the chat
/// model's vocabulary are offered as drafts (Gemma 3's is another); picking
/// one loads it beside the chat model, and a reply then says how many of its
/// guesses were kept; the KV cache width reaches the engine and the
/// settings file.
#[test]
fn the_draft_model_and_kv_cache_settings_reach_the_engine() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    install_gemma(dir.path());
    let mut h = harness(dir.path());
    wait_ready(&mut h);
    step_until(&mut h, 30, "the installed models", |a| a.state.installed_scanned);
    h.get_by_label("Settings").click();
    h.step();
    assert!(h.query_by_label("not drafting").is_some());
    h.get_by_label("8-bit").click();
    h.step();
    h.get_by_role(Role::ComboBox).click();
    h.step();
    h.step();
    assert!(h.query_by_label_contains("zz-gemma").is_none(), "another vocabulary is not offered");
    h.get_by_label_contains("M params)").click();
    step_until(&mut h, 60, "the draft model to load", |a| a.state.engine.draft.is_some());
    assert!(h.query_by_label_contains("drafting with SmolLM2").is_some());
    let saved = std::fs::read_to_string(dir.path().join("settings.json")).unwrap();
    assert!(saved.contains("\"kv_bits\": 8") && saved.contains("draft_model"), "{saved}");
    h.get_by_label("Chat").click();
    h.step();
    ask(&mut h, "Name three colours of the rainbow.");
    step_until(&mut h, 120, "the reply", |a| !a.state.is_generating());
    let reply = h.state().state.current_conversation().unwrap().messages[1].clone();
    let stats = reply.stats.unwrap();
    assert!(stats.drafted > 0 && stats.accepted > 0, "{stats:?}");
    assert!(h.query_by_label_contains("proposed tokens kept").is_some());
}

/// The window with a long reply (up to 400 tokens) under way, some of it shown.
fn long_reply_streaming(dir: &Path) -> Harness<'static, HearthApp> {
    let mut h = harness(dir);
    h.state_mut().state.settings.max_tokens = 400;
    wait_ready(&mut h);
    ask(&mut h, "Write a very long story about a dragon who learns to cook.");
    step_until(&mut h, 120, "some streamed text", |a| {
        a.state.current_conversation().and_then(|c| c.messages.last()).is_some_and(|m| m.content.len() > 20)
    });
    h
}

#[test]
fn stop_button_ends_generation() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut h = long_reply_streaming(dir.path());
    h.get_by_label("Stop").click();
    h.step();
    step_until(&mut h, 30, "the generation to stop", |a| !a.state.is_generating());
    let m = h.state().state.current_conversation().unwrap().messages.last().unwrap().clone();
    let tokens = m.stats.as_ref().map(|s| s.tokens).unwrap_or(0);
    assert!(tokens < 400, "stopped early ({tokens} tokens)");
    assert!(h.query_by_label("Send").is_some(), "Send is back after stopping");
}

/// A terminate signal (SIGTERM: a logout, `kill`, a system shutdown) in the
/// middle of a reply: the app keeps the reply as far as it got, marks it as
/// interrupted, saves it and closes; reopened, the conversation holds it.
/// The signal is real, raised in this process after the app's handler is
/// installed (as `hearth::ui::run` installs it).
#[test]
fn sigterm_during_a_reply_saves_the_partial_reply_marked_as_interrupted() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let partial = {
        let mut h = long_reply_streaming(dir.path());
        hearth::sys::on_terminate_signals(|| {});
        assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0, "the signal was sent");
        step_until(&mut h, 10, "the reply to end on the signal", |a| !a.state.is_generating());
        let m = h.state().state.current_conversation().unwrap().messages.last().unwrap().clone();
        assert_eq!(m.error.as_deref(), Some(hearth::ui::state::INTERRUPTED));
        assert!(m.content.len() > 20 && m.stats.is_none(), "kept as far as it got: {m:?}");
        // Tokens already on their way change nothing after it.
        for _ in 0..20 {
            h.step();
        }
        let after = h.state().state.current_conversation().unwrap().messages.last().unwrap().content.clone();
        assert_eq!(after, m.content);
        m.content
    };
    let state = AppState::with_hub(dir.path(), hub_config(dir.path(), "http://127.0.0.1:9"));
    let c = &state.chat.conversations[0];
    assert_eq!(c.messages.len(), 2);
    assert_eq!(c.messages[1].content, partial, "the partial reply was saved");
    assert_eq!(c.messages[1].error.as_deref(), Some(hearth::ui::state::INTERRUPTED));
}

/// A save the disk refuses midway (a full disk; here the process's file-size
/// limit set below the conversation's size, so the write fails partway as it
/// does when the disk fills): the conversation's last good file stays as it
/// was, nothing half-written is left beside it, the window says it could not
/// save, and the next save, once there is room, writes everything.
#[test]
fn a_save_the_disk_refuses_midway_keeps_the_last_good_file_and_says_so() {
    use hearth::chat::Role as ChatRole;
    use hearth::store::conversations::ChatMessage;
    let dir = data_dir();
    let mut state = AppState::with_hub(dir.path(), hub_config(dir.path(), "http://127.0.0.1:9"));
    state.new_conversation();
    let id = state.chat.current.clone().unwrap();
    let long = "The dragon stirred the pot. ".repeat(12_000); // ~330 kB
    let c = state.chat.conversation_mut(&id).unwrap();
    c.messages.push(ChatMessage::new(ChatRole::User, "Tell me a long story."));
    c.messages.push(ChatMessage::new(ChatRole::Assistant, long.clone()));
    state.rename(&id, "First title".into());
    state.flush();
    let path = state.chat.store.path_of(&id);
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() > 300_000 && String::from_utf8_lossy(&good).contains("First title"));

    // Writes past 64 kB now fail (EFBIG; SIGXFSZ ignored, as the failed write is the test).
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut old), 0);
        let small = libc::rlimit { rlim_cur: 64 << 10, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &small), 0);
    }
    state.rename(&id, "Second title".into());
    state.flush();
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &old), 0);
    }
    state.poll();
    assert!(
        state.notices.iter().any(|n| n.kind == NoticeKind::Error && n.text.starts_with("Could not save")),
        "the window says the save failed: {:?}",
        state.notices.iter().map(|n| &n.text).collect::<Vec<_>>()
    );
    eprintln!("notice: {}", state.notices.last().unwrap().text);
    assert_eq!(std::fs::read(&path).unwrap(), good, "the last good file is untouched");
    let folder = path.parent().unwrap();
    let left: Vec<_> = std::fs::read_dir(folder).unwrap().flatten().map(|e| e.file_name()).filter(|n| n.to_string_lossy().starts_with(".tmp")).collect();
    assert!(left.is_empty(), "half-written temporaries left: {left:?}");

    // Room again: the next save writes the whole conversation.
    state.rename(&id, "Third title".into());
    state.flush();
    let reopened = AppState::with_hub(dir.path(), hub_config(dir.path(), "http://127.0.0.1:9"));
    let c = reopened.chat.conversations.iter().find(|c| c.id == id).unwrap();
    assert_eq!(c.title, "Third title");
    assert_eq!(c.messages[1].content, long);
}

#[test]
fn conversation_survives_a_restart() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    {
        let mut h = harness(dir.path());
        wait_ready(&mut h);
        ask(&mut h, "What is the capital of France?");
        step_until(&mut h, 120, "the reply", |a| {
            !a.state.is_generating()
                && a.state.current_conversation().is_some_and(|c| c.messages.len() == 2)
        });
        h.state().state.flush();
    }
    let mut h = harness(dir.path());
    h.step();
    let state = &h.state().state;
    assert_eq!(state.chat.conversations.len(), 1);
    let c = &state.chat.conversations[0];
    assert_eq!(c.title, "What is the capital of France?");
    assert!(c.messages[1].content.contains("Paris"));
    // Once as the sidebar entry, once as the reopened user message.
    assert_eq!(h.query_all_by_label("What is the capital of France?").count(), 2);
    assert!(h.query_by_label_contains("Paris").is_some(), "reopened in the chat view");
    // Its prompt cache was saved on disk, and the follow-up after the restart
    // starts from it: only the new turn is computed.
    let id = c.id.clone();
    assert!(dir.path().join("prompt-cache").join(&id).join("manifest.json").is_file());
    wait_ready(&mut h);
    ask(&mut h, "And of Italy?");
    step_until(&mut h, 120, "the second reply", |a| !a.state.is_generating() && a.state.current_conversation().is_some_and(|c| c.messages.len() == 4));
    let s = h.state().state.current_conversation().unwrap().messages[3].stats.clone().expect("stats");
    assert!(s.from_disk > 10 && s.cached >= s.from_disk && s.prompt_tokens - s.cached < 20, "{s:?}");
    assert!(h.query_by_label_contains("from disk").is_some(), "the reply says the cache served it");
}

/// Regenerating an answer and editing a question keep the earlier versions
/// as branches ("‹ 1/2 ›" on the message); the arrows show them again; a
/// follow-up on an older branch is sent that branch's history (read back from
/// the prompt the engine saved); a restart keeps every branch; a file of the
/// format before branches loads.
#[test]
fn edits_and_regenerations_are_kept_as_branches() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    // A conversation saved before branches existed.
    let old = r#"{"id": "before-branches", "title": "Old", "created": 1, "updated": 1, "system_prompt": "",
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."}]}"#;
    std::fs::create_dir_all(dir.path().join("conversations")).unwrap();
    std::fs::write(dir.path().join("conversations/before-branches.json"), old).unwrap();
    let id;
    {
        let mut h = harness(dir.path());
        assert!(h.state().state.chat.conversations.iter().any(|c| c.id == "before-branches" && c.messages.len() == 2), "the old file loads");
        wait_ready(&mut h);
        h.state_mut().state.new_conversation();
        ask(&mut h, "What is the capital of France?");
        step_until(&mut h, 120, "the reply", |a| !a.state.is_generating());
        h.state_mut().state.regenerate(1);
        step_until(&mut h, 120, "the regenerated reply", |a| !a.state.is_generating());
        assert_eq!(h.state().state.current_conversation().unwrap().branches.version_at(1), (2, 2));
        h.state_mut().state.edit_and_resend(0, "What is the capital of Italy?".into());
        step_until(&mut h, 120, "the reply to the edit", |a| !a.state.is_generating());
        let c = h.state().state.current_conversation().unwrap().clone();
        id = c.id.clone();
        assert_eq!((c.branches.version_at(0), c.branches.version_at(1)), ((2, 2), (1, 1)), "the new question has one answer");
        h.step();
        assert!(h.query_by_label("2/2").is_some(), "the edited question shows its version");
        h.get_by_label("Previous version").click();
        h.step();
        h.step();
        let c = h.state().state.current_conversation().unwrap().clone();
        assert_eq!(c.messages[0].content, "What is the capital of France?");
        assert_eq!(c.branches.version_at(1), (2, 2), "its two answers came back with it");
        assert!(h.query_by_label_contains("Paris").is_some(), "the earlier answer is shown");
        // A follow-up here is sent this branch's history.
        ask(&mut h, "And of Spain?");
        step_until(&mut h, 120, "the follow-up", |a| !a.state.is_generating());
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("prompt-cache").join(&id).join("manifest.json")).unwrap()).unwrap();
        let tokens: Vec<u32> = serde_json::from_value(manifest["tokens"].clone()).unwrap();
        let header = hearth::formats::gguf_header::GgufHeader::read(&common::smollm2_gguf()).unwrap();
        let sent = hearth::chat::tokenizer::TextTokenizer::from_gguf(&header).unwrap().decode(&tokens);
        assert!(sent.contains("capital of France") && sent.contains("And of Spain") && !sent.contains("Italy"), "{sent}");
        h.state().state.flush();
    }
    let mut h = harness(dir.path());
    h.state_mut().state.select(&id);
    h.step();
    let c = h.state().state.current_conversation().unwrap().clone();
    assert_eq!((c.messages.len(), c.branches.version_at(0), c.branches.version_at(1)), (4, (1, 2), (2, 2)), "every branch came back");
    // Every button in the chat and the sidebar is labelled for screen readers
    // (AccessKit): the version arrows by what they do, not their glyphs.
    use egui_kittest::kittest::NodeT;
    let buttons: Vec<String> = h.query_all_by_role(Role::Button).map(|b| b.accesskit_node().label().unwrap_or_default()).collect();
    assert!(buttons.len() >= 8, "{buttons:?}");
    for l in &buttons {
        assert!(l.chars().any(|c| c.is_alphanumeric()), "a button without a label a screen reader can say: {l:?} among {buttons:?}");
    }
    for wanted in ["+ New chat", "Previous version", "Next version", "Copy", "Duplicate", "Edit", "Regenerate"] {
        assert!(buttons.iter().any(|l| l == wanted), "no {wanted:?} button in {buttons:?}");
    }
    // The question's arrows come first (the answer's own are below it).
    h.query_all_by_label("Next version").next().unwrap().click();
    h.step();
    h.step();
    assert_eq!(h.state().state.current_conversation().unwrap().messages[0].content, "What is the capital of Italy?");
}

/// The chat header picks the conversation's model: the pick loads it, the
/// next reply comes from it (its stats name it), the conversation keeps it
/// (across a restart too), and opening the conversation while another model
/// is loaded offers to load its own. Two chats keep different presets (one
/// from the header's menu, one imported from a file) across the restart.
#[test]
fn a_conversation_keeps_the_model_picked_in_its_header() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let gemma_path = install_gemma(dir.path());
    let loaded = |a: &HearthApp| match &a.state.engine.model {
        ModelState::Ready(info) => Some((info.path.clone(), info.name.clone())),
        _ => None,
    };
    let last_stats = |h: &Harness<'static, HearthApp>| h.state().state.current_conversation().unwrap().messages.last().unwrap().stats.clone().unwrap();
    let (id, second);
    {
        let mut h = harness(dir.path());
        wait_ready(&mut h);
        step_until(&mut h, 30, "the installed models", |a| a.state.installed_scanned);
        let (smol, smol_name) = loaded(h.state()).unwrap();
        ask(&mut h, "What is the capital of France?");
        step_until(&mut h, 120, "the reply", |a| !a.state.is_generating());
        assert_eq!(last_stats(&h).model.as_deref(), Some(smol_name.as_str()));
        id = h.state().state.chat.current.clone().unwrap();
        // The header's list, each model with its fit verdict (the first menu; the preset's is next).
        h.query_all_by_role(Role::ComboBox).next().unwrap().click();
        h.step();
        h.step();
        h.get_by_label_contains("zz-gemma-3-270m-q4_k_m ·").click();
        step_until(&mut h, 120, "Gemma to load", |a| loaded(a).is_some_and(|(p, _)| p == gemma_path));
        let gemma_name = loaded(h.state()).unwrap().1;
        ask(&mut h, "And of Italy?");
        step_until(&mut h, 120, "Gemma's reply", |a| !a.state.is_generating());
        assert_eq!(last_stats(&h).model.as_deref(), Some(gemma_name.as_str()), "the reply came from the picked model");
        assert_eq!(h.state().state.current_conversation().unwrap().model.as_ref(), Some(&gemma_path));
        // Another chat on SmolLM2; back in the first, its own model is offered.
        h.state_mut().state.new_conversation();
        h.state_mut().state.use_model_for_chat(smol.clone());
        step_until(&mut h, 120, "SmolLM2 to load", |a| loaded(a).is_some_and(|(p, _)| p == smol));
        // This second chat takes an imported preset, with its own sampling.
        let file = dir.path().join("presets.json");
        std::fs::write(&file, r#"{"presets": [{"name": "Pirate", "system_prompt": "Talk like a pirate.", "sampling": {"temperature": 0.0, "top_k": 5}}]}"#).unwrap();
        let read = hearth::ui::state::read_presets(&file);
        h.state_mut().state.on_presets_read(read);
        h.state_mut().state.apply_preset_to_chat("Pirate");
        second = h.state().state.chat.current.clone().unwrap();
        h.state_mut().state.select(&id);
        h.step();
        h.step();
        assert!(h.query_by_label_contains("replies came from zz-gemma").is_some(), "the chat names its model");
        // The first chat's preset, from its header's menu.
        h.query_all_by_role(Role::ComboBox).nth(1).unwrap().click();
        h.step();
        h.step();
        h.get_by_label("Concise").click();
        h.step();
        let c = h.state().state.current_conversation().unwrap().clone();
        assert_eq!((c.preset.as_deref(), c.system_prompt.as_str(), c.sampling.is_none()), (Some("Concise"), "Answer briefly and precisely.", true));
        h.get_by_label("Load zz-gemma-3-270m-q4_k_m").click();
        step_until(&mut h, 120, "Gemma to load again", |a| loaded(a).is_some_and(|(p, _)| p == gemma_path));
        h.state().state.flush();
    }
    let h = harness(dir.path());
    let c = h.state().state.chat.conversations.iter().find(|c| c.id == id).unwrap();
    assert_eq!(c.model.as_ref(), Some(&gemma_path), "kept across a restart");
    assert_eq!((c.preset.as_deref(), c.system_prompt.as_str()), (Some("Concise"), "Answer briefly and precisely."));
    let c = h.state().state.chat.conversations.iter().find(|c| c.id == second).unwrap();
    assert_eq!((c.preset.as_deref(), c.system_prompt.as_str()), (Some("Pirate"), "Talk like a pirate."));
    assert_eq!(c.sampling.as_ref().map(|s| s.top_k), Some(5), "the preset's sampling is the chat's");
    assert!(h.state().state.settings.presets.iter().any(|p| p.name == "Pirate"), "the imported preset was saved");
}

/// The sidebar keeps pinned chats on top and filed chats under their folder
/// (kept across a restart); search filters inside the groups; Alt+Down and
/// Alt+Up move through the chats in the sidebar's order.
#[test]
fn pinned_chats_and_folders_order_the_sidebar() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = vec![];
    for (i, title) in ["Alpha", "Beta", "Gamma", "Delta"].iter().enumerate() {
        let mut c = hearth::store::conversations::Conversation::new("");
        c.title = title.to_string();
        c.updated = 100 - i as u64;
        c.messages.push(hearth::store::conversations::ChatMessage::new(hearth::chat::Role::User, format!("About {title}")));
        save_conversation(dir.path(), &c);
        ids.push(c.id);
    }
    {
        let mut h = harness(dir.path());
        h.step();
        let order = |h: &Harness<'static, HearthApp>| -> Vec<String> {
            let s = &h.state().state;
            s.sidebar_groups().into_iter().flat_map(|g| g.items).map(|i| s.chat.conversations[i].title.clone()).collect()
        };
        let start = order(&h);
        // Pin the last; file two in a folder.
        let last = h.state().state.chat.conversations.iter().find(|c| c.title == start[3]).unwrap().id.clone();
        h.state_mut().state.set_pinned(&last, true);
        for t in [&start[0], &start[1]] {
            let id = h.state().state.chat.conversations.iter().find(|c| &c.title == t).unwrap().id.clone();
            h.state_mut().state.move_to_folder(&id, Some("  Work  ".into()));
        }
        h.step();
        assert_eq!(order(&h), vec![start[3].clone(), start[0].clone(), start[1].clone(), start[2].clone()], "pinned, then the folder, then the rest");
        assert!(h.query_by_label("Pinned").is_some() && h.query_by_label("Work").is_some(), "the group headings show");
        // Alt+Down from the pinned chat walks the same order.
        h.state_mut().state.select(&last);
        h.step();
        h.key_press_modifiers(egui::Modifiers::ALT, egui::Key::ArrowDown);
        h.step();
        let current = |h: &Harness<'static, HearthApp>| h.state().state.current_conversation().unwrap().title.clone();
        assert_eq!(current(&h), start[0]);
        h.key_press_modifiers(egui::Modifiers::ALT, egui::Key::ArrowUp);
        h.step();
        assert_eq!(current(&h), start[3]);
        // Search filters inside the groups.
        h.state_mut().state.chat.search = start[1].clone();
        assert_eq!(order(&h), vec![start[1].clone()]);
        h.state().state.flush();
    }
    let h = harness(dir.path());
    let pinned: Vec<_> = h.state().state.chat.conversations.iter().filter(|c| c.pinned).map(|c| c.id.clone()).collect();
    let filed = h.state().state.chat.conversations.iter().filter(|c| c.folder.as_deref() == Some("Work")).count();
    assert_eq!((pinned.len(), filed), (1, 2), "kept across a restart (the folder name trimmed)");
    assert!(ids.contains(&pinned[0]));
}

/// A file dropped on the window, as egui hands it over.
#[derive(Debug)]
struct Dropped(std::path::PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

/// Text and code files dropped on the window are attached to the question
/// with the engine's count of their tokens and sent after it (read back from
/// the prompt the engine saved); a file too large, one that is not text, and
/// one longer than the whole context are refused with the numbers.
#[test]
fn dropped_files_are_attached_with_their_token_counts() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = files.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let notes = write("notes.txt", b"The secret code word is PELICAN-42. Remember it.");
    let code = write("lib.rs", b"pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n");
    let huge = write("huge.txt", &vec![b'a'; 5 << 20]);
    let image = write("photo.png", &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0xff, 0xfe, 0x00, 0x01]);
    let long = write("book.txt", "word ".repeat(20_000).as_bytes());
    let mut h = harness(dir.path());
    wait_ready(&mut h);
    let drop = |h: &mut Harness<'static, HearthApp>, paths: &[&std::path::PathBuf]| {
        for p in paths {
            h.input_mut().dropped_files.push(std::sync::Arc::new(Dropped((*p).clone())));
        }
        h.step();
    };
    drop(&mut h, &[&notes, &code, &huge, &image]);
    step_until(&mut h, 30, "the attachments and their counts", |a| {
        let l = &a.state.chat.attachments.list;
        l.len() == 2 && l.iter().all(|x| x.tokens.is_some())
    });
    h.step();
    for name in ["notes.txt · ", "lib.rs · "] {
        assert!(h.query_by_label_contains(name).is_some(), "a chip for {name}");
    }
    let notices: Vec<String> = h.state().state.notices.iter().map(|n| n.text.clone()).collect();
    assert!(notices.iter().any(|n| n.contains("huge.txt was not attached") && n.contains("5.2 MB") && n.contains("4.2 MB")), "{notices:?}");
    assert!(notices.iter().any(|n| n.contains("photo.png was not attached: it is not text")), "{notices:?}");
    // Longer than the whole room for a prompt: counted, then taken off again.
    step_until(&mut h, 30, "the context meter", |a| a.state.chat.meter.fit.is_some());
    drop(&mut h, &[&long]);
    step_until(&mut h, 60, "the long file refused", |a| a.state.notices.iter().any(|n| n.text.contains("book.txt was not attached: it is")));
    assert_eq!(h.state().state.chat.attachments.list.len(), 2);
    ask(&mut h, "What is the secret code word?");
    step_until(&mut h, 120, "the reply", |a| !a.state.is_generating());
    let c = h.state().state.current_conversation().unwrap().clone();
    assert_eq!(c.messages[0].attachments.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["notes.txt", "lib.rs"]);
    assert!(h.state().state.chat.attachments.list.is_empty(), "sent with the question");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("prompt-cache").join(&c.id).join("manifest.json")).unwrap()).unwrap();
    let tokens: Vec<u32> = serde_json::from_value(manifest["tokens"].clone()).unwrap();
    let header = hearth::formats::gguf_header::GgufHeader::read(&common::smollm2_gguf()).unwrap();
    let sent = hearth::chat::tokenizer::TextTokenizer::from_gguf(&header).unwrap().decode(&tokens);
    assert!(sent.contains("[Attached file: notes.txt]\nThe secret code word is PELICAN-42") && sent.contains("pub fn add"), "{sent}");
    // Greedy SmolLM2 answers from the attached text: the word is in no other.
    assert!(c.messages[1].content.contains("PELICAN-42"), "the reply used the attachment: {}", c.messages[1].content);
}

#[test]
fn deleting_a_model_asks_first() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let file = dir.path().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mut h = harness(dir.path());
    wait_ready(&mut h);
    h.state_mut().state.view = View::Models;
    h.step();
    h.get_by_label("Delete…").click();
    h.run_steps(3);
    assert!(h.query_by_label("Delete model?").is_some(), "a confirmation dialog opens");
    h.get_by_label("Cancel").click();
    h.run_steps(3);
    assert!(file.exists(), "cancel keeps the model");
    assert!(h.query_by_label("Delete model?").is_none());
    h.get_by_label("Delete…").click();
    h.run_steps(3);
    h.get_by_label("Delete model").click();
    step_until(&mut h, 30, "the model to be deleted", |a| a.state.installed.is_empty());
    assert!(!file.exists());
    assert!(h.state().state.notices.iter().any(|n| n.text.contains("MB freed")));
}

#[test]
fn a_corrupt_conversation_file_does_not_hide_the_others() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let convs = dir.path().join("conversations");
    std::fs::create_dir_all(&convs).unwrap();
    for (i, title) in ["Trip planning", "Rust questions"].iter().enumerate() {
        let mut c = hearth::store::conversations::Conversation::new("");
        c.id = format!("c{i}");
        c.title = title.to_string();
        c.messages.push(hearth::store::conversations::ChatMessage::new(hearth::chat::Role::User, "hello"));
        save_conversation(dir.path(), &c);
    }
    std::fs::write(convs.join("broken.json"), b"{\"id\": \"x\", \"title\": ").unwrap();
    let mut h = harness(dir.path());
    h.step();
    assert_eq!(h.state().state.chat.conversations.len(), 2);
    assert!(h.query_by_label("Trip planning").is_some());
    assert!(h.query_by_label("Rust questions").is_some());
    let notices = &h.state().state.notices;
    assert!(notices.iter().any(|n| n.kind == NoticeKind::Error && n.text.contains("broken.json")));
    assert!(convs.join("broken.json").exists(), "the bad file is left for the user");
}

#[test]
fn no_model_shows_an_empty_state_pointing_to_the_model_manager() {
    let _g = common::mlx_lock();
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(dir.path());
    // The first scan of the models folder runs off the UI thread; the empty state waits for its answer.
    step_until(&mut h, 30, "the first models scan", |a| a.state.installed_scanned);
    assert!(h.query_by_label("No model installed").is_some());
    h.get_by_label("Open the model manager").click();
    h.run_steps(2);
    assert_eq!(h.state().state.view, View::Models);
    assert!(h.query_by_label("Import .gguf file…").is_some());
}

#[test]
fn invalid_settings_fall_back_to_defaults_and_keep_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("settings.json");
    std::fs::write(&p, b"{ this is not json").unwrap();
    let (s, notice) = hearth::store::settings::Settings::load(&p);
    assert_eq!(s, hearth::store::settings::Settings::default());
    assert!(notice.unwrap().contains("kept as"));
    assert!(!p.exists());
    let kept: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b"{ this is not json");
}

#[test]
fn markdown_renders_code_blocks_tables_and_links_without_fetching() {
    let md = "# Title\n\nSome **bold** and `code`.\n\n- one\n- two\n\n```rust\nfn main() {}\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[docs](https://example.com)\n";
    let mut h = Harness::new_ui(|ui| hearth::ui::markdown::show(ui, md, 0));
    h.run();
    assert!(h.query_by_label("Title").is_some());
    assert!(h.query_by_label("fn main() {}").is_some(), "code block body in monospace");
    assert!(h.query_by_label("Copy").is_some(), "code block has a Copy button");
    assert!(h.query_by_label("1").is_some() && h.query_by_label("b").is_some(), "table cells");
    let opened = |h: &Harness<'_>| {
        h.output().platform_output.commands.iter().any(|c| matches!(c, egui::OutputCommand::OpenUrl(_)))
    };
    assert!(!opened(&h), "nothing is opened without a click");
    h.get_by_role_and_label(Role::Link, "docs").click();
    h.step();
    assert!(opened(&h), "a click opens the link");
}

/// A fenced code block is highlighted by syntect (more than one colour in
/// its laid-out text, whichever way the fence names the language), an
/// unknown language shows in one colour, and a long line scrolls sideways
/// instead of wrapping.
#[test]
fn code_blocks_are_highlighted_and_long_lines_scroll() {
    let long = format!("let v = vec![{}];", (0..80).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    let md = format!("```rust\nfn main() {{\n    // a comment\n    let s = \"text\";\n}}\n```\n\n```Python\ndef f(x):\n    return 'y' + x  # why\n```\n\n```zzz-unknown\nplain words here\n```\n\n```rust\n{long}\n```\n");
    let mut h = Harness::builder().with_size([600.0, 800.0]).build_ui(|ui| hearth::ui::markdown::show(ui, &md, 0));
    h.run();
    let galleys = text_galleys(&h.output().shapes);
    let colours = |needle: &str| {
        let g = galleys.iter().find(|g| g.job.text.contains(needle)).unwrap_or_else(|| panic!("no galley with {needle:?}"));
        g.job.sections.iter().map(|s| s.format.color).collect::<std::collections::HashSet<_>>().len()
    };
    assert!(colours("fn main()") > 1, "Rust is highlighted");
    assert!(colours("def f(x)") > 1, "Python (fenced as \"Python\") is highlighted");
    assert_eq!(colours("plain words here"), 1, "an unknown language is plain");
    let wide = galleys.iter().find(|g| g.job.text.contains("vec![0, 1")).unwrap();
    assert_eq!(wide.rows.len(), 1, "a long line is not wrapped");
    assert!(wide.size().x > 600.0, "it is wider than the window ({}), so it scrolls", wide.size().x);
}

/// Every text galley among `shapes`, nested ones included.
fn text_galleys(shapes: &[egui::epaint::ClippedShape]) -> Vec<std::sync::Arc<egui::Galley>> {
    fn walk(s: &egui::Shape, out: &mut Vec<std::sync::Arc<egui::Galley>>) {
        match s {
            egui::Shape::Text(t) => out.push(t.galley.clone()),
            egui::Shape::Vec(v) => v.iter().for_each(|s| walk(s, out)),
            _ => {}
        }
    }
    let mut out = vec![];
    shapes.iter().for_each(|c| walk(&c.shape, &mut out));
    out
}

/// A reply saved with its reasoning inline (before replies had parts) opens
/// with the reasoning in a collapsed "Thought for" header and only the
/// answer as the message; no tag is shown.
#[test]
fn a_saved_reply_with_inline_reasoning_shows_it_collapsed_apart_from_the_answer() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut c = hearth::store::conversations::Conversation::new("");
    c.title = "Old save".into();
    c.messages.push(hearth::store::conversations::ChatMessage::new(hearth::chat::Role::User, "What is 2+2?"));
    let mut reply = hearth::store::conversations::ChatMessage::new(hearth::chat::Role::Assistant, "<think>Add two and two.</think>\n\nIt is four.");
    reply.thought_secs = Some(3.0);
    c.messages.push(reply);
    save_conversation(dir.path(), &c);
    let mut h = harness(dir.path());
    h.step();
    let m = &h.state().state.current_conversation().unwrap().messages[1];
    assert_eq!((m.reasoning.as_str(), m.content.as_str()), ("Add two and two.", "It is four."));
    assert!(h.query_by_label_contains("Thought for 3 s").is_some(), "the reasoning's header");
    assert!(h.query_by_label_contains("It is four.").is_some(), "the answer");
    assert!(h.query_by_label_contains("Add two and two.").is_none(), "the reasoning starts collapsed");
    assert!(h.query_by_label_contains("think>").is_none(), "no tag is shown");
}

/// The window's first frame does not wait for the disk: FIFOs where a
/// model's weights, the settings, the downloads list and a conversation
/// should be, a device named like a model and a link loop. The frame draws
/// at once; the scan lands later, off the UI thread, with the real model
/// listed, the unreadable folder marked and the default model loading.
#[test]
fn the_first_frame_draws_whatever_is_on_disk() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let fifo = |p: &Path| {
        let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let piped = dir.path().join("models/piped-model");
    std::fs::create_dir_all(&piped).unwrap();
    std::fs::write(piped.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fifo(&outside.path().join("pipe"));
    std::os::unix::fs::symlink(outside.path().join("pipe"), piped.join("model.safetensors")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("models/zero.gguf")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("models"), dir.path().join("models/piped-model/loop")).unwrap();
    fifo(&dir.path().join("settings.json"));
    fifo(&dir.path().join("downloads.json"));
    std::fs::create_dir_all(dir.path().join("conversations")).unwrap();
    fifo(&dir.path().join("conversations/0123456789abcdef.json"));

    let t = Instant::now();
    let mut h = harness(dir.path());
    h.run_steps(1);
    // A bound far above a frame's time: it catches a UI thread blocked on a read.
    assert!(t.elapsed() < Duration::from_secs(5), "the first frame took {:?}", t.elapsed());
    step_until(&mut h, 30, "the models to be listed", |a| a.state.installed_scanned);
    let names: Vec<String> = h.state().state.installed.iter().map(|m| m.name.clone()).collect();
    assert!(names.iter().any(|n| n.contains("SmolLM2")), "{names:?}");
    let piped = h.state().state.installed.iter().find(|m| m.name == "piped-model").expect("the folder is listed");
    assert!(piped.card.is_none() && piped.problem.as_deref().is_some_and(|p| p.contains("FIFO")), "{:?}", piped.problem);
    // The first scan found no last model to load, so the default loads now.
    wait_ready(&mut h);
}

#[test]
fn model_manager_shows_architecture_size_and_quantization_and_can_switch_folders() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut h = harness(dir.path());
    h.state_mut().state.view = View::Models;
    step_until(&mut h, 30, "the models to be listed", |a| a.state.installed_scanned);
    let card = h.state().state.installed[0].card.clone().expect("header read");
    assert_eq!(card.architecture, "llama");
    assert_eq!(card.quantization, "Q4_1");
    assert!((130_000_000..140_000_000).contains(&card.parameters), "{}", card.parameters);
    assert!(h.query_by_label("llama").is_some());
    assert!(h.query_by_label("Q4_1").is_some());
    assert!(h.query_by_label("135M params").is_some(), "the installed model's size is shown");
    // Another models folder (empty) replaces the list.
    let other = tempfile::tempdir().unwrap();
    h.state_mut().state.set_models_dir(other.path().to_path_buf());
    step_until(&mut h, 10, "the new folder to be listed", |a| a.state.installed.is_empty());
    assert_eq!(h.state().state.settings.models_dir(), other.path());
}

#[test]
fn model_manager_shows_catalogue_search_and_live_download_progress() {
    use common::hub_server::{File, HubServer, Repo};
    let id = "bartowski/SmolLM2-135M-Instruct-GGUF";
    let gguf = std::fs::read(common::smollm2_gguf()).unwrap();
    let srv = HubServer::start(vec![Repo::new(
        id,
        vec![File::new("SmolLM2-135M-Instruct-Q4_1.gguf", gguf), File::new("README.md", b"card".to_vec())],
        &["gguf"],
    )]);
    // Slow enough to watch the progress bar move.
    srv.throttle(Some(12 << 20));
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::with_hub(dir.path(), hub_config(dir.path(), &srv.url));
    let mut h = harness_with(state, [1200.0, 2400.0]);
    h.get_by_label("Models").click();
    h.run_steps(3);
    // The catalogue, with a memory verdict per model, is there before any network use.
    assert!(h.query_by_label("Qwen3-0.6B-4bit").is_some());
    assert!(h.query_by_label("Meta-Llama-3.1-8B-Instruct-4bit").is_some());
    assert!(h.query_all_by_label("fits").count() + h.query_all_by_label("tight").count() > 0);
    assert!(srv.log().is_empty(), "nothing goes to the network until the user asks");

    h.state_mut().state.downloads.search.query = "smollm2".into();
    h.get_by_label("GGUF").click();
    h.get_by_label("Search").click();
    step_until(&mut h, 30, "search results", |a| a.state.downloads.search.results.is_some());
    assert!(h.query_by_label(id).is_some(), "the search hit is listed");
    assert!(srv.log().iter().any(|l| l.path == "/api/models"));

    // The last "Download" button is the search hit's (the catalogue comes first).
    h.get_all_by_label("Download").last().unwrap().click();
    step_until(&mut h, 60, "bytes to arrive", |a| {
        a.state.downloads.list.iter().any(|d| matches!(&d.status, DownloadStatus::Running(p) if p.done > 4 << 20))
    });
    assert!(h.query_by_label_contains("MB/s").is_some(), "speed is shown");
    assert!(h.query_by_label_contains("left").is_some(), "ETA is shown");
    assert!(h.query_by_role(Role::ProgressIndicator).is_some());
    h.get_by_label("Pause").click();
    step_until(&mut h, 30, "the pause", |a| a.state.downloads.list.iter().any(|d| matches!(d.status, DownloadStatus::Paused { .. })));
    assert!(h.query_by_label_contains("Paused").is_some());
    srv.throttle(None);
    h.get_by_label("Resume").click();
    step_until(&mut h, 120, "the download to finish", |a| a.state.installed.iter().any(|m| m.name == id));
    assert!(h.state().state.downloads.list.is_empty());
    assert!(h.query_all_by_label(id).count() == 2, "listed as installed and in the search results");
    assert!(h.query_by_label("installed").is_some(), "the search hit now says installed");
    // The resumed request picked up where the pause left the file.
    let resumed = srv.log().into_iter().filter(|l| l.method == "GET" && l.path.starts_with("/cdn/")).nth(1).unwrap();
    assert!(resumed.range.as_deref().is_some_and(|r| !r.starts_with("bytes=0-")), "{resumed:?}");
}

/// A conversation of thousands of messages costs a screenful per frame: only
/// the messages near the view are laid out, and a frame stays fast.
#[test]
fn a_long_conversation_lays_out_only_what_is_visible() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut c = hearth::store::conversations::Conversation::new("");
    c.title = "Very long".into();
    for i in 0..3000 {
        let role = if i % 2 == 0 { hearth::chat::Role::User } else { hearth::chat::Role::Assistant };
        let text = format!("Message {i}: {}", "a fairly ordinary sentence with **markdown** and `code`. ".repeat(4));
        c.messages.push(hearth::store::conversations::ChatMessage::new(role, text));
    }
    save_conversation(dir.path(), &c);
    let mut h = harness(dir.path());
    assert_eq!(h.state().state.current_conversation().unwrap().messages.len(), 3000);
    for _ in 0..5 {
        h.step();
    }
    let laid_out = h.state().chat.laid_out;
    assert!(laid_out > 0 && laid_out < 100, "laid out {laid_out} of 3000 messages");
    let t = Instant::now();
    for _ in 0..10 {
        h.step();
    }
    let per_frame = t.elapsed() / 10;
    eprintln!("3000 messages: {laid_out} laid out, {per_frame:?} a frame");
    assert!(h.query_by_label_contains("Message 2999").is_some(), "the newest message is in view");
}

/// A model whose template takes `enable_thinking` shows a thinking toggle; the
/// choice is kept with the conversation (on disk) and reaches the template:
/// Qwen3.5's prompt ends in "<think>\n" with thinking on and in the empty block
/// "<think>\n\n</think>\n\n" with it off, 11 more tokens with this byte-level tokenizer.
#[test]
fn thinking_toggle_is_kept_per_conversation_and_reaches_the_template() {
    let _g = common::mlx_lock();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("models/tiny-qwen3");
    let cfg = serde_json::json!({"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "vocab_size": 257, "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "max_position_embeddings": 4096});
    hearth::synth::write_config(cfg, &model, 0, 32, mlx_rs::Dtype::Float32).unwrap();
    let template = std::fs::read_to_string(common::root().join(".deps/templates/qwen3.5.jinja")).unwrap();
    let tc = model.join("tokenizer_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tc).unwrap()).unwrap();
    v["chat_template"] = serde_json::json!(template);
    std::fs::write(&tc, v.to_string()).unwrap();
    let prompt_tokens = |h: &Harness<'static, HearthApp>| h.state().state.engine.live.prompt_tokens;
    let id;
    {
        let mut h = harness(dir.path());
        wait_ready(&mut h);
        assert!(h.query_by_label("Thinking: on").is_none(), "no toggle before there is a chat");
        ask(&mut h, "Hi");
        step_until(&mut h, 120, "the reply", |a| !a.state.is_generating());
        let with_thinking = prompt_tokens(&h);
        // The prompt opened the reasoning block ("<think>\n"), so the engine
        // reads the reply as reasoning from its first token (random weights
        // never write the closing tag): nothing of it is the answer.
        let reply = h.state().state.current_conversation().unwrap().messages[1].clone();
        assert!(!reply.reasoning.is_empty() && reply.content.is_empty(), "{reply:?}");
        h.get_by_label("Thinking: on").click();
        h.step();
        h.step();
        assert!(h.query_by_label("Thinking: off").is_some());
        let conv = h.state().state.current_conversation().unwrap().clone();
        assert_eq!(conv.thinking, Some(false));
        id = conv.id.clone();
        h.state_mut().state.regenerate(1);
        step_until(&mut h, 120, "the regenerated reply", |a| !a.state.is_generating());
        assert_eq!(prompt_tokens(&h), with_thinking + "\n</think>\n\n".len());
        // With the block closed in the prompt, the reply is the answer.
        let reply = h.state().state.current_conversation().unwrap().messages[1].clone();
        assert!(reply.reasoning.is_empty() && !reply.content.is_empty(), "{reply:?}");
        h.state().state.flush();
    }
    // Reopened: the chat still has thinking off.
    let mut h = harness(dir.path());
    wait_ready(&mut h);
    h.state_mut().state.select(&id);
    h.step();
    assert!(h.query_by_label("Thinking: off").is_some(), "the choice came back with the conversation");
}

/// A whole HTTP/1.1 exchange with the app's server, from another thread.
fn http(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> std::thread::JoinHandle<String> {
    use std::io::{Read, Write};
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    );
    std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    })
}

#[test]
fn the_local_server_switch_serves_other_apps_beside_the_chat() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let mut state = AppState::with_hub(dir.path(), hub_config(dir.path(), "http://127.0.0.1:9"));
    // Any free port (the setting's default 8768 may be taken on a test machine).
    state.settings.server.port = 0;
    state.settings.server.aliases = vec![("fast".into(), "SmolLM2-135M-Instruct.Q4_1".into())];
    let mut h = harness_with(state, [1100.0, 720.0]);
    wait_ready(&mut h);
    assert!(h.state().state.server.running.is_none(), "off until the user turns it on");
    h.get_by_label("Server").click();
    h.step();
    h.get_by_label("Serve").click();
    step_until(&mut h, 10, "the server to start", |a| a.state.server.running.is_some());
    let addr = h.state().state.server.running.as_ref().unwrap().addr;
    assert!(addr.ip().is_loopback() && addr.port() > 1024, "{addr}");
    assert!(h.query_by_label_contains(&format!("Listening on http://{addr}")).is_some());
    assert!(h.state().state.settings.server.enabled, "the choice is kept");

    // A burst of client requests and the chat's own message, at the same
    // time, on the one engine: the window keeps drawing frames (every
    // `step_until` below is a frame) and everyone gets their own answer.
    let body = r#"{"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0, "max_tokens": 24}"#;
    // One client names the model by an alias the settings define.
    let aliased = body.replace("{\"messages\"", "{\"model\": \"fast\", \"messages\"");
    let clients: Vec<_> = (0..4).map(|i| http(addr, "POST", "/v1/chat/completions", if i == 0 { &aliased } else { body })).collect();
    h.get_by_label("Chat").click();
    h.step();
    ask(&mut h, "What is the capital of France?");
    step_until(&mut h, 180, "the chat's reply and the clients'", |a| !a.state.is_generating() && clients.iter().all(|c| c.is_finished()));
    let mut widest = 0;
    for client in clients {
        let reply = client.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        let json: serde_json::Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(json["choices"][0]["message"]["content"].as_str().unwrap().contains("Paris"), "{json}");
        widest = widest.max(json["timings"]["batch_rows"].as_u64().unwrap_or(0));
    }
    assert!(widest >= 2, "the burst shared the engine's decode steps (widest batch {widest})");
    let chat = h.state().state.current_conversation().unwrap().messages[1].content.clone();
    assert!(chat.contains("Paris") && !chat.contains("chat.completion"), "the chat got its own answer only: {chat}");

    // The panel shows the request in its log, and none in flight.
    h.get_by_label("Server").click();
    h.step();
    let logged = h.query_all_by_label_contains("chat.completions: SmolLM2-135M-Instruct.Q4_1").count();
    assert_eq!(logged, 4, "the log shows each request (the alias as the model it names)");
    assert!(h.query_by_label("Requests in flight: 0").is_some());
    // The server shared the chat's model: one instance, listed as the chat's.
    assert_eq!(h.query_all_by_label_contains("the chat's): 0 request(s)").count(), 1);

    // Other devices only with a key: without one the server stays off and says why.
    h.get_by_label("Allow other devices on the network (they must send the API key)").click();
    h.step();
    h.step();
    assert!(h.state().state.server.running.is_none());
    assert!(h.query_by_label_contains("Generate an API key").is_some());

    // Off: nothing listens any more.
    h.get_by_label("Allow other devices on the network (they must send the API key)").click();
    h.step();
    h.step();
    assert!(h.state().state.server.running.is_some(), "back on loopback: {:?}", h.state().state.server.error);
    let addr = h.state().state.server.running.as_ref().unwrap().addr;
    h.get_by_label("Serve").click();
    h.step();
    assert!(h.state().state.server.running.is_none() && !h.state().state.settings.server.enabled);
    std::thread::sleep(Duration::from_millis(300));
    assert!(std::net::TcpStream::connect(addr).is_err(), "still listening on {addr}");
}

#[test]
fn mcp_tools_run_only_with_the_users_approval() {
    let _g = common::mlx_lock();
    let dir = data_dir();
    let calls = dir.path().join("calls.txt");
    let server = common::root().join("tests/reference/mcp_weather_server.py");
    let config = serde_json::json!({"mcpServers": {"weather": {"command": common::python(), "args": [server, calls]}}});
    std::fs::write(dir.path().join("mcp.json"), config.to_string()).unwrap();
    let mut state = AppState::with_hub(dir.path(), hub_config(dir.path(), "http://127.0.0.1:9"));
    state.load_mcp_config();
    let mut h = harness_with(state, [1100.0, 720.0]);
    wait_ready(&mut h);
    step_until(&mut h, 60, "the MCP server's tools", |a| !a.state.mcp.tools.is_empty());
    assert_eq!(h.state().state.mcp.tools[0].spec.name, "get_weather");
    h.get_by_label("Settings").click();
    h.step();
    assert!(h.query_by_label("weather: connected, 1 tool(s)").is_some());
    h.get_by_label("Chat").click();
    h.step();

    // "Use a tool": SmolLM2's answer is a call, which waits for the user.
    h.get_by_label("Use a tool").click();
    h.step();
    ask(&mut h, "What is the weather in Paris?");
    step_until(&mut h, 120, "the call to wait for approval", |a| !a.state.mcp.pending.is_empty());
    let call = h.state().state.mcp.pending[0].call.clone();
    assert_eq!(call.name, "get_weather");
    assert!(call.arguments["city"].is_string(), "{call:?}");
    assert!(h.query_by_label("Run the tool get_weather of MCP server weather?").is_some());
    assert!(!calls.exists(), "nothing ran before the click");

    // Deny: the model hears so and goes on; the tool never ran.
    h.get_by_label("Deny").click();
    step_until(&mut h, 120, "the reply after the refusal", |a| !a.state.is_generating() && a.state.mcp.pending.is_empty());
    let msgs = h.state().state.current_conversation().unwrap().messages.clone();
    assert_eq!(msgs[1].tool_calls.len(), 1, "{msgs:?}");
    assert_eq!(msgs[2].content, hearth::ui::state::DENIED);
    assert_eq!(msgs[2].tool_call_id.as_deref(), Some(msgs[1].tool_calls[0].id.as_str()));
    assert!(!msgs[3].content.is_empty() && msgs[3].tool_calls.is_empty(), "the model answered: {msgs:?}");
    assert!(!calls.exists());

    // Allow once: the tool runs, its result is shown folded, and the model answers from it.
    ask(&mut h, "What is the weather in Oslo?");
    step_until(&mut h, 120, "the second call", |a| !a.state.mcp.pending.is_empty());
    h.get_by_label("Allow once").click();
    step_until(&mut h, 120, "the tool's result and the answer", |a| {
        !a.state.is_generating() && a.state.mcp.running.is_empty() && a.state.mcp.pending.is_empty()
            && a.state.current_conversation().unwrap().messages.len() == 8
    });
    let msgs = h.state().state.current_conversation().unwrap().messages.clone();
    let city = msgs[5].tool_calls[0].arguments["city"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), format!("{city}\n"), "it ran once");
    assert_eq!(msgs[6].content, format!("The weather in {city}: sunny, 21 degrees Celsius."));
    // The refusal and the result, each folded under its call's name.
    assert_eq!(h.query_all_by_label("Result of get_weather").count(), 2, "the result is shown folded");
    assert!(!msgs[7].content.is_empty() && msgs[7].tool_calls.is_empty(), "{msgs:?}");

    // Always in this chat: asked once more, then never again here.
    ask(&mut h, "What is the weather in Rome?");
    step_until(&mut h, 120, "the third call", |a| !a.state.mcp.pending.is_empty());
    h.get_by_label("Always in this chat").click();
    step_until(&mut h, 120, "the answer", |a| {
        !a.state.is_generating() && a.state.mcp.running.is_empty() && a.state.current_conversation().unwrap().messages.len() == 12
    });
    ask(&mut h, "What is the weather in Lyon?");
    step_until(&mut h, 120, "a call that runs without asking", |a| {
        !a.state.is_generating() && a.state.mcp.running.is_empty() && a.state.current_conversation().unwrap().messages.len() == 16
    });
    assert!(h.state().state.mcp.pending.is_empty());
    assert_eq!(std::fs::read_to_string(&calls).unwrap().lines().count(), 3);
    assert_eq!(h.state().state.current_conversation().unwrap().allowed_tools, vec!["get_weather".to_string()]);
}

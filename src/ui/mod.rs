//! The desktop app (eframe/egui): one file per panel, state in `state.rs`.

pub mod attachments;
pub mod chat;
pub mod frame_bench;
pub mod hub;
pub mod markdown;
pub mod meter;
pub mod model_picker;
pub mod models;
pub mod server;
pub mod settings;
pub mod sidebar;
pub mod state;
pub mod status;

use crate::store::settings::Theme;
use state::{AppState, ModelState, NoticeAction, NoticeKind, View};
use std::time::Instant;

pub struct HearthApp {
    pub state: AppState,
    pub chat: chat::ChatPanel,
    sidebar: sidebar::Sidebar,
    models: models::ModelsPanel,
    settings: settings::SettingsPanel,
    server: server::ServerPanel,
    applied: Option<(Theme, f32)>,
    /// Sent once the model is ready (used by the screenshot script).
    demo_prompt: Option<String>,
    /// CPU time of the last frames, for the debug overlay.
    frame_ms: std::collections::VecDeque<f32>,
    waker_set: bool,
}

impl HearthApp {
    pub fn new(state: AppState) -> Self {
        HearthApp {
            state,
            chat: Default::default(),
            sidebar: Default::default(),
            models: Default::default(),
            settings: Default::default(),
            server: Default::default(),
            applied: None,
            demo_prompt: None,
            frame_ms: Default::default(),
            waker_set: false,
        }
    }

    pub fn with_demo_prompt(mut self, p: Option<String>) -> Self {
        self.demo_prompt = p;
        self
    }

    fn apply_appearance(&mut self, ctx: &egui::Context) {
        let want = (self.state.settings.theme, self.state.settings.font_size);
        if self.applied == Some(want) {
            return;
        }
        ctx.set_theme(match want.0 {
            Theme::System => egui::ThemePreference::System,
            Theme::Light => egui::ThemePreference::Light,
            Theme::Dark => egui::ThemePreference::Dark,
        });
        let scale = want.1.clamp(8.0, 32.0) / 14.0;
        ctx.all_styles_mut(|style| {
            let defaults = egui::Style::default();
            for (ts, font) in style.text_styles.iter_mut() {
                if let Some(d) = defaults.text_styles.get(ts) {
                    font.size = d.size * scale;
                }
            }
        });
        self.applied = Some(want);
    }

    fn shortcuts(&mut self, ctx: &egui::Context) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let new = KeyboardShortcut::new(Modifiers::COMMAND, Key::N);
        let find = KeyboardShortcut::new(Modifiers::COMMAND, Key::F);
        let settings = KeyboardShortcut::new(Modifiers::COMMAND, Key::Comma);
        if ctx.input_mut(|i| i.consume_shortcut(&new)) {
            self.state.new_conversation();
        }
        if ctx.input_mut(|i| i.consume_shortcut(&find)) {
            self.sidebar.focus_search = true;
        }
        if ctx.input_mut(|i| i.consume_shortcut(&settings)) {
            self.state.view = View::Settings;
        }
        // Alt+Up / Alt+Down: the previous or next chat in the sidebar's order.
        for (key, step) in [(Key::ArrowUp, -1), (Key::ArrowDown, 1)] {
            if ctx.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(Modifiers::ALT, key))) {
                self.state.select_neighbour(step);
            }
        }
    }

    /// Draws the whole app into `ui` (eframe calls this each frame; tests too).
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        let t0 = Instant::now();
        let ctx = ui.ctx().clone();
        if !self.waker_set {
            // The engine and the download thread wake the UI when they have news:
            // no polling while idle, one frame per streamed piece. Set before the
            // first poll, so news that arrives in between still wakes a frame.
            let c = ctx.clone();
            self.state.engine.handle.set_waker(move || c.request_repaint());
            let c = ctx.clone();
            self.state.downloads.hub.set_waker(move || c.request_repaint());
            let c = ctx.clone();
            self.state.mcp.handle.set_waker(move || c.request_repaint());
            self.waker_set = true;
        }
        self.state.poll();
        if let Some(wait) = self.state.tick_meter() {
            ctx.request_repaint_after(wait);
        }
        if crate::sys::take_terminate_request() {
            // Told to quit (SIGTERM, logout, Ctrl+C): keep the reply as far
            // as it got, marked, save everything, then close the window.
            self.state.interrupt_for_exit();
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        self.apply_appearance(&ctx);
        self.shortcuts(&ctx);
        // Files dropped on the window are attached to the question being written.
        let dropped: Vec<std::path::PathBuf> = ctx.input(|i| i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect());
        if !dropped.is_empty() {
            self.state.view = View::Chat;
            self.state.attach_paths(dropped);
        }
        if let (Some(p), ModelState::Ready(_)) = (&self.demo_prompt, &self.state.engine.model) {
            self.state.chat.input = p.clone();
            self.state.send_input();
            self.demo_prompt = None;
        }

        egui::Panel::top("top-bar").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("Hearth");
                ui.separator();
                let v = &mut self.state.view;
                ui.selectable_value(v, View::Chat, "Chat");
                ui.selectable_value(v, View::Models, "Models");
                ui.selectable_value(v, View::Server, "Server").on_hover_text("The local API server other apps talk to");
                ui.selectable_value(v, View::Settings, "Settings").on_hover_text("Settings (Ctrl/Cmd+,)");
            });
            self.notices(ui);
        });
        egui::Panel::bottom("status-bar").show(ui, |ui| status::ui(ui, &self.state));
        egui::Panel::left("sidebar").resizable(true).default_size(220.0).show(ui, |ui| {
            self.sidebar.ui(ui, &mut self.state);
        });
        egui::CentralPanel::default().show(ui, |ui| match self.state.view {
            View::Chat => self.chat.ui(ui, &mut self.state),
            View::Models => self.models.ui(ui, &mut self.state),
            View::Server => self.server.ui(ui, &mut self.state),
            View::Settings => self.settings.ui(ui, &mut self.state),
        });

        // Safety net while background work is under way: a frame every 100 ms.
        if self.state.jobs.pending() > 0 || !self.state.engine.handle.is_alive() || matches!(self.state.engine.model, ModelState::Loading { .. }) {
            ctx.request_repaint_after(std::time::Duration::from_millis(100));
        }
        let ms = t0.elapsed().as_secs_f32() * 1000.0;
        self.frame_ms.push_back(ms);
        if self.frame_ms.len() > 120 {
            self.frame_ms.pop_front();
        }
        if self.state.settings.show_frame_time {
            let max = self.frame_ms.iter().cloned().fold(0.0, f32::max);
            egui::Area::new(egui::Id::unique("frame-time")).anchor(egui::Align2::RIGHT_TOP, [-8.0, 40.0]).show(&ctx, |ui| {
                ui.label(egui::RichText::new(format!("frame {ms:.2} ms (max {max:.2} ms)")).monospace().small());
            });
        }
    }

    fn notices(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        let mut restart = false;
        for (i, n) in self.state.notices.iter().enumerate().rev().take(3) {
            ui.horizontal_wrapped(|ui| {
                let color = match n.kind {
                    NoticeKind::Error => ui.visuals().error_fg_color,
                    NoticeKind::Info => ui.visuals().text_color(),
                };
                ui.colored_label(color, &n.text);
                if n.action == Some(NoticeAction::RestartEngine) && ui.button("Restart engine").clicked() {
                    restart = true;
                    dismiss = Some(i);
                }
                if ui.small_button("Dismiss").clicked() {
                    dismiss = Some(i);
                }
            });
        }
        if let Some(i) = dismiss {
            self.state.notices.remove(i);
        }
        if restart {
            self.state.restart_engine();
            self.waker_set = false; // the new engine needs the waker too
        }
    }
}

impl eframe::App for HearthApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        HearthApp::ui(self, ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.state.flush();
    }
}

/// Opens the window. `demo_prompt` is sent once the model is loaded.
pub fn run(demo_prompt: Option<String>) -> anyhow::Result<()> {
    let data_dir = crate::paths::data_dir();
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Hearth")
            .with_inner_size([1100.0, 720.0])
            .with_min_inner_size([640.0, 420.0]),
        ..Default::default()
    };
    eframe::run_native(
        "Hearth",
        options,
        Box::new(move |cc| {
            let c = cc.egui_ctx.clone();
            crate::sys::on_terminate_signals(move || c.request_repaint());
            let mut state = AppState::new(&data_dir);
            state.autoload();
            state.start_server_if_enabled();
            state.load_mcp_config();
            if state.chat.current.is_none() {
                state.new_conversation();
            }
            Ok(Box::new(HearthApp::new(state).with_demo_prompt(demo_prompt)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("could not open the window: {e}"))
}

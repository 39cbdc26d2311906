//! The Local server panel: turn the API server on or off, its port, whether
//! other devices may reach it (only with the API key), the key itself
//! (masked, copyable, regenerated on demand), the memory its models may
//! take, how long idle ones stay, model aliases, the address clients use,
//! the models loaded, the requests in flight and the server's log.

use super::state::AppState;
use egui::{RichText, Ui};

#[derive(Default)]
pub struct ServerPanel {
    /// The saved key, masked; read from disk when the panel first shows.
    key_shown: Option<Option<String>>,
    /// The aliases being edited (`name = model` lines), and what is wrong with them.
    aliases: Option<String>,
    alias_error: Option<String>,
}

impl ServerPanel {
    pub fn ui(&mut self, ui: &mut Ui, state: &mut AppState) {
        let key = self.key_shown.get_or_insert_with(crate::server::key::load).clone();
        ui.heading("Local server");
        ui.label("An OpenAI-, Anthropic- and Ollama-compatible API for other apps (editors, agents, scripts), answered by the model loaded here.");
        ui.add_space(6.0);
        if let Some(d) = &state.engine.daemon {
            // The daemon's own options rule; this app only chats on its engine.
            ui.label(RichText::new(format!("Served by the Hearth daemon (pid {}) at {}", d.pid, d.url)).strong());
            ui.label("This app is attached to it: the chat runs on the daemon's engine, and the server keeps running when the app quits. Its options come from its command line (`hearth serve --daemon …`); `hearth service install` starts it at login.");
            if ui.add_enabled(!state.engine.stopping_daemon, egui::Button::new("Stop the background server")).clicked() {
                state.stop_daemon();
            }
            return;
        }
        ui.horizontal(|ui| {
            let mut on = state.settings.server.enabled;
            if ui.checkbox(&mut on, "Serve").on_hover_text("Start or stop the server").changed() {
                state.set_server_enabled(on);
            }
            if ui
                .button("Keep serving in the background")
                .on_hover_text("Runs the server as a daemon (hearth serve --daemon) that keeps serving after Hearth quits; the app attaches to it")
                .clicked()
            {
                state.start_daemon();
            }
        });
        let (mut restart, mut key_changed) = (false, false);
        let before = state.settings.server.clone();
        egui::Grid::new("server-settings").num_columns(2).show(ui, |ui| {
            ui.label("Port");
            // Ports below 1024 need administrator rights; 0 (settings file
            // only) takes any free port.
            let r = ui.add(egui::DragValue::new(&mut state.settings.server.port).range(1024..=65535).clamp_existing_to_range(false));
            restart |= r.lost_focus() || r.drag_stopped();
            ui.end_row();
            ui.label("Network");
            restart |= ui
                .checkbox(&mut state.settings.server.lan, "Allow other devices on the network (they must send the API key)")
                .changed();
            ui.end_row();
            ui.label("API key");
            ui.horizontal(|ui| {
                match &key {
                    Some(k) => ui.monospace(crate::hub::token::mask(k)),
                    None => ui.label("none"),
                };
                if ui.button("Generate new key").clicked() {
                    match crate::server::key::generate() {
                        Ok(k) => {
                            ui.ctx().copy_text(k.clone());
                            self.key_shown = Some(Some(k));
                            state.info("A new API key was generated and copied to the clipboard.");
                            key_changed = true;
                        }
                        Err(e) => state.error(format!("Could not save the API key: {e}")),
                    }
                }
                if let Some(k) = &key {
                    if ui.button("Copy").clicked() {
                        ui.ctx().copy_text(k.clone());
                    }
                }
            });
            ui.end_row();
            ui.label("Memory for models");
            let r = ui.add(egui::DragValue::new(&mut state.settings.server.memory_budget_mb).range(0..=1 << 24).suffix(" MB"))
                .on_hover_text("Models the server loads for requests share this (0: no bound); the least recently used idle one goes first");
            restart |= r.lost_focus() || r.drag_stopped();
            ui.end_row();
            ui.label("Unload idle models after");
            let r = ui.add(egui::DragValue::new(&mut state.settings.server.idle_unload_min).range(0..=10_000).suffix(" min"))
                .on_hover_text("Models other than the chat's, without requests this long (0: keep them)");
            restart |= r.lost_focus() || r.drag_stopped();
            ui.end_row();
            ui.label("Model aliases");
            let text = self.aliases.get_or_insert_with(|| state.settings.server.aliases.iter().map(|(a, m)| format!("{a} = {m}\n")).collect());
            let r = ui.add(egui::TextEdit::multiline(text).desired_rows(2).hint_text("fast = SmolLM2-135M-Instruct.Q4_1"))
                .on_hover_text("Names clients send (one 'name = model' a line) and the installed models they mean");
            if r.lost_focus() {
                match crate::store::settings::parse_aliases(text) {
                    Ok(a) => {
                        self.alias_error = None;
                        restart |= a != state.settings.server.aliases;
                        state.settings.server.aliases = a;
                    }
                    Err(e) => self.alias_error = Some(e),
                }
            }
            ui.end_row();
        });
        if let Some(e) = &self.alias_error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        // A field that lost focus unchanged restarts nothing (a restart cuts streams).
        if (restart && state.settings.server != before) || key_changed {
            state.save_settings();
            if state.settings.server.enabled {
                state.start_server();
            }
        }
        ui.separator();
        if let Some(e) = &state.server.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        let Some(running) = &state.server.running else {
            ui.label("Stopped.");
            return;
        };
        let base = format!("http://{}", running.addr);
        ui.label(RichText::new(format!("Listening on {base}")).strong());
        egui::Grid::new("server-endpoints").num_columns(2).show(ui, |ui| {
            ui.label("OpenAI");
            ui.monospace(format!("{base}/v1"));
            ui.end_row();
            ui.label("Anthropic");
            ui.monospace(format!("{base}/v1/messages"));
            ui.end_row();
            ui.label("Ollama");
            ui.monospace(&base);
            ui.end_row();
        });
        let in_flight = running.server.requests_in_flight();
        ui.label(format!("Requests in flight: {in_flight}"));
        ui.label(RichText::new("Models loaded").strong());
        let mut held = running.server.bridge.held();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, h) in &held {
            let name = crate::models::load::display_name(&h.info.path);
            let role = if h.primary { ", the chat's" } else { "" };
            ui.label(format!("{name} ({}{role}): {} request(s)", crate::units::bytes(h.size), h.in_flight));
        }
        if held.is_empty() {
            ui.label("None.");
        }
        if in_flight > 0 {
            // The count changes without an engine event when a request ends.
            ui.ctx().request_repaint_after(std::time::Duration::from_millis(250));
        }
        ui.add_space(4.0);
        ui.label(RichText::new("Log").strong());
        let log = running.server.recent_log();
        egui::ScrollArea::vertical().max_height(240.0).stick_to_bottom(true).show(ui, |ui| {
            if log.is_empty() {
                ui.label("No requests yet.");
            }
            for line in log.iter().rev().take(100).rev() {
                ui.monospace(line);
            }
        });
    }
}

//! The chat panel: message bubbles, streaming reply, input box and per-message actions.

use super::markdown;
use super::state::{AppState, Decision, ModelState, View};
use crate::chat::Role;
use egui::{Key, RichText, Ui};

#[derive(Default)]
pub struct ChatPanel {
    /// Message being edited (index, draft).
    editing: Option<(usize, String)>,
    /// Measured height of each message of the shown conversation, so messages
    /// outside the view take their space without being laid out.
    heights: Heights,
    /// Messages laid out in the last frame (the rest were skipped).
    pub laid_out: usize,
}

#[derive(Default)]
struct Heights {
    conversation: String,
    width: f32,
    of: Vec<Option<f32>>,
}

/// Height assumed for a message not yet laid out.
const GUESS: f32 = 80.0;

enum Action {
    Regenerate(usize),
    Resend(usize, String),
    /// Show version `.1` (from 0) from message `.0` on.
    Switch(usize, usize),
    DuplicateFrom(usize),
    Decide(String, Decision),
}

impl ChatPanel {
    pub fn ui(&mut self, ui: &mut Ui, state: &mut AppState) {
        // Input area at the bottom, messages above it.
        egui::Panel::top("chat-header").show(ui, |ui| super::model_picker::ui(ui, state));
        egui::Panel::bottom("chat-input").resizable(false).show(ui, |ui| {
            ui.add_space(6.0);
            self.input(ui, state);
            ui.add_space(6.0);
        });
        egui::CentralPanel::default().show(ui, |ui| {
            if state.installed_scanned && state.installed.is_empty() && !matches!(state.engine.model, ModelState::Ready(_) | ModelState::Loading { .. }) {
                empty_state(ui, state);
                return;
            }
            // Sending needs the model and no reply streaming; showing
            // another version only no reply streaming.
            let can = (state.can_send(), !state.is_generating());
            let Some(conv) = state.current_conversation() else {
                ui.centered_and_justified(|ui| ui.label("Start a new chat: type a message below."));
                return;
            };
            let streaming_here = state.chat.streaming.as_ref().is_some_and(|s| s.conversation == conv.id);
            let mut action = None;
            let width = ui.available_width();
            let h = &mut self.heights;
            if h.conversation != conv.id || (h.width - width).abs() > 0.5 {
                *h = Heights { conversation: conv.id.clone(), width, of: vec![] };
            }
            h.of.resize(conv.messages.len(), None);
            self.laid_out = 0;
            egui::ScrollArea::vertical().stick_to_bottom(true).auto_shrink([false, false]).show_viewport(ui, |ui, view| {
                if conv.messages.is_empty() {
                    ui.add_space(24.0);
                    ui.vertical_centered(|ui| ui.label(RichText::new("Ask anything. Everything stays on this computer.").weak()));
                }
                // Only messages near the view are laid out; the others take
                // their measured (or guessed) height, so a conversation of any
                // length costs a screenful per frame.
                let top = ui.cursor().top();
                let (lo, hi) = (view.min.y - view.height(), view.max.y + view.height());
                let n = conv.messages.len();
                for (i, m) in conv.messages.iter().enumerate() {
                    let live = streaming_here && i + 1 == n;
                    let y = ui.cursor().top() - top;
                    let known = self.heights.of[i];
                    let height = known.unwrap_or(GUESS);
                    if !live && (y + height < lo || y > hi) {
                        ui.add_space(height);
                    } else {
                        let before = ui.cursor().top();
                        // A tool result is titled with the function it answers.
                        let called = m.tool_call_id.as_ref().and_then(|id| {
                            conv.messages[..i].iter().rev().flat_map(|p| &p.tool_calls).find(|c| &c.id == id).map(|c| c.name.as_str())
                        });
                        let versions = conv.branches.version_at(i);
                        if let Some(a) = self.message(ui, (i, versions), m, live, can, called) {
                            action = Some(a);
                        }
                        self.heights.of[i] = Some(ui.cursor().top() - before);
                        self.laid_out += 1;
                    }
                    ui.add_space(8.0);
                }
                // Calls the model made that wait for the user: nothing runs without a click.
                for p in state.mcp.pending.iter().filter(|p| p.conversation == conv.id) {
                    if let Some(a) = approval(ui, p, &state.mcp.tools) {
                        action = Some(a);
                    }
                }
            });
            match action {
                Some(Action::Regenerate(i)) => state.regenerate(i),
                Some(Action::Resend(i, t)) => state.edit_and_resend(i, t),
                Some(Action::Switch(i, to)) => state.switch_version(i, to),
                Some(Action::DuplicateFrom(i)) => state.duplicate_from(i),
                Some(Action::Decide(id, d)) => state.decide(&id, d),
                None => {}
            }
        });
    }

    fn message(
        &mut self,
        ui: &mut Ui,
        (i, (version, versions)): (usize, (usize, usize)),
        m: &crate::store::conversations::ChatMessage,
        live: bool,
        (can_send, can_browse): (bool, bool),
        called: Option<&str>,
    ) -> Option<Action> {
        let mut action = None;
        let user = m.role == Role::User;
        if m.role == Role::Tool {
            // A tool's result, folded: the model reads it, the user may.
            let title = format!("Result of {}", called.unwrap_or("a tool"));
            egui::CollapsingHeader::new(title).id_salt(("tool", i)).default_open(false).show(ui, |ui| {
                ui.label(RichText::new(&m.content).monospace());
            });
            return None;
        }
        let fill = if user { ui.visuals().faint_bg_color } else { ui.visuals().panel_fill };
        let layout = if user { egui::Layout::right_to_left(egui::Align::Min) } else { egui::Layout::left_to_right(egui::Align::Min) };
        ui.with_layout(layout, |ui| {
            let max_w = (ui.available_width() * 0.85).max(200.0);
            ui.set_max_width(max_w);
            egui::Frame::new()
                .fill(fill)
                .stroke(ui.visuals().widgets.noninteractive.bg_stroke)
                .corner_radius(10.0)
                .inner_margin(10.0)
                .show(ui, |ui| {
                    ui.set_max_width(max_w);
                    ui.with_layout(egui::Layout::top_down(egui::Align::Min), |ui| {
                        ui.label(RichText::new(if user { "You" } else { "Assistant" }).small().strong());
                        if let Some((_, draft)) = self.editing.as_mut().filter(|(idx, _)| *idx == i) {
                            ui.add(egui::TextEdit::multiline(draft).desired_rows(3).desired_width(f32::INFINITY));
                            let mut cancel = false;
                            ui.horizontal(|ui| {
                                if ui.add_enabled(can_send, egui::Button::new("Send")).clicked() {
                                    action = Some(Action::Resend(i, draft.clone()));
                                }
                                cancel = ui.button("Cancel").clicked();
                            });
                            if cancel || action.is_some() {
                                self.editing = None;
                            }
                            return;
                        }
                        let answer = m.content.as_str();
                        if !m.reasoning.is_empty() {
                            let t = m.reasoning.as_str();
                            let title = match m.thought_secs {
                                Some(s) => format!("Thought for {s:.0} s"),
                                None => "Thinking…".to_string(),
                            };
                            egui::CollapsingHeader::new(title).id_salt(("think", i)).default_open(false).show(ui, |ui| {
                                ui.label(RichText::new(t.trim()).weak());
                            });
                        }
                        if answer.is_empty() && live {
                            ui.horizontal(|ui| {
                                ui.spinner();
                                ui.label(RichText::new("Thinking…").weak());
                            });
                        } else {
                            markdown::show(ui, answer, i);
                        }
                        if !m.attachments.is_empty() {
                            super::attachments::sent(ui, &m.attachments);
                        }
                        for c in &m.tool_calls {
                            ui.label(RichText::new(format!("Called {} {}", c.name, c.arguments)).monospace().small());
                        }
                        if let Some(e) = &m.error {
                            ui.colored_label(ui.visuals().error_fg_color, format!("Error: {e}"));
                        }
                        if !live {
                            ui.horizontal(|ui| {
                                // Earlier versions of the conversation from here (edits, regenerations).
                                if versions > 1 {
                                    let arrow = |ui: &mut Ui, text: &str, name: &'static str, enabled: bool| {
                                        let on = enabled && can_browse;
                                        let r = ui.add_enabled(on, egui::Button::new(text).small()).on_hover_text(name);
                                        r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, on, name));
                                        r.clicked()
                                    };
                                    if arrow(ui, "‹", "Previous version", version > 1) {
                                        action = Some(Action::Switch(i, version - 2));
                                    }
                                    ui.label(RichText::new(format!("{version}/{versions}")).small());
                                    if arrow(ui, "›", "Next version", version < versions) {
                                        action = Some(Action::Switch(i, version));
                                    }
                                }
                                if ui.small_button("Copy").on_hover_text("Copy message").clicked() {
                                    ui.ctx().copy_text(m.content.clone());
                                }
                                if ui.small_button("Duplicate").on_hover_text("A new conversation with the messages up to this one").clicked() {
                                    action = Some(Action::DuplicateFrom(i));
                                }
                                if user {
                                    if ui.add_enabled(can_send, egui::Button::new("Edit").small()).on_hover_text("Edit and resend").clicked() {
                                        self.editing = Some((i, m.content.clone()));
                                    }
                                } else {
                                    if ui.add_enabled(can_send, egui::Button::new("Regenerate").small()).clicked() {
                                        action = Some(Action::Regenerate(i));
                                    }
                                    if let Some(s) = &m.stats {
                                        ui.label(
                                            RichText::new(format!(
                                                "{}{} tokens · {:.1} tok/s · {:.2} s to first token{}{}",
                                                s.model.as_deref().map(|m| format!("{m} · ")).unwrap_or_default(),
                                                s.tokens,
                                                s.decode_tps,
                                                s.ttft_s,
                                                cached_note(s),
                                                if s.drafted > 0 { format!(" · {} of {} proposed tokens kept", s.accepted, s.drafted) } else { String::new() }
                                            ))
                                            .small()
                                            .weak(),
                                        );
                                    }
                                }
                            });
                        }
                    });
                });
        });
        action
    }

    fn input(&mut self, ui: &mut Ui, state: &mut AppState) {
        let generating = state.is_generating();
        if generating && ui.input(|i| i.key_pressed(Key::Escape)) {
            state.stop();
        }
        let id = egui::Id::unique("chat-input-box");
        let focused = ui.memory(|m| m.has_focus(id));
        // Enter sends; Shift+Enter falls through to the editor as a newline.
        let send = focused && state.can_send() && ui.input_mut(take_plain_enter);
        // Thinking on/off, for models whose template takes `enable_thinking`;
        // kept per conversation.
        if let ModelState::Ready(info) = &state.engine.model {
            if info.takes_thinking_toggle && state.current_conversation().is_some() {
                let mut on = state.current_thinking() != Some(false);
                let label = if on { "Thinking: on" } else { "Thinking: off" };
                let resp = ui
                    .toggle_value(&mut on, label)
                    .on_hover_text("Let the model reason before it answers (this chat only)");
                if resp.clicked() {
                    state.set_thinking(on);
                }
            }
        }
        // With MCP tools connected: "Use a tool" makes the next answer a call.
        if !state.mcp.tools.is_empty() {
            let mut on = state.current_conversation().is_some_and(|c| c.require_tool);
            let resp = ui.toggle_value(&mut on, "Use a tool").on_hover_text(format!(
                "Answer with a call to one of the {} tools of the connected MCP servers (this chat only)",
                state.mcp.tools.len()
            ));
            if resp.clicked() {
                state.set_require_tool(on);
            }
        }
        super::attachments::draft(ui, state);
        ui.horizontal(|ui| {
            let hint = match &state.engine.model {
                ModelState::Ready(_) => "Message Hearth… (Enter to send, Shift+Enter for a new line)",
                ModelState::Loading { .. } => "Loading the model…",
                _ => "Load a model to start chatting",
            };
            let w = ui.available_width() - 80.0;
            let resp = ui.add(
                egui::TextEdit::multiline(&mut state.chat.input)
                    .id(id)
                    .hint_text(hint)
                    .desired_rows(2)
                    .desired_width(w)
                    .lock_focus(true),
            );
            let resp = resp.on_hover_text("Message");
            if generating {
                if ui.button(RichText::new("Stop").strong()).on_hover_text("Stop generating (Esc)").clicked() {
                    state.stop();
                }
            } else {
                let can = state.can_send() && !(state.chat.input.trim().is_empty() && state.chat.attachments.list.is_empty());
                if ui.add_enabled(can, egui::Button::new(RichText::new("Send").strong())).clicked() {
                    state.send_input();
                    resp.request_focus();
                }
            }
        });
        super::meter::ui(ui, state);
        if send {
            state.send_input();
        }
    }
}

/// Removes a plain Enter press (no Shift/Ctrl/Alt/Cmd) from this frame's input.
/// egui's `consume_key` ignores an extra Shift, which would eat Shift+Enter too.
fn take_plain_enter(i: &mut egui::InputState) -> bool {
    let before = i.events.len();
    i.events.retain(|e| {
        !matches!(e, egui::Event::Key { key: Key::Enter, pressed: true, modifiers, .. } if modifiers.is_none())
    });
    i.events.len() != before
}

fn empty_state(ui: &mut Ui, state: &mut AppState) {
    ui.vertical_centered(|ui| {
        ui.add_space(80.0);
        ui.heading("No model installed");
        ui.label("Hearth runs models on this computer. Import a .gguf file or an MLX model folder to start.");
        ui.add_space(8.0);
        if ui.button("Open the model manager").clicked() {
            state.view = View::Models;
        }
    });
}

/// The card for a call waiting for the user's decision.
fn approval(ui: &mut Ui, p: &super::state::PendingCall, tools: &[crate::mcp::McpTool]) -> Option<Action> {
    let mut action = None;
    let server = tools.iter().find(|t| t.spec.name == p.call.name).map(|t| t.server.as_str()).unwrap_or("?");
    egui::Frame::new()
        .stroke(ui.visuals().selection.stroke)
        .corner_radius(10.0)
        .inner_margin(10.0)
        .show(ui, |ui| {
            ui.label(RichText::new(format!("Run the tool {} of MCP server {server}?", p.call.name)).strong());
            ui.label(RichText::new(p.call.arguments.to_string()).monospace().small());
            ui.horizontal(|ui| {
                let id = p.call.id.clone();
                if ui.button("Allow once").clicked() {
                    action = Some(Action::Decide(id.clone(), Decision::AllowOnce));
                }
                if ui.button("Always in this chat").clicked() {
                    action = Some(Action::Decide(id.clone(), Decision::AlwaysInThisChat));
                }
                if ui.button("Deny").clicked() {
                    action = Some(Action::Decide(id, Decision::Deny));
                }
            });
        });
    action
}

/// " · N of M prompt tokens cached (K from disk)", where the cache served any.
fn cached_note(s: &crate::store::conversations::GenerationStatsLite) -> String {
    match (s.cached, s.from_disk) {
        (0, _) => String::new(),
        (c, 0) => format!(" · {c} of {} prompt tokens cached", s.prompt_tokens),
        (c, d) => format!(" · {c} of {} prompt tokens cached ({d} from disk)", s.prompt_tokens),
    }
}

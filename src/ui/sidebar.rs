//! Conversations sidebar: new chat, search, rename, delete with undo, export.

use super::state::{AppState, View};
use egui::{RichText, Ui};

#[derive(Default)]
pub struct Sidebar {
    renaming: Option<(String, String)>,
    confirm_delete: Option<String>,
    pub focus_search: bool,
}

impl Sidebar {
    pub fn ui(&mut self, ui: &mut Ui, state: &mut AppState) {
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            if ui.button("+ New chat").on_hover_text("New chat (Ctrl/Cmd+N)").clicked() {
                state.new_conversation();
            }
        });
        ui.add_space(4.0);
        let search = ui.add(egui::TextEdit::singleline(&mut state.chat.search).hint_text("Search chats").id(egui::Id::unique("search-box")));
        let search = search.on_hover_text("Search chats (Ctrl/Cmd+F)");
        if self.focus_search {
            search.request_focus();
            self.focus_search = false;
        }
        if let Some(c) = &state.chat.undo {
            let title = c.title.clone();
            ui.horizontal_wrapped(|ui| {
                ui.label(RichText::new(format!("Deleted “{title}”.")).small());
                if ui.small_button("Undo").clicked() {
                    state.undo_delete();
                }
            });
        }
        ui.separator();
        let query = state.chat.search.trim().to_string();
        let items: Vec<(String, String, bool)> = state
            .chat
            .conversations
            .iter()
            .filter(|c| query.is_empty() || c.matches(&query))
            .map(|c| (c.id.clone(), c.title.clone(), state.chat.current.as_deref() == Some(c.id.as_str())))
            .collect();
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            if items.is_empty() {
                ui.label(RichText::new(if query.is_empty() { "No chats yet" } else { "No chats match" }).weak());
            }
            for (id, title, selected) in items {
                if let Some((rid, draft)) = self.renaming.as_mut().filter(|(rid, _)| *rid == id) {
                    let r = ui.text_edit_singleline(draft);
                    if r.lost_focus() || ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                        let (rid, draft) = (rid.clone(), draft.trim().to_string());
                        if !draft.is_empty() {
                            state.rename(&rid, draft);
                        }
                        self.renaming = None;
                    } else {
                        r.request_focus();
                    }
                    continue;
                }
                let resp = ui.selectable_label(selected && state.view == View::Chat, &title);
                if resp.clicked() {
                    state.select(&id);
                }
                resp.context_menu(|ui| {
                    if ui.button("Rename").clicked() {
                        self.renaming = Some((id.clone(), title.clone()));
                        ui.close();
                    }
                    if ui.button("Export as Markdown…").clicked() {
                        state.export(&id, true);
                        ui.close();
                    }
                    if ui.button("Export as JSON…").clicked() {
                        state.export(&id, false);
                        ui.close();
                    }
                    if ui.button("Delete…").clicked() {
                        self.confirm_delete = Some(id.clone());
                        ui.close();
                    }
                });
            }
        });
        if let Some(id) = self.confirm_delete.clone() {
            let title = state.chat.conversations.iter().find(|c| c.id == id).map(|c| c.title.clone()).unwrap_or_default();
            let modal = egui::Modal::new(egui::Id::unique("confirm-delete-chat")).show(ui.ctx(), |ui| {
                ui.heading("Delete chat?");
                ui.label(format!("“{title}” will be deleted. You can undo this until you delete another chat."));
                ui.horizontal(|ui| {
                    if ui.button("Delete").clicked() {
                        state.delete_conversation(&id);
                        self.confirm_delete = None;
                    }
                    if ui.button("Cancel").clicked() {
                        self.confirm_delete = None;
                    }
                });
            });
            if modal.should_close() {
                self.confirm_delete = None;
            }
        }
    }
}

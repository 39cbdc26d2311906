//! Conversations sidebar: new chat, search, pinned chats and folders (the
//! order in `state::organize`), rename, pin, file, delete with undo, export.

use super::state::{AppState, View};
use egui::{RichText, Ui};

#[derive(Default)]
pub struct Sidebar {
    renaming: Option<(String, String)>,
    /// The chat being filed in a new folder, and the name typed so far.
    new_folder: Option<(String, String)>,
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
        let groups = state.sidebar_groups();
        let folders = state.folders();
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| {
            if groups.iter().all(|g| g.items.is_empty()) {
                ui.label(RichText::new(if query.is_empty() { "No chats yet" } else { "No chats match" }).weak());
            }
            for g in groups {
                let items: Vec<(String, String, bool, bool, Option<String>)> = g
                    .items
                    .iter()
                    .map(|&i| {
                        let c = &state.chat.conversations[i];
                        (c.id.clone(), c.title.clone(), state.chat.current.as_deref() == Some(c.id.as_str()), c.pinned, c.folder.clone())
                    })
                    .collect();
                match &g.heading {
                    Some(h) if g.folder.is_some() => {
                        egui::CollapsingHeader::new(RichText::new(h).strong()).id_salt(("folder", h.as_str())).default_open(true).show(ui, |ui| {
                            self.items(ui, state, items, &folders);
                        });
                    }
                    Some(h) => {
                        ui.label(RichText::new(h).small().weak());
                        self.items(ui, state, items, &folders);
                        ui.separator();
                    }
                    None => self.items(ui, state, items, &folders),
                }
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

    /// One group's chats, each with its menu.
    fn items(&mut self, ui: &mut Ui, state: &mut AppState, items: Vec<(String, String, bool, bool, Option<String>)>, folders: &[String]) {
        for (id, title, selected, pinned, folder) in items {
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
            if let Some((fid, draft)) = self.new_folder.as_mut().filter(|(fid, _)| *fid == id) {
                let r = ui.add(egui::TextEdit::singleline(draft).hint_text("Folder name"));
                if r.lost_focus() || ui.input(|i| i.key_pressed(egui::Key::Enter)) {
                    let (fid, draft) = (fid.clone(), draft.clone());
                    if !draft.trim().is_empty() {
                        state.move_to_folder(&fid, Some(draft));
                    }
                    self.new_folder = None;
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
                if ui.button(if pinned { "Unpin" } else { "Pin" }).clicked() {
                    state.set_pinned(&id, !pinned);
                    ui.close();
                }
                ui.menu_button("Move to folder", |ui| {
                    for f in folders.iter().filter(|f| folder.as_ref() != Some(*f)) {
                        if ui.button(f).clicked() {
                            state.move_to_folder(&id, Some(f.clone()));
                            ui.close();
                        }
                    }
                    if ui.button("New folder…").clicked() {
                        self.new_folder = Some((id.clone(), String::new()));
                        ui.close();
                    }
                    if folder.is_some() && ui.button("Out of the folder").clicked() {
                        state.move_to_folder(&id, None);
                        ui.close();
                    }
                });
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
    }
}

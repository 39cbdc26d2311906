//! Model manager: installed models (with a memory-fit verdict), load/unload,
//! delete (confirmed), import; then downloads, catalogue and search (ui/hub.rs).

use super::state::{AppState, ModelState};
use crate::models::load::ModelInfo;
use egui::{RichText, Ui};
use crate::units::bytes as mb;
use std::path::PathBuf;

#[derive(Default)]
pub struct ModelsPanel {
    confirm_delete: Option<(PathBuf, String, u64)>,
}

impl ModelsPanel {
    pub fn ui(&mut self, ui: &mut Ui, state: &mut AppState) {
        egui::ScrollArea::vertical().auto_shrink([false, false]).show(ui, |ui| self.body(ui, state));
    }

    fn body(&mut self, ui: &mut Ui, state: &mut AppState) {
        ui.heading("Models");
        ui.label(format!("Stored in {}", state.settings.models_dir().display()));
        ui.add_space(6.0);
        match &state.engine.model {
            ModelState::Ready(info) => loaded_card(ui, info),
            ModelState::Loading { path, fraction, message } => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Loading {} — {message}", path.display()));
                });
                ui.add(egui::ProgressBar::new(*fraction).show_percentage());
            }
            ModelState::Failed(e) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("Could not load the model: {e}"));
            }
            ModelState::None => {
                ui.label("No model loaded.");
            }
        }
        ui.add_space(8.0);
        ui.horizontal(|ui| {
            if ui.button("Import .gguf file…").clicked() {
                state.pick_import(false);
            }
            if ui.button("Import model folder…").clicked() {
                state.pick_import(true);
            }
        });
        ui.separator();
        let total: u64 = state.installed.iter().map(|m| m.size).sum();
        ui.label(RichText::new(format!("Installed ({} models, {} on disk)", state.installed.len(), mb(total))).strong());
        if state.installed.is_empty() {
            ui.label("Nothing installed yet. Import a .gguf file or an MLX / Hugging Face model folder.");
        }
        let loaded_path = match &state.engine.model {
            ModelState::Ready(i) => Some(i.path.clone()),
            _ => None,
        };
        let busy = state.is_generating() || matches!(state.engine.model, ModelState::Loading { .. });
        let (ctx_len, device, mem) = (state.settings.context_length as u64, crate::sys::device(), crate::sys::total_memory());
        let kv_bits = state.settings.kv_bits;
        egui::Grid::new("installed-models").striped(true).num_columns(8).show(ui, |ui| {
            for m in state.installed.clone() {
                ui.label(RichText::new(&m.name).strong()).on_hover_text(m.path.display().to_string());
                match &m.card {
                    Some(c) => {
                        ui.label(&c.architecture);
                        let params = match c.shape {
                            Some(s) => s.params_label(),
                            None => format!("{:.0}M", c.parameters as f64 / 1e6),
                        };
                        ui.label(format!("{params} params"));
                        ui.label(&c.quantization);
                    }
                    None => {
                        match &m.problem {
                            Some(p) => ui.label("unreadable").on_hover_text(p),
                            None => ui.label("?"),
                        };
                        ui.label("");
                        ui.label("");
                    }
                }
                ui.label(mb(m.size));
                match m.card.as_ref().and_then(|c| c.shape) {
                    Some(shape) => super::hub::fit_label(ui, crate::models::load::fit::estimate_with_kv(&shape, ctx_len, device, mem, kv_bits).total()),
                    None => {
                        ui.label("");
                    }
                }
                let is_loaded = loaded_path.as_ref() == Some(&m.path);
                if is_loaded {
                    if ui.add_enabled(!busy, egui::Button::new("Unload")).clicked() {
                        state.unload_model();
                    }
                } else if ui.add_enabled(!busy, egui::Button::new("Load")).on_hover_text(format!("Load {}", m.name)).clicked() {
                    state.load_model(m.path.clone());
                }
                if ui.add_enabled(!busy, egui::Button::new("Delete…")).on_hover_text(format!("Delete {}", m.name)).clicked() {
                    self.confirm_delete = Some((m.path.clone(), m.name.clone(), m.size));
                }
                ui.end_row();
            }
        });
        ui.separator();
        super::hub::downloads(ui, state);
        super::hub::catalogue(ui, state);
        ui.separator();
        super::hub::search(ui, state);

        if let Some((path, name, size)) = self.confirm_delete.clone() {
            let modal = egui::Modal::new(egui::Id::unique("confirm-delete-model")).show(ui.ctx(), |ui| {
                ui.heading("Delete model?");
                ui.label(format!("Delete “{name}” from disk? This frees {}.", mb(size)));
                ui.horizontal(|ui| {
                    if ui.button("Delete model").clicked() {
                        state.delete_model(path.clone());
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

fn loaded_card(ui: &mut Ui, info: &ModelInfo) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.label(RichText::new(format!("Loaded: {}", info.name)).strong());
        egui::Grid::new("loaded-model").num_columns(2).show(ui, |ui| {
            let rows = [
                ("Architecture", info.architecture.clone()),
                ("Parameters", format!("{:.0} M", info.parameters as f64 / 1e6)),
                ("Quantization", info.quantization.clone()),
                ("Computing in", info.compute.clone()),
                ("Size on disk", mb(info.size_on_disk)),
                ("Weights in memory", mb(info.weight_bytes)),
                ("Max context", format!("{} tokens", info.context_length)),
                (
                    "Recommended sampling",
                    if info.recommended.is_empty() { "none (Hearth's defaults)".into() } else { info.recommended.describe() },
                ),
                ("Location", info.path.display().to_string()),
            ];
            for (k, v) in rows {
                ui.label(RichText::new(k).weak());
                ui.label(v);
                ui.end_row();
            }
        });
    });
}

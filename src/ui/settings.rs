//! Settings: system prompt and presets, sampling, context length, the draft
//! model for speculative decoding, theme, font size, storage, tokens, MCP.

use super::state::AppState;
use crate::chat::params::ReasoningEffort;
use crate::store::settings::{Settings, Theme};
use egui::{RichText, Ui};

/// What the presets row asked for, done once the settings are no longer borrowed.
enum PresetAction {
    Save(String),
    Delete(String),
    Import,
    Export,
}

#[derive(Default)]
pub struct SettingsPanel {
    /// The name typed for "Save as preset".
    preset_name: String,
    token_input: String,
    /// What is saved, masked; read from disk only when the panel opens.
    token_shown: Option<Option<String>>,
}

impl SettingsPanel {
    pub fn ui(&mut self, ui: &mut Ui, state: &mut AppState) {
        let before = state.settings.clone();
        let mut pick_models_dir = false;
        let mut clear = false;
        let mut token_change: Option<Option<String>> = None;
        let shown = self.token_shown.get_or_insert_with(|| crate::hub::token::load().map(|t| crate::hub::token::mask(&t))).clone();
        let token_input = &mut self.token_input;
        let mut save_mcp = false;
        let mut preset_action = None;
        let preset_name = &mut self.preset_name;
        let mcp = &mut state.mcp;
        let installed = &state.installed;
        let draft_loaded = state.engine.draft.as_ref().map(|d| d.name.clone());
        // The chat model's vocabulary size, read from its card: a draft
        // needs the same tokenizer, so models with another size are not
        // offered (the engine still compares the tokenizers themselves).
        let (target_vocab, target_params) = match &state.engine.model {
            super::state::ModelState::Ready(info) => (installed.iter().find(|m| m.path == info.path).and_then(|m| m.card.as_ref()?.shape).map(|s| s.vocab), info.parameters),
            _ => (None, 0),
        };
        let s = &mut state.settings;
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading("Settings");
            ui.add_space(6.0);
            ui.label(RichText::new("System prompt").strong());
            ui.add(egui::TextEdit::multiline(&mut s.system_prompt).desired_rows(3).desired_width(f32::INFINITY))
                .on_hover_text("System prompt for new chats");
            ui.horizontal_wrapped(|ui| {
                ui.label("Presets:");
                for p in s.presets.clone() {
                    let r = ui.button(&p.name).on_hover_text(format!("{}\n\nClick: use for new chats. Right-click: delete.", p.system_prompt));
                    if r.clicked() {
                        s.system_prompt = p.system_prompt.clone();
                        if let Some(sampling) = p.sampling.clone() {
                            s.sampling = sampling;
                        }
                    }
                    r.context_menu(|ui| {
                        if ui.button(format!("Delete “{}”", p.name)).clicked() {
                            preset_action = Some(PresetAction::Delete(p.name.clone()));
                            ui.close();
                        }
                    });
                }
            });
            ui.horizontal(|ui| {
                ui.add(egui::TextEdit::singleline(preset_name).hint_text("Preset name").desired_width(160.0));
                if ui.add_enabled(!preset_name.trim().is_empty(), egui::Button::new("Save as preset"))
                    .on_hover_text("The system prompt and sampling above, under this name")
                    .clicked()
                {
                    preset_action = Some(PresetAction::Save(std::mem::take(preset_name)));
                }
                if ui.button("Import presets…").clicked() {
                    preset_action = Some(PresetAction::Import);
                }
                if ui.button("Export presets…").clicked() {
                    preset_action = Some(PresetAction::Export);
                }
            });
            ui.separator();
            ui.label(RichText::new("Sampling").strong());
            egui::Grid::new("sampling").num_columns(2).show(ui, |ui| {
                ui.label("Temperature");
                ui.add(egui::Slider::new(&mut s.sampling.temperature, 0.0..=2.0).text("0 = greedy"));
                ui.end_row();
                ui.label("Top-p");
                ui.add(egui::Slider::new(&mut s.sampling.top_p, 0.05..=1.0));
                ui.end_row();
                ui.label("Top-k");
                ui.add(egui::Slider::new(&mut s.sampling.top_k, 0..=200).text("0 = off"));
                ui.end_row();
                ui.label("Min-p");
                ui.add(egui::Slider::new(&mut s.sampling.min_p, 0.0..=0.5));
                ui.end_row();
                ui.label("Repetition penalty");
                ui.add(egui::Slider::new(&mut s.sampling.repetition_penalty, 0.8..=2.0));
                ui.end_row();
                ui.label("Max tokens");
                ui.add(egui::DragValue::new(&mut s.max_tokens).range(1..=32768));
                ui.end_row();
                ui.label("Seed");
                let mut fixed = s.sampling.seed.is_some();
                ui.horizontal(|ui| {
                    ui.checkbox(&mut fixed, "Fixed seed");
                    if fixed {
                        let mut v = s.sampling.seed.unwrap_or(0);
                        ui.add(egui::DragValue::new(&mut v));
                        s.sampling.seed = Some(v);
                    } else {
                        s.sampling.seed = None;
                    }
                });
                ui.end_row();
                ui.label("Context length");
                ui.add(egui::DragValue::new(&mut s.context_length).range(256..=131072).suffix(" tokens"));
                ui.end_row();
                ui.label("KV cache").on_hover_text("Keys and values kept for the context: quantized, a long context needs about half (8-bit) or a quarter (4-bit) of the memory, at a small cost in quality (hearth eval perplexity --kv-bits measures it). The model-fit verdicts count it.");
                ui.horizontal(|ui| {
                    ui.radio_value(&mut s.kv_bits, 0, "Full precision");
                    ui.radio_value(&mut s.kv_bits, 8, "8-bit");
                    ui.radio_value(&mut s.kv_bits, 4, "4-bit");
                });
                ui.end_row();
                ui.label("Prompt cache").on_hover_text("Each conversation's computed prompt is saved on disk after a reply (only what is new), so a conversation reopened after a restart answers at once instead of reading its whole history again. Bounded (HEARTH_PROMPT_CACHE_MB, 4 GB by default); the least recently used go first.");
                ui.horizontal(|ui| {
                    ui.checkbox(&mut s.prompt_cache_on_disk, "Keep on disk");
                    if ui.button("Clear").on_hover_text("Remove every conversation's prompt cache from disk").clicked() {
                        clear = true;
                    }
                });
                ui.end_row();
                ui.label("Reasoning effort").on_hover_text("For reasoning models whose template takes it (gpt-oss): how long they think before answering.");
                ui.horizontal(|ui| {
                    for e in ReasoningEffort::ALL {
                        let label = match e {
                            ReasoningEffort::Low => "Low",
                            ReasoningEffort::Medium => "Medium",
                            ReasoningEffort::High => "High",
                        };
                        ui.radio_value(&mut s.reasoning_effort, e, label);
                    }
                });
                ui.end_row();
            });
            ui.separator();
            ui.label(RichText::new("Speculative decoding").strong());
            ui.label(RichText::new("A small model with the chat model's tokenizer guesses the next tokens; the chat model checks them in one pass, so replies are the same, only faster when the guesses are good. Without one, Hearth guesses from text the reply repeats.").weak());
            ui.horizontal(|ui| {
                ui.label("Draft model");
                // Smallest first: a draft pays only when it is much smaller.
                let vocab_fits = |m: &crate::library::installed::InstalledModel| match (target_vocab, m.card.as_ref().and_then(|c| c.shape)) {
                    (Some(v), Some(s)) => s.vocab == v,
                    _ => true,
                };
                let mut choices: Vec<&crate::library::installed::InstalledModel> = installed.iter().filter(|m| m.card.is_some() && vocab_fits(m)).collect();
                choices.sort_by_key(|m| m.card.as_ref().map_or(u64::MAX, |c| c.parameters));
                // The smallest one well under the chat model's size is the one to try.
                let suggested = choices.first().filter(|m| m.card.as_ref().is_some_and(|c| c.parameters * 4 <= target_params)).map(|m| m.path.clone());
                let name = |p: &std::path::Path| choices.iter().find(|m| m.path == p).map_or_else(|| p.display().to_string(), |m| m.name.clone());
                let shown = s.draft_model.as_deref().map_or("None".to_string(), name);
                egui::ComboBox::from_id_salt("draft_model").selected_text(shown).show_ui(ui, |ui| {
                    ui.selectable_value(&mut s.draft_model, None, "None");
                    for m in &choices {
                        let params = m.card.as_ref().map_or(0, |c| c.parameters) as f64 / 1e6;
                        let tag = if suggested.as_ref() == Some(&m.path) { ", suggested" } else { "" };
                        ui.selectable_value(&mut s.draft_model, Some(m.path.clone()), format!("{} ({params:.0}M params{tag})", m.name));
                    }
                });
                match draft_loaded {
                    Some(d) => ui.label(RichText::new(format!("drafting with {d}")).weak()),
                    None => ui.label(RichText::new("not drafting").weak()),
                };
            });
            ui.separator();
            ui.label(RichText::new("Appearance").strong());
            ui.horizontal(|ui| {
                ui.label("Theme");
                ui.radio_value(&mut s.theme, Theme::System, "Follow system");
                ui.radio_value(&mut s.theme, Theme::Light, "Light");
                ui.radio_value(&mut s.theme, Theme::Dark, "Dark");
            });
            ui.horizontal(|ui| {
                ui.label("Font size");
                ui.add(egui::Slider::new(&mut s.font_size, 10.0..=24.0));
            });
            ui.checkbox(&mut s.show_frame_time, "Show frame time (debug overlay)");
            ui.separator();
            ui.label(RichText::new("Storage").strong());
            ui.horizontal(|ui| {
                ui.label(format!("Models directory: {}", s.models_dir().display()));
                if ui.button("Change…").clicked() {
                    pick_models_dir = true;
                }
            });
            ui.separator();
            ui.label(RichText::new("Hugging Face").strong());
            ui.label(format!("Downloads go to the shared Hugging Face cache: {}", state.downloads.hub.cache_dir.display()));
            ui.horizontal(|ui| {
                ui.label("Access token (for gated models):");
                ui.label(shown.as_deref().unwrap_or("none"));
            });
            ui.horizontal(|ui| {
                ui.add(egui::TextEdit::singleline(token_input).password(true).hint_text("hf_…").desired_width(240.0));
                if ui.add_enabled(!token_input.trim().is_empty(), egui::Button::new("Save token")).clicked() {
                    token_change = Some(Some(std::mem::take(token_input)));
                }
                if shown.is_some() && ui.button("Remove token").clicked() {
                    token_change = Some(None);
                }
            });
            ui.label(RichText::new("Stored in a file only you can read; sent only to Hugging Face with downloads you start.").weak());
            ui.separator();
            ui.label(RichText::new("MCP servers").strong());
            ui.label("Tools the chat's model may use, configured as in Claude Desktop or LM Studio: {\"mcpServers\": {\"name\": {\"command\": …, \"args\": […], \"env\": {…}}}} or {\"url\": …}. Every call asks you first.");
            ui.add(egui::TextEdit::multiline(&mut mcp.config_text).code_editor().desired_rows(5).desired_width(f32::INFINITY))
                .on_hover_text("MCP configuration");
            if ui.button("Save and connect").clicked() {
                save_mcp = true;
            }
            for (name, status) in &mcp.servers {
                match status {
                    Ok(n) => ui.label(format!("{name}: connected, {n} tool(s)")),
                    Err(e) => ui.label(format!("{name}: {e}")),
                };
            }
            ui.separator();
            if ui.button("Reset to defaults").clicked() {
                let keep = (s.models_dir.clone(), s.last_model.clone());
                *s = Settings::default();
                (s.models_dir, s.last_model) = keep;
            }
        });
        if pick_models_dir {
            state.pick_models_dir();
        }
        if clear {
            let root = state.data_dir.join(crate::engine::prompt_file::STORE_FOLDER);
            state.jobs.spawn(move || super::state::Background::PromptCachesCleared(crate::engine::prompt_file::clear_store(&root)));
        }
        if save_mcp {
            state.save_mcp_config();
        }
        match preset_action {
            Some(PresetAction::Save(name)) => state.save_preset(&name),
            Some(PresetAction::Delete(name)) => state.delete_preset(&name),
            Some(PresetAction::Import) => state.import_presets(),
            Some(PresetAction::Export) => state.export_presets(),
            None => {}
        }
        if let Some(t) = token_change {
            state.set_token(t);
            self.token_shown = None;
        }
        if state.settings != before {
            if state.settings.context_length != before.context_length {
                state.engine.handle.send(crate::engine::Command::SetContextLength(state.settings.context_length));
            }
            if state.settings.reasoning_effort != before.reasoning_effort {
                state.send_template_options();
            }
            if state.settings.draft_model != before.draft_model {
                state.send_draft();
            }
            if state.settings.kv_bits != before.kv_bits {
                state.engine.handle.send(crate::engine::Command::SetKvBits(state.settings.kv_bits));
            }
            state.save_settings();
        }
    }
}

//! The chat header: which model the current conversation runs on, and its
//! preset. Picking another model (each with its memory-fit verdict) loads it
//! and makes it this conversation's; a conversation whose replies came from a
//! model other than the loaded one says so and offers to load it (never on its
//! own: browsing chats loads nothing). Picking a preset gives this chat its
//! system prompt and sampling.

use super::state::AppState;
use crate::models::load::fit;
use egui::{RichText, Ui};

pub fn ui(ui: &mut Ui, state: &mut AppState) {
    let loaded = state.engine.model.held_path().map(|p| p.to_path_buf());
    let name_of = |p: &std::path::Path| state.installed.iter().find(|m| m.path == p).map(|m| m.name.clone()).unwrap_or_else(|| p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
    let shown = loaded.as_deref().map(name_of).unwrap_or_else(|| "No model loaded".into());
    let (ctx_len, device, mem, kv_bits) = (state.settings.context_length as u64, crate::sys::device(), crate::sys::total_memory(), state.settings.kv_bits);
    let mut picked = None;
    ui.horizontal(|ui| {
        ui.label(RichText::new("Model").small().weak());
        egui::ComboBox::from_id_salt("chat-model")
            .selected_text(shown)
            .width(280.0)
            .show_ui(ui, |ui| {
                for m in &state.installed {
                    let need = m.card.as_ref().and_then(|c| c.shape).map(|s| fit::estimate_with_kv(&s, ctx_len, device, mem, kv_bits).total());
                    let verdict = need.map(|n| fit::verdict(n, mem).label()).unwrap_or("size unknown");
                    let enabled = m.problem.is_none();
                    let r = ui.add_enabled(enabled, egui::Button::selectable(loaded.as_ref() == Some(&m.path), format!("{} · {verdict}", m.name)));
                    let r = match (&m.problem, need) {
                        (Some(p), _) => r.on_disabled_hover_text(p),
                        (None, Some(n)) => r.on_hover_text(super::hub::fit_hover(n, mem)),
                        (None, None) => r,
                    };
                    if r.clicked() {
                        picked = Some(m.path.clone());
                    }
                }
            })
            .response
            .on_hover_text("The model this chat runs on");
        // The conversation's own model, where another is loaded.
        let own = state.current_conversation().and_then(|c| c.model.clone()).filter(|p| loaded.as_ref() != Some(p) && p.exists());
        if let Some(p) = own {
            let name = name_of(&p);
            ui.label(RichText::new(format!("This chat's replies came from {name}.")).small().weak());
            if ui.small_button(format!("Load {name}")).clicked() {
                picked = Some(p);
            }
        }
    });
    if let Some(p) = picked {
        state.use_model_for_chat(p);
    }
    preset(ui, state);
}

/// The current chat's preset and, folded, its system prompt.
fn preset(ui: &mut Ui, state: &mut AppState) {
    let current = state.current_conversation().map(|c| (c.preset.clone(), c.system_prompt.clone()));
    let mut chosen = None;
    ui.horizontal(|ui| {
        ui.label(RichText::new("Preset").small().weak());
        let shown = current.as_ref().and_then(|(p, _)| p.clone()).unwrap_or_else(|| "Default".into());
        egui::ComboBox::from_id_salt("chat-preset")
            .selected_text(shown)
            .width(180.0)
            .show_ui(ui, |ui| {
                for p in &state.settings.presets {
                    let picked = current.as_ref().is_some_and(|(name, _)| name.as_deref() == Some(p.name.as_str()));
                    let hover = match &p.sampling {
                        Some(s) => format!("{}\n\nTemperature {}, top-p {}, top-k {}", p.system_prompt, s.temperature, s.top_p, s.top_k),
                        None => p.system_prompt.clone(),
                    };
                    if ui.add(egui::Button::selectable(picked, &p.name)).on_hover_text(hover).clicked() {
                        chosen = Some(p.name.clone());
                    }
                }
            })
            .response
            .on_hover_text("This chat's system prompt and sampling");
    });
    if let Some((_, prompt)) = current {
        let mut edited = prompt.clone();
        egui::CollapsingHeader::new(RichText::new("System prompt for this chat").small()).id_salt("chat-system-prompt").show(ui, |ui| {
            ui.add(egui::TextEdit::multiline(&mut edited).desired_rows(2).desired_width(f32::INFINITY));
        });
        if edited != prompt {
            state.set_chat_system_prompt(edited);
        }
    }
    if let Some(name) = chosen {
        state.apply_preset_to_chat(&name);
    }
}

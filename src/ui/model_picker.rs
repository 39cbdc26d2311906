//! The chat header: which model the current conversation runs on. Picking
//! another (each with its memory-fit verdict) loads it and makes it this
//! conversation's; a conversation whose replies came from a model other than
//! the loaded one says so and offers to load it (never on its own: browsing
//! chats loads nothing).

use super::state::{AppState, ModelState};
use crate::models::load::fit;
use egui::{RichText, Ui};

pub fn ui(ui: &mut Ui, state: &mut AppState) {
    let loaded = match &state.engine.model {
        ModelState::Ready(info) => Some(info.path.clone()),
        ModelState::Loading { path, .. } => Some(path.clone()),
        _ => None,
    };
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
                        (None, Some(n)) => r.on_hover_text(format!("Needs about {:.1} GB of this machine's {:.1} GB", n as f64 / 1e9, mem as f64 / 1e9)),
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
}

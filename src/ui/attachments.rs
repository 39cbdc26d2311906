//! Attachment chips: above the input for the question being written (with
//! Attach… and a remove button each), and under a sent question (read-only).
//! Each names its file and the engine's count of its tokens.

use super::state::AppState;
use crate::store::conversations::Attachment;
use crate::units::count;
use egui::{RichText, Ui};

/// The chip's words: "notes.txt · 1,234 tokens" (or "counting…").
pub fn chip_text(a: &Attachment) -> String {
    match a.tokens {
        Some(n) => format!("{} · {} tokens", a.name, count(n)),
        None => format!("{} · counting…", a.name),
    }
}

/// The draft's chips and the Attach… button.
pub fn draft(ui: &mut Ui, state: &mut AppState) {
    let mut remove = None;
    ui.horizontal_wrapped(|ui| {
        if ui.small_button("Attach…").on_hover_text("Attach text or code files (or drop them on the window)").clicked() {
            state.pick_attachments();
        }
        for a in &state.chat.attachments.list {
            chip(ui, a);
            let name = format!("Remove {}", a.name);
            let r = ui.small_button("×").on_hover_text(&name);
            r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, true, &name));
            if r.clicked() {
                remove = Some(a.name.clone());
            }
        }
    });
    if let Some(n) = remove {
        state.remove_attachment(&n);
    }
}

/// A sent question's chips.
pub fn sent(ui: &mut Ui, list: &[Attachment]) {
    ui.horizontal_wrapped(|ui| {
        for a in list {
            chip(ui, a);
        }
    });
}

fn chip(ui: &mut Ui, a: &Attachment) {
    let preview: String = a.text.chars().take(400).collect();
    egui::Frame::new()
        .fill(ui.visuals().faint_bg_color)
        .stroke(ui.visuals().widgets.noninteractive.bg_stroke)
        .corner_radius(6.0)
        .inner_margin(egui::Margin::symmetric(6, 2))
        .show(ui, |ui| ui.label(RichText::new(chip_text(a)).small()))
        .response
        .on_hover_text(preview);
}

//! The context meter under the input box: the engine's count of the prompt a
//! reply sent now would get (the conversation, the draft, the template)
//! against the context, amber near the limit, and what the overflow policy
//! (the oldest messages left out) would drop past it.

use super::state::AppState;
use crate::units::count;
use egui::{Color32, RichText, Ui};

/// Past this share of the room for the prompt, the meter turns amber.
const NEAR: f32 = 0.85;

pub fn ui(ui: &mut Ui, state: &AppState) {
    let meter = &state.chat.meter;
    if let Some(e) = &meter.error {
        ui.label(RichText::new(format!("Context: could not count the prompt ({e})")).small().color(ui.visuals().error_fg_color));
        return;
    }
    let Some(fit) = meter.fit else { return };
    let share = fit.tokens as f32 / fit.budget.max(1) as f32;
    let over = !fit.fits || fit.dropped_messages > 0;
    let color = if over {
        ui.visuals().error_fg_color
    } else if share >= NEAR {
        ui.visuals().warn_fg_color
    } else {
        ui.visuals().weak_text_color()
    };
    let reserved = fit.context_length - fit.budget;
    ui.horizontal(|ui| {
        ui.add(egui::ProgressBar::new(share.min(1.0)).desired_width(120.0).desired_height(6.0).fill(bar(color)))
            .on_hover_text(format!("{:.0} % of the room for the prompt", share * 100.0));
        ui.label(RichText::new(format!("{} / {} tokens", count(fit.tokens), count(fit.context_length))).small().color(color))
            .on_hover_text(format!(
                "The conversation, the message being written and the chat template, counted by the model's tokenizer. \
                 {} tokens are kept for the answer, so the prompt has {}.",
                count(reserved),
                count(fit.budget)
            ));
        let says = if !fit.fits {
            "Too long for the context even with the older messages left out: shorten the message or raise the context length in Settings.".to_string()
        } else if fit.dropped_messages > 0 {
            format!("Over the limit: the oldest {} message(s) will be left out of the prompt.", fit.dropped_messages)
        } else if share >= NEAR {
            format!("Near the limit: past {} tokens the oldest messages are left out.", count(fit.budget))
        } else {
            String::new()
        };
        if !says.is_empty() {
            ui.label(RichText::new(says).small().color(color));
        }
    });
}

/// The bar in the label's colour (the weak text colour is too faint for a fill).
fn bar(c: Color32) -> Color32 {
    if c.a() < 255 { c.to_opaque() } else { c }
}

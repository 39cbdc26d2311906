//! Status bar: the loaded model and live speed, latency, context and memory.

use super::state::{AppState, ModelState};
use egui::{RichText, Ui};

pub fn ui(ui: &mut Ui, state: &AppState) {
    ui.horizontal(|ui| {
        match &state.engine.model {
            ModelState::Ready(info) => ui.label(RichText::new(&info.name).strong()),
            ModelState::Loading { message, .. } => ui.label(format!("Loading… {message}")),
            ModelState::Failed(_) => ui.colored_label(ui.visuals().error_fg_color, "Model failed to load"),
            ModelState::None => ui.label("No model"),
        };
        ui.separator();
        let live = &state.engine.live;
        if state.is_generating() {
            ui.label("Generating");
        }
        ui.label(format!("{:.1} tok/s", live.tok_per_s)).on_hover_text("Decode speed");
        ui.separator();
        match live.ttft_s {
            Some(t) => ui.label(format!("TTFT {:.2} s", t)),
            None => ui.label("TTFT –"),
        }
        .on_hover_text("Time to first token");
        ui.separator();
        ui.label(format!("{} / {} ctx", live.prompt_tokens + live.generated, state.settings.context_length))
            .on_hover_text("Tokens in the last request / context length");
        ui.separator();
        let m = &live.memory;
        ui.label(format!(
            "RAM {:.0} MB · MLX {:.0} MB (peak {:.0} MB)",
            m.process_rss as f64 / 1e6,
            m.mlx_active as f64 / 1e6,
            m.mlx_peak as f64 / 1e6
        ))
        .on_hover_text("Process memory · MLX active (peak)");
    });
}

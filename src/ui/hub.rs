//! The model manager's hub half: downloads in progress, the curated
//! catalogue with a memory-fit verdict per model, and Hugging Face search.

use super::state::{AppState, DownloadStatus};
use crate::hub::catalogue::CATALOGUE;
use crate::models::load::fit::{self, Verdict};
use crate::sys;
use crate::units::bytes as gb;
use egui::{Color32, RichText, Ui};

fn verdict_text(ui: &Ui, v: Verdict) -> RichText {
    let c = match v {
        Verdict::Fits => Color32::from_rgb(60, 160, 80),
        Verdict::Tight => Color32::from_rgb(200, 150, 30),
        Verdict::WontFit => ui.visuals().error_fg_color,
    };
    RichText::new(v.label()).color(c)
}

fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h {:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// A fit label from the memory estimate at the configured context.
pub fn fit_label(ui: &mut Ui, need: u64) {
    let mem = sys::total_memory();
    let v = fit::verdict(need, mem);
    ui.label(verdict_text(ui, v)).on_hover_text(fit_hover(need, mem));
}

/// What a fit verdict rests on, for its hover text.
pub fn fit_hover(need: u64, mem: u64) -> String {
    format!("Needs about {} of this machine's {} (weights + KV cache + working memory)", gb(need), gb(mem))
}

pub fn downloads(ui: &mut Ui, state: &mut AppState) {
    if state.downloads.list.is_empty() {
        return;
    }
    ui.label(RichText::new("Downloads").strong());
    for d in state.downloads.list.clone() {
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.label(RichText::new(&d.id).strong());
                if let Some((need, v)) = d.fit {
                    ui.label("·");
                    ui.label(verdict_text(ui, v)).on_hover_text(format!("Needs about {}", gb(need)));
                }
            });
            match &d.status {
                DownloadStatus::Starting => {
                    ui.horizontal(|ui| {
                        ui.spinner();
                        ui.label("Asking Hugging Face for the file list…");
                    });
                }
                DownloadStatus::Running(p) => {
                    let frac = if p.total > 0 { p.done as f32 / p.total as f32 } else { 0.0 };
                    ui.add(egui::ProgressBar::new(frac).show_percentage());
                    let detail = match &p.phase {
                        crate::hub::Phase::Downloading => format!(
                            "{} — {} of {} · {}/s{}",
                            p.file,
                            gb(p.done),
                            gb(p.total),
                            gb(p.bytes_per_sec as u64),
                            p.eta().map(|e| format!(" · {} left", duration(e))).unwrap_or_default()
                        ),
                        crate::hub::Phase::Retrying { attempt, wait, reason } => {
                            format!("{reason} — retrying (attempt {attempt}) in {}", duration(*wait))
                        }
                        crate::hub::Phase::Verifying => format!("{} — checking the checksum", p.file),
                    };
                    ui.label(detail);
                    ui.horizontal(|ui| {
                        if ui.button("Pause").on_hover_text(format!("Pause {}", d.id)).clicked() {
                            state.pause_download(&d.id);
                        }
                        if ui.button("Cancel").on_hover_text(format!("Cancel {}", d.id)).clicked() {
                            state.cancel_download(&d.id);
                        }
                    });
                }
                DownloadStatus::Paused { done, total } => {
                    let frac = if *total > 0 { *done as f32 / *total as f32 } else { 0.0 };
                    ui.add(egui::ProgressBar::new(frac).show_percentage());
                    ui.label(format!("Paused — {} of {} on disk", gb(*done), gb(*total)));
                    ui.horizontal(|ui| {
                        if ui.button("Resume").on_hover_text(format!("Resume {}", d.id)).clicked() {
                            state.resume_download(&d.id);
                        }
                        if ui.button("Cancel").on_hover_text(format!("Cancel {}", d.id)).clicked() {
                            state.cancel_download(&d.id);
                        }
                    });
                }
                DownloadStatus::NeedsConfirm { need, memory } => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("This model needs about {} but the machine has {}: it won't fit.", gb(*need), gb(*memory)),
                    );
                    ui.horizontal(|ui| {
                        if ui.button("Download anyway").clicked() {
                            state.start_download(&d.id, true);
                        }
                        if ui.button("Cancel").clicked() {
                            state.cancel_download(&d.id);
                        }
                    });
                }
                DownloadStatus::Failed(e) => {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                    ui.horizontal(|ui| {
                        if ui.button("Retry").on_hover_text(format!("Retry {}", d.id)).clicked() {
                            state.resume_download(&d.id);
                        }
                        if ui.button("Remove").clicked() {
                            state.cancel_download(&d.id);
                        }
                    });
                }
            }
        });
    }
    ui.add_space(6.0);
}

fn busy(state: &AppState, id: &str) -> bool {
    state.downloads.list.iter().any(|d| d.id == id)
}

fn installed(state: &AppState, id: &str) -> bool {
    state.installed.iter().any(|m| m.name == id)
}

pub fn catalogue(ui: &mut Ui, state: &mut AppState) {
    ui.label(RichText::new("Catalogue").strong());
    if let Some(why) = &state.downloads.offline {
        ui.colored_label(ui.visuals().warn_fg_color, format!("Downloads unavailable: {why}"));
    }
    let ctx_len = state.settings.context_length as u64;
    let (device, mem) = (sys::device(), sys::total_memory());
    ui.label(
        RichText::new(format!(
            "Memory estimates at {ctx_len} tokens of context on this machine ({} total, {}).",
            gb(mem),
            if device == sys::Device::Gpu { "GPU" } else { "CPU, f32" }
        ))
        .weak(),
    );
    egui::Grid::new("catalogue").striped(true).num_columns(6).show(ui, |ui| {
        for e in CATALOGUE {
            let name = e.id.split('/').nth(1).unwrap_or(e.id);
            ui.label(RichText::new(name).strong()).on_hover_text(format!("{} — {}", e.id, e.blurb));
            ui.label(format!("{} params", e.shape.params_label()));
            ui.label(format!("{} download", gb(e.download_bytes())));
            let need = fit::estimate_with_kv(&e.shape, ctx_len, device, mem, state.settings.kv_bits).total();
            fit_label(ui, need);
            ui.label(RichText::new(e.blurb).weak());
            if installed(state, e.id) {
                ui.label("installed");
            } else if !e.supported() {
                ui.add_enabled(false, egui::Button::new("Download"))
                    .on_disabled_hover_text(format!("Hearth cannot run {} models yet", e.model_type));
            } else if ui
                .add_enabled(!busy(state, e.id) && state.downloads.offline.is_none(), egui::Button::new("Download"))
                .on_hover_text(format!("Download {}", e.id))
                .clicked()
            {
                state.start_download(e.id, false);
            }
            ui.end_row();
        }
    });
}

pub fn search(ui: &mut Ui, state: &mut AppState) {
    ui.label(RichText::new("Search Hugging Face").strong());
    let mut go = false;
    ui.horizontal(|ui| {
        let r = ui.add(
            egui::TextEdit::singleline(&mut state.downloads.search.query)
                .hint_text("model name, e.g. qwen3")
                .desired_width(260.0),
        );
        go |= r.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
        ui.selectable_value(&mut state.downloads.search.gguf, false, "MLX");
        ui.selectable_value(&mut state.downloads.search.gguf, true, "GGUF");
        go |= ui.add_enabled(!state.downloads.search.pending, egui::Button::new("Search")).clicked();
        if state.downloads.search.pending {
            ui.spinner();
        }
    });
    if go {
        state.search_hub();
    }
    match state.downloads.search.results.clone() {
        None => {}
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        Some(Ok(hits)) if hits.is_empty() => {
            ui.label("No models found.");
        }
        Some(Ok(hits)) => {
            egui::Grid::new("search-results").striped(true).num_columns(4).show(ui, |ui| {
                for h in hits {
                    ui.label(RichText::new(&h.id).strong());
                    ui.label(format!("{} downloads · {} likes", h.downloads, h.likes));
                    ui.label(if h.gated { "needs a token" } else { "" });
                    if installed(state, &h.id) {
                        ui.label("installed");
                    } else if ui
                        .add_enabled(!busy(state, &h.id), egui::Button::new("Download"))
                        .on_hover_text(format!("Download {}", h.id))
                        .clicked()
                    {
                        state.start_download(&h.id, false);
                    }
                    ui.end_row();
                }
            });
        }
    }
}

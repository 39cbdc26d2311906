//! Presets (a system prompt and, optionally, sampling): applied to one chat,
//! saved from the settings, deleted, and moved between machines as a JSON
//! file (exported whole; an import adds its presets, replacing same names).

use super::{AppState, Background};
use crate::store::settings::{parse_presets, presets_to_json, Preset};

/// The largest presets file read (a file of 500 long presets fits well below).
const MAX_FILE: u64 = 16 << 20;

impl AppState {
    /// Applies preset `name` to the current conversation: its system prompt,
    /// and its sampling where it has one (kept with the chat).
    pub fn apply_preset_to_chat(&mut self, name: &str) {
        let Some(p) = self.settings.presets.iter().find(|p| p.name == name).cloned() else { return };
        if self.current_conversation().is_none() {
            self.new_conversation();
        }
        let Some(id) = self.chat.current.clone() else { return };
        if let Some(c) = self.chat.conversation_mut(&id) {
            c.system_prompt = p.system_prompt;
            if p.sampling.is_some() {
                c.sampling = p.sampling;
            }
            c.preset = Some(p.name);
        }
        self.persist(&id);
    }

    /// The settings' system prompt and sampling saved as preset `name`
    /// (replacing one of that name).
    pub fn save_preset(&mut self, name: &str) {
        let p = Preset { name: name.trim().to_string(), system_prompt: self.settings.system_prompt.clone(), sampling: Some(self.settings.sampling.clone()) };
        if let Err(e) = p.validate() {
            self.error(format!("Preset not saved: {e}"));
            return;
        }
        self.settings.save_preset(p);
        self.save_settings();
    }

    pub fn delete_preset(&mut self, name: &str) {
        self.settings.presets.retain(|p| p.name != name);
        self.save_settings();
    }

    /// Asks for a file (off the UI thread) and writes every preset to it.
    pub fn export_presets(&mut self) {
        let bytes = presets_to_json(&self.settings.presets);
        let fut = rfd::AsyncFileDialog::new().set_file_name("hearth-presets.json").save_file();
        self.jobs.spawn(move || {
            let Some(h) = pollster::block_on(fut) else { return Background::Exported(None) };
            let path = h.path().to_path_buf();
            Background::Exported(Some(crate::store::write_atomic(&path, &bytes).map(|_| path).map_err(|e| e.to_string())))
        });
    }

    /// Asks for a presets file (off the UI thread) and reads it.
    pub fn import_presets(&mut self) {
        let fut = rfd::AsyncFileDialog::new().add_filter("Presets", &["json"]).pick_file();
        self.jobs.spawn(move || {
            let Some(h) = pollster::block_on(fut) else { return Background::PresetsRead(None) };
            Background::PresetsRead(Some(read_presets(h.path())))
        });
    }

    /// An import's presets (or why the file was refused): added, same names replaced.
    pub fn on_presets_read(&mut self, read: Result<Vec<Preset>, String>) {
        match read {
            Ok(list) => {
                let n = list.len();
                for p in list {
                    self.settings.save_preset(p);
                }
                self.save_settings();
                self.info(format!("Imported {n} preset(s)."));
            }
            Err(e) => self.error(format!("Presets not imported: {e}")),
        }
    }
}

/// A presets file, read within its bound and checked.
pub fn read_presets(path: &std::path::Path) -> Result<Vec<Preset>, String> {
    let bytes = crate::files::read_small(path, MAX_FILE).map_err(|e| e.to_string())?.ok_or_else(|| format!("{} does not exist", path.display()))?;
    parse_presets(&bytes).map_err(|e| e.to_string())
}

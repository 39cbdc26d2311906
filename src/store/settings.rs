//! User settings, saved as JSON. A bad settings file falls back to defaults with
//! a visible notice, and is kept aside (settings.json.bad-<time>), never overwritten.

use crate::chat::params::{ReasoningEffort, SamplingParams, DEFAULT_MAX_TOKENS};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Theme {
    #[default]
    System,
    Light,
    Dark,
}

/// A named system prompt and, optionally, sampling: applied to the settings
/// (for new chats) or to one conversation (its header's Preset menu).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    pub system_prompt: String,
    /// None: the preset leaves sampling as it is (presets saved before they had it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingParams>,
}

/// The most presets a file may bring in, and the longest name and prompt.
const MAX_PRESETS: usize = 500;
const MAX_PRESET_NAME: usize = 80;
const MAX_PRESET_PROMPT: usize = 200_000;

impl Preset {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if self.name.trim().is_empty() || self.name.chars().count() > MAX_PRESET_NAME {
            return bad(format!("a preset's name must be 1 to {MAX_PRESET_NAME} characters"));
        }
        if self.system_prompt.len() > MAX_PRESET_PROMPT {
            return bad(format!("preset {:?}: the system prompt is longer than {MAX_PRESET_PROMPT} bytes", self.name));
        }
        match &self.sampling {
            Some(s) => s.validate().map_err(|e| crate::Error::InvalidArgument(format!("preset {:?}: {e}", self.name))),
            None => Ok(()),
        }
    }
}

/// Presets read from an exported file (`presets_to_json`'s shape: a JSON
/// array, or an object with a `presets` array), every one checked; a
/// name given twice keeps the last.
pub fn parse_presets(bytes: &[u8]) -> crate::Result<Vec<Preset>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<Preset>),
        Wrapped { presets: Vec<Preset> },
    }
    let list = match serde_json::from_slice::<File>(bytes) {
        Ok(File::List(l)) | Ok(File::Wrapped { presets: l }) => l,
        Err(e) => return Err(crate::Error::InvalidArgument(format!("not a presets file: {e}"))),
    };
    if list.len() > MAX_PRESETS {
        return Err(crate::Error::InvalidArgument(format!("{} presets is more than the {MAX_PRESETS} a file may hold", list.len())));
    }
    let mut out: Vec<Preset> = Vec::new();
    for p in list {
        p.validate()?;
        out.retain(|q| q.name != p.name);
        out.push(p);
    }
    Ok(out)
}

/// The presets as a file `parse_presets` reads back.
pub fn presets_to_json(presets: &[Preset]) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({ "presets": presets })).expect("presets serialize")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub system_prompt: String,
    pub presets: Vec<Preset>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub context_length: usize,
    /// For models whose template takes it (gpt-oss).
    pub reasoning_effort: ReasoningEffort,
    pub theme: Theme,
    pub font_size: f32,
    pub models_dir: Option<PathBuf>,
    pub last_model: Option<PathBuf>,
    pub show_frame_time: bool,
    /// A small model with the chat model's tokenizer that drafts tokens for
    /// speculative decoding; None: prompt lookup only.
    pub draft_model: Option<PathBuf>,
    /// Bits per key and value in the KV cache: 8 or 4 (quantized), 0 for
    /// the model's dtype (`EngineConfig::kv_bits`).
    pub kv_bits: u8,
    /// Each conversation's prompt cache saved on disk after a reply, so the
    /// conversation reopened after a restart answers without computing its
    /// history again (`paths::prompt_cache_dir`).
    pub prompt_cache_on_disk: bool,
    /// The local API server the app runs beside the chat.
    pub server: ServerSettings,
}

/// The app's local server: off unless the user turns it on; other machines
/// reach it only when `lan` is on, and then only with the API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub enabled: bool,
    pub port: u16,
    pub lan: bool,
    /// Megabytes the models the server holds at once may take (0: no bound).
    pub memory_budget_mb: u64,
    /// Minutes a model other than the chat's stays loaded without requests (0: for good).
    pub idle_unload_min: u64,
    /// Names clients send and the installed models they mean.
    pub aliases: Vec<(String, String)>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { enabled: false, port: 8768, lan: false, memory_budget_mb: 0, idle_unload_min: 0, aliases: Vec::new() }
    }
}

/// Aliases as the server panel edits them: one `name = model` a line.
pub fn parse_aliases(text: &str) -> Result<Vec<(String, String)>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once('=') {
            Some((a, m)) if !a.trim().is_empty() && !m.trim().is_empty() => Ok((a.trim().to_string(), m.trim().to_string())),
            _ => Err(format!("'{l}' is not name = model")),
        })
        .collect()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            system_prompt: "You are a helpful assistant.".into(),
            presets: vec![
                Preset { name: "Helpful assistant".into(), system_prompt: "You are a helpful assistant.".into(), sampling: None },
                Preset { name: "Concise".into(), system_prompt: "Answer briefly and precisely.".into(), sampling: None },
                Preset {
                    name: "Coder".into(),
                    system_prompt: "You are an expert programmer. Answer with working code in fenced blocks.".into(),
                    sampling: None,
                },
            ],
            sampling: SamplingParams::default(),
            max_tokens: DEFAULT_MAX_TOKENS,
            context_length: 4096,
            reasoning_effort: ReasoningEffort::Medium,
            theme: Theme::System,
            font_size: 14.0,
            models_dir: None,
            last_model: None,
            show_frame_time: false,
            draft_model: None,
            kv_bits: 0,
            prompt_cache_on_disk: true,
            server: ServerSettings::default(),
        }
    }
}

impl Settings {
    /// Loads settings; returns a notice when the file was unusable.
    pub fn load(path: &Path) -> (Settings, Option<String>) {
        if let Some(dir) = path.parent() {
            super::remove_stale_temporaries(dir);
        }
        // A link is not followed (it could point at /dev/zero); a settings file
        // is a few kB, so anything over 1 MB is not one.
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
            return (Settings::default(), Some("The settings file is not a regular file; using defaults.".into()));
        }
        let bytes = match crate::files::read_small(path, 1 << 20) {
            Ok(Some(b)) => b,
            Ok(None) => return (Settings::default(), None),
            Err(e) => return (Settings::default(), Some(format!("Could not read settings ({e}); using defaults."))),
        };
        match serde_json::from_slice::<Settings>(&bytes) {
            Ok(s) => match s.validate() {
                Ok(()) => (s, None),
                Err(e) => (Settings::default(), Some(Self::set_aside(path, &e.to_string()))),
            },
            Err(e) => (Settings::default(), Some(Self::set_aside(path, &e.to_string()))),
        }
    }

    fn set_aside(path: &Path, why: &str) -> String {
        let aside = path.with_extension(format!("json.bad-{}", super::conversations::now_secs()));
        match std::fs::rename(path, &aside) {
            Ok(()) => format!(
                "Settings file was invalid ({why}); using defaults. The old file was kept as {}.",
                aside.display()
            ),
            Err(e) => format!("Settings file was invalid ({why}) and could not be moved aside ({e}); using defaults."),
        }
    }

    /// Every number in range: a hand-edited file cannot ask for absurd values.
    pub fn validate(&self) -> crate::Result<()> {
        self.sampling.validate()?;
        self.presets.iter().try_for_each(Preset::validate)?;
        let bad = |m: &str| Err(crate::Error::InvalidArgument(m.to_string()));
        if !(1..=1 << 20).contains(&self.max_tokens) {
            return bad("max_tokens must be between 1 and 1048576");
        }
        if !(16..=1 << 24).contains(&self.context_length) {
            return bad("context_length must be between 16 and 16777216");
        }
        if !(6.0..=64.0).contains(&self.font_size) {
            return bad("font_size must be between 6 and 64");
        }
        // The widths the engine offers (`models::cache::KV_BITS`; the store sits below it).
        if ![0, 8, 4].contains(&self.kv_bits) {
            return bad("kv_bits must be 0, 8 or 4");
        }
        Ok(())
    }

    /// Adds `p`, replacing a preset of the same name.
    pub fn save_preset(&mut self, p: Preset) {
        match self.presets.iter_mut().find(|q| q.name == p.name) {
            Some(q) => *q = p,
            None => self.presets.push(p),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("settings serialize")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(crate::paths::models_dir)
    }
}

/// The models folder the app uses (chosen in its settings, else the default),
/// for the CLI. Reads settings.json without touching it: a bad file is the
/// app's to set aside.
pub fn models_dir_in_use(data_dir: &Path) -> PathBuf {
    crate::files::read_small(&data_dir.join("settings.json"), 1 << 20)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Settings>(&b).ok())
        .and_then(|s| s.models_dir)
        .unwrap_or_else(|| data_dir.join("models"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_their_file_and_bad_ones_are_refused_by_name() {
        let mut s = Settings::default();
        let mut sampling = SamplingParams::greedy();
        sampling.top_k = 7;
        s.save_preset(Preset { name: "Exact".into(), system_prompt: "Be exact.".into(), sampling: Some(sampling.clone()) });
        s.save_preset(Preset { name: "Exact".into(), system_prompt: "Be very exact.".into(), sampling: Some(sampling) });
        assert_eq!(s.presets.iter().filter(|p| p.name == "Exact").count(), 1, "saving a name again replaces it");
        let back = parse_presets(&presets_to_json(&s.presets)).unwrap();
        assert_eq!(back, s.presets);
        // A plain array reads too; presets from before sampling have none.
        let old = br#"[{"name": "Old", "system_prompt": "Hi."}]"#;
        assert_eq!(parse_presets(old).unwrap()[0].sampling, None);
        for (bad, says) in [
            (&br#"{"nope": 1}"#[..], "not a presets file"),
            (br#"[{"name": "", "system_prompt": "x"}]"#, "name must be"),
            (br#"[{"name": "Hot", "system_prompt": "x", "sampling": {"temperature": -3.0}}]"#, "Hot"),
        ] {
            let e = parse_presets(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let many = serde_json::to_vec(&vec![serde_json::json!({"name": "n", "system_prompt": ""}); 501]).unwrap();
        assert!(parse_presets(&many).unwrap_err().to_string().contains("more than the 500"));
    }
}

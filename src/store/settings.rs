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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub name: String,
    pub system_prompt: String,
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
                Preset { name: "Helpful assistant".into(), system_prompt: "You are a helpful assistant.".into() },
                Preset { name: "Concise".into(), system_prompt: "Answer briefly and precisely.".into() },
                Preset {
                    name: "Coder".into(),
                    system_prompt: "You are an expert programmer. Answer with working code in fenced blocks.".into(),
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

//! The local API server as the app runs it: on the chat's own engine (the
//! server's requests queue beside the chat's), started and stopped from its
//! panel, its address, requests in flight and log shown there.

use super::{AppState, ModelState};
use crate::server::{self, bridge::ModelStatus, ServerConfig};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Default)]
pub struct ServerState {
    pub running: Option<server::Running>,
    /// Why the last start failed (a port in use, no key for the network).
    pub error: Option<String>,
}

impl AppState {
    /// Starts the server if the settings say it is on (at app start).
    pub fn start_server_if_enabled(&mut self) {
        // An attached daemon serves already.
        if self.settings.server.enabled && self.server.running.is_none() && self.engine.daemon.is_none() {
            self.start_server();
        }
    }

    /// Starts serving with the current settings: loopback only, or every
    /// address with the API key when the network switch is on.
    pub fn start_server(&mut self) {
        self.stop_server();
        if let Some(d) = &self.engine.daemon {
            self.server.error = Some(format!("The Hearth daemon (pid {}) serves the API at {} already; `hearth service stop` stops it.", d.pid, d.url));
            return;
        }
        let s = self.settings.server.clone();
        let api_key = if s.lan { server::key::load() } else { None };
        if s.lan && api_key.is_none() {
            self.server.error = Some("Generate an API key before opening the server to other devices.".into());
            return;
        }
        let config = ServerConfig {
            host: if s.lan { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) },
            port: s.port,
            api_key,
            models_dir: self.settings.models_dir(),
            hf_cache: Some(self.downloads.hub.cache_dir.clone()),
            default_model: self.settings.last_model.clone(),
            context_length: Some(self.settings.context_length),
            // The chat's own model is never unloaded here; others the server
            // loaded go after their idle time.
            idle_unload: Some(s.idle_unload_min).filter(|m| *m > 0).map(|m| std::time::Duration::from_secs(m * 60)),
            memory_budget: Some(s.memory_budget_mb).filter(|m| *m > 0).map(|m| m << 20),
            aliases: s.aliases.clone(),
        };
        let initial = match &self.engine.model {
            ModelState::Ready(info) => ModelStatus::Loaded(Box::new(info.clone())),
            ModelState::Loading { .. } => ModelStatus::Loading,
            ModelState::None | ModelState::Failed(_) => ModelStatus::Empty,
        };
        match server::spawn(config, self.engine.handle.clone(), initial) {
            Ok(r) => {
                self.server.error = None;
                self.server.running = Some(r);
            }
            Err(e) => self.server.error = Some(e.to_string()),
        }
    }

    pub fn stop_server(&mut self) {
        if let Some(mut r) = self.server.running.take() {
            r.stop();
        }
    }

    /// Turns the server on or off and remembers the choice.
    pub fn set_server_enabled(&mut self, on: bool) {
        self.settings.server.enabled = on;
        self.save_settings();
        if on {
            self.start_server();
        } else {
            self.stop_server();
            self.server.error = None;
        }
    }
}

//! The local API server as the app runs it: on the chat's own engine (the
//! server's requests queue beside the chat's), started and stopped from its
//! panel, its address, requests in flight and log shown there.

use super::{AppState, Background, ModelState};
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

    /// The API key the settings call for: none on loopback, the saved one
    /// for the network; Err (said in the panel) when the network has none.
    fn settings_key(&mut self) -> Result<Option<String>, ()> {
        if !self.settings.server.lan {
            return Ok(None);
        }
        match server::key::load() {
            Some(k) => Ok(Some(k)),
            None => {
                self.server.error = Some("Generate an API key before opening the server to other devices.".into());
                Err(())
            }
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
        let Ok(api_key) = self.settings_key() else { return };
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

    /// Starts the server as a daemon that outlives the app (`hearth serve
    /// --daemon` with this panel's settings and the chat's model), off the UI
    /// thread; once it serves, the app attaches to it (`on_daemon_started`).
    /// The app's own server and model go first: the port and the memory are the daemon's.
    pub fn start_daemon(&mut self) {
        let s = self.settings.server.clone();
        let Ok(api_key) = self.settings_key() else { return };
        let exe = match crate::paths::hearth_exe() {
            Ok(e) => e,
            Err(e) => return self.error(format!("Cannot find the hearth program to start the daemon: {e}")),
        };
        let mut args: Vec<String> = vec!["serve".into(), "--daemon".into(), "--port".into(), s.port.to_string()];
        if s.lan {
            args.extend(["--host".into(), "0.0.0.0".into()]);
        }
        if let Some(m) = &self.settings.last_model {
            args.extend(["--model".into(), m.display().to_string()]);
        }
        args.extend(["--context-length".into(), self.settings.context_length.to_string()]);
        if s.idle_unload_min > 0 {
            args.extend(["--idle-unload".into(), (s.idle_unload_min * 60).to_string()]);
        }
        if s.memory_budget_mb > 0 {
            args.extend(["--memory-budget-mb".into(), s.memory_budget_mb.to_string()]);
        }
        for (a, m) in &s.aliases {
            args.extend(["--alias".into(), format!("{a}={m}")]);
        }
        self.stop_server();
        self.unload_model();
        let data = self.data_dir.clone();
        self.jobs.spawn(move || {
            let mut cmd = std::process::Command::new(exe);
            cmd.args(&args).env("HEARTH_HOME", &data).stdin(std::process::Stdio::null());
            // The key goes by the environment, never the command line (other users read that).
            match api_key {
                Some(k) => cmd.env("HEARTH_API_KEY", k),
                None => cmd.env_remove("HEARTH_API_KEY"),
            };
            Background::DaemonStarted(match cmd.output() {
                Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
                Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                Err(e) => Err(e.to_string()),
            })
        });
    }

    pub(super) fn on_daemon_started(&mut self, r: Result<String, String>) {
        match r {
            Ok(said) => {
                self.info(format!("The server now runs in the background and keeps serving when Hearth quits. {said}"));
                self.restart_engine();
            }
            Err(e) => {
                self.error(format!("The background server did not start: {e}"));
                // Back as it was: the chat's model, and the app's own server if it was on.
                if let Some(p) = self.settings.last_model.clone() {
                    self.load_model(p);
                }
                self.start_server_if_enabled();
            }
        }
    }

    /// Asks the attached daemon to stop (off the UI thread); the app then
    /// runs an engine of its own again (`on_daemon_stopped`).
    pub fn stop_daemon(&mut self) {
        if self.engine.daemon.is_none() {
            return;
        }
        self.engine.stopping_daemon = true;
        let data = self.data_dir.clone();
        self.jobs.spawn(move || Background::DaemonStopped(crate::engine::remote::request_stop(&data, std::time::Duration::from_secs(3))));
    }

    pub(super) fn on_daemon_stopped(&mut self, r: Result<u32, String>) {
        match r {
            Ok(pid) => {
                self.info(format!("Stopped the background server (pid {pid})."));
                self.restart_engine();
            }
            Err(e) => {
                self.engine.stopping_daemon = false;
                self.error(format!("Could not stop the background server: {e}"));
            }
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

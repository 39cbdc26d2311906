//! `hearth serve`: the local API server, headless, for scripts and other
//! tools; the API key (to open it beyond this machine) comes from the
//! environment, never the command line, where other users could read it.

use super::{model_path, models_dir};
use anyhow::Result;
use hearth::engine::EngineHandle;
use hearth::server::{self, ServerConfig};
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = hearth::server::DEFAULT_PORT)]
    port: u16,
    /// The model served when a request names none (any installed model may be named).
    #[arg(long, short)]
    model: Option<String>,
    /// Context length in tokens.
    #[arg(long)]
    context_length: Option<usize>,
    /// Unload a model after this many seconds without requests (0 = never),
    /// unless a request set its own (`ttl`, Ollama's `keep_alive`).
    #[arg(long, default_value_t = 0)]
    idle_unload: u64,
    /// A smaller model with the same tokenizer that drafts tokens for
    /// speculative decoding, beside every model served whose tokenizer it shares.
    #[arg(long)]
    draft: Option<String>,
    /// Megabytes the models held at once may take (their files' sizes): a
    /// model loaded past it evicts the least recently used idle ones.
    #[arg(long)]
    memory_budget_mb: Option<u64>,
    /// A name clients may send for an installed model: NAME=MODEL (repeatable).
    #[arg(long = "alias", value_parser = parse_alias)]
    aliases: Vec<(String, String)>,
    /// Run in the background without the window, as the one engine the app
    /// attaches to; logs go to the data folder's logs/daemon.log (rotated).
    /// Returns once it serves; `hearth service stop` stops it.
    #[arg(long)]
    daemon: bool,
    /// With --daemon: stay in the foreground (what a service manager runs).
    #[arg(long, requires = "daemon")]
    foreground: bool,
}

fn parse_alias(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, m)) if !a.trim().is_empty() && !m.trim().is_empty() => Ok((a.trim().to_string(), m.trim().to_string())),
        _ => Err(format!("'{s}' is not NAME=MODEL")),
    }
}

pub fn serve(args: ServeArgs) -> Result<()> {
    let ServeArgs { host, port, model, context_length, idle_unload, draft, memory_budget_mb, aliases, daemon, foreground } = args;
    let data = hearth::paths::data_dir();
    if daemon && !foreground {
        return super::daemon::detach(&data);
    }
    let log = match daemon {
        true => {
            // The log first: why a start failed is read from it.
            let log = super::daemon::log_to_file(&data)?;
            super::daemon::claim(&data)?;
            Some(log)
        }
        false => None,
    };
    let default_model = Some(model_path(&model)?);
    let api_key = std::env::var("HEARTH_API_KEY").ok().filter(|k| !k.is_empty());
    let config = ServerConfig {
        host,
        port,
        api_key,
        models_dir: models_dir(),
        hf_cache: Some(hf_hub::resolve_cache_dir()),
        default_model,
        context_length,
        idle_unload: Some(idle_unload).filter(|s| *s > 0).map(std::time::Duration::from_secs),
        memory_budget: memory_budget_mb.map(|mb| mb.saturating_mul(1 << 20)),
        aliases,
    };
    let engine = Arc::new(EngineHandle::spawn());
    if let Some(d) = draft {
        let path = hearth::library::resolve::resolve(&d, &models_dir())?;
        engine.set_draft(Some((path, hearth::models::load::Precision::Auto)));
    }
    let shared = engine.clone();
    server::run(config, engine, |addr| {
        // The one line a script waits for.
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
        if let Some(log) = log {
            if let Err(e) = super::daemon::publish(&data, shared, format!("http://{addr}"), log) {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
        }
    })?;
    Ok(())
}

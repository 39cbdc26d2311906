//! `hearth serve`: the local API server, headless, for scripts and other
//! tools; the API key (to open it beyond this machine) comes from the
//! environment, never the command line, where other users could read it.

use super::{model_path, models_dir};
use anyhow::Result;
use hearth::engine::EngineHandle;
use hearth::server::{self, ServerConfig};
use std::io::Write;
use std::net::IpAddr;

pub fn serve(host: IpAddr, port: u16, model: Option<String>, context_length: Option<usize>, idle_unload: Option<u64>, draft: Option<String>) -> Result<()> {
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
        idle_unload: idle_unload.filter(|s| *s > 0).map(std::time::Duration::from_secs),
    };
    let engine = EngineHandle::spawn();
    if let Some(d) = draft {
        let path = hearth::library::resolve::resolve(&d, &models_dir())?;
        engine.set_draft(Some((path, hearth::models::load::Precision::Auto)));
    }
    server::run(config, engine, |addr| {
        // The one line a script waits for.
        println!("listening on http://{addr}");
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}

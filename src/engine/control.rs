//! The engine's commands other than generations: loads (the primary model
//! and residents beside it), evictions, counting, drafting and settings,
//! applied between batch steps by the worker's loop.

use super::batch::Batch;
use super::pool::{self, Pool, Resident};
use super::protocol::{Command, EngineError, Event, MemoryStats};
use super::session::Session;
use super::EngineConfig;
use crate::chat::params::GenerationStats;
use crate::chat::template::TemplateOptions;
use crate::error::Error;
use crate::models::load::{self, Precision};
use std::path::PathBuf;

/// The error for a request naming a model the engine does not hold.
pub(super) fn not_held(model: Option<&std::path::Path>) -> Error {
    match model {
        None => Error::NoModel,
        Some(p) => Error::NotLoaded(p.display().to_string()),
    }
}

/// The commands other than generations.
pub(super) fn control(cmd: Command, pool: &mut Pool, template_options: &mut TemplateOptions, draft: &mut Option<(PathBuf, Precision)>, config: &mut EngineConfig, send: &dyn Fn(Event)) {
    match cmd {
        Command::Shutdown | Command::Generate { .. } => {}
        Command::Load { path, precision, context_length } => {
            pool.drop_primary(); // before loading the next
            // A model the server holds already becomes the primary as it is.
            if let Some(i) = pool.find(Some(&path)) {
                let r = &mut pool.models[i];
                r.primary = true;
                r.session.set_context_length(context_length.unwrap_or(r.session.context_length));
                send(Event::LoadProgress { fraction: 1.0, message: "Ready".into() });
                send(Event::Loaded(r.session.loaded.info.clone()));
                if draft.is_some() {
                    load_draft(&mut r.session, draft, send);
                }
                return;
            }
            send(Event::LoadProgress { fraction: 0.0, message: format!("Reading {}", path.display()) });
            // Forward progress as it moves by a percent or more, not per tensor.
            let mut last = 0.0f32;
            let mut on_progress = |f: f32, what: &str| {
                if f - last >= 0.01 {
                    last = f;
                    send(Event::LoadProgress { fraction: f, message: what.to_string() });
                }
            };
            match load::load_with_progress(&path, precision, &mut on_progress) {
                Ok(loaded) => {
                    send(Event::LoadProgress { fraction: 1.0, message: "Ready".into() });
                    let mut s = new_session(loaded, context_length, template_options, config);
                    send(Event::Loaded(s.loaded.info.clone()));
                    if draft.is_some() {
                        load_draft(&mut s, draft, send);
                    }
                    pool.models.push(Resident { key: pool::key(&path), session: s, batch: Batch::default(), primary: true });
                    send(Event::Memory(MemoryStats::now()));
                }
                Err(e) => send(Event::LoadFailed(EngineError::from(&e))),
            }
        }
        Command::Reside { path, precision, context_length } => {
            if let Some(i) = pool.find(Some(&path)) {
                send(Event::Resident { path, result: Ok(pool.models[i].session.loaded.info.clone()) });
                return;
            }
            match load::load(&path, precision) {
                Ok(loaded) => {
                    let mut s = new_session(loaded, context_length, template_options, config);
                    // A draft that cannot serve this model is no error here: it decodes without one.
                    if let Some((d, p)) = draft.as_ref() {
                        let _ = load::load(d, *p).and_then(|l| s.set_draft(Some(l)));
                    }
                    send(Event::Resident { path: path.clone(), result: Ok(s.loaded.info.clone()) });
                    pool.models.push(Resident { key: pool::key(&path), session: s, batch: Batch::default(), primary: false });
                    send(Event::Memory(MemoryStats::now()));
                }
                Err(e) => send(Event::Resident { path, result: Err(EngineError::from(&e)) }),
            }
        }
        Command::Evict { path } => {
            if let Some(i) = pool.find(Some(&path)).filter(|&i| !pool.models[i].primary) {
                pool.remove(i);
            }
            send(Event::Evicted { path });
            send(Event::Memory(MemoryStats::now()));
        }
        Command::CountTokens { id, prompt, model } => match pool.find(model.as_deref()).ok_or_else(|| not_held(model.as_deref())).and_then(|i| pool.models[i].session.count_prompt(&prompt)) {
            Ok(tokens) => {
                send(Event::PromptReady { id, tokens, cached: 0 });
                send(Event::Finished { id, stats: GenerationStats { prompt_tokens: tokens, ..Default::default() } });
            }
            Err(e) => send(Event::Error { id: Some(id), error: EngineError::from(&e) }),
        },
        Command::Measure { id, prompt, reserve, model } => {
            let result = pool.find(model.as_deref()).ok_or_else(|| not_held(model.as_deref())).and_then(|i| pool.models[i].session.measure(&prompt, reserve));
            send(Event::Measured { id, result: result.map_err(|e| EngineError::from(&e)) });
        }
        Command::Unload => {
            pool.drop_primary();
            send(Event::Unloaded);
            send(Event::Memory(MemoryStats::now()));
        }
        Command::SetKvBits(bits) => {
            config.kv_bits = if super::config::KV_BITS.contains(&bits) { bits } else { 0 };
            for s in pool.sessions() {
                s.config.kv_bits = config.kv_bits;
                s.reset_cache();
            }
        }
        Command::SetDraft(spec) => {
            *draft = spec;
            if let Some(r) = pool.primary() {
                load_draft(&mut r.session, draft, send);
                send(Event::Memory(MemoryStats::now()));
            }
        }
        Command::SetContextLength(n) => {
            if let Some(r) = pool.primary() {
                r.session.set_context_length(n);
            }
        }
        Command::SetTemplateOptions(o) => {
            for s in pool.sessions() {
                s.loaded.template.options = o.clone();
            }
            *template_options = o;
        }
        Command::ResetCache => {
            if let Some(r) = pool.primary() {
                r.session.reset_cache();
            }
        }
    }
}

/// A session on a model just loaded, with the engine's settings.
fn new_session(mut loaded: load::LoadedModel, context_length: Option<usize>, template_options: &TemplateOptions, config: &EngineConfig) -> Session {
    loaded.template.options = template_options.clone();
    let mut s = Session::new(loaded, context_length);
    s.config = config.clone();
    s
}

/// Loads the draft model `spec` beside the session's model (or drops it);
/// one that cannot draft for it (another tokenizer, unreadable) is reported
/// and the model decodes without one.
fn load_draft(s: &mut Session, spec: &Option<(PathBuf, Precision)>, send: &dyn Fn(Event)) {
    let result = match spec {
        None => s.set_draft(None).map(|_| None),
        Some((path, precision)) => {
            let _ = s.set_draft(None); // its memory back before the next loads
            load::load(path, *precision).and_then(|l| {
                let info = l.info.clone();
                s.set_draft(Some(l)).map(|_| Some(info))
            })
        }
    };
    match result {
        Ok(info) => send(Event::DraftLoaded(info)),
        Err(e) => send(Event::Error { id: None, error: EngineError::from(&e) }),
    }
}

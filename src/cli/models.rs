//! `hearth models`: list, download, search, fit, import.

use super::{models_dir, ModelsCmd};
use anyhow::{anyhow, bail, Result};
use hearth::library::{self, resolve};
use hearth::models::load::fit;
use hearth::units::bytes;

pub fn run(cmd: ModelsCmd) -> Result<()> {
    match cmd {
        ModelsCmd::Download { id, file, force } => download(&id, file, force),
        ModelsCmd::Search { query, gguf } => {
            let hub = hearth::hub::Hub::new(None, hearth::hub::token::load(), None)?;
            let kind = if gguf { hearth::hub::SearchKind::Gguf } else { hearth::hub::SearchKind::Mlx };
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            for h in rt.block_on(hub.search(&query, kind, 30))? {
                println!("{}\t{} downloads\t{} likes{}", h.id, h.downloads, h.likes, if h.gated { "\tgated" } else { "" });
            }
            Ok(())
        }
        ModelsCmd::Fit { model, context, kv_bits } => fit(&model, context, kv_bits),
        ModelsCmd::List => {
            let dir = models_dir();
            for m in library::installed_with_cache(&dir, &hf_hub::resolve_cache_dir()) {
                println!("{}\t{}\t{}", m.name, bytes(m.size), m.path.display());
                if let Some(p) = m.problem {
                    eprintln!("{}: {p}", m.name);
                }
            }
            for odd in library::odd_entries(&dir) {
                eprintln!("skipped {odd} (in {})", dir.display());
            }
            Ok(())
        }
        ModelsCmd::Import { path, if_missing } => {
            match library::import(&path, &models_dir(), if_missing)? {
                Some(p) => eprintln!("installed {}", p.display()),
                None => eprintln!("already installed"),
            }
            Ok(())
        }
    }
}

fn download(id: &str, files: Vec<String>, force: bool) -> Result<()> {
    use hearth::hub::{Control, Hub, Phase};
    let hub = Hub::new(None, hearth::hub::token::load(), None)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let only = (!files.is_empty()).then_some(files);
    let plan = rt.block_on(hub.plan(id, only.as_deref()))?;
    let mem = hearth::sys::total_memory();
    let need = plan.need(4096, hearth::sys::device(), mem);
    let verdict = fit::verdict(need, mem);
    eprintln!(
        "{id}: {} files, {} ({} already here); needs about {} of {} memory at 4096 tokens: {}",
        plan.files.len(),
        bytes(plan.total()),
        bytes(hub.bytes_present(&plan)),
        bytes(need),
        bytes(mem),
        verdict.label()
    );
    if verdict == fit::Verdict::WontFit && !force {
        bail!("{id} won't fit in this machine's memory; pass --force to download anyway");
    }
    let (tx, mut ctl) = tokio::sync::watch::channel(Control::Run);
    // Ctrl-C pauses: the partial files stay and the next run resumes them.
    let _keep = tx;
    let mut last = String::new();
    let snap = rt.block_on(hub.download(&plan, &mut ctl, &mut |p| {
        let line = match &p.phase {
            Phase::Downloading => format!(
                "{:5.1}%  {} / {}  {}/s  {}",
                p.done as f64 * 100.0 / p.total.max(1) as f64,
                bytes(p.done),
                bytes(p.total),
                bytes(p.bytes_per_sec as u64),
                p.file
            ),
            Phase::Retrying { attempt, wait, reason } => format!("{reason}; retry {attempt} in {:.0?}", wait),
            Phase::Verifying => format!("checking {}", p.file),
        };
        if line != last {
            eprint!("\r\x1b[2K{line}");
            last = line;
        }
    }))?;
    eprintln!();
    println!("{}", snap.display());
    Ok(())
}

fn fit(model: &str, context: u64, kv_bits: u8) -> Result<()> {
    let mem = hearth::sys::total_memory();
    let (shape, name) = match hearth::hub::catalogue::CATALOGUE.iter().find(|e| e.id == model) {
        Some(e) => (e.shape, e.id.to_string()),
        None => {
            let path = resolve::resolve(model, &models_dir())?;
            let card = library::card(&path)?;
            (card.shape.ok_or_else(|| anyhow!("{model}: its config lacks the numbers for an estimate"))?, path.display().to_string())
        }
    };
    super::kv_quant_flag(kv_bits)?;
    let need = fit::estimate_with_kv(&shape, context, hearth::sys::device(), mem, kv_bits);
    let state = if need.state > 0 { format!(" + recurrent state and snapshots {}", bytes(need.state)) } else { String::new() };
    println!(
        "{name} ({} params): weights {} + KV cache {}{state} + working {} = {} of {} at {context} tokens: {}",
        shape.params_label(),
        bytes(need.weights),
        bytes(need.kv_cache),
        bytes(need.working),
        bytes(need.total()),
        bytes(mem),
        fit::verdict(need.total(), mem).label()
    );
    Ok(())
}


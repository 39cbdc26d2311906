//! Every bad input is a typed error, never a panic.

mod common;

use hearth::chat::Message;
use hearth::engine::{GenerateParams, SamplingParams};
use hearth::models::load::{self, Precision};
use hearth::Error;
use std::io::Write;
use std::sync::atomic::AtomicBool;

fn load_err(path: &std::path::Path) -> Error {
    let _g = common::mlx_lock();
    match load::load(path, Precision::Auto) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e,
    }
}

/// An f32 MLX directory converted from SmolLM2, shared by the directory cases.
fn converted_dir() -> tempfile::TempDir {
    let _g = common::mlx_lock();
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join("smollm2");
    hearth::models::load::convert::convert(&common::smollm2_gguf(), &dst, Precision::Float32).unwrap();
    t
}

#[test]
fn truncated_gguf_is_reported_as_truncated() {
    let src = std::fs::read(common::smollm2_gguf()).unwrap();
    let t = tempfile::tempdir().unwrap();
    for cut in [src.len() / 2, 4096, 10] {
        let p = t.path().join(format!("cut{cut}.gguf"));
        std::fs::write(&p, &src[..cut]).unwrap();
        let e = load_err(&p);
        assert!(matches!(e, Error::CorruptModel { .. }), "cut at {cut}: {e}");
    }
}

#[test]
fn wrong_magic_is_not_gguf() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("x.gguf");
    std::fs::File::create(&p).unwrap().write_all(b"NOPE this is not a model file at all").unwrap();
    assert!(matches!(load_err(&p), Error::NotGguf(_)));
}

#[test]
fn missing_tensor_is_named() {
    let t = converted_dir();
    let dir = t.path().join("smollm2");
    let f = dir.join("model.safetensors");
    {
        let _g = common::mlx_lock();
        let mut w = mlx_rs::Array::load_safetensors(&f).unwrap();
        w.remove("model.layers.3.mlp.up_proj.weight").unwrap();
        std::fs::remove_file(&f).unwrap();
        std::fs::remove_file(dir.join("model.safetensors.index.json")).unwrap();
        mlx_rs::Array::save_safetensors(w.iter().map(|(k, v)| (k.as_str(), v)), None, &f).unwrap();
    }
    match load_err(&dir) {
        Error::MissingTensor(n) => assert_eq!(n, "model.layers.3.mlp.up_proj.weight"),
        e => panic!("{e}"),
    }
}

#[test]
fn unknown_architecture_is_named() {
    let t = converted_dir();
    let dir = t.path().join("smollm2");
    let cfg = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["model_type"] = "mamba9000".into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    match load_err(&dir) {
        Error::UnknownArchitecture(a, supported) => {
            assert_eq!(a, "mamba9000");
            assert!(supported.contains("llama"));
        }
        e => panic!("{e}"),
    }
    assert!(hearth::library::installed::validate(&dir).is_err(), "import validation rejects it too");
}

#[test]
fn truncated_safetensors_is_reported() {
    let t = converted_dir();
    let f = t.path().join("smollm2/model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 3).unwrap();
    assert!(matches!(load_err(&t.path().join("smollm2")), Error::CorruptModel { .. }));
}

#[test]
fn broken_chat_template_is_a_template_error() {
    let t = converted_dir();
    let dir = t.path().join("smollm2");
    let p = dir.join("tokenizer_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["chat_template"] = "{% for message in messages %}{{ message['content'] }".into();
    std::fs::write(&p, v.to_string()).unwrap();
    assert!(matches!(load_err(&dir), Error::Template(_)));
    // A template that parses but raises at render time is reported on use.
    let tmpl = hearth::chat::template::ChatTemplate::new(Some(
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}".into(),
    ))
    .unwrap();
    match tmpl.render(&[Message::system("x"), Message::user("y")], true, None, None) {
        Err(Error::Template(m)) => assert!(m.contains("System role not supported"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_and_too_long_prompts_are_rejected() {
    let mut s = common::session();
    let p = GenerateParams { sampling: SamplingParams::greedy(), max_tokens: 8, stop: vec![], ignore_eos: false, constraint: None, logprobs: None, ..Default::default() };
    let cancel = AtomicBool::new(false);
    assert!(matches!(s.prompt_for_messages(&[Message::user("   ")], 8), Err(Error::EmptyPrompt)));
    assert!(matches!(s.prompt_for_messages(&[], 8), Err(Error::EmptyPrompt)));
    assert!(matches!(s.generate(&[], &p, &cancel, &mut |_| {}), Err(Error::EmptyPrompt)));
    let huge = "word ".repeat(5000);
    match s.prompt_for_messages(&[Message::user(huge.clone())], 8) {
        Err(Error::PromptTooLong { tokens, context }) => assert!(tokens > context),
        other => panic!("{other:?}"),
    }
    let ids = s.loaded.tokenizer.encode(&huge).unwrap();
    assert!(matches!(s.generate(&ids, &p, &cancel, &mut |_| {}), Err(Error::PromptTooLong { .. })));
    // The session still works afterwards.
    let (ids, _) = s.prompt_for_messages(&[Message::user("Hi")], 8).unwrap();
    s.generate(&ids, &p, &cancel, &mut |_| {}).unwrap();
}

#[test]
fn bad_sampling_values_are_rejected() {
    let mut s = common::session();
    let (ids, _) = s.prompt_for_messages(&[Message::user("Hi")], 8).unwrap();
    for bad in [
        SamplingParams { temperature: -1.0, ..SamplingParams::default() },
        SamplingParams { top_p: 0.0, ..SamplingParams::default() },
        SamplingParams { min_p: 1.5, ..SamplingParams::default() },
    ] {
        let p = GenerateParams { sampling: bad, max_tokens: 4, stop: vec![], ignore_eos: false, constraint: None, logprobs: None, ..Default::default() };
        assert!(matches!(
            s.generate(&ids, &p, &AtomicBool::new(false), &mut |_| {}),
            Err(Error::InvalidArgument(_))
        ));
    }
}

/// A minimal, valid GGUF v3 with the given architecture and no tensors.
fn tiny_gguf(arch: &str) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    let key = "general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(8u32.to_le_bytes()); // string
    b.extend((arch.len() as u64).to_le_bytes());
    b.extend(arch.as_bytes());
    b
}

#[test]
fn gguf_with_an_unknown_architecture_names_it() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("m.gguf");
    std::fs::write(&p, tiny_gguf("rwkv9")).unwrap();
    match load_err(&p) {
        Error::UnknownArchitecture(a, _) => assert_eq!(a, "rwkv9"),
        e => panic!("{e}"),
    }
    // Import refuses it before copying anything.
    let models = t.path().join("models");
    assert!(hearth::library::import(&p, &models, false).is_err());
    assert!(!models.join("m.gguf").exists());
}

/// A GGUF v3 with one 32x1 tensor of ggml type `ty` (data zero-filled).
fn gguf_with_tensor(ty: u32, block_bytes: usize) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata entries
    let kv = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    kv(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    kv(&mut b, "llama");
    kv(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(256u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    b.extend(ty.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend(vec![0u8; block_bytes]);
    b
}

#[test]
fn gguf_tensor_types_hearth_cannot_read_are_named() {
    let t = tempfile::tempdir().unwrap();
    // 16 is IQ2_XXS (not decoded by Hearth); 15 is Q8_K (an intermediate type, not stored in models).
    for (ty, bytes, name) in [(16u32, 66usize, "type 16"), (15, 292, "Q8_K")] {
        let p = t.path().join(format!("t{ty}.gguf"));
        std::fs::write(&p, gguf_with_tensor(ty, bytes)).unwrap();
        match load_err(&p) {
            Error::UnsupportedTensorType { tensor, ggml_type } => {
                assert_eq!(tensor, "token_embd.weight");
                assert!(ggml_type.contains(name), "{ggml_type}");
            }
            e => panic!("type {ty}: {e}"),
        }
    }
}

#[test]
fn config_missing_a_required_field_is_a_config_error() {
    let t = converted_dir();
    let dir = t.path().join("smollm2");
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    match load_err(&dir) {
        Error::Config(m) => assert!(m.contains("hidden_size"), "{m}"),
        e => panic!("{e}"),
    }
}

/// A template shipped as chat_template.jinja (beside tokenizer_config.json) is
/// used; one that rejects the system role (as Gemma 2's does) gets the system
/// prompt folded into the first user turn instead of failing.
#[test]
fn chat_template_jinja_is_used_and_a_rejected_system_role_is_folded() {
    let t = converted_dir();
    let dir = t.path().join("smollm2");
    let cfg_path = dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}\
         [{{ m['role'] }}] {{ m['content'] | trim }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}",
    )
    .unwrap();
    let _g = common::mlx_lock();
    let s = hearth::engine::Session::new(load::load(&dir, Precision::Auto).unwrap(), Some(512));
    let (ids, _) = s.prompt_for_messages(&[Message::system("Answer in French."), Message::user("Hello")], 8).unwrap();
    assert_eq!(s.loaded.tokenizer.decode(&ids), "[user] Answer in French.\n\nHello\n[assistant] ");
}

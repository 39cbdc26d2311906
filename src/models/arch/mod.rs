//! One file per model family: its config (serde, straight from config.json),
//! its blocks and its `LanguageModel` impl, with Hugging Face weight names
//! verbatim. Shared parts come from `nn`, caches from `cache`; fused kernels
//! only through `kernels`' dispatch entries, never a CUDA or Metal module by
//! name (`tests/layout.rs`). A new family is a file here plus its entry in
//! `registry.rs`.

pub mod gemma3;
pub mod gemma4;
pub mod gpt_oss;
pub mod lfm2;
pub mod llama;
pub mod ministral3;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;
pub mod qwen3_moe;
pub mod qwen3_next;

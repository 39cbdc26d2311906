//! Qwen3: the llama decoder with RMSNorm on each query and key head (q_norm,
//! k_norm) before RoPE, no projection biases, and an explicit head_dim.

use crate::models::arch::llama::{Config, Model, Variant};
use crate::models::Weights;
use crate::error::Result;

pub fn load(config: Config, w: Weights) -> Result<Model> {
    Model::load_variant(config, w, Variant { qkv_bias: false, qk_norm: true })
}

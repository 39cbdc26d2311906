//! Qwen2 / Qwen2.5: the llama decoder with biases on the q/k/v projections.

use crate::models::arch::llama::{Config, Model, Variant};
use crate::models::Weights;
use crate::error::Result;

pub fn load(config: Config, w: Weights) -> Result<Model> {
    Model::load_variant(config, w, Variant { qkv_bias: true, qk_norm: false })
}

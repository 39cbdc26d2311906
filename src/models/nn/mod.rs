//! The layers the families share: linear (dense and quantized) / norm /
//! embedding, attention (one sequence or a batch), RoPE variants, masks,
//! mixture-of-experts, Gated DeltaNet and MLX's quantization modes. Each part
//! picks its fused kernel itself (from `kernels`) and falls back to MLX ops.

pub mod attention;
pub mod gated_delta;
pub mod layers;
pub mod mask;
pub mod moe;
pub mod quant;
pub mod rope;

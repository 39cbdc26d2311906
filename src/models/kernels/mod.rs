//! The one door from architecture files to fused kernels: each entry tries
//! the kernel for this device and these shapes and returns None where it
//! does not apply (not CUDA, turned off, a batched shape it does not take),
//! so the caller runs its MLX ops, which every device has. Architecture
//! files never name a CUDA module (`tests/layout.rs` checks it); the shared
//! parts (attention, layers, moe) dispatch inside themselves.

pub(crate) mod cuda;
pub(crate) mod metal;

use crate::error::Result;
use mlx_rs::Array;

pub use crate::models::kernels::cuda::delta::FusedInputs as GatedDeltaInputs;

/// One Gated DeltaNet call (conv, norms, gates and recurrence) in one
/// kernel: the output, the new recurrent state and the conv window.
pub fn gated_delta(inputs: &GatedDeltaInputs) -> Result<Option<(Array, Array, Array)>> {
    crate::models::kernels::cuda::delta::run_fused(inputs)
}

/// A 4-bit affine matmul of a few rows (2-7: a small batch's decode step, a
/// speculative verification) in one tensor-core kernel that reads each
/// weight once for all of them (`cuda::qmm_rows`); None where it does not
/// apply, and the caller runs MLX's `quantized_matmul`. Whether a family
/// takes it at all is the family's choice (`Weights::few_rows_kernel`:
/// it doubles the dense 8B shape's 4 streams and made Qwen3-30B-A3B's slower).
pub fn quantized_matmul_rows(x: &Array, w: &Array, scales: &Array, biases: Option<&Array>, spec: crate::models::QuantSpec) -> Result<Option<Array>> {
    use crate::models::kernels::cuda::qmm_rows;
    let Some(biases) = biases else { return Ok(None) };
    let shape = x.shape();
    let rows: i32 = shape[..shape.len().saturating_sub(1)].iter().product();
    let in_f = shape.last().copied().unwrap_or(0);
    let out_f = w.shape().first().copied().unwrap_or(0);
    let applies = spec.bits == 4
        && spec.mode == crate::models::QuantMode::Affine
        && scales.dtype() == x.dtype()
        && biases.dtype() == x.dtype()
        && w.shape().get(1) == Some(&(in_f / 8))
        && qmm_rows::fits(rows, in_f, out_f, spec.group_size, x.dtype())
        && qmm_rows::enabled();
    if !applies {
        return Ok(None);
    }
    qmm_rows::matmul(x, w, scales, biases, spec.group_size).map(Some)
}

/// Whether a batch's rows spread over leading axes ([B, 1, in], what a
/// batch's decode step hands in) are folded into one matrix for MLX's
/// quantized matmul, from 8 rows (`Linear::forward_parts`). Given B matrices
/// of one row MLX runs its matrix-vector kernel once per row, reading every
/// weight B times; one [B, in] matrix of 8 rows or more takes its kernel that
/// shares the reads (H200, Llama-3.1-8B shape, 8 rows: 4096->14336 225 us as
/// [8, 1, 4096] against 41 us as [8, 4096]; `scripts/gpu/batch_step.py`,
/// docs/bench/h200-batch-step-parts-llama-3.1-8b.txt). On CUDA, where it was
/// measured; off with `HEARTH_FOLD_ROWS=0`, for side-by-side runs.
pub(crate) fn fold_rows() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::models::kernels::cuda::cuda_available() && std::env::var("HEARTH_FOLD_ROWS").map_or(true, |v| v != "0"))
}

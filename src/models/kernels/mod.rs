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

/// A 4-bit affine matmul of a few rows (2-8: a small batch's decode step,
/// a speculative verification) that reads each weight once for all of them
/// (`cuda::qmm_rows`); None where it does not apply, and the caller runs
/// MLX's `quantized_matmul`.
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

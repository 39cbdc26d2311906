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

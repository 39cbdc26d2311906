//! The gated delta recurrence as one CUDA kernel over all tokens (filled in below).

use crate::error::Result;
use mlx_rs::Array;

/// Runs the recurrence on the GPU when a CUDA kernel applies; None elsewhere.
pub fn run(_q: &Array, _k: &Array, _v: &Array, _g_log: &Array, _beta: &Array, _state: &Array) -> Result<Option<(Array, Array)>> {
    Ok(None)
}

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
    switches().fold_rows
}

/// Which fused kernels this process runs, decided once: each where its
/// device has it (the CUDA ones on CUDA; the Metal ones only with
/// `HEARTH_METAL_KERNELS=1` until a Mac run validates them), and each CUDA
/// one off with its variable set to 0, for side-by-side runs. One list, so
/// the engine's config and a benchmark report what ran (`hearth bench`).
/// A process-wide value rather than a field passed down: the dispatch
/// entries sit under every layer call, and no two engines in one process
/// want different kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Switches {
    /// `HEARTH_MOE_KERNEL`: the fused MoE decode and router kernels (`cuda::moe`).
    pub moe: bool,
    /// `HEARTH_DECODE_FUSION`: a decode step's q/k/v heads, residual norms
    /// and attention in fused kernels (`cuda::decode`, `cuda::attention`).
    pub decode_fusion: bool,
    /// `HEARTH_DECODE_ATTENTION`: one sequence's decode attention in the
    /// fused kernel (`cuda::attention`, with `decode_fusion`), apart from the
    /// other fused kernels so an A/B can tell which part wins or loses.
    pub decode_attention: bool,
    /// `HEARTH_BATCH_ATTENTION`: the decode attention kernel also for a
    /// batch's merged rows, skipping each row's padding instead of masking
    /// it (with `decode_fusion`). Validated against MLX's masked SDPA on an
    /// H100 (`cuda_decode_attention_of_merged_rows_matches_masked_sdpa_or_stays_off`)
    /// and measured there: Llama-3.1-8B shape, 8 streams 526 tok/s against
    /// 514-516 without, 16 streams 1036-1038 against 916-943
    /// (docs/bench/h100-batch-attention-ab.txt).
    pub batch_attention: bool,
    /// `HEARTH_QMM_ROWS`: the tensor-core 4-bit matmul for 2-7 rows (`cuda::qmm_rows`).
    pub qmm_rows: bool,
    /// `HEARTH_FOLD_ROWS`: a batch's rows folded into one matrix from 8 rows (`fold_rows`).
    pub fold_rows: bool,
    /// `HEARTH_DELTA_KERNEL`: the gated delta recurrence (`cuda::delta`).
    pub delta: bool,
    /// `HEARTH_SHORT_PREFILL_OPS`: attention of a few queries as MLX ops
    /// instead of cuDNN's (`nn::mask::short_prefill_by_ops`).
    pub short_prefill_ops: bool,
    /// `HEARTH_METAL_KERNELS=1`: the Metal kernels (`metal`).
    pub metal: bool,
}

impl Switches {
    /// From the variables `var` gives and what the device has.
    pub fn decide(var: impl Fn(&str) -> Option<String>, cuda: bool, metal: bool) -> Self {
        let on = |k: &str| cuda && var(k).is_none_or(|v| v.trim() != "0");
        Switches {
            moe: on("HEARTH_MOE_KERNEL"),
            decode_fusion: on("HEARTH_DECODE_FUSION"),
            decode_attention: on("HEARTH_DECODE_ATTENTION"),
            batch_attention: on("HEARTH_BATCH_ATTENTION"),
            qmm_rows: on("HEARTH_QMM_ROWS"),
            fold_rows: on("HEARTH_FOLD_ROWS"),
            delta: on("HEARTH_DELTA_KERNEL"),
            short_prefill_ops: on("HEARTH_SHORT_PREFILL_OPS"),
            metal: metal && var("HEARTH_METAL_KERNELS").is_some_and(|v| v.trim() == "1"),
        }
    }
}

/// This process's switches (the environment's, read on first use).
pub fn switches() -> &'static Switches {
    static S: std::sync::OnceLock<Switches> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let var = |k: &str| std::env::var(k).ok();
        let metal = var("HEARTH_METAL_KERNELS").is_some_and(|v| v.trim() == "1") && crate::models::kernels::metal::metal_available();
        Switches::decide(var, crate::models::kernels::cuda::cuda_available(), metal)
    })
}

#[cfg(test)]
mod tests {
    use super::Switches;

    #[test]
    fn kernels_run_only_where_the_device_has_them_and_zero_turns_one_off() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let s = Switches::decide(vars(&[("HEARTH_QMM_ROWS", "0"), ("HEARTH_MOE_KERNEL", "1")]), true, false);
        assert!(s.moe && s.decode_fusion && s.decode_attention && s.fold_rows && s.delta && s.batch_attention && s.short_prefill_ops && !s.qmm_rows && !s.metal);
        assert!(!Switches::decide(vars(&[("HEARTH_BATCH_ATTENTION", "0")]), true, false).batch_attention, "0 turns it off");
        let none = Switches::decide(vars(&[("HEARTH_METAL_KERNELS", "1")]), false, false);
        assert!(!(none.moe || none.decode_fusion || none.batch_attention || none.qmm_rows || none.fold_rows || none.delta || none.short_prefill_ops || none.metal), "no CUDA, no Metal: nothing fused");
        assert!(Switches::decide(vars(&[("HEARTH_METAL_KERNELS", "1")]), false, true).metal);
        assert!(!Switches::decide(vars(&[]), false, true).metal, "Metal kernels wait for HEARTH_METAL_KERNELS=1");
    }
}

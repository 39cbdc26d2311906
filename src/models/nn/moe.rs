//! Mixture-of-experts building blocks (mlx-lm's `switch_layers.py`): expert
//! weights stacked per layer ([experts, out, in]), the expert matmuls through
//! MLX's `gather_mm` / `gather_qmm`, tokens sorted by expert when there are
//! many of them (prefill) so each expert's rows are read once, and a top-k
//! router over softmax scores.
//!
//! Longer than 450 lines: the GPU checks of the CUDA paths (`kernels::cuda::moe`,
//! `kernels::cuda::moe_grouped`) against `gather_qmm` sit beside the layer, as unit
//! tests on tiny synthetic weights.

use crate::models::nn::layers::{gelu_tanh_mul, swiglu, swiglu_oai};
use crate::models::kernels::cuda::{self, moe::Q4};
use crate::models::nn::quant::{self, QuantMode, QuantSpec};
use crate::models::{cfg_err, Linear, Weights};
use crate::error::{Error, Result};
use mlx_rs::ops::indexing::{take_along_axis, IndexOp};
use mlx_rs::{ops, Array, Dtype};

/// A linear layer per expert, dense or quantized (any `QuantMode`), applied to
/// the experts each token was routed to, with an optional bias per expert
/// (gpt-oss).
pub struct SwitchLinear {
    kind: SwitchKind,
    /// [experts, out]
    bias: Option<Array>,
}

enum SwitchKind {
    Dense { weight: Array },
    Quantized { weight: Array, scales: Array, biases: Option<Array>, spec: QuantSpec },
}

impl SwitchLinear {
    /// `{prefix}.weight` of shape [experts, out, in] (or its quantized parts),
    /// and `{prefix}.bias` [experts, out] when `bias`.
    pub fn load(w: &mut Weights, prefix: &str, experts: i32, out_f: i32, in_f: i32, bias: bool) -> Result<Self> {
        let kind = match w.quant_spec(prefix, in_f)? {
            Some(spec) => {
                let per_word = 32 / spec.bits;
                let groups = in_f / spec.group_size;
                SwitchKind::Quantized {
                    weight: w.take_shaped(&format!("{prefix}.weight"), &[experts, out_f, in_f / per_word])?,
                    scales: w.take_shaped(&format!("{prefix}.scales"), &[experts, out_f, groups])?,
                    biases: if spec.mode.has_biases() {
                        Some(w.take_shaped(&format!("{prefix}.biases"), &[experts, out_f, groups])?)
                    } else {
                        None
                    },
                    spec,
                }
            }
            None => SwitchKind::Dense { weight: w.take_shaped(&format!("{prefix}.weight"), &[experts, out_f, in_f])? },
        };
        let bias = if bias { Some(w.take_shaped(&format!("{prefix}.bias"), &[experts, out_f])?) } else { None };
        Ok(SwitchLinear { kind, bias })
    }

    /// The 4-bit affine parts and group size, when the CUDA kernels can take
    /// this projection.
    fn q4(&self) -> Option<(Q4<'_>, i32)> {
        match &self.kind {
            SwitchKind::Quantized { weight, scales, biases: Some(biases), spec } if spec.mode == QuantMode::Affine && spec.bits == 4 => {
                Some((Q4 { weight, scales, biases, bias: self.bias.as_ref() }, spec.group_size))
            }
            _ => None,
        }
    }

    /// `x` [..., 1, in] against the experts in `indices` [..., k] -> [..., k, 1, out].
    /// `dequantized`: quantized experts are expanded to the model's float type
    /// first and multiplied by `gather_mm` (see `DEQUANTIZE_FROM`).
    pub fn forward(&self, x: &Array, indices: &Array, sorted: bool, dequantized: bool) -> Result<Array> {
        let y = match &self.kind {
            SwitchKind::Dense { weight } => ops::gather_mm(x, weight.swap_axes(-1, -2)?, None, indices, sorted)?,
            SwitchKind::Quantized { weight, scales, biases, spec } if dequantized => {
                let w = quant::dequantize(weight, scales, biases.as_ref(), *spec)?.as_dtype(x.dtype())?;
                ops::gather_mm(x, w.swap_axes(-1, -2)?, None, indices, sorted)?
            }
            SwitchKind::Quantized { weight, scales, biases, spec } => {
                quant::gather_qmm(x, weight, scales, biases.as_ref(), indices, *spec, sorted)?
            }
        };
        match &self.bias {
            // One bias row per chosen expert, broadcast over the single row axis.
            Some(b) => Ok(y.add(b.take_axis(indices, 0)?.expand_dims(-2)?)?),
            None => Ok(y),
        }
    }
}

/// The experts' gated MLP: `down(act(gate(x), up(x)))` for each chosen expert.
pub struct SwitchGlu {
    gate_proj: SwitchLinear,
    up_proj: SwitchLinear,
    down_proj: SwitchLinear,
    activation: Glu,
}

/// The gated activation of an expert MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glu {
    /// `silu(gate) * up` (Qwen3-MoE and most others).
    Silu,
    /// gpt-oss's clamped variant (`layers::swiglu_oai`).
    OaiClamped,
    /// `gelu_tanh(gate) * up` (Gemma 4's experts).
    GeluTanh,
}

/// Sorting tokens by expert pays off from this many (token, expert) pairs on.
const SORT_FROM: i32 = 64;

/// From this many (token, expert) pairs on, CUDA runs 4-bit affine experts
/// through `cuda::moe_grouped::grouped` (tensor cores, each weight tile dequantized once
/// for all its rows): per Qwen3-30B-A3B layer on the H100, 0.64 ms at 128
/// tokens against `gather_qmm`'s 2.16, 2.59 ms at 2048 against 4.23 for
/// dequantized experts and `gather_mm`; at 16 tokens (128 pairs) the two runs
/// disagreed (0.52 against 0.44 ms, then 0.46 against 0.70), so fewer pairs
/// keep `gather_qmm` (`scripts/gpu/moe_costs.py`, `docs/bench/h100-moe-grouped.txt`).
const GROUPED_FROM: i32 = 256;

/// From this many (token, expert) pairs on, CUDA runs a long prefill's expert
/// matmuls, for experts `grouped` does not take (other quantizations), on
/// dequantized experts (one projection of all experts expanded at a
/// time, ~400 MB for Qwen3-30B-A3B, freed after its `gather_mm`; `experts`
/// evaluates each before the next is expanded): MLX 0.32's
/// CUDA `gather_qmm` over sorted rows took 31.4 ms per Qwen3-30B-A3B layer for
/// 2048 tokens, dequantizing and `gather_mm` 4.0 ms; at 128 tokens (1024 pairs)
/// `gather_qmm` was still faster, 2.4 against 3.4 ms
/// (`scripts/gpu/moe_costs.py`, `docs/bench/h100-moe-costs.txt`). Metal's
/// `gather_qmm` and CPUs keep the quantized path. The grouped path uses the
/// same bound to evaluate each layer before the next (`grouped_experts`).
const DEQUANTIZE_FROM: i32 = 4096;

impl SwitchGlu {
    /// `{p}.{gate,up,down}_proj`, with per-expert biases when `bias`.
    pub fn load(w: &mut Weights, p: &str, experts: i32, hidden: i32, inter: i32, bias: bool, activation: Glu) -> Result<Self> {
        Ok(SwitchGlu {
            gate_proj: SwitchLinear::load(w, &format!("{p}.gate_proj"), experts, inter, hidden, bias)?,
            up_proj: SwitchLinear::load(w, &format!("{p}.up_proj"), experts, inter, hidden, bias)?,
            down_proj: SwitchLinear::load(w, &format!("{p}.down_proj"), experts, hidden, inter, bias)?,
            activation,
        })
    }

    /// `x` [B, L, D], `indices` [B, L, k] -> [B, L, k, D].
    pub fn forward(&self, x: &Array, indices: &Array) -> Result<Array> {
        let (b, l, d) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let k = indices.shape()[2];
        let x = x.reshape(&[b, l, 1, 1, d])?;
        let sort = indices.size() as i32 >= SORT_FROM;
        let out = if sort {
            // Rows grouped by expert: gather_mm then reads each expert once.
            let flat = indices.flatten(None, None)?;
            let order = ops::argsort(&flat)?;
            let inv = ops::argsort(&order)?;
            let rows = x.reshape(&[b * l, 1, d])?.take_axis(order.floor_divide(Array::from_int(k))?, 0)?;
            let idx = flat.take_axis(&order, 0)?;
            let pairs = flat.size() as i32;
            let y = match self.grouped_parts(x.dtype(), pairs) {
                Some(parts) => self.grouped_experts(&rows, &idx, parts)?,
                None => self.experts(&rows, &idx, true, pairs >= DEQUANTIZE_FROM && cuda::moe::enabled())?,
            };
            y.take_axis(&inv, 0)?.reshape(&[b, l, k, 1, d])?
        } else {
            self.experts(&x, indices, false, false)?
        };
        Ok(out.squeeze_axes(&[-2])?)
    }

    /// The 4-bit affine parts of the three projections and their group size,
    /// when the CUDA kernels can take them (same group, biases on all or none).
    fn q4_parts(&self, dtype: Dtype) -> Option<(Q4<'_>, Q4<'_>, Q4<'_>, i32)> {
        // The kernels know SiLU and gpt-oss's activation only.
        if !cuda::moe::enabled() || self.activation == Glu::GeluTanh {
            return None;
        }
        if !matches!(dtype, Dtype::Bfloat16 | Dtype::Float16 | Dtype::Float32) {
            return None;
        }
        let ((gate, g1), (up, g2), (down, g3)) = (self.gate_proj.q4()?, self.up_proj.q4()?, self.down_proj.q4()?);
        let same_bias = gate.bias.is_some() == up.bias.is_some() && up.bias.is_some() == down.bias.is_some();
        let same_type = [&gate, &up, &down].iter().all(|q| q.dtypes_are(dtype));
        (g1 == g2 && g2 == g3 && same_bias && same_type).then_some((gate, up, down, g1))
    }

    /// The three projections' 4-bit parts when `pairs` sorted rows of `dtype`
    /// take the grouped CUDA kernel; None otherwise.
    #[allow(clippy::type_complexity)]
    fn grouped_parts(&self, dtype: Dtype, pairs: i32) -> Option<[(Q4<'_>, i32); 3]> {
        if !cuda::moe::enabled() || pairs < GROUPED_FROM {
            return None;
        }
        let parts = [self.gate_proj.q4()?, self.up_proj.q4()?, self.down_proj.q4()?];
        // The kernel reads scales, biases and expert biases as the rows' type.
        let fits = |(q, g): &(Q4<'_>, i32)| {
            q.dtypes_are(dtype) && cuda::moe_grouped::grouped_fits(q.weight.shape()[2] * 8, q.weight.shape()[1], *g, dtype)
        };
        parts.iter().all(fits).then_some(parts)
    }

    /// Sorted rows `x` [P, 1, D] with their experts `idx` [P] through the
    /// grouped kernel -> [P, 1, D].
    fn grouped_experts(&self, x: &Array, idx: &Array, [gate, up, down]: [(Q4<'_>, i32); 3]) -> Result<Array> {
        let (p, d) = (x.shape()[0], x.shape()[2]);
        let x = x.reshape(&[p, d])?;
        let idx = idx.as_dtype(Dtype::Uint32)?;
        let g = cuda::moe_grouped::grouped(&x, &idx, &gate.0, gate.1)?;
        let u = cuda::moe_grouped::grouped(&x, &idx, &up.0, up.1)?;
        let act = self.activate(&g, &u)?;
        let y = cuda::moe_grouped::grouped(&act, &idx, &down.0, down.1)?;
        if p >= DEQUANTIZE_FROM {
            // A long prompt's layer is evaluated before the next is built:
            // otherwise MLX encodes the whole chunk's layers ahead of the GPU,
            // each holding its buffers, and a 2048-token prompt of
            // Qwen3-30B-A3B peaked 7 GB higher (25.6 GB against 18.5).
            y.eval()?;
        }
        Ok(y.reshape(&[p, 1, d])?)
    }

    fn activate(&self, gate: &Array, up: &Array) -> Result<Array> {
        match self.activation {
            Glu::Silu => swiglu(gate, up),
            Glu::OaiClamped => swiglu_oai(gate, up),
            Glu::GeluTanh => gelu_tanh_mul(gate, up),
        }
    }

    /// The experts' parts when one token `x` takes the fused CUDA decode
    /// kernels with `k` experts; None otherwise.
    fn fused_parts(&self, x: &Array, k: i32) -> Option<(Q4<'_>, Q4<'_>, Q4<'_>, i32)> {
        if x.ndim() != 3 || x.shape()[0] * x.shape()[1] != 1 {
            return None;
        }
        let parts = self.q4_parts(x.dtype())?;
        cuda::moe::fits(x.shape()[2], parts.0.weight.shape()[1], k, parts.3).then_some(parts)
    }

    /// One token through the router's CUDA kernel (which adds the router's
    /// `bias` to `logits` where given) and the fused decode kernels; None
    /// where they do not apply.
    pub fn decode_routed(&self, x: &Array, logits: &Array, bias: Option<&Array>, k: i32, routing: cuda::moe::Routing) -> Result<Option<Array>> {
        let experts = logits.shape().last().copied().unwrap_or(0);
        if !cuda::moe::routes(experts, k) || logits.dtype() != x.dtype() || bias.is_some_and(|b| b.dtype() != x.dtype() || b.size() as i32 != experts) {
            return Ok(None);
        }
        let Some(parts) = self.fused_parts(x, k) else { return Ok(None) };
        let (inds, scores) = cuda::moe::route(logits, bias, k, routing)?;
        self.run_fused(x, &inds, &scores, parts).map(Some)
    }

    /// One token through the router's matmul and choice in one CUDA launch
    /// (`cuda::moe::route_q4`, for a 4-bit affine router `gate`) and the fused
    /// decode kernels; None where they do not apply.
    pub fn decode_gated(&self, x: &Array, gate: &Linear, k: i32, routing: cuda::moe::Routing) -> Result<Option<Array>> {
        let Linear::Quantized { weight, scales, biases: Some(biases), bias, spec, .. } = gate else { return Ok(None) };
        let Some(parts) = self.fused_parts(x, k) else { return Ok(None) };
        let (dtype, hidden) = (x.dtype(), x.shape()[2]);
        let router = Q4 { weight, scales, biases, bias: bias.as_ref() };
        let fits = weight.ndim() == 2
            && weight.shape()[1] * 8 == hidden
            && cuda::moe::routes_q4(hidden, spec.group_size, weight.shape()[0], k);
        if spec.mode != QuantMode::Affine || spec.bits != 4 || !fits || !router.dtypes_are(dtype) {
            return Ok(None);
        }
        let (inds, scores) = cuda::moe::route_q4(x, router, spec.group_size, k, routing)?;
        self.run_fused(x, &inds, &scores, parts).map(Some)
    }

    /// gpt-oss's routing and experts: the router's top `k` of `experts`
    /// logits, a softmax over the chosen ones only, the weighted sum of their
    /// outputs. The fused decode paths first (router and experts in CUDA
    /// kernels, where they apply), then the MLX ops.
    pub fn top_k_then_softmax(&self, x: &Array, router: &Linear, k: i32, experts: i32) -> Result<Array> {
        if let Some(y) = self.decode_gated(x, router, k, cuda::moe::Routing::TopKSoftmax)? {
            return Ok(y);
        }
        // The router's bias goes into the router kernel where that runs.
        let (g, bias) = router.forward_parts(x)?;
        if let Some(y) = self.decode_routed(x, &g, bias, k, cuda::moe::Routing::TopKSoftmax)? {
            return Ok(y);
        }
        let g = crate::models::nn::layers::with_bias(g, bias)?;
        let kth = experts - k;
        let inds = ops::argpartition_axis(&g, kth, -1)?.index((.., .., kth..));
        // Softmax over the chosen experts' logits only (not over all experts).
        let weights = ops::softmax_axis(take_along_axis(&g, &inds, -1)?, -1, true)?;
        if let Some(y) = self.fused_decode(x, &inds, &weights)? {
            return Ok(y);
        }
        let y = self.forward(x, &inds)?;
        Ok(y.multiply(weights.expand_dims(-1)?)?.sum_axis(-2, false)?)
    }

    /// The fused CUDA decode path (`kernels::cuda::moe`) for one token when it applies
    /// (4-bit affine experts on a CUDA device): `x` [1, 1, D], `inds` and
    /// `scores` [1, 1, k] -> the weighted sum [1, 1, D]; None otherwise.
    pub fn fused_decode(&self, x: &Array, inds: &Array, scores: &Array) -> Result<Option<Array>> {
        let Some(parts) = self.fused_parts(x, inds.shape()[2]) else { return Ok(None) };
        self.run_fused(x, &inds.reshape(&[-1])?, &scores.reshape(&[-1])?, parts).map(Some)
    }

    /// `x` [1, 1, D] through the decode kernels with `inds` and `scores` [k].
    fn run_fused(&self, x: &Array, inds: &Array, scores: &Array, (gate, up, down, group): (Q4<'_>, Q4<'_>, Q4<'_>, i32)) -> Result<Array> {
        let dtype = x.dtype();
        cuda::moe::decode(x, &inds.as_dtype(Dtype::Uint32)?, &scores.as_dtype(dtype)?, gate, up, down, group, self.activation == Glu::OaiClamped)
    }

    fn experts(&self, x: &Array, idx: &Array, sorted: bool, dequantized: bool) -> Result<Array> {
        // Dequantized experts are evaluated one projection at a time: MLX
        // would otherwise expand the weights of many layers of one prompt
        // chunk before their matmuls run (the weights depend on nothing), and
        // a 2048-token prompt peaked 12 GB higher for Qwen3-30B-A3B.
        let settle = |a: Array| -> Result<Array> {
            if dequantized {
                a.eval()?;
            }
            Ok(a)
        };
        let up = settle(self.up_proj.forward(x, idx, sorted, dequantized)?)?;
        let gate = settle(self.gate_proj.forward(x, idx, sorted, dequantized)?)?;
        let act = self.activate(&gate, &up)?;
        settle(self.down_proj.forward(&act, idx, sorted, dequantized)?)
    }
}

/// A sparse MoE block: a linear router, softmax scores, the top-k experts per
/// token (optionally renormalised), their outputs weighted by the scores.
pub struct SparseMoe {
    gate: Linear,
    switch_mlp: SwitchGlu,
    experts: i32,
    top_k: i32,
    norm_topk_prob: bool,
}

impl SparseMoe {
    pub fn load(w: &mut Weights, p: &str, experts: i32, top_k: i32, hidden: i32, inter: i32, norm_topk_prob: bool) -> Result<Self> {
        if experts < 1 || !(1..=experts).contains(&top_k) {
            return Err(cfg_err(format!("num_experts_per_tok ({top_k}) must be between 1 and num_experts ({experts})")));
        }
        Ok(SparseMoe {
            gate: Linear::load(w, &format!("{p}.gate"), experts, hidden, false)?,
            switch_mlp: SwitchGlu::load(w, &format!("{p}.switch_mlp"), experts, hidden, inter, false, Glu::Silu)?,
            experts,
            top_k,
            norm_topk_prob,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let routing = cuda::moe::Routing::SoftmaxTopK { norm: self.norm_topk_prob };
        if let Some(y) = self.switch_mlp.decode_gated(x, &self.gate, self.top_k, routing)? {
            return Ok(y);
        }
        let logits = self.gate.forward(x)?;
        if let Some(y) = self.switch_mlp.decode_routed(x, &logits, None, self.top_k, routing)? {
            return Ok(y);
        }
        let gates = ops::softmax_axis(logits, -1, true)?;
        let kth = self.experts - self.top_k;
        let inds = ops::argpartition_axis(&gates, kth, -1)?.index((.., .., kth..));
        let mut scores = take_along_axis(&gates, &inds, -1)?;
        if self.norm_topk_prob {
            scores = scores.divide(scores.sum_axis(-1, true)?)?;
        }
        if let Some(y) = self.switch_mlp.fused_decode(x, &inds, &scores)? {
            return Ok(y);
        }
        let y = self.switch_mlp.forward(x, &inds)?;
        let dtype = y.dtype();
        Ok(y.multiply(scores.expand_dims(-1)?)?.sum_axis(-2, false)?.as_dtype(dtype)?)
    }
}

/// Joins a Hugging Face checkpoint's per-expert tensors
/// (`{p}.experts.{e}.{name}.{weight,scales,biases}`) into the stacked
/// `{p}.switch_mlp.{name}.*` tensors, as mlx-lm's `sanitize` does.
pub fn stack_experts(w: &mut Weights, p: &str, experts: i32) -> Result<()> {
    if !w.contains(&format!("{p}.experts.0.up_proj.weight")) {
        return Ok(());
    }
    let mut out = Vec::new();
    for name in ["gate_proj", "up_proj", "down_proj"] {
        for suffix in ["weight", "scales", "biases"] {
            if !w.contains(&format!("{p}.experts.0.{name}.{suffix}")) {
                continue;
            }
            let parts = (0..experts).map(|e| w.take(&format!("{p}.experts.{e}.{name}.{suffix}"))).collect::<Result<Vec<_>>>()?;
            let stacked = ops::stack(&parts, 0).map_err(|e| Error::Config(format!("{p}.experts.*.{name}: {e}")))?;
            out.push((format!("{p}.switch_mlp.{name}.{suffix}"), stacked));
        }
    }
    w.insert_all(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::load::weights::QuantConfig;
    use mlx_rs::random;
    use std::collections::HashMap;

    /// Random 4-bit experts (bf16, group 64) with or without per-expert biases.
    fn experts(e: i32, d: i32, i: i32, bias: bool, act: Glu) -> SwitchGlu {
        let mut t = HashMap::new();
        let mut key = random::key(7).unwrap();
        for (n, shape) in [("gate_proj", [e, i, d]), ("up_proj", [e, i, d]), ("down_proj", [e, d, i])] {
            let (k1, k2) = random::split(&key, 2).unwrap();
            key = k1;
            let w = random::normal::<f32>(&shape[..], 0.0, 0.05, &k2).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let (q, s, b) = quant::quantize(&w, QuantSpec::affine(64, 4)).unwrap();
            t.insert(format!("m.{n}.weight"), q);
            t.insert(format!("m.{n}.scales"), s);
            t.insert(format!("m.{n}.biases"), b.unwrap());
            if bias {
                let b = random::normal::<f32>(&[e, shape[1]][..], 0.0, 0.1, &k2).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
                t.insert(format!("m.{n}.bias"), b);
            }
        }
        let mut w = Weights::new(t, QuantConfig { group_size: Some(64), bits: Some(4), ..Default::default() });
        SwitchGlu::load(&mut w, "m", e, d, i, bias, act).unwrap()
    }

    /// The largest |got - want| and the largest |want| (float32 arrays).
    fn max_diff(got: &Array, want: &Array) -> (f32, f32) {
        let max = |a: Array| a.abs().unwrap().max(None).unwrap().item_exact::<f32>();
        (max(got.subtract(want).unwrap()), max(want.clone()))
    }

    /// A prompt's rows sorted by expert: on CUDA, the grouped tensor-core
    /// kernel and dequantized experts through `gather_mm` must both agree with
    /// `gather_qmm` (to bf16 rounding), with and without expert biases, for
    /// experts with fewer rows than one 64-row pass and with several passes.
    #[test]
    fn cuda_prefill_grouped_and_dequantized_experts_match_gather_qmm() {
        if !cuda::moe::enabled() {
            // CPUs' gather_mm takes float32 only; they keep gather_qmm, and
            // the grouped kernel stays off even for experts it could take.
            let glu = experts(8, 256, 128, false, Glu::Silu);
            assert!(glu.grouped_parts(Dtype::Bfloat16, GROUPED_FROM).is_none(), "the grouped CUDA kernel ran without CUDA");
            return;
        }
        // Both orders: a model's layers are built and dropped one after another.
        for (bias, act) in [(false, Glu::Silu), (true, Glu::OaiClamped), (false, Glu::Silu), (true, Glu::OaiClamped)] {
            let (e, d, i, k) = (8, 256, 128, 2);
            let glu = experts(e, d, i, bias, act);
            for t in [40, 300] {
                // Every expert but 7 gets rows (an empty segment included).
                let flat: Vec<u32> = (0..t * k).map(|j| ((j * 5 + j / 3) % 7) as u32).collect();
                let mut order: Vec<usize> = (0..flat.len()).collect();
                order.sort_by_key(|&j| flat[j]);
                let idx = Array::from_slice(&order.iter().map(|&j| flat[j]).collect::<Vec<_>>(), &[t * k]);
                let take = Array::from_slice(&order.iter().map(|&j| (j as i32) / k).collect::<Vec<_>>(), &[t * k]);
                for trial in 0..2 {
                    let x = random::normal::<f32>(&[t, 1, d][..], 0.0, 1.0, &random::key(3 + trial).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
                    let rows = x.take_axis(&take, 0).unwrap();
                    let parts = glu.grouped_parts(Dtype::Bfloat16, GROUPED_FROM).expect("4-bit affine experts take the grouped kernel on CUDA");
                    let grouped = glu.grouped_experts(&rows, &idx, parts).unwrap().as_dtype(Dtype::Float32).unwrap();
                    // Dequantized first (evaluated projection by projection), then the reference.
                    let dequantized = glu.experts(&rows, &idx, true, true).unwrap().as_dtype(Dtype::Float32).unwrap();
                    let want = glu.experts(&rows, &idx, true, false).unwrap().as_dtype(Dtype::Float32).unwrap();
                    for (name, got) in [("grouped kernel", grouped), ("dequantized gather_mm", dequantized)] {
                        assert_eq!(got.shape(), want.shape());
                        let (diff, scale) = max_diff(&got, &want);
                        eprintln!("{name} ({act:?}, bias {bias}, {t} tokens, trial {trial}): max |diff| {diff:e} for outputs up to {scale}");
                        assert!(diff <= 0.02 * scale.max(1e-3), "{name} differs by {diff} (outputs up to {scale})");
                    }
                }
            }
        }
    }

    /// On CUDA the router kernel must choose the experts MLX's ops choose, with
    /// the same weights (to bf16 rounding), for Qwen3-MoE's and gpt-oss's
    /// routing; elsewhere the routed decode stays off.
    #[test]
    fn fused_cuda_router_matches_the_ops_router_or_stays_off() {
        use cuda::moe::Routing;
        let (e, k) = (128, 8);
        let glu = experts(8, 256, 128, false, Glu::Silu);
        let x = Array::zeros::<f32>(&[1, 1, 256]).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
        for (n, routing) in [Routing::SoftmaxTopK { norm: true }, Routing::SoftmaxTopK { norm: false }, Routing::TopKSoftmax].into_iter().enumerate() {
            let logits = random::normal::<f32>(&[1, 1, e][..], 0.0, 2.0, &random::key(40 + n as u64).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            if !cuda::moe::enabled() {
                assert!(glu.decode_routed(&x, &logits, None, 2, routing).unwrap().is_none(), "the CUDA router ran without CUDA");
                continue;
            }
            let (inds, scores) = cuda::moe::route(&logits.reshape(&[e]).unwrap(), None, k, routing).unwrap();
            let kth = e - k;
            let (want_i, want_s) = match routing {
                Routing::SoftmaxTopK { norm } => {
                    let g = ops::softmax_axis(&logits, -1, true).unwrap();
                    let i = ops::argpartition_axis(&g, kth, -1).unwrap().index((.., .., kth..));
                    let mut s = take_along_axis(&g, &i, -1).unwrap();
                    if norm {
                        s = s.divide(s.sum_axis(-1, true).unwrap()).unwrap();
                    }
                    (i, s)
                }
                Routing::TopKSoftmax => {
                    let i = ops::argpartition_axis(&logits, kth, -1).unwrap().index((.., .., kth..));
                    (i.clone(), ops::softmax_axis(take_along_axis(&logits, &i, -1).unwrap(), -1, true).unwrap())
                }
            };
            let pairs = |i: &Array, s: &Array| {
                let i = i.as_dtype(Dtype::Int32).unwrap().flatten(None, None).unwrap();
                let s = s.as_dtype(Dtype::Float32).unwrap().flatten(None, None).unwrap();
                let mut v: Vec<(i32, f32)> = i.as_slice::<i32>().iter().copied().zip(s.as_slice::<f32>().iter().copied()).collect();
                v.sort_by_key(|p| p.0);
                v
            };
            let (got, want) = (pairs(&inds, &scores), pairs(&want_i, &want_s));
            eprintln!("router kernel ({routing:?}): {got:?}");
            // With the router's bias added in the kernel: exactly as if added before it.
            let bias = random::normal::<f32>(&[e][..], 0.0, 1.0, &random::key(60 + n as u64).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let (bi, bs) = cuda::moe::route(&logits, Some(&bias), k, routing).unwrap();
            let (ai, as_) = cuda::moe::route(&logits.add(&bias).unwrap(), None, k, routing).unwrap();
            assert_eq!(pairs(&bi, &bs), pairs(&ai, &as_), "{routing:?}: the bias in the kernel routes otherwise than added before it");
            assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), want.iter().map(|p| p.0).collect::<Vec<_>>(), "{routing:?} chose other experts");
            for (g, w) in got.iter().zip(&want) {
                assert!((g.1 - w.1).abs() <= 1e-2 * w.1.abs().max(1e-3), "{routing:?}: expert {} weighted {} against {}", g.0, g.1, w.1);
            }
        }
    }

    /// On a CUDA device the fused decode kernels must agree with the
    /// `gather_qmm` path (to bf16 rounding); elsewhere they must stay out of
    /// the way (None), since Metal and CPUs run the gather path.
    #[test]
    fn fused_cuda_decode_matches_the_gather_path_or_stays_off() {
        for (bias, act) in [(false, Glu::Silu), (true, Glu::OaiClamped)] {
            let (e, d, i, k) = (8, 256, 128, 2);
            let glu = experts(e, d, i, bias, act);
            let x = random::normal::<f32>(&[1, 1, d][..], 0.0, 1.0, &random::key(1).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let inds = Array::from_slice(&[5u32, 2], &[1, 1, k]);
            let scores = Array::from_slice(&[0.7f32, 0.3], &[1, 1, k]).as_dtype(Dtype::Bfloat16).unwrap();
            let fused = glu.fused_decode(&x, &inds, &scores).unwrap();
            if !cuda::moe::enabled() {
                assert!(fused.is_none(), "the CUDA kernels ran without CUDA");
                continue;
            }
            let fused = fused.expect("4-bit affine experts on CUDA take the fused path").as_dtype(Dtype::Float32).unwrap();
            let want = glu.forward(&x, &inds).unwrap().multiply(scores.expand_dims(-1).unwrap()).unwrap().sum_axis(-2, false).unwrap();
            let want = want.as_dtype(Dtype::Float32).unwrap();
            let (diff, scale) = max_diff(&fused, &want);
            eprintln!("fused CUDA decode ({act:?}, bias {bias}): max |diff| {diff:e} for outputs up to {scale}");
            assert!(diff <= 0.02 * scale.max(1e-3), "fused decode differs by {diff} (outputs up to {scale})");
        }
    }

    /// The router's matmul fused into the routing kernel picks the experts the
    /// matmul + `route` path picks, with the same weights, and the block's
    /// output matches; with and without a router bias (gpt-oss has one).
    #[test]
    fn fused_cuda_q4_router_matches_matmul_then_route_or_stays_off() {
        use cuda::moe::Routing;
        let (e, d, k) = (128, 256, 8);
        let glu = experts(e, d, 128, false, Glu::Silu);
        for (n, (routing, with_bias)) in [(Routing::SoftmaxTopK { norm: true }, false), (Routing::TopKSoftmax, true)].into_iter().enumerate() {
            let seed = 60 + 10 * n as u64;
            let w = random::normal::<f32>(&[e, d][..], 0.0, 0.5, &random::key(seed).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let (q, s, b) = quant::quantize(&w, QuantSpec::affine(64, 4)).unwrap();
            let bias = with_bias.then(|| random::normal::<f32>(&[e][..], 0.0, 0.5, &random::key(seed + 1).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap());
            let gate = Linear::Quantized { weight: q, scales: s, biases: b, bias, spec: QuantSpec::affine(64, 4), few_rows_kernel: false };
            let x = random::normal::<f32>(&[1, 1, d][..], 0.0, 1.0, &random::key(seed + 2).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let fused = glu.decode_gated(&x, &gate, k, routing).unwrap();
            if !cuda::moe::enabled() {
                assert!(fused.is_none(), "the fused CUDA router ran without CUDA");
                continue;
            }
            let fused = fused.expect("the fused router applies to a 4-bit router");
            let logits = gate.forward(&x).unwrap();
            let want = glu.decode_routed(&x, &logits, None, k, routing).unwrap().expect("the routed path applies");
            let Linear::Quantized { weight, scales, biases: Some(biases), bias, .. } = &gate else { unreachable!() };
            let q4 = Q4 { weight, scales, biases, bias: bias.as_ref() };
            let (i1, s1) = cuda::moe::route_q4(&x.reshape(&[d]).unwrap(), q4, 64, k, routing).unwrap();
            let (i2, s2) = cuda::moe::route(&logits.reshape(&[e]).unwrap(), None, k, routing).unwrap();
            assert_eq!(i1.as_slice::<u32>(), i2.as_slice::<u32>(), "the fused router chose other experts (case {n})");
            let ds = s1.as_dtype(Dtype::Float32).unwrap().subtract(s2.as_dtype(Dtype::Float32).unwrap()).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            let dy = fused.as_dtype(Dtype::Float32).unwrap().subtract(want.as_dtype(Dtype::Float32).unwrap()).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
            println!("fused q4 router case {n}: experts equal, scores max |diff| {ds}, output max |diff| {dy}");
            assert!(ds <= 0.01 && dy <= 0.02, "fused router: scores differ by {ds}, output by {dy} (case {n})");
        }
    }
}

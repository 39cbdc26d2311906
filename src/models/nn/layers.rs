//! The layers every architecture is built from: linear (dense or MLX affine-
//! quantized), embedding, RMSNorm, the fused gated activations, and small helpers
//! for token arrays and the last position.

use crate::models::nn::quant::{self, QuantSpec};
use crate::models::forward::{Head, Output};
use crate::models::Weights;
use crate::error::Result;
use mlx_rs::{ops, Array, Dtype};

/// A linear layer, dense or MLX-quantized (any `QuantMode`). `y = x W^T + b`.
pub enum Linear {
    Dense {
        weight: Array,
        bias: Option<Array>,
    },
    Quantized {
        weight: Array,
        scales: Array,
        /// Per-group biases of affine layers (none in the float modes).
        biases: Option<Array>,
        bias: Option<Array>,
        spec: QuantSpec,
        /// Whether a few rows may take the batched 4-bit kernel
        /// (`kernels::quantized_matmul_rows`): the family's choice, from a
        /// side-by-side run (`Weights::few_rows_kernel`).
        few_rows_kernel: bool,
    },
}

/// MLX's quantized matmul, with a batch's rows spread over leading axes
/// ([B, 1, in]) folded into one [B, in] matrix where that takes MLX's
/// shared-read kernel (`kernels::fold_rows`: 8 rows or more, on CUDA).
fn quantized_matmul_folded(x: &Array, w: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<Array> {
    let shape = x.shape();
    let rows: i32 = shape[..shape.len().saturating_sub(1)].iter().product();
    let spread = shape.len() >= 3 && shape[shape.len() - 2] < rows;
    if !(spread && rows >= 8 && crate::models::kernels::fold_rows()) {
        return quant::quantized_matmul(x, w, scales, biases, spec);
    }
    let in_f = shape[shape.len() - 1];
    let y = quant::quantized_matmul(&x.reshape(&[rows, in_f])?, w, scales, biases, spec)?;
    let mut out_shape = shape[..shape.len() - 1].to_vec();
    out_shape.push(y.shape()[1]);
    Ok(y.reshape(&out_shape)?)
}

/// `y + bias` where there is a bias (the second half of `Linear::forward_parts`).
pub fn with_bias(y: Array, bias: Option<&Array>) -> Result<Array> {
    Ok(match bias {
        Some(b) => y.add(b)?,
        None => y,
    })
}

impl Linear {
    /// Several layers over the same input as one (their output rows stacked):
    /// attention's q, k and v projections as one matmul, one launch instead of
    /// three per layer and token. None when they differ in kind, quantization
    /// or bias, or there are fewer than two.
    pub fn stack_rows(parts: &[Linear]) -> Result<Option<Linear>> {
        if parts.len() < 2 {
            return Ok(None);
        }
        let cat = |xs: Vec<&Array>| -> Result<Array> {
            let a = ops::concatenate(&xs, 0)?;
            // Evaluated now so the parts' memory goes and no graph is kept.
            a.eval()?;
            Ok(a)
        };
        let biases: Option<Vec<&Array>> = parts.iter().map(|l| l.bias()).collect();
        if biases.is_none() && parts.iter().any(|l| l.bias().is_some()) {
            return Ok(None);
        }
        let bias = biases.map(cat).transpose()?;
        match &parts[0] {
            Linear::Dense { .. } => {
                let ws: Option<Vec<&Array>> = parts.iter().map(|l| if let Linear::Dense { weight, .. } = l { Some(weight) } else { None }).collect();
                match ws {
                    Some(ws) => Ok(Some(Linear::Dense { weight: cat(ws)?, bias })),
                    None => Ok(None),
                }
            }
            Linear::Quantized { spec, biases: b0, few_rows_kernel, .. } => {
                let mut ws = Vec::new();
                let mut ss = Vec::new();
                let mut bs = Vec::new();
                for l in parts {
                    match l {
                        Linear::Quantized { weight, scales, biases, spec: s, .. } if s == spec && biases.is_some() == b0.is_some() => {
                            ws.push(weight);
                            ss.push(scales);
                            bs.extend(biases.as_ref());
                        }
                        _ => return Ok(None),
                    }
                }
                let biases = if bs.is_empty() { None } else { Some(cat(bs)?) };
                Ok(Some(Linear::Quantized { weight: cat(ws)?, scales: cat(ss)?, biases, bias, spec: *spec, few_rows_kernel: *few_rows_kernel }))
            }
        }
    }

    fn bias(&self) -> Option<&Array> {
        match self {
            Linear::Dense { bias, .. } | Linear::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// Takes `{prefix}.weight` (+ quantization triplet, + optional bias) from `w`,
    /// checking the logical shape [out, in].
    pub fn load(w: &mut Weights, prefix: &str, out_f: i32, in_f: i32, bias: bool) -> Result<Self> {
        let bias = if bias {
            Some(w.take_shaped(&format!("{prefix}.bias"), &[out_f])?)
        } else {
            None
        };
        if let Some(spec) = w.quant_spec(prefix, in_f)? {
            let per_word = 32 / spec.bits;
            let weight = w.take_shaped(&format!("{prefix}.weight"), &[out_f, in_f / per_word])?;
            let groups = in_f / spec.group_size;
            let scales = w.take_shaped(&format!("{prefix}.scales"), &[out_f, groups])?;
            let biases = if spec.mode.has_biases() {
                Some(w.take_shaped(&format!("{prefix}.biases"), &[out_f, groups])?)
            } else {
                None
            };
            Ok(Linear::Quantized {
                weight,
                scales,
                biases,
                bias,
                spec,
                few_rows_kernel: w.few_rows_kernel(),
            })
        } else {
            let weight = w.take_shaped(&format!("{prefix}.weight"), &[out_f, in_f])?;
            Ok(Linear::Dense { weight, bias })
        }
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        let (y, bias) = self.forward_parts(x)?;
        with_bias(y, bias)
    }

    /// The product without the bias, and the bias: for fused kernels that
    /// add it themselves (one add and one broadcast fewer per call).
    pub fn forward_parts(&self, x: &Array) -> Result<(Array, Option<&Array>)> {
        let (y, bias) = match self {
            Linear::Dense { weight, bias } => (x.matmul(weight.t())?, bias),
            Linear::Quantized {
                weight,
                scales,
                biases,
                bias,
                spec,
                few_rows_kernel,
            } => {
                let kernel = match few_rows_kernel {
                    true => crate::models::kernels::quantized_matmul_rows(x, weight, scales, biases.as_ref(), *spec)?,
                    false => None,
                };
                match kernel {
                    Some(y) => (y, bias),
                    None => (quantized_matmul_folded(x, weight, scales, biases.as_ref(), *spec)?, bias),
                }
            }
        };
        Ok((y, bias.as_ref()))
    }

    /// Rows of the (dequantized) weight, for embedding lookups of tied heads.
    pub fn rows(&self, ids: &Array) -> Result<Array> {
        match self {
            Linear::Dense { weight, .. } => Ok(weight.take_axis(ids, 0)?),
            Linear::Quantized {
                weight,
                scales,
                biases,
                spec,
                ..
            } => {
                let biases = biases.as_ref().map(|b| b.take_axis(ids, 0)).transpose()?;
                quant::dequantize(&weight.take_axis(ids, 0)?, &scales.take_axis(ids, 0)?, biases.as_ref(), *spec)
            }
        }
    }
}

/// Token embedding table; doubles as the output head when weights are tied.
pub struct Embedding(pub Linear);

impl Embedding {
    pub fn load(w: &mut Weights, prefix: &str, vocab: i32, dim: i32) -> Result<Self> {
        Ok(Embedding(Linear::load(w, prefix, vocab, dim, false)?))
    }
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        self.0.rows(ids)
    }
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        self.0.forward(x)
    }
}

pub struct RmsNorm {
    pub weight: Array,
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(w: &mut Weights, name: &str, dim: i32, eps: f32) -> Result<Self> {
        Ok(RmsNorm {
            weight: w.take_shaped(&format!("{name}.weight"), &[dim])?,
            eps,
        })
    }
    /// Gemma's RMSNorm scales by (1 + w); adding the 1 once at load lets the
    /// fused rms_norm kernel do the rest.
    pub fn load_plus_one(w: &mut Weights, name: &str, dim: i32, eps: f32) -> Result<Self> {
        let n = Self::load(w, name, dim, eps)?;
        Ok(RmsNorm { weight: n.weight.add(mlx_rs::array!(1.0f32).as_dtype(n.weight.dtype())?)?, eps })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(mlx_rs::fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }

    /// A pre-norm layer's norm of the residual `h`, after adding `pending`
    /// (the previous sublayer's output, if not added yet) to it in place:
    /// for a decode step's row on CUDA the add and the norm are one kernel
    /// (`kernels::cuda::decode::add_rms_norm`).
    pub fn after_residual(&self, h: &mut Array, pending: Option<Array>) -> Result<Array> {
        match pending {
            Some(d) => self.after_biased_residual(h, &d, None),
            None => self.forward(h),
        }
    }

    /// `after_residual` for a branch whose last projection's `bias` is still
    /// to be added (`Linear::forward_parts`): the kernel adds it too.
    pub fn after_biased_residual(&self, h: &mut Array, d: &Array, bias: Option<&Array>) -> Result<Array> {
        let (s, n) = match crate::models::kernels::cuda::decode::add_rms_norm(h, d, bias, &self.weight, self.eps)? {
            Some(both) => both,
            None => {
                let s = h.add(with_bias(d.clone(), bias)?)?;
                let n = self.forward(&s)?;
                (s, n)
            }
        };
        *h = s;
        Ok(n)
    }
}

type Fused = Box<dyn for<'a> FnMut((&'a Array, &'a Array)) -> std::result::Result<Array, mlx_rs::error::Exception>>;
type FusedSlot = std::thread::LocalKey<std::cell::RefCell<Option<Fused>>>;

/// Runs `op(a, b)` as one kernel compiled once per thread and kept in `slot`.
///
/// mlx-rs's `nn::silu` / `nn::gelu_approximate` build a new compiled function on
/// every call (a fresh compile id, traced and then erased), which costs a graph
/// trace per layer per token. Keeping one compiled closure alive lets MLX reuse
/// its cache.
fn fused(
    slot: &'static FusedSlot,
    op: fn(&Array, &Array) -> std::result::Result<Array, mlx_rs::error::Exception>,
    a: &Array,
    b: &Array,
) -> Result<Array> {
    slot.with(|cell| {
        let mut slot = cell.borrow_mut();
        let f = slot.get_or_insert_with(|| {
            Box::new(mlx_rs::transforms::compile::compile(move |(x, y): (&Array, &Array)| op(x, y), true))
        });
        Ok(f((a, b))?)
    })
}

/// `silu(gate) * up` (llama-like MLPs).
pub fn swiglu(gate: &Array, up: &Array) -> Result<Array> {
    thread_local! {
        static SLOT: std::cell::RefCell<Option<Fused>> = const { std::cell::RefCell::new(None) };
    }
    fused(&SLOT, |g, u| g.multiply(ops::sigmoid(g)?)?.multiply(u), gate, up)
}

/// gpt-oss's clamped SwiGLU (mlx-lm's `swiglu_oai`, alpha 1.702, limit 7):
/// the gate clipped from above, the linear part clipped both ways and shifted
/// by one: `(clip(up) + 1) * g * sigmoid(1.702 g)` with `g = min(gate, 7)`.
pub fn swiglu_oai(gate: &Array, up: &Array) -> Result<Array> {
    thread_local! {
        static SLOT: std::cell::RefCell<Option<Fused>> = const { std::cell::RefCell::new(None) };
    }
    fused(
        &SLOT,
        |g, u| {
            // Constants in the input's dtype, as Python's weakly typed scalars.
            let c = |v: f32| mlx_rs::array!(v).as_dtype(g.dtype());
            let g = ops::minimum(g, c(SWIGLU_OAI_LIMIT)?)?;
            let u = ops::clip(u, (c(-SWIGLU_OAI_LIMIT)?, c(SWIGLU_OAI_LIMIT)?))?;
            let glu = g.multiply(ops::sigmoid(g.multiply(c(SWIGLU_OAI_ALPHA)?)?)?)?;
            u.add(c(1.0)?)?.multiply(glu)
        },
        gate,
        up,
    )
}

/// gpt-oss's activation constants (its config's `swiglu_limit` is 7.0).
pub const SWIGLU_OAI_ALPHA: f32 = 1.702;
pub const SWIGLU_OAI_LIMIT: f32 = 7.0;

/// `gelu_tanh(gate) * up` (Gemma's MLP): GELU with the tanh approximation.
pub fn gelu_tanh_mul(gate: &Array, up: &Array) -> Result<Array> {
    thread_local! {
        static SLOT: std::cell::RefCell<Option<Fused>> = const { std::cell::RefCell::new(None) };
    }
    fused(
        &SLOT,
        |x, u| {
            let c = (2.0f32 / std::f32::consts::PI).sqrt();
            let inner = x.add(x.power(mlx_rs::array!(3.0f32))?.multiply(mlx_rs::array!(0.044715f32))?)?;
            let t = ops::tanh(inner.multiply(mlx_rs::array!(c))?)?;
            x.multiply(mlx_rs::array!(0.5f32))?.multiply(t.add(mlx_rs::array!(1.0f32))?)?.multiply(u)
        },
        gate,
        up,
    )
}

/// Keeps only the last position of a [B, L, D] hidden state.
pub fn last_position(h: &Array) -> Result<Array> {
    use mlx_rs::ops::indexing::IndexOp;
    let l = h.shape()[1];
    Ok(h.index((.., (l - 1)..l, ..)))
}

/// int32 token ids [1, L] from a host slice.
pub fn token_array(ids: &[u32]) -> Array {
    let v: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    Array::from_slice(&v, &[1, v.len() as i32])
}

pub fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::Float32 => "float32",
        Dtype::Float16 => "float16",
        Dtype::Bfloat16 => "bfloat16",
        _ => "other",
    }
}


/// The output of a decoder: the positions `head` reads, normed, then through
/// the output head (the tied embeddings where there is none); for
/// `Head::Hidden` the normed states themselves.
pub fn output(h: Array, norm: &RmsNorm, lm_head: Option<&Linear>, embed: &Embedding, head: Head) -> Result<Output> {
    let h = norm.forward(&head.positions(&h)?)?;
    if head == Head::Hidden {
        return Ok(Output::Hidden(h));
    }
    let logits = match lm_head {
        Some(lm) => lm.forward(&h)?,
        None => embed.as_linear(&h)?,
    };
    Ok(Output::Logits(head.shape_logits(logits)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::{random, Dtype};

    /// The compiled activations must give what their ops give uncompiled, on
    /// every call: the first call traces, later ones run the fused kernel.
    #[test]
    fn compiled_activations_match_their_ops_on_every_call() {
        let eager_oai = |g: &Array, u: &Array| -> Array {
            let c = |v: f32| mlx_rs::array!(v).as_dtype(g.dtype()).unwrap();
            let g = ops::minimum(g, c(SWIGLU_OAI_LIMIT)).unwrap();
            let u = ops::clip(u, (c(-SWIGLU_OAI_LIMIT), c(SWIGLU_OAI_LIMIT))).unwrap();
            let glu = g.multiply(ops::sigmoid(g.multiply(c(SWIGLU_OAI_ALPHA)).unwrap()).unwrap()).unwrap();
            u.add(c(1.0)).unwrap().multiply(glu).unwrap()
        };
        let eager_silu = |g: &Array, u: &Array| g.multiply(ops::sigmoid(g).unwrap()).unwrap().multiply(u).unwrap();
        for call in 0..3u64 {
            let g = random::normal::<f32>(&[80, 1, 128][..], 0.0, 4.0, &random::key(10 + call).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            let u = random::normal::<f32>(&[80, 1, 128][..], 0.0, 4.0, &random::key(20 + call).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
            for (name, got, want) in [("swiglu_oai", swiglu_oai(&g, &u).unwrap(), eager_oai(&g, &u)), ("swiglu", swiglu(&g, &u).unwrap(), eager_silu(&g, &u))] {
                let (got, want) = (got.as_dtype(Dtype::Float32).unwrap(), want.as_dtype(Dtype::Float32).unwrap());
                let scale = want.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                let diff = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
                eprintln!("{name}, call {call}: max |diff| {diff:e} for outputs up to {scale}");
                assert!(diff <= 0.01 * scale, "{name} call {call}: compiled differs from its ops by {diff} (outputs up to {scale})");
            }
        }
    }

    /// A batch's rows through a 4-bit Linear give each row what it gets
    /// alone, whichever path the rows take: the family's tensor-core kernel
    /// (2-7 rows on CUDA), rows folded into one matrix (8 or more on CUDA) or
    /// MLX's per-row path (elsewhere, and for a family without the kernel).
    #[test]
    fn batched_rows_through_a_quantized_linear_match_each_row_alone() {
        let (in_f, out_f) = (4096, 4096);
        let wf = random::normal::<f32>(&[out_f, in_f][..], 0.0, 0.02, &random::key(3).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
        let spec = QuantSpec::affine(64, 4);
        let (weight, scales, biases) = quant::quantize(&wf, spec).unwrap();
        for few_rows_kernel in [true, false] {
            let lin = Linear::Quantized { weight: weight.clone(), scales: scales.clone(), biases: biases.clone(), bias: None, spec, few_rows_kernel };
            for rows in [2, 4, 8, 9] {
                let x = random::normal::<f32>(&[rows, 1, in_f][..], 0.0, 1.0, &random::key(40 + rows as u64).unwrap()).unwrap().as_dtype(Dtype::Bfloat16).unwrap();
                let got = lin.forward(&x).unwrap();
                assert_eq!(got.shape(), &[rows, 1, out_f]);
                use mlx_rs::ops::indexing::IndexOp;
                let alone: Vec<Array> = (0..rows).map(|r| quant::quantized_matmul(&x.index(r..r + 1), &weight, &scales, biases.as_ref(), spec).unwrap()).collect();
                let want = ops::concatenate(&alone, 0).unwrap().as_dtype(Dtype::Float32).unwrap();
                let got = got.as_dtype(Dtype::Float32).unwrap();
                let top = want.abs().unwrap().max(None).unwrap().item_exact::<f32>();
                let d = got.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
                eprintln!("{rows} rows (family kernel {few_rows_kernel}): max |diff| {d} of {top}");
                // A few bf16 roundings where a kernel sums in another order.
                assert!(d <= top * 0.02 + 1e-3, "{rows} rows: {d} off the rows alone (up to {top})");
            }
        }
    }
}

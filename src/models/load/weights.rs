//! A strict weight store: every tensor an architecture expects must be present
//! with the right shape, and nothing may be left over once the model is built
//! (a leftover usually means a mismatched architecture or config).

use crate::models::nn::quant::{self, QuantMode, QuantSpec};
use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype};
use std::collections::{BTreeMap, HashMap};

/// config.json's `quantization` section: defaults plus per-layer overrides.
/// GGUF files give a group size (32) but bits vary per tensor, so `bits` may be None
/// and is then read off the packed shapes.
#[derive(Debug, Clone, Default)]
pub struct QuantConfig {
    pub group_size: Option<i32>,
    pub bits: Option<i32>,
    /// The default mode (`quantization.mode`; affine when absent).
    pub mode: Option<QuantMode>,
    /// Keyed by layer prefix; `None` means "this layer is not quantized".
    pub overrides: BTreeMap<String, Option<QuantSpec>>,
}

impl QuantConfig {
    pub fn from_config(config: &serde_json::Value) -> Result<Self> {
        let q = if config["quantization"].is_object() {
            &config["quantization"]
        } else {
            &config["quantization_config"]
        };
        let Some(obj) = q.as_object() else {
            return Ok(QuantConfig::default());
        };
        let mode = |v: &serde_json::Value| -> Result<Option<QuantMode>> {
            match &v["mode"] {
                serde_json::Value::Null => Ok(None),
                serde_json::Value::String(m) => QuantMode::parse(m).map(Some),
                other => Err(Error::Config(format!("quantization mode {other} is not a name"))),
            }
        };
        let int = |v: &serde_json::Value| v.as_i64().map(|x| x as i32);
        let mut out = QuantConfig {
            group_size: int(&q["group_size"]),
            bits: int(&q["bits"]),
            mode: mode(q)?,
            overrides: BTreeMap::new(),
        };
        for (k, v) in obj {
            match v {
                serde_json::Value::Bool(false) => {
                    out.overrides.insert(k.clone(), None);
                }
                serde_json::Value::Object(_) => {
                    let (Some(g), Some(b)) = (int(&v["group_size"]), int(&v["bits"])) else {
                        return Err(Error::Config(format!("quantization entry for {k} lacks group_size/bits")));
                    };
                    // A layer entry without a mode is affine (mlx-lm's per-layer
                    // dicts go to `to_quantized`, whose default is affine).
                    let m = mode(v)?.unwrap_or(QuantMode::Affine);
                    out.overrides.insert(k.clone(), Some(QuantSpec { group_size: g, bits: b, mode: m }));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    fn for_layer(&self, prefix: &str) -> Result<(Option<i32>, Option<i32>, Option<QuantMode>)> {
        match self.overrides.get(prefix) {
            Some(Some(s)) => Ok((Some(s.group_size), Some(s.bits), Some(s.mode))),
            Some(None) => Err(Error::Config(format!("layer {prefix} is marked unquantized but has scales"))),
            None => Ok((self.group_size, self.bits, self.mode)),
        }
    }
}

pub struct Weights {
    tensors: HashMap<String, Array>,
    quant: QuantConfig,
    /// Whether the family's quantized layers may take the batched 4-bit
    /// kernel for a few rows (the registry sets it per architecture).
    few_rows_kernel: bool,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Array>, quant: QuantConfig) -> Self {
        Weights { tensors, quant, few_rows_kernel: true }
    }

    pub fn few_rows_kernel(&self) -> bool {
        self.few_rows_kernel
    }

    /// The family's choice of the batched 4-bit kernel (`Linear::load` reads it).
    pub fn set_few_rows_kernel(&mut self, on: bool) {
        self.few_rows_kernel = on;
    }

    pub fn tensors(&self) -> &HashMap<String, Array> {
        &self.tensors
    }

    pub fn into_parts(self) -> (HashMap<String, Array>, QuantConfig) {
        (self.tensors, self.quant)
    }

    /// A multimodal checkpoint's language model under a decoder's names,
    /// `{root}model.*` and `{root}lm_head`: from `language_model.model.*` (MLX),
    /// `model.language_model.*` (Hugging Face) or plain names alike; the vision
    /// and audio towers dropped. Per-layer quantization entries follow the
    /// names. (Qwen3.5 keeps MLX's `language_model.` root, so its errors name
    /// tensors as mlx-community folders do; Gemma 4 and Mistral 3 use none.)
    pub fn text_model_only(mut self, root: &str) -> Weights {
        const TOWERS: [&str; 7] =
            ["vision_tower", "multi_modal_projector", "audio_tower", "embed_audio", "embed_vision", "vision_embedder", "visual."];
        let name = |k: &str| -> String {
            let plain = match k.strip_prefix("model.language_model.") {
                Some(rest) => format!("model.{rest}"),
                None => k.strip_prefix("language_model.").unwrap_or(k).to_string(),
            };
            format!("{root}{plain}")
        };
        let tensors = self.tensors.into_iter().filter(|(k, _)| !TOWERS.iter().any(|t| k.contains(t))).map(|(k, v)| (name(&k), v)).collect();
        self.quant.overrides = std::mem::take(&mut self.quant.overrides).into_iter().map(|(k, v)| (name(&k), v)).collect();
        Weights::new(tensors, self.quant)
    }

    pub fn insert_all(&mut self, items: impl IntoIterator<Item = (String, Array)>) {
        self.tensors.extend(items);
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors
            .remove(name)
            .ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    pub fn take_shaped(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let a = self.take(name)?;
        if a.shape() != shape {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: a.shape().to_vec(),
            });
        }
        Ok(a)
    }

    /// The quantization of layer `prefix` with `in_f` inputs, or None if dense.
    /// Bits are derived from the packed shapes and the mode from the scales'
    /// type (uint8 scales are microscaling floats, as mlx-lm infers them), then
    /// both are checked against the config.
    pub fn quant_spec(&self, prefix: &str, in_f: i32) -> Result<Option<QuantSpec>> {
        let scales_key = format!("{prefix}.scales");
        let Some(scales) = self.tensors.get(&scales_key) else {
            return Ok(None);
        };
        let weight = self
            .tensors
            .get(&format!("{prefix}.weight"))
            .ok_or_else(|| Error::MissingTensor(format!("{prefix}.weight")))?;
        let (cfg_group, cfg_bits, cfg_mode) = self.quant.for_layer(prefix)?;
        let groups = *scales.shape().last().unwrap_or(&0);
        // Matrices, or stacks of expert matrices [experts, out, in/per-word].
        if groups <= 0 || !(2..=3).contains(&weight.ndim()) || in_f <= 0 {
            return Err(Error::Config(format!("bad quantized layout for {prefix}")));
        }
        let group_size = cfg_group.unwrap_or(in_f / groups);
        if group_size <= 0 || groups * group_size != in_f {
            return Err(Error::ShapeMismatch {
                name: scales_key,
                expected: vec![weight.shape()[0], in_f / group_size.max(1)],
                actual: scales.shape().to_vec(),
            });
        }
        let words = *weight.shape().last().unwrap_or(&0);
        let bits = words * 32 / in_f;
        if bits * in_f != words * 32 || ![2, 3, 4, 5, 6, 8].contains(&bits) {
            return Err(Error::Config(format!(
                "cannot infer quantization bits for {prefix}: {words} packed words for {in_f} inputs"
            )));
        }
        if let Some(c) = cfg_bits {
            if c != bits {
                return Err(Error::Config(format!(
                    "{prefix}: config says {c} bits but the weights are {bits}-bit"
                )));
            }
        }
        let mode = if scales.dtype() == Dtype::Uint8 { QuantMode::Mxfp4 } else { QuantMode::Affine };
        if let Some(c) = cfg_mode.filter(|c| *c != mode) {
            return Err(Error::Config(format!(
                "{prefix}: config says {} quantization but the scales are stored as {} ({:?})",
                c.name(),
                mode.name(),
                scales.dtype()
            )));
        }
        Ok(Some(QuantSpec { group_size, bits, mode }.check(prefix)?))
    }

    /// Input features of quantized layer `prefix`, from its scales and group size.
    fn quant_in_features(&self, prefix: &str) -> Result<i32> {
        let scales = &self.tensors[&format!("{prefix}.scales")];
        let (group, _, _) = self.quant.for_layer(prefix)?;
        let group = group.ok_or_else(|| Error::Config(format!("no quantization group size for {prefix}")))?;
        Ok(scales.shape().last().copied().unwrap_or(0) * group)
    }

    fn quantized_prefixes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .tensors
            .keys()
            .filter_map(|k| k.strip_suffix(".scales").map(String::from))
            .collect();
        v.sort();
        v
    }

    /// Replaces every quantized triplet by its dense weight in `dtype`. On CPUs,
    /// MLX's quantized matmul is a scalar loop; dense f32 with BLAS is ~2x faster.
    /// Reports `(layers done, layers)` through `on`.
    pub fn dequantize_all(&mut self, dtype: Dtype, on: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let prefixes = self.quantized_prefixes();
        let n = prefixes.len() as u64;
        for (i, prefix) in prefixes.into_iter().enumerate() {
            on(i as u64, n);
            let in_f = self.quant_in_features(&prefix)?;
            let spec = self
                .quant_spec(&prefix, in_f)?
                .expect("prefix has scales");
            let w = self.take(&format!("{prefix}.weight"))?;
            let dense = if spec.mode.has_biases() {
                let s = self.take(&format!("{prefix}.scales"))?.as_dtype(dtype)?;
                let b = self.take(&format!("{prefix}.biases"))?.as_dtype(dtype)?;
                quant::dequantize(&w, &s, Some(&b), spec)?
            } else {
                let s = self.take(&format!("{prefix}.scales"))?;
                quant::dequantize(&w, &s, None, spec)?.as_dtype(dtype)?
            };
            dense.eval()?;
            self.tensors.insert(format!("{prefix}.weight"), dense);
        }
        self.quant = QuantConfig::default();
        Ok(())
    }

    /// Casts every floating-point tensor except quantization scales/biases.
    pub fn cast_floats(&mut self, dtype: Dtype) -> Result<()> {
        for (k, v) in self.tensors.iter_mut() {
            let is_float = matches!(v.dtype(), Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16);
            let quant_param = k.ends_with(".scales") || k.ends_with(".biases");
            if is_float && v.dtype() != dtype && !quant_param {
                *v = v.as_dtype(dtype)?;
            }
        }
        Ok(())
    }

    /// Logical parameter count (quantized layers counted unpacked).
    pub fn param_count(&self) -> Result<u64> {
        let mut n = 0u64;
        for (k, v) in &self.tensors {
            if k.ends_with(".scales") || k.ends_with(".biases") {
                continue;
            }
            if let Some(prefix) = k.strip_suffix(".weight") {
                if self.tensors.contains_key(&format!("{prefix}.scales")) {
                    let s = v.shape();
                    let rows: u64 = s[..s.len().saturating_sub(1)].iter().map(|&d| d.max(0) as u64).product();
                    n += rows * self.quant_in_features(prefix)?.max(0) as u64;
                    continue;
                }
            }
            n += v.size() as u64;
        }
        Ok(n)
    }

    /// Every quantized layer with its parameters.
    pub fn quant_specs(&self) -> Result<Vec<(String, QuantSpec)>> {
        let mut out = Vec::new();
        for p in self.quantized_prefixes() {
            let in_f = self.quant_in_features(&p)?;
            if let Some(s) = self.quant_spec(&p, in_f)? {
                out.push((p, s));
            }
        }
        Ok(out)
    }

    /// A short description such as "4-bit (group 32)", "mixed 4/8-bit (group 32/64)"
    /// or "MXFP4 + 8-bit (group 32/64)" (gpt-oss: MXFP4 experts, affine elsewhere).
    pub fn quantization_label(&self) -> String {
        let mut bits = std::collections::BTreeSet::new();
        let mut groups = std::collections::BTreeSet::new();
        let mut mxfp4 = false;
        for (_, s) in self.quant_specs().unwrap_or_default() {
            match s.mode {
                QuantMode::Mxfp4 => mxfp4 = true,
                QuantMode::Affine => {
                    bits.insert(s.bits);
                }
            }
            groups.insert(s.group_size);
        }
        let g: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let b: Vec<String> = bits.iter().map(|b| b.to_string()).collect();
        let affine = match bits.len() {
            0 => String::new(),
            1 => format!("{}-bit", b[0]),
            _ => format!("mixed {}-bit", b.join("/")),
        };
        let kind = match (mxfp4, affine.is_empty()) {
            (false, true) => return "none".into(),
            (false, false) => affine,
            (true, true) => "MXFP4".into(),
            (true, false) => format!("MXFP4 + {affine}"),
        };
        format!("{kind} (group {})", g.join("/"))
    }

    /// Evaluates all tensors so loading cost is paid now, not on the first token.
    /// Reports `(bytes evaluated, bytes)` through `on`.
    pub fn eval_all(&self, on: &mut dyn FnMut(u64, u64)) -> Result<()> {
        let all: Vec<&Array> = self.tensors.values().collect();
        let total = self.nbytes() as u64;
        let mut done = 0;
        for chunk in all.chunks(64) {
            mlx_rs::transforms::eval(chunk.iter().copied())?;
            done += chunk.iter().map(|a| a.nbytes() as u64).sum::<u64>();
            on(done, total);
        }
        Ok(())
    }

    pub fn nbytes(&self) -> usize {
        self.tensors.values().map(|a| a.nbytes()).sum()
    }

    /// Fails if anything was not consumed by the architecture.
    pub fn finish(self, ignorable: &[&str]) -> Result<()> {
        let mut left: Vec<_> = self
            .tensors
            .into_keys()
            .filter(|k| !ignorable.iter().any(|s| k.contains(s)))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort();
        let n = left.len();
        left.truncate(8);
        Err(Error::UnexpectedTensors(format!(
            "{}{}",
            left.join(", "),
            if n > 8 { format!(" and {} more", n - 8) } else { String::new() }
        )))
    }
}

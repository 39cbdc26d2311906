//! Phi-3 / Phi-3.5: the llama decoder with fused projections (`qkv_proj`,
//! `gate_up_proj`, split into their parts at load; splitting rows is exact for
//! quantized weights too, since groups run along inputs) and LongRoPE.

use crate::models::arch::llama::{Config, Model, Variant};
use crate::models::nn::rope::{Rope, RopeScaling};
use crate::models::{cfg_err, Weights};
use crate::error::Result;
use mlx_rs::ops::indexing::IndexOp;
use serde_json::Value;

/// `{from}.{weight,scales,biases}` split by output rows into `to` parts of the given sizes.
fn split_rows(w: &mut Weights, from: &str, to: &[(&str, i32)]) -> Result<()> {
    let mut out = Vec::new();
    for suffix in ["weight", "scales", "biases"] {
        let name = format!("{from}.{suffix}");
        if !w.contains(&name) {
            continue;
        }
        let a = w.take(&name)?;
        let total: i32 = to.iter().map(|(_, n)| n).sum();
        if a.shape()[0] != total {
            return Err(crate::error::Error::ShapeMismatch {
                name,
                expected: vec![total, a.shape()[1]],
                actual: a.shape().to_vec(),
            });
        }
        let mut at = 0;
        for (part, n) in to {
            out.push((format!("{part}.{suffix}"), a.index((at..at + n, ..))));
            at += n;
        }
    }
    w.insert_all(out);
    Ok(())
}

pub fn load(config: &Value, mut w: Weights) -> Result<Model> {
    let mut plain = config.clone();
    let scaling = plain.as_object_mut().and_then(|o| o.remove("rope_scaling")).filter(|v| !v.is_null());
    let c: Config = serde_json::from_value(plain).map_err(|e| cfg_err(format!("config.json: {e}")))?;
    if config["partial_rotary_factor"].as_f64().is_some_and(|f| f != 1.0) {
        return Err(cfg_err("Phi-3 with partial_rotary_factor other than 1 is not supported"));
    }
    c.validate()?;
    let (h, hd, nh, nkv, inter) = (c.hidden_size, c.head_dim(), c.num_attention_heads, c.kv_heads(), c.intermediate_size);
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        split_rows(
            &mut w,
            &format!("{p}.self_attn.qkv_proj"),
            &[(&format!("{p}.self_attn.q_proj"), nh * hd), (&format!("{p}.self_attn.k_proj"), nkv * hd), (&format!("{p}.self_attn.v_proj"), nkv * hd)],
        )?;
        split_rows(&mut w, &format!("{p}.mlp.gate_up_proj"), &[(&format!("{p}.mlp.gate_proj"), inter), (&format!("{p}.mlp.up_proj"), inter)])?;
    }
    let _ = h;
    let rope = match &scaling {
        Some(s) if matches!(s["type"].as_str().or(s["rope_type"].as_str()), Some("longrope") | Some("su")) => {
            let long: Vec<f32> = s["long_factor"]
                .as_array()
                .ok_or_else(|| cfg_err("rope_scaling lacks long_factor"))?
                .iter()
                .map(|v| v.as_f64().unwrap_or(1.0) as f32)
                .collect();
            let max_pos = config["max_position_embeddings"].as_f64().unwrap_or(131072.0);
            let orig = config["original_max_position_embeddings"].as_f64().unwrap_or(4096.0);
            let factor = max_pos / orig;
            let mscale = match s["long_mscale"].as_f64() {
                Some(m) => m,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / orig.ln()).sqrt(),
            };
            Some(Rope::long_rope(hd, c.rope_theta, &long, mscale as f32)?)
        }
        Some(s) => {
            let parsed: RopeScaling =
                serde_json::from_value(s.clone()).map_err(|e| cfg_err(format!("rope_scaling: {e}")))?;
            Some(Rope::new(hd, c.rope_theta, Some(&parsed))?)
        }
        None => None,
    };
    let mut model = Model::load_variant(c, w, Variant::default())?;
    if let Some(r) = rope {
        model.set_rope(r);
    }
    Ok(model)
}

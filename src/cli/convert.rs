//! `hearth convert` (any model Hearth reads → an mlx-community folder) and
//! `hearth synth` (random weights at a real model's shape, for benchmarks).

use anyhow::{bail, Result};
use hearth::models::load::convert::{convert_with, Quantize};
use hearth::models::load::Precision;
use hearth::models::{QuantMode, QuantSpec};
use std::path::Path;

pub fn convert(src: &Path, dst: &Path, dtype: &str, q_bits: Option<i32>, q_group_size: i32) -> Result<()> {
    let precision: Precision = dtype.parse()?;
    let q = q_bits.map(|b| Quantize::new(b, q_group_size)).transpose()?;
    let r = convert_with(src, dst, precision, q)?;
    eprintln!("wrote {} ({} tensors, {}, {})", dst.display(), r.tensors, hearth::units::bytes(r.bytes), r.compute);
    Ok(())
}

pub fn synth(preset: &str, dst: &Path, bits: i32, group_size: i32, mode: &str, dtype: &str) -> Result<()> {
    let dtype = match dtype {
        "bf16" | "bfloat16" => mlx_rs::Dtype::Bfloat16,
        "f16" | "float16" => mlx_rs::Dtype::Float16,
        "f32" | "float32" => mlx_rs::Dtype::Float32,
        other => bail!("unknown dtype '{other}' (bf16, f16, f32)"),
    };
    let mode = QuantMode::parse(mode)?;
    let quant = if bits > 0 {
        Some(QuantSpec { group_size, bits, mode }.check("--bits/--group-size/--mode")?)
    } else {
        None
    };
    let bytes = hearth::synth::write(preset, dst, quant, dtype)?;
    eprintln!("wrote {} ({} of weights)", dst.display(), hearth::units::bytes(bytes));
    Ok(())
}

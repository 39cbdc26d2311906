//! Quantized weights: the layout of one quantized layer (`QuantSpec`: group
//! size, bits, mode) and the MLX operations on it, for every mode Hearth reads.
//!
//! MLX packs weights in several modes: `affine` (scale and bias per group,
//! what mlx-community's "4bit"/"8bit" folders hold) and the microscaling float
//! modes, of which gpt-oss ships `mxfp4` (4-bit E2M1 values, one power-of-two
//! E8M0 scale per 32, no biases). mlx-rs 0.33's wrappers always pass "affine",
//! so these call mlx-sys directly, as mlx-rs does itself.

use crate::error::{Error, Result};
use crate::models::mlx_c::{call, ensure_error_handler};
use mlx_rs::{Array, Stream};
use std::ffi::CStr;

/// How a quantized layer's values and scales are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantMode {
    /// `w = scale * q + bias` per group; scales and biases in the model's dtype.
    Affine,
    /// OCP microscaling FP4: E2M1 values, one uint8 E8M0 scale per 32, no biases.
    Mxfp4,
}

impl QuantMode {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "affine" => Ok(QuantMode::Affine),
            "mxfp4" => Ok(QuantMode::Mxfp4),
            other => Err(Error::Config(format!(
                "quantization mode '{other}' is not supported (Hearth reads affine and mxfp4)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantMode::Affine => "affine",
            QuantMode::Mxfp4 => "mxfp4",
        }
    }

    fn c_name(self) -> &'static CStr {
        match self {
            QuantMode::Affine => c"affine",
            QuantMode::Mxfp4 => c"mxfp4",
        }
    }

    /// Affine layers carry a bias per group next to each scale.
    pub fn has_biases(self) -> bool {
        self == QuantMode::Affine
    }
}

/// Quantization parameters of one linear layer (or stack of expert layers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub group_size: i32,
    pub bits: i32,
    pub mode: QuantMode,
}

impl QuantSpec {
    pub fn affine(group_size: i32, bits: i32) -> Self {
        QuantSpec { group_size, bits, mode: QuantMode::Affine }
    }

    /// Checks that the mode allows this group size and width (MXFP4 has exactly one).
    pub fn check(self, layer: &str) -> Result<Self> {
        let ok = match self.mode {
            QuantMode::Affine => [32, 64, 128].contains(&self.group_size) && [2, 3, 4, 5, 6, 8].contains(&self.bits),
            QuantMode::Mxfp4 => self.group_size == 32 && self.bits == 4,
        };
        if ok {
            Ok(self)
        } else {
            Err(Error::Config(format!(
                "{layer}: {}-bit {} quantization with group size {} is not a layout MLX has",
                self.bits,
                self.mode.name(),
                self.group_size
            )))
        }
    }
}

fn opt_int(v: i32) -> mlx_sys::mlx_optional_int {
    mlx_sys::mlx_optional_int { value: v, has_value: true }
}

fn ptr_or_null(a: Option<&Array>) -> mlx_sys::mlx_array {
    match a {
        Some(a) => a.as_ptr(),
        None => unsafe { mlx_sys::mlx_array_new() },
    }
}

/// `x @ dequantize(w).T` (`transpose`) in the layer's mode.
pub fn quantized_matmul(x: &Array, w: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<Array> {
    quantized_matmul_t(x, w, scales, biases, spec, true)
}

/// `x @ dequantize(w).T`, or `x @ dequantize(w)` without `transpose` (a
/// quantized KV cache's values).
pub fn quantized_matmul_t(x: &Array, w: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec, transpose: bool) -> Result<Array> {
    call("quantized_matmul", |res, s| unsafe {
        mlx_sys::mlx_quantized_matmul(
            res,
            x.as_ptr(),
            w.as_ptr(),
            scales.as_ptr(),
            ptr_or_null(biases),
            transpose,
            opt_int(spec.group_size),
            opt_int(spec.bits),
            spec.mode.c_name().as_ptr(),
            s,
        )
    })
}

/// The quantized expert matmul: `x` rows against the experts in `rhs_indices`.
pub fn gather_qmm(
    x: &Array,
    w: &Array,
    scales: &Array,
    biases: Option<&Array>,
    rhs_indices: &Array,
    spec: QuantSpec,
    sorted: bool,
) -> Result<Array> {
    call("gather_qmm", |res, s| unsafe {
        mlx_sys::mlx_gather_qmm(
            res,
            x.as_ptr(),
            w.as_ptr(),
            scales.as_ptr(),
            ptr_or_null(biases),
            mlx_sys::mlx_array_new(),
            rhs_indices.as_ptr(),
            true,
            opt_int(spec.group_size),
            opt_int(spec.bits),
            spec.mode.c_name().as_ptr(),
            sorted,
            s,
        )
    })
}

/// The dense weight of a quantized layer, in MLX's default dtype for the mode
/// (the scales' dtype for affine), as mlx-lm's quantized embedding reads rows.
pub fn dequantize(w: &Array, scales: &Array, biases: Option<&Array>, spec: QuantSpec) -> Result<Array> {
    call("dequantize", |res, s| unsafe {
        mlx_sys::mlx_dequantize(
            res,
            w.as_ptr(),
            scales.as_ptr(),
            ptr_or_null(biases),
            opt_int(spec.group_size),
            opt_int(spec.bits),
            spec.mode.c_name().as_ptr(),
            mlx_sys::mlx_array_new(),
            mlx_sys::mlx_optional_dtype { value: mlx_sys::mlx_dtype__MLX_FLOAT32, has_value: false },
            s,
        )
    })
}

/// Quantizes `w` ([..., in]): packed weight, scales, and biases (affine only).
pub fn quantize(w: &Array, spec: QuantSpec) -> Result<(Array, Array, Option<Array>)> {
    ensure_error_handler();
    let parts = unsafe {
        let mut vec = mlx_sys::mlx_vector_array_new();
        let status = mlx_sys::mlx_quantize(
            &mut vec,
            w.as_ptr(),
            opt_int(spec.group_size),
            opt_int(spec.bits),
            spec.mode.c_name().as_ptr(),
            mlx_sys::mlx_array_new(),
            Stream::thread_local_or_default().as_ptr(),
        );
        let n = if status == 0 { mlx_sys::mlx_vector_array_size(vec) } else { 0 };
        let mut out = Vec::new();
        for i in 0..n {
            let mut a = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_vector_array_get(&mut a, vec, i) == 0 {
                out.push(Array::from_ptr(a));
            }
        }
        mlx_sys::mlx_vector_array_free(vec);
        if status != 0 {
            return Err(Error::Mlx(format!("MLX quantize ({} {}-bit) failed", spec.mode.name(), spec.bits)));
        }
        out
    };
    let mut it = parts.into_iter();
    match (it.next(), it.next(), it.next()) {
        (Some(q), Some(s), b) => Ok((q, s, b)),
        _ => Err(Error::Mlx("MLX quantize returned too few arrays".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlx_rs::{ops, random, Dtype};

    #[test]
    fn mxfp4_round_trip_and_matmul_agree() {
        let k = random::key(3).unwrap();
        let w = random::normal::<f32>(&[16, 64], 0.0, 1.0, &k).unwrap();
        let spec = QuantSpec { group_size: 32, bits: 4, mode: QuantMode::Mxfp4 };
        let (q, s, b) = quantize(&w, spec).unwrap();
        assert!(b.is_none(), "mxfp4 has no biases");
        assert_eq!(s.dtype(), Dtype::Uint8);
        assert_eq!(q.shape(), &[16, 8]);
        let dense = dequantize(&q, &s, None, spec).unwrap().as_dtype(Dtype::Float32).unwrap();
        // E2M1 with a shared power-of-two scale: coarse but bounded.
        let err = dense.subtract(&w).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(err < 1.0, "round trip error {err}");
        let x = random::normal::<f32>(&[3, 64], 0.0, 1.0, &k).unwrap();
        let y = quantized_matmul(&x, &q, &s, None, spec).unwrap();
        let want = x.matmul(dense.t()).unwrap();
        let diff = y.subtract(&want).unwrap().abs().unwrap().max(None).unwrap().item_exact::<f32>();
        assert!(diff < 1e-3, "quantized_matmul vs dense: {diff}");
    }

    #[test]
    fn a_bad_call_is_an_error_not_an_exit() {
        let w = ops::zeros::<u32>(&[4, 3]).unwrap();
        let s = ops::zeros::<u8>(&[4, 1]).unwrap();
        let spec = QuantSpec { group_size: 32, bits: 4, mode: QuantMode::Mxfp4 };
        let x = ops::zeros::<f32>(&[1, 7]).unwrap();
        let r = quantized_matmul(&x, &w, &s, None, spec).and_then(|y| Ok(y.eval()?));
        assert!(r.is_err());
    }

    #[test]
    fn modes_allow_only_their_layouts() {
        assert!(QuantSpec { group_size: 64, bits: 4, mode: QuantMode::Mxfp4 }.check("l").is_err());
        assert!(QuantSpec::affine(64, 4).check("l").is_ok());
        assert!(QuantMode::parse("nvfp4").unwrap_err().to_string().contains("nvfp4"));
    }
}

//! Custom CUDA kernels through MLX's custom-kernel API (mlx-c's
//! `mlx_fast_cuda_kernel_*`; mlx-rs wraps none of it). MLX compiles the
//! source once per set of template values (NVRTC) and runs it in its graph
//! like any other op. This file is the launcher; each kernel has its file
//! here, named for the layer it speeds up (`moe`, `delta`, `attention`...),
//! and that layer in `nn/` picks it or its MLX ops.

pub(crate) mod attention;
pub(crate) mod decode;
pub(crate) mod delta;
pub(crate) mod moe;
pub(crate) mod moe_grouped;
pub(crate) mod qmm_rows;

use crate::error::{Error, Result};
use mlx_rs::{Array, Dtype, Stream};
use std::ffi::CString;

/// One m16n8k16 tensor-core MMA (bf16 or f16 in, float accumulators), for
/// the kernels that run on tensor cores (`moe_grouped`, `qmm_rows`).
pub(super) const MMA_HEADER: &str = r#"
template <bool F16>
__device__ inline void mma_16816(float* c, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
  if (F16) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}
"#;

/// Whether MLX runs on a CUDA device here.
pub fn cuda_available() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        let mut cuda = false;
        unsafe {
            mlx_sys::mlx_cuda_is_available(&mut cuda);
        }
        cuda
    })
}

/// One kernel object (its source, inputs and outputs by name).
pub struct Kernel(mlx_sys::mlx_fast_cuda_kernel);

impl Drop for Kernel {
    fn drop(&mut self) {
        unsafe {
            mlx_sys::mlx_fast_cuda_kernel_free(self.0);
        }
    }
}

/// One launch: inputs in the kernel's order, compile-time values, outputs'
/// shapes and types, and the grid in threads (as MLX's custom kernels count).
pub struct Launch<'a> {
    pub inputs: &'a [&'a Array],
    pub ints: &'a [(&'a str, i32)],
    pub bools: &'a [(&'a str, bool)],
    pub types: &'a [(&'a str, Dtype)],
    pub outputs: &'a [(&'a [i32], Dtype)],
    pub grid: (i32, i32, i32),
    pub block: (i32, i32, i32),
}

pub(super) fn strings(names: &[&str]) -> Result<(mlx_sys::mlx_vector_string, Vec<CString>)> {
    let owned: Vec<CString> =
        names.iter().map(|n| CString::new(*n)).collect::<std::result::Result<_, _>>().map_err(|e| Error::Mlx(e.to_string()))?;
    unsafe {
        let v = mlx_sys::mlx_vector_string_new();
        for c in &owned {
            mlx_sys::mlx_vector_string_append_value(v, c.as_ptr());
        }
        Ok((v, owned))
    }
}

pub(super) fn mlx_dtype(d: Dtype) -> mlx_sys::mlx_dtype {
    match d {
        Dtype::Bfloat16 => mlx_sys::mlx_dtype__MLX_BFLOAT16,
        Dtype::Float16 => mlx_sys::mlx_dtype__MLX_FLOAT16,
        Dtype::Int32 => mlx_sys::mlx_dtype__MLX_INT32,
        Dtype::Uint32 => mlx_sys::mlx_dtype__MLX_UINT32,
        _ => mlx_sys::mlx_dtype__MLX_FLOAT32,
    }
}

impl Kernel {
    /// Inputs are made row-contiguous by MLX before the kernel sees them.
    pub fn new(name: &str, inputs: &[&str], outputs: &[&str], source: &str, header: &str) -> Result<Self> {
        Self::build(name, inputs, outputs, source, header, true)
    }

    /// Inputs are passed as they lie (views included, no copy); the source
    /// reads their layout from `{input}_strides` (and `{input}_shape`), which
    /// MLX passes as kernel arguments where the source names them.
    pub fn strided(name: &str, inputs: &[&str], outputs: &[&str], source: &str, header: &str) -> Result<Self> {
        Self::build(name, inputs, outputs, source, header, false)
    }

    fn build(name: &str, inputs: &[&str], outputs: &[&str], source: &str, header: &str, contiguous: bool) -> Result<Self> {
        let (ins, _keep_in) = strings(inputs)?;
        let (outs, _keep_out) = strings(outputs)?;
        let c = |s: &str| CString::new(s).map_err(|e| Error::Mlx(e.to_string()));
        let (cname, src, hdr) = (c(name)?, c(source)?, c(header)?);
        let k = unsafe {
            let k = mlx_sys::mlx_fast_cuda_kernel_new(cname.as_ptr(), ins, outs, src.as_ptr(), hdr.as_ptr(), contiguous, 0);
            mlx_sys::mlx_vector_string_free(ins);
            mlx_sys::mlx_vector_string_free(outs);
            k
        };
        Ok(Kernel(k))
    }

    pub fn apply(&self, l: &Launch) -> Result<Vec<Array>> {
        crate::models::mlx_c::ensure_error_handler();
        let names = l.template_names()?;
        unsafe {
            let cfg = mlx_sys::mlx_fast_cuda_kernel_config_new();
            for (shape, dtype) in l.outputs {
                mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(cfg, shape.as_ptr(), shape.len(), mlx_dtype(*dtype));
            }
            mlx_sys::mlx_fast_cuda_kernel_config_set_grid(cfg, l.grid.0, l.grid.1, l.grid.2);
            mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(cfg, l.block.0, l.block.1, l.block.2);
            let mut i = 0;
            for (_, v) in l.ints {
                mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(cfg, names[i].as_ptr(), *v);
                i += 1;
            }
            for (_, v) in l.bools {
                mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_bool(cfg, names[i].as_ptr(), *v);
                i += 1;
            }
            for (_, d) in l.types {
                mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_dtype(cfg, names[i].as_ptr(), mlx_dtype(*d));
                i += 1;
            }
            let ins = l.input_vector();
            let mut outs = mlx_sys::mlx_vector_array_new();
            let status = mlx_sys::mlx_fast_cuda_kernel_apply(&mut outs, self.0, ins, cfg, Stream::thread_local_or_default().as_ptr());
            mlx_sys::mlx_vector_array_free(ins);
            mlx_sys::mlx_fast_cuda_kernel_config_free(cfg);
            l.take_outputs(status, outs, "CUDA")
        }
    }
}

/// What the CUDA and the Metal wrappers (`kernels::metal`) share around one launch.
impl Launch<'_> {
    /// The template values' names, in the order the config gets them (ints, bools, types).
    pub(super) fn template_names(&self) -> Result<Vec<CString>> {
        self.ints
            .iter()
            .map(|(n, _)| *n)
            .chain(self.bools.iter().map(|(n, _)| *n))
            .chain(self.types.iter().map(|(n, _)| *n))
            .map(|n| CString::new(n).map_err(|e| Error::Mlx(e.to_string())))
            .collect()
    }

    /// The inputs as an mlx-c vector (the caller frees it).
    pub(super) unsafe fn input_vector(&self) -> mlx_sys::mlx_vector_array {
        let ins = mlx_sys::mlx_vector_array_new();
        for a in self.inputs {
            mlx_sys::mlx_vector_array_append_value(ins, a.as_ptr());
        }
        ins
    }

    /// The outputs of an apply call with this `status` (0: it ran), `outs`
    /// freed; an error unless every output came back.
    pub(super) unsafe fn take_outputs(&self, status: i32, outs: mlx_sys::mlx_vector_array, backend: &str) -> Result<Vec<Array>> {
        let n = if status == 0 { mlx_sys::mlx_vector_array_size(outs) } else { 0 };
        let mut got = Vec::with_capacity(n);
        for j in 0..n {
            let mut out = mlx_sys::mlx_array_new();
            if mlx_sys::mlx_vector_array_get(&mut out, outs, j) != 0 {
                mlx_sys::mlx_array_free(out);
                break;
            }
            got.push(Array::from_ptr(out));
        }
        mlx_sys::mlx_vector_array_free(outs);
        if got.len() != self.outputs.len() {
            return Err(Error::Mlx(format!("a custom {backend} kernel failed to run")));
        }
        Ok(got)
    }
}

//! Custom Metal kernels through MLX's custom-kernel API (mlx-c's
//! `mlx_fast_metal_kernel_*`, the Metal twin of `kernels::cuda`): MLX compiles
//! the source once per set of template values and runs it in its graph like
//! any other op. Written so the macOS check type-checks them here; each is
//! off by default (`HEARTH_METAL_KERNELS=1` turns them on) until a run on a
//! Mac shows it matches the MLX ops it replaces and wins (docs/MAC.md).

pub(crate) mod delta;

use crate::models::kernels::cuda::{mlx_dtype, strings, Launch};
use crate::error::{Error, Result};
use mlx_rs::{Array, Stream};
use std::ffi::CString;

/// Whether MLX runs on a Metal device here and the Metal kernels are turned on.
pub fn metal_kernels_on() -> bool {
    crate::models::kernels::switches().metal
}

/// Whether MLX runs on a Metal device here.
pub(crate) fn metal_available() -> bool {
    let mut metal = false;
    unsafe {
        mlx_sys::mlx_metal_is_available(&mut metal);
    }
    metal
}

/// One kernel object (its source, inputs and outputs by name).
pub struct Kernel(mlx_sys::mlx_fast_metal_kernel);

impl Drop for Kernel {
    fn drop(&mut self) {
        unsafe {
            mlx_sys::mlx_fast_metal_kernel_free(self.0);
        }
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|e| Error::Mlx(e.to_string()))
}

impl Kernel {
    /// Inputs are made row-contiguous by MLX before the kernel sees them.
    pub fn new(name: &str, inputs: &[&str], outputs: &[&str], source: &str, header: &str) -> Result<Self> {
        let (ins, _keep_in) = strings(inputs)?;
        let (outs, _keep_out) = strings(outputs)?;
        let (cname, src, hdr) = (cstring(name)?, cstring(source)?, cstring(header)?);
        let k = unsafe {
            let k = mlx_sys::mlx_fast_metal_kernel_new(cname.as_ptr(), ins, outs, src.as_ptr(), hdr.as_ptr(), true, false);
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
            let cfg = mlx_sys::mlx_fast_metal_kernel_config_new();
            for (shape, dtype) in l.outputs {
                mlx_sys::mlx_fast_metal_kernel_config_add_output_arg(cfg, shape.as_ptr(), shape.len(), mlx_dtype(*dtype));
            }
            mlx_sys::mlx_fast_metal_kernel_config_set_grid(cfg, l.grid.0, l.grid.1, l.grid.2);
            mlx_sys::mlx_fast_metal_kernel_config_set_thread_group(cfg, l.block.0, l.block.1, l.block.2);
            let mut i = 0;
            for (_, v) in l.ints {
                mlx_sys::mlx_fast_metal_kernel_config_add_template_arg_int(cfg, names[i].as_ptr(), *v);
                i += 1;
            }
            for (_, v) in l.bools {
                mlx_sys::mlx_fast_metal_kernel_config_add_template_arg_bool(cfg, names[i].as_ptr(), *v);
                i += 1;
            }
            for (_, d) in l.types {
                mlx_sys::mlx_fast_metal_kernel_config_add_template_arg_dtype(cfg, names[i].as_ptr(), mlx_dtype(*d));
                i += 1;
            }
            let ins = l.input_vector();
            let mut outs = mlx_sys::mlx_vector_array_new();
            let status = mlx_sys::mlx_fast_metal_kernel_apply(&mut outs, self.0, ins, cfg, Stream::thread_local_or_default().as_ptr());
            mlx_sys::mlx_vector_array_free(ins);
            mlx_sys::mlx_fast_metal_kernel_config_free(cfg);
            l.take_outputs(status, outs, "Metal")
        }
    }
}

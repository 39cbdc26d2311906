//! The two pieces every direct mlx-c call needs (quantization modes, in-place
//! cache writes, custom kernels: what mlx-rs 0.33 does not wrap): the error
//! handler in place first, and a status check that turns a failed call into
//! an error instead of an exit.

use crate::error::{Error, Result};
use mlx_rs::{Array, Stream};

/// Makes sure mlx-rs has installed its error handler (it does so on its first
/// operation); without it MLX's default handler would end the process on a bad
/// mlx-c call made directly, as `nn::quant`, the cache and the kernels make.
pub(crate) fn ensure_error_handler() {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        let _ = mlx_rs::ops::abs(Array::from_f32(0.0));
    });
}

/// Runs one mlx-c operation that writes an array.
pub(crate) fn call(op: &str, f: impl FnOnce(*mut mlx_sys::mlx_array, mlx_sys::mlx_stream) -> i32) -> Result<Array> {
    ensure_error_handler();
    let stream = Stream::thread_local_or_default();
    unsafe {
        let mut res = mlx_sys::mlx_array_new();
        let status = f(&mut res, stream.as_ptr());
        if status != 0 {
            mlx_sys::mlx_array_free(res);
            return Err(Error::Mlx(format!("MLX {op} failed")));
        }
        Ok(Array::from_ptr(res))
    }
}

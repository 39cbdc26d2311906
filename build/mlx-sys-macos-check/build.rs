//! Hearth's check-only build script for mlx-sys 0.7.0 on aarch64-apple-darwin.
//!
//! scripts/check_macos.sh copies mlx-sys's crates.io sources into
//! .deps/macos-check/ (never committed), puts this file in place of the stock
//! build.rs (which needs CMake and Apple's SDK) and this folder's include/ beside
//! it, and patches mlx-sys with that copy for `cargo clippy --target
//! aarch64-apple-darwin` alone. It compiles nothing and links nothing: it only
//! generates the bindings *for the Mac target* with bindgen (clang
//! --target=aarch64-apple-darwin), so `float16_t`/`bfloat16_t` are the
//! aarch64 `__fp16`/`__bf16` of mlx-c's half.h and the layout tests bindgen
//! writes are checked against the Mac ABI. Headers: clang's own (stdint, stddef,
//! stdbool, float, arm_fp16, arm_bf16) plus three stand-ins in include/ for the
//! libc headers mlx-c includes (only FILE*, size_t and `_Complex` are used).
//! The real Mac build uses the stock mlx-sys.

use std::{env, path::PathBuf};

#[path = "src/bindgen_config.rs"]
mod bindgen_config;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let mlx_c_root = manifest.join("src/mlx-c");
    let target = env::var("TARGET").unwrap();
    let headers = bindgen_config::discover_headers(&mlx_c_root).expect("Unable to discover mlx-c headers");
    let bindings = bindgen_config::builder(&mlx_c_root, &headers)
        .clang_arg(format!("--target={target}"))
        // No Apple SDK here: keep the host's /usr/include out, use clang's
        // builtin headers and the stand-ins.
        .clang_arg("-nostdlibinc")
        .clang_arg(format!("-I{}", manifest.join("hearth-macos-include").display()))
        .generate()
        .expect("Unable to generate mlx-c bindings for the Mac target");
    bindings
        .write_to_file(PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs"))
        .expect("Couldn't write bindings");
    // What the stock build script tells dependents (DEP_MLX_*); nothing is linked in a check.
    println!("cargo::metadata=include={}", mlx_c_root.display());
}

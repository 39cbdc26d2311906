//! Hearth's Linux build script for mlx-sys 0.7.0.
//!
//! scripts/setup.sh copies the crates.io sources of mlx-sys next to this file's
//! copy (never committed) and replaces the stock build.rs, which is macOS-only,
//! with this one. It builds the vendored mlx-c against a prebuilt MLX (PyPI's
//! `mlx-cpu` wheel, found through `MLX_DIR`) instead of fetching MLX from git.

use std::{
    env,
    path::{Path, PathBuf},
};

#[path = "src/bindgen_config.rs"]
mod bindgen_config;

fn main() {
    println!("cargo:rerun-if-env-changed=MLX_DIR");
    println!("cargo:rerun-if-changed=build.rs");
    let mlx_dir = PathBuf::from(
        env::var("MLX_DIR").expect("MLX_DIR must point at <site-packages>/mlx/share/cmake/MLX"),
    );
    // <site-packages>/mlx/share/cmake/MLX -> <site-packages>/mlx
    let mlx_root = mlx_dir
        .ancestors()
        .nth(3)
        .expect("MLX_DIR has the layout <root>/share/cmake/MLX")
        .to_path_buf();
    let lib_dir = mlx_root.join("lib");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let shim = manifest.join("hearth-shim");
    let mlx_c_root = Path::new("src/mlx-c");

    // mlx-c's private/io.h calls std::format without including <format>
    // (GCC 12 has none), so the shim is force-included like the half types.
    let cxx_flags = format!(
        "-include {} -include {}",
        shim.join("half_x86.h").display(),
        shim.join("include/format").display()
    );
    let dst = cmake::Config::new(mlx_c_root)
        .define("MLX_C_USE_SYSTEM_MLX", "ON")
        .define("MLX_DIR", &mlx_dir)
        .define("MLX_C_BUILD_EXAMPLES", "OFF")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("CMAKE_BUILD_TYPE", "Release")
        .define("CMAKE_CXX_FLAGS", &cxx_flags)
        .define("CMAKE_C_FLAGS", format!("-include {}", shim.join("half_x86.h").display()))
        .build_target("mlxc")
        .build();

    cc::Build::new()
        .file(shim.join("mach_time.c"))
        .compile("hearth_mach_time");

    println!("cargo:rustc-link-search=native={}/build", dst.display());
    println!("cargo:rustc-link-lib=static=mlxc");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo::metadata=libdir={}", lib_dir.display());
    println!(
        "cargo::metadata=include={}",
        env::join_paths([mlx_root.join("include"), manifest.join(mlx_c_root)])
            .unwrap()
            .display()
    );

    let headers =
        bindgen_config::discover_headers(mlx_c_root).expect("Unable to discover mlx-c headers");
    let bindings = bindgen_config::builder(mlx_c_root, &headers)
        .clang_arg(format!("-include{}", shim.join("half_x86.h").display()))
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("Unable to generate mlx-c bindings");
    bindings
        .write_to_file(PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs"))
        .expect("Couldn't write bindings");
}

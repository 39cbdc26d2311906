#!/usr/bin/env bash
# Type-checks and lints the macOS build (aarch64-apple-darwin) on Linux, with no Mac:
#   - a Rust 1.96 toolchain from Debian's security archive (rustc-web, its std
#     sources, clippy), sha256-pinned .debs unpacked with dpkg -x into
#     .deps/macos-check/ (no system change; cached, idempotent);
#   - core/std compiled for the Mac target with -Zbuild-std (cached in the same folder);
#   - mlx-sys patched with build/mlx-sys-macos-check/build.rs (bindings for the Mac
#     target only, no MLX build), the Linux patch in .cargo/config.toml untouched;
#   - one `cargo clippy --all-targets -- -D warnings` pass (it includes the type
#     check) over the lib, the binary, the tests and the examples, with the
#     features a Mac build uses (mlx-rs metal, accelerate, safetensors: Cargo.toml's
#     macOS target section).
# Fails on any type error or clippy warning. Needs scripts/setup.sh first (cargo,
# clang/libclang, mlx-sys's sources in .deps/). A real Mac build uses the stock mlx-sys.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
log() { printf '\033[1m[check_macos]\033[0m %s\n' "$*" >&2; }
START=$(date +%s)
if [ "$(uname -s)" = Darwin ]; then
  log "on a Mac the real build is the check (cargo test compiles the macOS code); skipped"
  exit 0
fi

RUST_DEB_VERSION=1.96.0+dfsg1-1~deb12u2
LLVM_DEB_VERSION=1:22.1.8-1~deb12u1
# package=version:sha256 (Debian bookworm-security, amd64/all)
DEBS="rustc-web=$RUST_DEB_VERSION:8fefe1d6377fe4082f5a9d2a47e095e2d20319eaab9754bd2f0275155c9adf90
rust-web-src=$RUST_DEB_VERSION:9de8597c464d0a9283672973ed7e50092b49a92b95861429043fe8b57468a208
libstd-rust-web-dev=$RUST_DEB_VERSION:e38dbeaaad673fc63fb47c5140cf34da271ac71c3ecafc828b762c2fb01fe77a
libstd-rust-web-1.96=$RUST_DEB_VERSION:3755f30434ae29574c91b0beb86632bee401607b0ac35c3e52810f9a53fae0d1
rust-web-clippy=$RUST_DEB_VERSION:816cbbb667eea30baa9ac848de6d97cf08b3dceb507a4283968f88aea864ae4b
libllvm22=$LLVM_DEB_VERSION:729ec3e943d320515c2bbdc96acfffd7ce34861e62bd5c42726bf586d644dfe2
libclang1-22=$LLVM_DEB_VERSION:8141fd0209fac0b928bdbcc46ce5ccc48ff0bd6fa318631605331fede5ba83f5
libclang-common-22-dev=$LLVM_DEB_VERSION:833d7559bfbe169d7927dfe151cae48bf352da5202e36034a206688ae33f9031"
# libclang 22 for bindgen: Debian 12's clang 14 rejects aarch64's __bf16 (mlx-c's bfloat16_t).
MLX_SYS_VERSION=0.7.0
TARGET=aarch64-apple-darwin

BASE="$ROOT/.deps/macos-check"
TC="$BASE/toolchain-1.96.0-clang22"
mkdir -p "$BASE/debs"

# ---------------------------------------------------------------- toolchain
sha256() { (command -v sha256sum >/dev/null && sha256sum "$1" || shasum -a 256 "$1") | cut -d' ' -f1; }
if [ ! -f "$TC/.complete" ]; then
  log "installing Rust 1.96 (Debian rustc-web, std sources, clippy) into .deps/macos-check"
  command -v apt-get >/dev/null || { echo "check_macos: needs apt-get (Debian/Ubuntu) to fetch the toolchain" >&2; exit 1; }
  updated=0
  rm -rf "$TC.tmp" && mkdir -p "$TC.tmp"
  while read -r line; do
    pkg=${line%%=*}; rest=${line#*=}; ver=${rest%:*}; sha=${rest##*:}
    f=$(ls "$BASE/debs/${pkg}_"*.deb 2>/dev/null | head -1 || true)
    if [ -z "$f" ] || [ "$(sha256 "$f")" != "$sha" ]; then
      rm -f "$BASE/debs/${pkg}_"*.deb
      if ! (cd "$BASE/debs" && apt-get download -qq "$pkg=$ver" >/dev/null 2>&1); then
        [ "$updated" = 1 ] || { apt-get update -qq >/dev/null 2>&1 || true; updated=1; }
        (cd "$BASE/debs" && apt-get download -qq "$pkg=$ver" >/dev/null)
      fi
      f=$(ls "$BASE/debs/${pkg}_"*.deb | head -1)
    fi
    got=$(sha256 "$f")
    [ "$got" = "$sha" ] || { echo "check_macos: checksum mismatch for $f ($got)" >&2; exit 1; }
    dpkg -x "$f" "$TC.tmp"
  done <<< "$DEBS"
  touch "$TC.tmp/.complete"
  rm -rf "$TC" && mv "$TC.tmp" "$TC"
fi
export RUSTC="$TC/usr/bin/rustc"
export LD_LIBRARY_PATH="$TC/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export RUSTC_BOOTSTRAP=1
export LIBCLANG_PATH="$TC/usr/lib/llvm-22/lib"
"$RUSTC" --version >&2

# ---------------------------------------------------------------- mlx-sys, check route
SRC="$ROOT/.deps/mlx-sys-$MLX_SYS_VERSION"
[ -f "$SRC/src/bindgen_config.rs" ] || { echo "check_macos: run scripts/setup.sh first (mlx-sys sources in .deps/)" >&2; exit 1; }
SYS="$BASE/mlx-sys-$MLX_SYS_VERSION"
if [ ! -f "$SYS/Cargo.toml" ]; then
  rm -rf "$SYS.tmp" && mkdir -p "$SYS.tmp"
  cp -r "$SRC/Cargo.toml" "$SRC/src" "$SYS.tmp/"
  rm -rf "$SYS" && mv "$SYS.tmp" "$SYS"
fi
cmp -s build/mlx-sys-macos-check/build.rs "$SYS/build.rs" || cp build/mlx-sys-macos-check/build.rs "$SYS/build.rs"
mkdir -p "$SYS/hearth-macos-include"
cp -r build/mlx-sys-macos-check/include/. "$SYS/hearth-macos-include/"

# ---------------------------------------------------------------- C libraries
# A check links nothing, so the C libraries of the dependencies are not compiled
# (there is no Apple SDK here): cargo's `links` overrides skip their build scripts
# and give what they would tell rustc and dependents. aws-lc-sys picks its
# pregenerated "universal" bindings, as its build script does for this target by
# default; onig_sys uses its pregenerated ffi.rs. blake3 has no `links` key: its
# build script compiles NEON C on aarch64 unless the "pure" feature is on, so the
# check sets that feature's variable for build scripts (its Rust fallback is checked).
LINKS=(
  --config "target.$TARGET.aws_lc_0_47_0.rustc-cfg=[\"universal\"]"
  --config "target.$TARGET.aws_lc_0_47_0.include=\"$BASE/none\""
  --config "target.$TARGET.aws_lc_0_47_0.libcrypto=\"aws_lc_0_47_0_crypto\""
  --config "target.$TARGET.onig.rustc-link-lib=[]"
)
export CARGO_FEATURE_PURE=1

# ---------------------------------------------------------------- clippy
export CARGO_TARGET_DIR="$BASE/target"
CLIPPY_DIR="$TC/usr/bin"
log "cargo clippy --target $TARGET -Zbuild-std --all-targets -- -D warnings"
PATH="$CLIPPY_DIR:$PATH" cargo clippy --locked --keep-going -Zbuild-std --target "$TARGET" --all-targets \
  --config "patch.crates-io.mlx-sys.path=\"$SYS\"" "${LINKS[@]}" \
  -- -D warnings
log "macOS check passed in $(( $(date +%s) - START )) s"

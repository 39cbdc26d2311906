#!/usr/bin/env bash
# Packs what a GPU run needs into .devcarry/{a,b} (git-ignored), each under the
# device tool's 64 MiB per call: MLX's CUDA libmlx (stripped, xz, split in two),
# its bundled libs and kernel headers (cccl, cute, cutlass), the mlx/mlx-lm
# Python wheels for the reference, and a stripped hearth binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
V=0.32.2
W=$(mktemp -d)
PY=${PYTHON:-.deps/venv/bin/python}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_35_x86_64 -d "$W" "mlx-cuda-13==$V" "mlx==$V" "mlx-lm==$V"
(cd "$W" && mkdir x && cd x && unzip -q ../mlx_cuda_13-*.whl)
rm -rf .devcarry && mkdir -p .devcarry/a .devcarry/b
strip -o "$W/libmlx.so" "$W/x/mlx/lib/libmlx.so"
xz -T0 -6 -c "$W/libmlx.so" > "$W/libmlx.so.xz"
split -n 2 -d "$W/libmlx.so.xz" "$W/libmlx.so.xz.part"
mv "$W/libmlx.so.xz.part00" .devcarry/a/
mv "$W/libmlx.so.xz.part01" .devcarry/b/
tar -C "$W/x" -cJf .devcarry/a/cuda_libs.tar.xz mlx_cuda_13.libs
tar -C "$W/x/mlx" -cJf .devcarry/a/include.tar.xz include
cp "$W"/mlx-$V-cp312-*.whl "$W"/mlx_lm-$V-*.whl .devcarry/a/
cargo build --release
strip -o "$W/hearth" target/release/hearth
xz -T0 -6 -c "$W/hearth" > .devcarry/b/hearth.xz
rm -rf "$W"
du -sh .devcarry/a .devcarry/b

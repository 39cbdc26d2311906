#!/usr/bin/env bash
# Turns a release build into Hearth.app (macOS) or a self-contained tarball (Linux).
#
#   bundle/build.sh [--dry-run] [--out DIR]     macOS: Hearth.app, signed, zip (+ dmg)
#   bundle/build.sh --linux-tarball [--out DIR] Linux: hearth-<version>-linux-x86_64.tar.gz
#
# --dry-run assembles the .app tree on any OS without building for macOS or
# signing (CI checks its layout). Signing: HEARTH_SIGN_IDENTITY (default ad-hoc
# "-"); notarizing: HEARTH_NOTARY_PROFILE (a notarytool keychain profile).
# Credentials come from the environment only, never from the repository.
set -euo pipefail
# A failing step names itself: under pipefail some fail without a message.
trap 'echo "bundle/build.sh: line $LINENO failed (exit $?)" >&2' ERR
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY=0; TARBALL=0; OUT="$ROOT/target/bundle"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --linux-tarball) TARBALL=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
VERSION=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
EXE=$(/usr/bin/env python3 -c 'import plistlib;print(plistlib.load(open("Info.plist","rb"))["CFBundleExecutable"])')
mkdir -p "$OUT"

find_metallib() {
  # Stock mlx-sys writes mlx.metallib to $MLX_RS_METAL_PATH or ~/.mlx/lib/<key>/.
  if [ -n "${MLX_RS_METAL_PATH:-}" ] && [ -f "$MLX_RS_METAL_PATH/mlx.metallib" ]; then
    echo "$MLX_RS_METAL_PATH/mlx.metallib"; return
  fi
  ls -t "$HOME"/.mlx/lib/*/mlx.metallib 2>/dev/null | head -1
}

if [ "$TARBALL" = 1 ]; then
  [ "$(uname -s)" = Linux ] || { echo "--linux-tarball runs on Linux" >&2; exit 2; }
  bash scripts/setup.sh
  cargo build --release
  PY=.deps/venv/bin/python
  SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  NAME="hearth-$VERSION-linux-x86_64"
  STAGE="$OUT/$NAME"
  rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib/mlx/lib" "$STAGE/lib/mlx_cpu.libs" "$STAGE/share/models"
  strip -o "$STAGE/bin/$EXE" target/release/hearth
  cp -L "$SITE/mlx/lib/libmlx.so" "$STAGE/lib/mlx/lib/"
  # libmlx's RPATH is $ORIGIN/../../mlx_cpu.libs: the same layout as the wheel.
  for f in "$SITE"/mlx_cpu.libs/*.so.*; do
    case "$f" in *.reference) continue ;; esac
    cp -L "$f" "$STAGE/lib/mlx_cpu.libs/"
  done
  # When the BLAS is OpenBLAS, its own dependencies travel too.
  for dep in libgfortran.so.5 libquadmath.so.0 libopenblas.so.0; do
    # awk reads all of ldconfig's output: exiting at the first match would
    # leave ldconfig to die of SIGPIPE, which pipefail turns into a silent exit.
    p=$(ldconfig -p | awk -v d="$dep" '$1==d && !found {print $NF; found=1}')
    [ -n "$p" ] && cp -L "$p" "$STAGE/lib/mlx_cpu.libs/" || true
  done
  cp .deps/models/SmolLM2-135M-Instruct.Q4_1.gguf "$STAGE/share/models/"
  cp assets/icon.png "$STAGE/share/hearth.png"
  cat > "$STAGE/hearth" <<'SH'
#!/usr/bin/env bash
# Hearth launcher: finds the bundled libraries and installs the default model on first run.
DIR="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"
export LD_LIBRARY_PATH="$DIR/lib/mlx/lib:$DIR/lib/mlx_cpu.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$DIR/bin/hearth" models import --if-missing "$DIR/share/models/SmolLM2-135M-Instruct.Q4_1.gguf" 2>/dev/null || true
exec "$DIR/bin/hearth" "$@"
SH
  chmod +x "$STAGE/hearth"
  cat > "$STAGE/share/hearth.desktop" <<DESK
[Desktop Entry]
Type=Application
Name=Hearth
Comment=Private, offline chat with local language models
Exec=hearth
Icon=hearth
Terminal=false
Categories=Utility;Office;
DESK
  tar -C "$OUT" -czf "$OUT/$NAME.tar.gz" "$NAME"
  echo "$OUT/$NAME.tar.gz"
  exit 0
fi

APP="$OUT/Hearth.app"
rm -rf "$APP"
mkdir -p "$APP/Contents/MacOS" "$APP/Contents/Resources"
if [ "$DRY" = 1 ]; then
  # Layout only: any binary stands in for the arm64 one.
  [ -x target/release/hearth ] || cargo build --release
  cp target/release/hearth "$APP/Contents/MacOS/$EXE"
  METALLIB=$(find_metallib || true)
  if [ -n "$METALLIB" ]; then cp "$METALLIB" "$APP/Contents/Resources/mlx.metallib"
  else printf 'placeholder: a macOS build copies mlx.metallib here\n' > "$APP/Contents/Resources/mlx.metallib"; fi
else
  [ "$(uname -s)" = Darwin ] || { echo "building Hearth.app needs macOS (use --dry-run elsewhere)" >&2; exit 2; }
  [ "$(uname -m)" = arm64 ] || echo "warning: Hearth.app targets Apple Silicon (arm64)" >&2
  cargo build --release --target aarch64-apple-darwin
  cp target/aarch64-apple-darwin/release/hearth "$APP/Contents/MacOS/$EXE"
  METALLIB=$(find_metallib)
  [ -n "$METALLIB" ] || { echo "mlx.metallib not found (MLX_RS_METAL_PATH or ~/.mlx/lib/*/)" >&2; exit 1; }
  cp "$METALLIB" "$APP/Contents/Resources/mlx.metallib"
fi
# MLX loads the metallib that sits next to the code that contains MLX (the
# executable, since mlx-sys links it statically): point there from Resources.
ln -s ../Resources/mlx.metallib "$APP/Contents/MacOS/mlx.metallib"
cp Info.plist "$APP/Contents/Info.plist"
printf 'APPL????' > "$APP/Contents/PkgInfo"
python3 bundle/png2icns.py "$APP/Contents/Resources/AppIcon.icns" assets/icon
if [ "$DRY" = 1 ]; then
  echo "$APP (dry run: not signed)"
  exit 0
fi
IDENTITY=${HEARTH_SIGN_IDENTITY:--}
codesign --force --deep --options runtime --timestamp --entitlements entitlements.plist --sign "$IDENTITY" "$APP"
codesign --verify --strict --verbose=2 "$APP"
ditto -c -k --keepParent "$APP" "$OUT/Hearth-$VERSION.zip"
if [ -n "${HEARTH_NOTARY_PROFILE:-}" ]; then
  xcrun notarytool submit "$OUT/Hearth-$VERSION.zip" --keychain-profile "$HEARTH_NOTARY_PROFILE" --wait
  xcrun stapler staple "$APP"
  rm "$OUT/Hearth-$VERSION.zip" && ditto -c -k --keepParent "$APP" "$OUT/Hearth-$VERSION.zip"
fi
hdiutil create -volname Hearth -srcfolder "$APP" -ov -format UDZO "$OUT/Hearth-$VERSION.dmg" >/dev/null
echo "$OUT/Hearth-$VERSION.zip"

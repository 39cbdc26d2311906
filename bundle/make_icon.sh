#!/usr/bin/env bash
# Draws Hearth's icon (a flame on a rounded square) with ImageMagick and writes
# assets/icon.png plus the sizes the .icns is built from (assets/icon/icon_N.png).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
D="$ROOT/assets/icon"
mkdir -p "$D"
convert -size 1024x1024 xc:none \
  -fill '#2b1d14' -draw "roundrectangle 40,40 984,984 200,200" \
  -fill '#f28c28' -draw "path 'M 512,170 C 640,330 760,420 760,610 C 760,760 650,860 512,860 C 374,860 264,760 264,610 C 264,500 330,430 380,360 C 400,470 450,520 500,540 C 470,420 470,300 512,170 Z'" \
  -fill '#ffd166' -draw "path 'M 512,470 C 590,560 650,610 650,700 C 650,790 590,840 512,840 C 434,840 374,790 374,700 C 374,640 410,600 440,570 C 450,630 480,660 505,670 C 490,600 490,540 512,470 Z'" \
  "$D/icon_1024.png"
for s in 16 32 64 128 256 512; do convert "$D/icon_1024.png" -resize "${s}x${s}" "$D/icon_$s.png"; done
cp "$D/icon_1024.png" "$ROOT/assets/icon.png"

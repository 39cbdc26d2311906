"""Builds an .icns from PNGs (no Apple tools needed): usage png2icns.py OUT.icns DIR
DIR holds icon_16.png … icon_1024.png. Each entry is a 4-byte type, a 4-byte
big-endian length (header included) and the PNG bytes, which macOS 10.7+ reads."""
import struct
import sys
from pathlib import Path

TYPES = {16: b"icp4", 32: b"icp5", 64: b"icp6", 128: b"ic07", 256: b"ic08", 512: b"ic09", 1024: b"ic10"}


def main():
    out, src = Path(sys.argv[1]), Path(sys.argv[2])
    body = b""
    for size, kind in TYPES.items():
        png = (src / f"icon_{size}.png").read_bytes()
        if not png.startswith(b"\x89PNG"):
            sys.exit(f"{src}/icon_{size}.png is not a PNG")
        body += kind + struct.pack(">I", len(png) + 8) + png
    out.write_bytes(b"icns" + struct.pack(">I", len(body) + 8) + body)


if __name__ == "__main__":
    main()

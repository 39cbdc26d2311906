"""Reference ggml dequantization with gguf-py: raw blocks in, float32 out.

usage: gguf_dequant.py TYPE_NAME IN.bin OUT.f32
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

name, src, dst = sys.argv[1:4]
raw = np.fromfile(src, dtype=np.uint8)
with np.errstate(all="ignore"):
    out = dequantize(raw, GGMLQuantizationType[name]).astype(np.float32)
out.reshape(-1).tofile(dst)

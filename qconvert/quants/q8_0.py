"""Q8_0: 32 weights per block, one fp16 scale, one signed byte per weight. NumPy reference (the spec).

Block layout (34 bytes, ggml's `block_q8_0`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       32    qs[32]  int8, weight j = d * qs[j]

Mirrors `quantize_row_q8_0_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it:

    amax = max |x[j]|                      (float32)
    d    = amax / 127                      (float32 division)
    id   = 1/d if d != 0 else 0            (float32)
    qs[j] = roundf(x[j] * id)              x*id rounded to float32 first, then roundf:
                                           round half AWAY from zero (np.round is half-even)
    d is stored as GGML_FP32_TO_FP16(d):   round to nearest even (numpy's float32 -> float16 cast)

One case C leaves undefined: when amax < ~3.7e-37, 1/d overflows to inf, x*id is inf or NaN and
the float -> int8 conversion is undefined behaviour. On x86-64 (cvttss2si) it yields INT32_MIN, whose
low byte is 0, so libggml writes qs = 0 for the whole block. We write 0 too, on purpose.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0,)


def roundf(v: np.ndarray) -> np.ndarray:
    """C's roundf on float32: round half away from zero, computed exactly.

    >>> roundf(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997], dtype=np.float32)).tolist()
    [1.0, 2.0, 3.0, -1.0, -3.0, 0.0]
    """
    t = np.trunc(v)
    # v - t is exact (Sterbenz for |v| >= 1, t == 0 below), so the comparison has no rounding.
    frac = v - t
    return t + np.where(np.abs(frac) >= np.float32(0.5), np.sign(v), np.float32(0))


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    """f32[n, 32] -> u8[n, 34], byte-exact with ggml's quantize_row_q8_0_ref."""
    n = x.shape[0]
    amax = np.abs(x).max(axis=1, keepdims=True) if n else np.zeros((0, 1), np.float32)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = x * inv
        q = np.where(np.isfinite(v), roundf(v), np.float32(0))
    out = np.empty((n, TYPE_SIZE), dtype=np.uint8)
    with np.errstate(over="ignore"):  # |d| >= 65520 is inf in fp16, as in ggml
        out[:, :2] = d.astype(np.float16).view(np.uint8)
    out[:, 2:] = q.astype(np.int8).view(np.uint8)
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 34] -> f32[n, 32] (d * qs, as ggml's dequantize_row_q8_0)."""
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(np.float32)
    qs = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    return d * qs

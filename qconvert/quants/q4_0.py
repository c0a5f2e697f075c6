"""Q4_0: 32 weights per block, one fp16 scale, 4 bits per weight. NumPy reference (the spec).

Block layout (18 bytes, ggml's `block_q4_0`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       16    qs[16]  qs[j] = q[j] | q[j + 16] << 4   (low nibbles: weights 0..15,
                                                           high nibbles: weights 16..31)
    weight j = d * (q[j] - 8),  q in 0..15

Mirrors `quantize_row_q4_0_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it:

    max  = the first x[j] with the largest |x[j]|, keeping its sign; +0.0 if the block is all zeros
           (C starts from max = 0.0f and replaces it only on a strictly larger |x|, so an all-zero
           block, even of -0.0, gives d = +0.0 / -8 = -0.0, fp16 bits 0x8000)
    d    = max / -8                        (float32; exact unless subnormal)
    id   = 1/d if d != 0 else 0            (float32)
    q[j] = min(15, (int8)(x[j]*id + 8.5f)) x*id rounded to float32, then + 8.5f rounded to
                                           float32, then TRUNCATION toward zero
    d is stored as GGML_FP32_TO_FP16(d):   round to nearest even (numpy's float32 -> float16 cast)

One case C leaves undefined: when |max| < ~2.4e-38, 1/d overflows to inf, x*id + 8.5f is inf or
NaN and the float -> int8 conversion is undefined behaviour. On x86-64 (cvttss2si) it yields
INT32_MIN, whose low byte is 0, so libggml writes q = 0 for the whole block. We write 0 too.

With importance weights (ggml's quantize_row_q4_0_impl, taken by ggml_quantize_chunk whenever an
imatrix is given; Q5_0's recipe with 8 levels either side): d, L = make_qx_quants(32, 8, x,
rmse_type=1, weight) with weight[j] = imatrix[j] * sqrtf(sigma2 + x[j]^2), sigma2 = the row's sum of
x^2 / its length; q = L, d stored as GGML_FP32_TO_FP16(d).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import block_weights, make_qx_quants, row_sigma2, store_fp16

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_0]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0,)
HALF = BLOCK_SIZE // 2


def _store(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), TYPE_SIZE), dtype=np.uint8)
    store_fp16(out[:, :2], d)  # |d| >= 65520 is inf in fp16, as in ggml
    out[:, 2:] = q[:, :HALF] | (q[:, HALF:] << np.uint8(4))
    return out


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 32] -> u8[n, 18], byte-exact with ggml's quantize_row_q4_0_ref, or with
    quantize_row_q4_0_impl when quant_weights (an imatrix row, f32[cols]) is given; the blocks are
    then whole rows of cols weights, back to back (see _common.block_weights)."""
    if quant_weights is not None:
        qw = block_weights(x.shape[0], quant_weights, BLOCK_SIZE)
        with np.errstate(over="ignore", invalid="ignore"):
            weight = qw * np.sqrt(row_sigma2(x, np.size(quant_weights)) + x * x)
        d, L = make_qx_quants(x, 8, weight)
        return _store(d, L.view(np.uint8))
    n = x.shape[0]
    absx = np.abs(x)
    first = absx.argmax(axis=1)[:, None] if n else np.zeros((0, 1), np.intp)  # first of equals
    mx = np.take_along_axis(x, first, axis=1)
    mx = np.where(np.take_along_axis(absx, first, axis=1) > 0, mx, np.float32(0))
    d = mx / np.float32(-8)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        w = x * inv + np.float32(8.5)  # two float32 roundings, as C (no fused multiply-add)
        q = np.where(np.isfinite(w), np.minimum(np.float32(15), np.trunc(w)), np.float32(0))
    return _store(d, q.astype(np.uint8))


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 18] -> f32[n, 32] (d * (q - 8), as ggml's dequantize_row_q4_0)."""
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(np.float32)
    qs = blocks[:, 2:]
    q = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1).astype(np.float32)
    return d * (q - np.float32(8))

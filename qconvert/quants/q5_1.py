"""Q5_1: 32 weights per block, an fp16 scale and an fp16 minimum, 5 bits per weight. NumPy
reference (the spec).

Block layout (24 bytes, ggml's `block_q5_1`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       2     m       fp16 minimum, little-endian
    4       4     qh      uint32, little-endian: bit j is the fifth bit (q[j] >> 4) of weight j
    8       16    qs[16]  qs[j] = q[j] & 15 | (q[j + 16] & 15) << 4
    weight j = d * q[j] + m,  q in 0..31

Mirrors `quantize_row_q5_1_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it
(Q4_1's recipe with 31 steps):

    min, max = strict `<` / `>` scans: the first of equal values (the sign of a zero min matters)
    d    = (max - min) / 31                 (float32)
    id   = 1/d if d != 0 else 0             (float32)
    q[j] = (uint8_t)((x[j] - min)*id + 0.5f)   each operation rounded to float32, then TRUNCATION;
                                            no clamp (unlike Q4_1 there is no MIN(31, ...))
    d, m stored as GGML_FP32_TO_FP16 (round to nearest even); m is the unrounded float32 min

When 1/d overflows (max - min < ~9.1e-38), the float -> uint8 conversion of inf/NaN is undefined;
x86-64 libggml's cvttps2dq gives INT32_MIN, low byte 0, so q = 0 there, as here.

With importance weights (ggml's quantize_row_q5_1_impl, taken by ggml_quantize_chunk whenever an
imatrix is given): make_qkx3_quants(32, 31, x, weight, ..., -0.9f, 0.05f, 36) with weight[j] =
imatrix[j] * sqrtf(sigma2 + x[j]^2), sigma2 = the row's sum of x^2 / its length; d = fp16(scale),
m = fp16(-the_min), q = L.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import (block_weights, first_min_max, load_fp16, make_qkx3_quants, pack_q5, row_sigma2,
                      store_fp16, trunc_low_byte, unpack_q5)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q5_1]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0, 2)


def _store(d: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), TYPE_SIZE), np.uint8)
    store_fp16(out[:, 0:2], d)
    store_fp16(out[:, 2:4], m)
    out[:, 4:8], out[:, 8:] = pack_q5(q)
    return out


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 32] -> u8[n, 24], byte-exact with ggml's quantize_row_q5_1_ref, or with
    quantize_row_q5_1_impl when quant_weights (an imatrix row, f32[cols]) is given; the blocks are
    then whole rows of cols weights, back to back (see _common.block_weights)."""
    if quant_weights is not None:
        qw = block_weights(x.shape[0], quant_weights, BLOCK_SIZE)
        with np.errstate(over="ignore", invalid="ignore"):
            weight = qw * np.sqrt(row_sigma2(x, np.size(quant_weights)) + x * x)
        scale, the_min, L = make_qkx3_quants(x, 31, weight)
        return _store(scale, -the_min, L)
    mn, mx = first_min_max(x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d = (mx - mn) / np.float32(31)
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = (x - mn[:, None]) * inv[:, None] + np.float32(0.5)
    return _store(d, mn, trunc_low_byte(v))


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 24] -> f32[n, 32] (d * q + m, as ggml's dequantize_row_q5_1)."""
    d = load_fp16(blocks[:, 0:2])
    m = load_fp16(blocks[:, 2:4])
    q = unpack_q5(blocks[:, 4:8], blocks[:, 8:]).astype(np.float32)
    return d * q + m

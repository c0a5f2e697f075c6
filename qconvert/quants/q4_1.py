"""Q4_1: 32 weights per block, an fp16 scale and an fp16 minimum, 4 bits per weight. NumPy
reference (the spec).

Block layout (20 bytes, ggml's `block_q4_1`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       2     m       fp16 minimum, little-endian
    4       16    qs[16]  qs[j] = q[j] | q[j + 16] << 4   (low nibbles: weights 0..15,
                                                           high nibbles: weights 16..31)
    weight j = d * q[j] + m,  q in 0..15

Mirrors `quantize_row_q4_1_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it:

    min, max = strict `<` / `>` scans: the first of equal values (the sign of a zero min matters)
    d    = (max - min) / 15                 (float32)
    id   = 1/d if d != 0 else 0             (float32)
    q[j] = MIN(15, (int8_t)((x[j] - min)*id + 0.5f))   x - min, * id, + 0.5f each rounded to
                                            float32, then TRUNCATION toward zero
    d, m stored as GGML_FP32_TO_FP16 (round to nearest even); m is the unrounded float32 min

When d is so small that 1/d overflows (max - min < ~4.4e-38), (x - min)*id is inf or NaN (0 * inf
for the min itself) and the float -> int8 conversion is undefined; x86-64 libggml's cvttps2dq gives
INT32_MIN whose low byte is 0, so q = 0 there. We write the same (see _common.trunc_low_byte).

With importance weights (ggml's quantize_row_q4_1_impl, used by ggml_quantize_chunk whenever an
imatrix is given) the block is instead fitted by make_qkx3_quants(32, 15, x, weight, ..., -0.9f,
0.05f, 36) with weight[j] = imatrix[j] * sqrtf(sigma2 + x[j]^2), sigma2 = the row's sum of x^2 / its
length; then d = fp16(scale), m = fp16(-the_min). That differs from the _ref path even for all-ones
weights, which is why ggml_quantize_chunk only takes it when an imatrix is passed.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import (block_weights, first_min_max, load_fp16, make_qkx3_quants, row_sigma2,
                      store_fp16, trunc_low_byte)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_1]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0, 2)
HALF = BLOCK_SIZE // 2


def _pack(out: np.ndarray, q: np.ndarray) -> np.ndarray:
    out[:, 4:] = q[:, :HALF] | (q[:, HALF:] << np.uint8(4))
    return out


def _quantize_ref(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    mn, mx = first_min_max(x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d = (mx - mn) / np.float32(15)
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = (x - mn[:, None]) * inv[:, None] + np.float32(0.5)
    q = np.minimum(np.int8(15), trunc_low_byte(v).view(np.int8)).view(np.uint8)  # MIN on int8_t
    out = np.empty((n, TYPE_SIZE), np.uint8)
    store_fp16(out[:, 0:2], d)
    store_fp16(out[:, 2:4], mn)
    return _pack(out, q)


def _quantize_imatrix(x: np.ndarray, quant_weights: np.ndarray) -> np.ndarray:
    qw = block_weights(x.shape[0], quant_weights, BLOCK_SIZE)
    with np.errstate(over="ignore", invalid="ignore"):
        weight = qw * np.sqrt(row_sigma2(x, np.size(quant_weights)) + x * x)
    scale, the_min, L = make_qkx3_quants(x, 15, weight)
    out = np.empty((x.shape[0], TYPE_SIZE), np.uint8)
    store_fp16(out[:, 0:2], scale)
    store_fp16(out[:, 2:4], -the_min)
    return _pack(out, L)


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 32] -> u8[n, 20], byte-exact with ggml's quantize_row_q4_1_ref, or with
    quantize_row_q4_1_impl when quant_weights (an imatrix row, f32[cols]) is given; the blocks are
    then whole rows of cols weights, back to back (see _common.block_weights)."""
    if quant_weights is None:
        return _quantize_ref(x)
    return _quantize_imatrix(x, quant_weights)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 20] -> f32[n, 32] (d * q + m, as ggml's dequantize_row_q4_1)."""
    d = load_fp16(blocks[:, 0:2])
    m = load_fp16(blocks[:, 2:4])
    qs = blocks[:, 4:]
    q = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1).astype(np.float32)
    return d * q + m

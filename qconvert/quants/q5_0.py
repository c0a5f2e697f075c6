"""Q5_0: 32 weights per block, one fp16 scale, 5 bits per weight. NumPy reference (the spec).

Block layout (22 bytes, ggml's `block_q5_0`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       4     qh      uint32, little-endian: bit j is the fifth bit (q[j] >> 4) of weight j
    6       16    qs[16]  qs[j] = q[j] & 15 | (q[j + 16] & 15) << 4
    weight j = d * (q[j] - 16),  q in 0..31

Mirrors `quantize_row_q5_0_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it
(Q4_0's recipe with 16 levels either side):

    max  = the first x[j] with the largest |x[j]|, keeping its sign; +0.0 if the block is all zeros
    d    = max / -16                         (float32)
    id   = 1/d if d != 0 else 0              (float32)
    q[j] = MIN(31, (int8_t)(x[j]*id + 16.5f))  x*id rounded to float32, + 16.5f rounded to float32,
                                             then TRUNCATION toward zero
    d is stored as GGML_FP32_TO_FP16(d):     round to nearest even

When 1/d overflows (|max| < ~4.7e-38) every x*id + 16.5f is inf or NaN, C's float -> int8
conversion is undefined and x86-64 libggml writes q = 0 (the low byte of cvttps2dq's INT32_MIN).

With importance weights (ggml's quantize_row_q5_0_impl, taken by ggml_quantize_chunk whenever an
imatrix is given): d, L = make_qx_quants(32, 16, x, rmse_type=1, weight) with weight[j] =
imatrix[j] * sqrtf(sigma2 + x[j]^2), sigma2 = the row's sum of x^2 / its length; q = L.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import (block_weights, first_absmax, load_fp16, make_qx_quants, pack_q5, row_sigma2,
                      store_fp16, trunc_low_byte, unpack_q5)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q5_0]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0,)


def _store(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    out = np.empty((len(q), TYPE_SIZE), np.uint8)
    store_fp16(out[:, 0:2], d)
    out[:, 2:6], out[:, 6:] = pack_q5(q)
    return out


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 32] -> u8[n, 22], byte-exact with ggml's quantize_row_q5_0_ref, or with
    quantize_row_q5_0_impl when quant_weights (an imatrix row, f32[cols]) is given; the blocks are
    then whole rows of cols weights, back to back (see _common.block_weights)."""
    if quant_weights is not None:
        qw = block_weights(x.shape[0], quant_weights, BLOCK_SIZE)
        with np.errstate(over="ignore", invalid="ignore"):
            weight = qw * np.sqrt(row_sigma2(x, np.size(quant_weights)) + x * x)
        d, L = make_qx_quants(x, 16, weight)
        return _store(d, L.view(np.uint8))
    mx = first_absmax(x)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        d = mx / np.float32(-16)
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = x * inv[:, None] + np.float32(16.5)  # two float32 roundings, as C (no fused multiply-add)
    q = np.minimum(np.int8(31), trunc_low_byte(v).view(np.int8)).view(np.uint8)  # MIN on int8_t
    return _store(d, q)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 22] -> f32[n, 32] (d * (q - 16), as ggml's dequantize_row_q5_0)."""
    d = load_fp16(blocks[:, 0:2])
    q = unpack_q5(blocks[:, 2:6], blocks[:, 6:]).astype(np.float32)
    return d * (q - np.float32(16))

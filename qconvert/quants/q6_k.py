"""Q6_K: 256 weights per super-block, 16 sub-blocks of 16 with an int8 scale each, 6 bits per
weight. NumPy reference (the spec).

Block layout (210 bytes, ggml's `block_q6_K`)::

    offset  size  field
    0       128   ql[128]     low 4 bits of the levels L (0..63)
    128     64    qh[64]      high 2 bits of the levels
    192     16    scales[16]  int8 scale of sub-block k (weights 16k .. 16k+15)
    208     2     d           fp16 super-block scale, little-endian  (d comes LAST here)

    Each half h (weights 128h .. 128h+127) owns ql[64h : 64h+64] and qh[32h : 32h+32]; for
    l in 0..31, with L' = L[128h + ...]:
        ql[64h + l]      = L'[l]      & 15 | (L'[l + 64] & 15) << 4
        ql[64h + 32 + l] = L'[l + 32] & 15 | (L'[l + 96] & 15) << 4
        qh[32h + l]      = L'[l] >> 4 | L'[l + 32] >> 4 << 2 | L'[l + 64] >> 4 << 4 | L'[l + 96] >> 4 << 6
    weight j = d * scales[j // 16] * (L[j] - 32)

Mirrors `quantize_row_q6_K_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it:

    per sub-block: scale_k, L = make_qx_quants(16, nmax=32, rmse_type=1, no weights)  (see _common)
    max_scale  = the first scale_k with the largest |scale_k|; below 1e-15 -> all 210 bytes zero
    iscale     = -128 / max_scale
    d          = GGML_FP32_TO_FP16(1 / iscale)
    scales[k]  = MIN(127, nearest_int(iscale * scale_k))           as int8
    then each sub-block is re-quantized against the fp16-rounded scale:
        dk = fp16_to_fp32(d) * scales[k];  if dk == 0 the make_qx_quants levels stay
        L  = clamp(nearest_int(x / dk), -32, 31) + 32             (a division, not x * (1/dk))
    nearest_int rounds half to EVEN (the 1.5 * 2^23 magic number), unlike Q8_0's roundf.

With importance weights (ggml's quantize_row_q6_K_impl, used by ggml_quantize_chunk when an imatrix
is given) the only change is make_qx_quants weighting by qw = imatrix[256*i + 16k ...] instead of
x*x, where i is the super-block's index within its row.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import (GROUP_MAX_EPS, block_weights, first_absmax, load_fp16, make_qx_quants, nearest_int,
                      store_fp16)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q6_K]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (208,)
SUB = 16                       # weights per sub-block
NSUB = BLOCK_SIZE // SUB       # 16 sub-blocks
QL, QH, SC, D = 0, 128, 192, 208  # byte offsets
CHUNK = 4096                   # super-blocks per NumPy batch (bounds the temporaries)


def _quantize(x: np.ndarray, qw: np.ndarray | None) -> np.ndarray:
    n = x.shape[0]
    sub = x.reshape(n * NSUB, SUB)
    scales, L = make_qx_quants(sub, 32, None if qw is None else qw.reshape(n * NSUB, SUB))
    scales = scales.reshape(n, NSUB)
    L = L.reshape(n, NSUB, SUB).astype(np.int32)
    max_scale = first_absmax(scales)
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        iscale = np.float32(-128) / max_scale
        d = np.float32(1) / iscale
        sc = np.minimum(127, nearest_int(iscale[:, None] * scales)).astype(np.int8)  # (int8_t) wraps
        out = np.empty((n, TYPE_SIZE), np.uint8)
        store_fp16(out[:, D:], d)
        dk = load_fp16(out[:, D:]) * sc.astype(np.float32)                # [n, 16]
        lev = np.clip(nearest_int(x.reshape(n, NSUB, SUB) / dk[:, :, None]), -32, 31) + 32
    L = np.where((dk != 0)[:, :, None], lev, L).astype(np.uint8).reshape(n, 2, 4, 32)
    lo, hi = L & np.uint8(15), L >> np.uint8(4)  # [n, half, quarter, l]
    out[:, QL:QH] = (np.stack([lo[:, :, 0] | lo[:, :, 2] << np.uint8(4),
                               lo[:, :, 1] | lo[:, :, 3] << np.uint8(4)], axis=2)).reshape(n, 128)
    out[:, QH:SC] = (hi[:, :, 0] | hi[:, :, 1] << np.uint8(2) | hi[:, :, 2] << np.uint8(4)
                     | hi[:, :, 3] << np.uint8(6)).reshape(n, 64)
    out[:, SC:D] = sc.view(np.uint8)
    out[zero] = 0
    return out


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 256] -> u8[n, 210], byte-exact with ggml's quantize_row_q6_K_ref, or with
    quantize_row_q6_K_impl when quant_weights (an imatrix, f32[cols]; see block_weights) is given."""
    n = x.shape[0]
    qw = None if quant_weights is None else block_weights(n, quant_weights, BLOCK_SIZE)
    out = np.empty((n, TYPE_SIZE), np.uint8)
    for s in range(0, n, CHUNK):
        out[s:s + CHUNK] = _quantize(x[s:s + CHUNK], None if qw is None else qw[s:s + CHUNK])
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 210] -> f32[n, 256] (d * scales[k] * (L - 32), as ggml's dequantize_row_q6_K)."""
    n = blocks.shape[0]
    ql = blocks[:, QL:QH].reshape(n, 2, 2, 32)
    qh = blocks[:, QH:SC].reshape(n, 2, 1, 32)
    lo = np.concatenate([ql & np.uint8(15), ql >> np.uint8(4)], axis=2)   # quarters 0,1,2,3
    hi = (qh >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)) & np.uint8(3)
    q = (lo | hi << np.uint8(4)).astype(np.int8).reshape(n, NSUB, SUB) - np.int8(32)
    d = load_fp16(blocks[:, D:])
    sc = blocks[:, SC:D].view(np.int8).astype(np.float32)
    return ((d * sc)[:, :, None] * q.astype(np.float32)).reshape(n, BLOCK_SIZE)

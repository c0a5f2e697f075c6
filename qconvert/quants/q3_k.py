"""Q3_K: 256 weights per super-block, 16 sub-blocks of 16 with a signed 6-bit scale each, 3 bits per
weight, no min. NumPy reference (the spec).

Block layout (110 bytes, ggml's `block_q3_K`)::

    offset  size  field
    0       32    hmask[32]   high bit: bit k of hmask[l] is q[32k + l] >> 2
    32      64    qs[64]      low 2 bits, packed as Q2_K's qs: qs[32h + l] = q[128h + l] & 3 | ... << 6
    96      12    scales[12]  sixteen 6-bit s[j] (scale + 32): bytes 0-7 hold the low nibbles
                              (s[j] in byte j for j < 8, s[j] << 4 in byte j-8 for j >= 8); bits 4-5 of
                              s[j] are bits 2(j//4)..2(j//4)+1 of byte 8 + j%4
    108     2     d           fp16 super-block scale
    weight i (sub-block j = i // 16) = d * (s[j] - 32) * (q[i] - 4),  q in 0..7

Mirrors `quantize_row_q3_K_ref` in ggml/src/ggml-quants.c (ggml_quantize_chunk without an importance
matrix), in float32 exactly as C evaluates it:

    per sub-block   scale = make_q3_quants(16, nmax=4, x, do_rmse=true)
    max_scale       the first scale of largest |scale| (sign kept)
    if max_scale != 0: iscale = -32/max_scale, s[j] = clamp((int8)nearest_int(iscale*scale[j]), -32, 31) + 32,
                       d = fp16(1/iscale)
                       else every s[j] = 0 and d = 0
    q[i] = clamp(nearest_int(x[i] / (fp32(d) * (s[j] - 32))), -4, 3) + 4
           (when fp32(d)*(s[j]-32) == 0 the sub-block keeps make_q3_quants' levels, as C `continue`s)

nearest_int is ggml's round-half-to-even by the 1.5*2^23 trick (_kquants.nearest_int); fp16 is
GGML_FP32_TO_FP16, round to nearest even.

With an importance matrix, `quantize_row_q3_K_impl`: sigma2 = 2*sum(x^2)/256 per super-block,
weights qw * sqrt(sigma2 + x^2), make_qx_quants(16, 4, rmse_type 1, weights) per sub-block, then d and
the 6-bit values from make_qx_quants(16, 32, rmse_type 1) of the scales, weighted by each sub-block's
weight sum. The last pass is the same.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import block_weights, make_qx_quants
from ._kquants import (F32, QK_K, first_absmax, fp16_round, imatrix_weights, make_q3_quants, nearest_int, pack_2bit,
                        requantize, superblock_sum_x2, unpack_2bit)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q3_K]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (108,)
NMAX = 4  # make_q3_quants' nmax in quantize_row_q3_K_ref


def pack_scales(s: np.ndarray) -> np.ndarray:
    """Sixteen 6-bit values u8[n, 16] -> the 12 `scales` bytes (layout in the module docstring)."""
    s = s.astype(np.uint8)
    out = np.empty((s.shape[0], 12), np.uint8)
    out[:, :8] = (s[:, :8] & 0x0F) | ((s[:, 8:] & 0x0F) << 4)
    high = (s >> 4).reshape(-1, 4, 4)  # [n, j // 4, j % 4]
    out[:, 8:] = high[:, 0] | (high[:, 1] << 2) | (high[:, 2] << 4) | (high[:, 3] << 6)
    return out


def unpack_scales(scales: np.ndarray) -> np.ndarray:
    """The 12 `scales` bytes -> sixteen 6-bit values u8[n, 16] (scale + 32)."""
    low = np.concatenate([scales[:, :8] & 0x0F, scales[:, :8] >> 4], axis=1)
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)
    high = ((scales[:, None, 8:12] >> shifts) & 3).reshape(-1, 16)
    return low | (high << 4)


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 256] -> u8[n, 110], byte-exact with ggml's quantize_row_q3_K_ref, or with
    quantize_row_q3_K_impl when quant_weights (an imatrix row, f32[cols]; x is then whole rows of
    cols weights) is given."""
    n = x.shape[0]
    xs = x.reshape(n * 16, 16)
    out = np.empty((n, TYPE_SIZE), np.uint8)
    if quant_weights is None:
        scales, L = make_q3_quants(xs, NMAX)
        scales = scales.reshape(n, 16)
        max_scale = first_absmax(scales)
        has = max_scale != 0
        with np.errstate(all="ignore"):
            iscale = F32(-32) / max_scale
            s = np.clip(nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31) + 32
            out[:, 108:110], d = fp16_round(np.where(has, F32(1) / iscale, F32(0)))
        out[:, 96:108] = np.where(has[:, None], pack_scales(np.where(has[:, None], s, 0)), 0)
    else:
        # quantize_row_q3_K_impl: sigma2 = 2*sum(x^2)/256 over the super-block, weights
        # qw*sqrt(sigma2 + x^2), make_qx_quants(16, 4, rmse_type 1, weights) per sub-block, then the
        # 6-bit scales from make_qx_quants(16, 32, rmse_type 1) weighted by the sub-blocks' weight sums.
        qw = block_weights(n, quant_weights, BLOCK_SIZE).reshape(n * 16, 16)
        sigma2 = F32(2) * superblock_sum_x2(x) / F32(QK_K)
        weights, sw = imatrix_weights(xs, qw, np.repeat(sigma2, 16))
        scales, L = make_qx_quants(xs, NMAX, weights)
        d_block, s = make_qx_quants(scales.reshape(n, 16), 32, sw.reshape(n, 16))
        out[:, 96:108] = pack_scales(s)
        out[:, 108:110], d = fp16_round(d_block)
    sc = unpack_scales(out[:, 96:108]).astype(np.int32) - 32
    L = requantize(xs, (d[:, None] * sc.astype(F32)).ravel(), None, -4, 3, keep=L.astype(np.int32) - 4) + 4
    L = L.reshape(n, BLOCK_SIZE)
    high = (L > 3).reshape(n, 8, 32).astype(np.uint8)  # [n, k, l]: weight 32k + l
    out[:, :32] = np.bitwise_or.reduce(high << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    out[:, 32:96] = pack_2bit(L & 3)
    return out


def sub_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u8[n, 110] -> (d*(s - 32), 0), f32[n, 16] each: every sub-block's step as the decoder uses it and
    the last quantization pass divides by (fp16 d widened); Q3_K has no offset."""
    d = np.ascontiguousarray(blocks[:, 108:110]).view(np.float16).astype(F32)
    s = (unpack_scales(blocks[:, 96:108]).astype(np.int8) - np.int8(32)).astype(F32)
    dl = d * s
    return dl, np.zeros_like(dl)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 110] -> f32[n, 256] (d*(s - 32) * (q - 4), as ggml's dequantize_row_q3_K)."""
    n = blocks.shape[0]
    dl = sub_scales(blocks)[0][:, :, None]
    ql = unpack_2bit(blocks[:, 32:96]).astype(np.int8)
    qh = (blocks[:, None, :32] >> np.arange(8, dtype=np.uint8)[None, :, None]) & np.uint8(1)
    q = (ql - ((qh.reshape(n, 256) ^ np.uint8(1)) << np.uint8(2)).astype(np.int8)).astype(F32)
    return (dl * q.reshape(n, 16, 16)).reshape(n, BLOCK_SIZE)

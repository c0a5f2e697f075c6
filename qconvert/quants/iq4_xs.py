"""IQ4_XS: 256 weights per super-block, 8 sub-blocks of 32 with a 6-bit scale each, 4-bit indices
into IQ4_NL's non-linear table. NumPy reference (the spec).

Block layout (136 bytes, ggml's `block_iq4_xs`)::

    offset  size  field
    0       2     d            fp16 super-block scale
    2       2     scales_h     uint16: bits 2ib, 2ib+1 are the top two bits of sub-block ib's scale
    4       4     scales_l[4]  low nibbles of the scales: sub-block ib in scales_l[ib/2] >> 4*(ib%2)
    8       128   qs[128]      per sub-block ib: qs[16ib + j] = L[32ib + j] | L[32ib + 16 + j] << 4
    weight i (sub-block ib = i // 32) = d * (ls[ib] - 32) * kvalues_iq4nl[L[i]],  ls in 0..63

Mirrors `quantize_iq4_xs` in ggml/src/ggml-quants.c (what ggml_quantize_chunk runs, with or without
an importance matrix): `quantize_row_iq4_nl_impl(256, 32, ..., ntry = 7)` per super-block, in
float32 exactly as C evaluates it:

    each sub-block's scale as IQ4_NL's search finds it (iq4_nl.block_scales; with an imatrix the
    weights use sigma2 = 2/256 * sum x^2 over the super-block)
    max_scale = the first sub-block scale of the largest |scale| (+0.0 if all are 0; never a NaN)
    d  = -max_scale / 32 (an all-zero super-block: -0.0), stored as GGML_FP32_TO_FP16(d)
    id = d ? 1/d : 0 from the float32 d; per sub-block l = clamp(nearest_int(id*scale), -32, 31)
         (ggml's round-half-even), ls = l + 32; dl = d*l, idl = dl ? 1/dl : 0 and
         L = best_index_int8(idl * x) for its 32 weights
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import nearest_int, store_fp16
from .iq4_nl import F32, KVALUES_F, best_index, block_scales, impl_weights, pack_nibbles

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.IQ4_XS]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0,)
NSUB = BLOCK_SIZE // 32


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 256] -> u8[n, 136], byte-exact with ggml's quantize_iq4_xs (ggml_quantize_chunk),
    weighted by quant_weights (an imatrix row, f32[cols]; x is then whole rows of cols) if given."""
    n = x.shape[0]
    xs = x.reshape(n * NSUB, 32)
    scales = block_scales(xs, impl_weights(xs, quant_weights, BLOCK_SIZE)).reshape(n, NSUB)
    max_scale, amax_scale = np.zeros(n, F32), np.zeros(n, F32)
    for ib in range(NSUB):  # C's scan: `if (fabsf(d) > amax_scale)`, where a NaN scale never wins
        s = scales[:, ib]
        with np.errstate(invalid="ignore"):
            win = np.abs(s) > amax_scale
        max_scale, amax_scale = np.where(win, s, max_scale), np.where(win, np.abs(s), amax_scale)
    with np.errstate(all="ignore"):
        d = -max_scale / F32(32)
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        lv = np.clip(nearest_int(inv[:, None] * scales), -32, 31)
        dl = d[:, None] * lv.astype(F32)
        idl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(F32)
        L = best_index(idl.reshape(-1, 1) * xs)
    ls = (lv + 32).astype(np.uint16)
    out = np.empty((n, TYPE_SIZE), np.uint8)
    store_fp16(out[:, 0:2], d)
    scales_h = np.zeros(n, np.uint16)
    for ib in range(NSUB):
        scales_h |= (ls[:, ib] >> 4) << (2 * ib)
    out[:, 2:4] = scales_h.reshape(-1, 1).view(np.uint8)
    low = (ls & 0x0F).astype(np.uint8)
    out[:, 4:8] = low[:, 0::2] | (low[:, 1::2] << np.uint8(4))
    out[:, 8:] = pack_nibbles(L).reshape(n, 128)
    return out


def sub_scales(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 136] -> the 6-bit scales ls f32[n, 8] minus 32, as dequantize_row_iq4_xs reads them."""
    h = np.ascontiguousarray(blocks[:, 2:4]).view(np.uint16)
    low = blocks[:, 4:8]
    lo = np.stack([low & np.uint8(0x0F), low >> np.uint8(4)], axis=2).reshape(-1, NSUB).astype(np.int32)
    hi = (h.astype(np.int32) >> (2 * np.arange(NSUB))) & 3
    return (lo | (hi << 4)).astype(F32) - F32(32)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 136] -> f32[n, 256] (d * (ls - 32) * kvalues_iq4nl[L], as ggml's dequantize_row_iq4_xs)."""
    n = blocks.shape[0]
    d = np.ascontiguousarray(blocks[:, 0:2]).view(np.float16).astype(F32)
    dl = d * sub_scales(blocks)
    qs = blocks[:, 8:].reshape(n * NSUB, 16)
    L = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)
    return (dl.reshape(-1, 1) * KVALUES_F[L]).reshape(n, BLOCK_SIZE)

"""MXFP4: 32 weights per block, a power-of-two scale (E8M0), 4-bit E2M1 floats. NumPy reference (the spec).

Block layout (17 bytes, ggml's `block_mxfp4`; OCP Microscaling Formats v1.0)::

    offset  size  field
    0       1     e       E8M0 exponent: the block's scale is d = 2^(e - 128)
                          (GGML_E8M0_TO_FP32_HALF: half of 2^(e - 127), as the levels are doubled)
    1       16    qs[16]  qs[j] = i[j] | i[j + 16] << 4   (low nibbles: weights 0..15, high: 16..31)
    weight j = d * kvalues_mxfp4[i[j]],  kvalues_mxfp4 = 0 1 2 3 4 6 8 12, then -0 -1 -2 -3 -4 -6 -8 -12
    (E2M1's 0, 0.5, 1, 1.5, 2, 3, 4, 6 doubled; ggml-common.h)

Mirrors `quantize_row_mxfp4_ref` in ggml/src/ggml-quants.c, in float32 exactly as C evaluates it:

    amax = max |x[j]|                      (`if (amax < fabsf(v))`: the first of equals, NaN skipped)
    e    = amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0
           log2f rounds: an amax a few ulps below 2^k has log2f(amax) == k, so e counts it in the
           binade above (glibc's log2f is correctly rounded there; we take float32(log2(float64)),
           the same value). Below 2^-125 the float is negative and C's conversion is undefined;
           x86-64 libggml (cvttss2si, then the low byte) writes it modulo 256: we do too (so an amax in
           [2^-126, 2^-125) gets e = 0xFF, E8M0's NaN, which validate/values.py refuses as llama-quantize does).
    i[j] = best_index_mxfp4(x[j], d): the first index of the 16 whose |kvalues[i]*d - x[j]| (float32)
           is smallest. So a tie between two levels goes to the smaller magnitude (the lower index),
           and a negative x that rounds to zero gets index 0 (+0), not 8 (-0).

ggml's quantize_mxfp4 ignores an importance matrix (it always calls the _ref function).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.MXFP4]
HALF = BLOCK_SIZE // 2
# byte offsets of the block's E8M0 fields: 0xFF is E8M0's NaN, which ggml_validate_row_data (and so
# llama-quantize) refuses, and which ggml's own rounding writes for an amax in [2^-126, 2^-125)
E8M0_FIELDS = (0,)
KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
_SLICE = 16384  # blocks at a time


def e8m0_to_fp32_half(e: np.ndarray) -> np.ndarray:
    """GGML_E8M0_TO_FP32_HALF: u8 e -> float32 2^(e - 128) (e = 0, 1 give the subnormals 2^-128, 2^-127).

    >>> np.log2(e8m0_to_fp32_half(np.array([0, 1, 2, 128, 254], np.uint8))).tolist()
    [-128.0, -127.0, -126.0, 0.0, 126.0]
    """
    e = e.astype(np.uint32)
    bits = np.where(e < 2, np.uint32(0x00200000) << e, (e - np.uint32(1)) << np.uint32(23))
    return bits.astype(np.uint32).view(np.float32)


def _exponent(amax: np.ndarray) -> np.ndarray:
    """f32 amax >= 0 -> the e byte: (uint8_t)(floorf(log2f(amax)) - 2 + 127), 0 when amax is 0."""
    with np.errstate(divide="ignore"):
        lg = np.log2(amax.astype(np.float64)).astype(np.float32)  # log2f: correctly rounded here
    v = np.floor(lg) - np.float32(2) + np.float32(127)
    v = np.where(amax > 0, v, np.float32(0))
    return (v.astype(np.int32) & 0xFF).astype(np.uint8)  # cvttss2si's low byte


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    """f32[n, 32] -> u8[n, 17], byte-exact with ggml's quantize_row_mxfp4_ref."""
    n = x.shape[0]
    absx = np.abs(x)
    amax = np.where(np.isnan(absx), np.float32(0), absx).max(axis=1) if n else np.zeros(0, np.float32)
    e = _exponent(amax)
    d = e8m0_to_fp32_half(e)[:, None, None]
    idx = np.empty(x.shape, np.uint8)
    for at in range(0, n, _SLICE):  # slices keep the [blocks, 32, 16] errors to 32 MB
        s = slice(at, at + _SLICE)
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.abs(KVALUES[None, None, :] * d[s] - x[s, :, None])  # float32 as C; inf where 12 d overflows
            # argmin takes the first of equals, as C's strict `<`; a NaN err (NaN x) would win there
            # while C keeps index 0: all 16 are NaN then, and argmin's first NaN is index 0 too.
            idx[s] = err.argmin(axis=2)
    out = np.empty((n, TYPE_SIZE), dtype=np.uint8)
    out[:, 0] = e
    out[:, 1:] = idx[:, :HALF] | (idx[:, HALF:] << np.uint8(4))
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 17] -> f32[n, 32] (kvalues[i] * d, as ggml's dequantize_row_mxfp4)."""
    d = e8m0_to_fp32_half(blocks[:, :1])
    qs = blocks[:, 1:]
    idx = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)
    return KVALUES[idx] * d

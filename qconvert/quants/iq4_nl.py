"""IQ4_NL: 32 weights per block, one fp16 scale, 4-bit indices into a fixed non-linear table of 16
levels. NumPy reference (the spec); IQ4_XS (iq4_xs.py) shares its search.

Block layout (18 bytes, ggml's `block_iq4_nl`)::

    offset  size  field
    0       2     d       fp16 scale, little-endian
    2       16    qs[16]  qs[j] = L[j] | L[j + 16] << 4   (low nibbles: weights 0..15,
                                                           high nibbles: weights 16..31)
    weight j = d * kvalues_iq4nl[L[j]],  L in 0..15

    kvalues_iq4nl = -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113   (ggml-common.h)

Mirrors `quantize_iq4_nl` in ggml/src/ggml-quants.c, which ggml_quantize_chunk calls with or
without an importance matrix (never `quantize_row_iq4_nl_ref`, whose ntry is -1): per block,
`quantize_row_iq4_nl_impl(32, 32, ..., ntry = 7)`, in float32 exactly as C evaluates it:

    weight = x^2, or with an imatrix qw * sqrtf(sigma2 + x^2), sigma2 = 2/32 * sum x^2 (in order)
    max    = the first x with the largest |x|; |max| < GROUP_MAX_EPS (1e-15) -> scale 0
    d      = -max / -127 (= max/127), id = 1/d; l = best_index_int8(id*x) (the nearest level,
             C's float comparisons below); sumqx = sum (w*q)*x, sumq2 = sum (w*q)*q in index order
             (q = the level's value); d = sumq2 > 0 ? sumqx/sumq2 : 0, best = d*sumqx
    for itry in -7..7: id = (float)(itry - 127) / max, the same sums; it wins when sumq2 > 0 and
             sumqx^2 > best*sumq2 (strictly), and then d = sumqx/sumq2, best = d*sumqx
    d stored as GGML_FP32_TO_FP16(d); the levels are then chosen again from the float32 d, not
    the fp16 one: L = best_index_int8((d ? 1/d : 0) * x) (an all-zero block: index 8, value 1)

best_index_int8(x): 0 if x <= -127, 15 if x >= 113, else the binary search's bracket
val[mu-1] <= x < val[mu] and `x - val[mu-1] < val[mu] - x ? mu-1 : mu` in float32 (a NaN x gives 15).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import GROUP_MAX_EPS, block_weights, first_absmax, store_fp16
from ._kquants import _acc

F32 = np.float32
BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.IQ4_NL]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0,)
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
KVALUES_F = KVALUES.astype(F32)
NTRY = 7  # quantize_iq4_nl's and quantize_iq4_xs's ntry


def best_index(x: np.ndarray) -> np.ndarray:
    """ggml's best_index_int8(16, kvalues_iq4nl, x) elementwise: the index of the nearest level.

    >>> best_index(np.array([-200, -115.5, 6.9999995, 7, 0, np.nan, 1e9], np.float32)).tolist()
    [0, 1, 8, 9, 8, 15, 15]
    """
    x = np.asarray(x, F32)
    mu = np.clip(np.searchsorted(KVALUES_F, x, side="right"), 1, 15)  # val[mu-1] <= x < val[mu]
    with np.errstate(invalid="ignore"):
        lower = (x - KVALUES_F[mu - 1]) < (KVALUES_F[mu] - x)
    idx = np.where(lower, mu - 1, mu)
    idx = np.where(x <= KVALUES_F[0], 0, idx)
    idx = np.where((x >= KVALUES_F[15]) | np.isnan(x), 15, idx)
    return idx.astype(np.uint8)


def _sums(x: np.ndarray, w: np.ndarray, iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sumqx, sumq2 of one trial: levels of iscale*x, accumulated in index order as C does."""
    q = KVALUES_F[best_index(iscale[:, None] * x)]
    wq = w * q
    return _acc(wq * x), _acc(wq * q)


def block_scales(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The scale search of quantize_row_iq4_nl_impl (ntry 7) for each block of 32: x, weight
    f32[N, 32] -> d f32[N] (0 for a block whose max |x| is below GROUP_MAX_EPS)."""
    mx = first_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        d = -mx / KVALUES_F[0]
        sumqx, sumq2 = _sums(x, weight, F32(1) / d)
        d = np.where(sumq2 > 0, sumqx / sumq2, F32(0)).astype(F32)
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            sx, s2 = _sums(x, weight, F32(itry + int(KVALUES[0])) / mx)
            win = (s2 > 0) & (sx * sx > best * s2)
            d = np.where(win, sx / s2, d).astype(F32)
            best = np.where(win, d * sx, best)
    return np.where(zero, F32(0), d).astype(F32)


def impl_weights(x: np.ndarray, quant_weights: np.ndarray | None, super_block: int) -> np.ndarray:
    """quantize_row_iq4_nl_impl's weights for x f32[N, 32] (N/(super_block/32) super-blocks in a
    row): x^2, or qw * sqrtf(sigma2 + x^2) with sigma2 = sum(x^2) * (2/super_block) per super-block."""
    if quant_weights is None:
        with np.errstate(over="ignore"):
            return x * x
    n = x.shape[0] * x.shape[1] // super_block
    qw = block_weights(n, quant_weights, super_block).reshape(x.shape)
    sb = x.reshape(n, super_block)
    with np.errstate(all="ignore"):
        sigma2 = _acc(sb * sb) * (F32(2) / F32(super_block))
        return qw * np.sqrt(np.repeat(sigma2, super_block // 32)[:, None] + x * x)


def pack_nibbles(L: np.ndarray) -> np.ndarray:
    """u8[N, 32] indices -> u8[N, 16]: qs[j] = L[j] | L[j + 16] << 4."""
    return L[:, :16] | (L[:, 16:] << np.uint8(4))


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 32] -> u8[n, 18], byte-exact with ggml's quantize_iq4_nl (ggml_quantize_chunk),
    weighted by quant_weights (an imatrix row, f32[cols]; x is then whole rows of cols) if given."""
    d = block_scales(x, impl_weights(x, quant_weights, BLOCK_SIZE))
    with np.errstate(all="ignore"):
        inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
        L = best_index(inv[:, None] * x)
    out = np.empty((x.shape[0], TYPE_SIZE), np.uint8)
    store_fp16(out[:, :2], d)
    out[:, 2:] = pack_nibbles(L)
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 18] -> f32[n, 32] (d * kvalues_iq4nl[L], as ggml's dequantize_row_iq4_nl)."""
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(F32)
    qs = blocks[:, 2:]
    L = np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=1)
    return d * KVALUES_F[L]

"""TQ1_0: 256 ternary weights per block, one fp16 scale, 1.6875 bits per weight. NumPy reference (the spec).

Block layout (54 bytes, ggml's `block_tq1_0`)::

    offset  size  field
    0       32    qs[0:32]   5 trits a byte: qs[m] packs weights m + 32 n, n = 0..4   (weights 0..159)
    32      16    qs[32:48]  5 trits a byte: qs[32 + m] packs weights 160 + m + 16 n  (160..239)
    48      4     qh[4]      4 trits a byte: qh[j] packs weights 240 + j + 4 n, n = 0..3 (240..255)
    52      2     d          fp16 scale, little-endian
    weight = d * (t - 1), t in {0, 1, 2}

A byte's trits t0..t4 (t0 first) make q = t0*81 + t1*27 + t2*9 + t3*3 + t4 (qh: four trits, then
times 3, so t0 is the most significant trit there too), stored as the fixed-point fraction
ceil(q * 256 / 243) = (q * 256 + 242) // 243 in 0..255. Decoding multiplies the byte by 3^n
modulo 256 and takes ((that * 3) >> 8): trit n is the integer part of 3 * the fraction's n-th
shift (ggml's dequantize_row_tq1_0).

Mirrors `quantize_row_tq1_0_ref` in ggml/src/ggml-quants.c: d = max |x|, t = lroundf(x / d) + 1
(round half away from zero; the shared part, and the subnormal-block case, in _ternary.py). ggml's
quantize_tq1_0 ignores an importance matrix (it always calls the _ref function).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._ternary import QK_K, store_d, ternary

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.TQ1_0]
assert BLOCK_SIZE == QK_K
# byte offset of the fp16 scale: a value too large for it becomes inf (validate/values.py)
FP16_FIELDS = (52,)
# (first weight, trits per byte, bytes): the three runs of the layout above
_RUNS = ((0, 5, 32), (160, 5, 16), (240, 4, 4))
_POW3 = np.array([1, 3, 9, 27, 81], np.uint8)


def _pack(t: np.ndarray) -> np.ndarray:
    """u8[n, trits, bytes] (trit n of byte m) -> the ceil(q * 256 / 243) bytes u8[n, bytes]."""
    q = np.zeros((t.shape[0], t.shape[2]), np.uint8)
    for n in range(t.shape[1]):
        q = q * np.uint8(3) + t[:, n]  # uint8_t arithmetic, modulo 256 as C (trits > 2 only with inf/NaN)
    if t.shape[1] == 4:
        q = q * np.uint8(3)  # qh: the first trit moves to the most significant place
    return ((q.astype(np.uint16) * 256 + 242) // 243).astype(np.uint8)


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    """f32[n, 256] -> u8[n, 54], byte-exact with ggml's quantize_row_tq1_0_ref."""
    d, t = ternary(x)
    out = np.empty((x.shape[0], TYPE_SIZE), dtype=np.uint8)
    at = 0
    for first, trits, nbytes in _RUNS:
        out[:, at:at + nbytes] = _pack(t[:, first:first + trits * nbytes].reshape(-1, trits, nbytes))
        at += nbytes
    store_d(out, d)
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 54] -> f32[n, 256] (d * (t - 1), as ggml's dequantize_row_tq1_0)."""
    d = np.ascontiguousarray(blocks[:, 52:54]).view(np.float16).astype(np.float32)
    parts = []
    at = 0
    for _, trits, nbytes in _RUNS:
        q = blocks[:, None, at:at + nbytes] * _POW3[None, :trits, None]  # uint8: modulo 256, as C
        parts.append(((q.astype(np.uint16) * 3) >> 8).reshape(-1, trits * nbytes))
        at += nbytes
    t = np.concatenate(parts, axis=1).astype(np.float32)
    return d * (t - np.float32(1))

"""TQ2_0: 256 ternary weights per block, one fp16 scale, 2 bits per weight. NumPy reference (the spec).

Block layout (66 bytes, ggml's `block_tq2_0`)::

    offset  size  field
    0       64    qs[64]  2-bit trits t in {0, 1, 2}, four to a byte: qs[32 c + m] bits 2k..2k+1
                          hold weight 128 c + 32 k + m (c = 0, 1; k = 0..3; m = 0..31)
    64      2     d       fp16 scale, little-endian (after the trits, unlike the legacy types)
    weight = d * (t - 1)

Mirrors `quantize_row_tq2_0_ref` in ggml/src/ggml-quants.c: d = max |x|, t = lroundf(x / d) + 1
(round half away from zero; the shared part, and the subnormal-block case, in _ternary.py). ggml's
quantize_tq2_0 ignores an importance matrix (it always calls the _ref function).
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._ternary import QK_K, store_d, ternary

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.TQ2_0]
assert BLOCK_SIZE == QK_K
# byte offset of the fp16 scale: a value too large for it becomes inf (validate/values.py)
FP16_FIELDS = (64,)
_SHIFTS = (np.arange(4, dtype=np.uint8) * np.uint8(2))[None, None, :, None]


def quantize_blocks(x: np.ndarray) -> np.ndarray:
    """f32[n, 256] -> u8[n, 66], byte-exact with ggml's quantize_row_tq2_0_ref."""
    d, t = ternary(x)
    out = np.empty((x.shape[0], TYPE_SIZE), dtype=np.uint8)
    # [n, c, k, m]: weight 128 c + 32 k + m goes to byte 32 c + m, bits 2k
    # (`xi & 3`: only a block holding inf/NaN has trits above 2)
    out[:, :64] = np.bitwise_or.reduce((t.reshape(-1, 2, 4, 32) & np.uint8(3)) << _SHIFTS, axis=2).reshape(-1, 64)
    store_d(out, d)
    return out


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 66] -> f32[n, 256] (d * (t - 1), as ggml's dequantize_row_tq2_0)."""
    d = np.ascontiguousarray(blocks[:, 64:66]).view(np.float16).astype(np.float32)
    t = (blocks[:, :64].reshape(-1, 2, 1, 32) >> _SHIFTS) & np.uint8(3)
    return d * (t.reshape(-1, BLOCK_SIZE).astype(np.float32) - np.float32(1))

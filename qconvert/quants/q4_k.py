"""Q4_K: 256 weights per super-block, 8 sub-blocks of 32 with a 6-bit scale and min each, 4 bits
per weight. NumPy reference (the spec).

Block layout (144 bytes, ggml's `block_q4_K`)::

    offset  size  field
    0       2     d           fp16 super-block scale of the sub-block scales
    2       2     dmin        fp16 super-block scale of the sub-block mins
    4       12    scales[12]  eight 6-bit scales sc[j] and mins m[j], packed as get_scale_min_k4
                              reads them (see _kquants.pack_scale_min_k4)
    16      128   qs[128]     for each 64 weights c*64..c*64+63: qs[32c + l] = q[64c + l] | q[64c + 32 + l] << 4
    weight i (sub-block j = i // 32) = d * sc[j] * q[i] - dmin * m[j],  q in 0..15

Mirrors `quantize_row_q4_K_ref` in ggml/src/ggml-quants.c (what ggml_quantize_chunk runs without an
importance matrix), in float32 exactly as C evaluates it:

    per sub-block   weights w = sqrt(sum(x^2)/32) + |x|  (sum accumulated in order)
                    scale, min = make_qkx2_quants(32, nmax=15, rmin=-1, rdelta=0.1, nstep=20, mad=false)
    d    = fp16(max_scale / 63),  sc[j] = MIN(63, (uint8)nearest_int(63/max_scale * scale[j]))
    dmin = fp16(max_min / 63),    m[j]  = MIN(63, (uint8)nearest_int(63/max_min * min[j]))
    q[i] = clamp(nearest_int((x[i] + fp32(dmin)*m[j]) / (fp32(d)*sc[j])), 0, 15)
           (when fp32(d)*sc[j] == 0 the sub-block keeps make_qkx2_quants' levels, as C `continue`s)

nearest_int is ggml's round-half-to-even by the 1.5*2^23 trick (_kquants.nearest_int); fp16 is
GGML_FP32_TO_FP16, round to nearest even.

With an importance matrix, `quantize_row_q4_K_impl` (what ggml_quantize_chunk runs when given
one): sigma2 = 2*sum(x^2)/256 per super-block, weights qw * sqrt(sigma2 + x^2), make_qkx3_quants(32,
nmax, rmin -0.9, rdelta 0.05, nstep 36); d, dmin and the 6-bit values come from make_qp_quants(8, 63)
of the scales and of the mins, weighted by each sub-block's weight sum, stored as they come (no MIN(63, .)).
The last pass is the same. Details in _kquants.k4_levels.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import block_weights
from ._kquants import F32, k4_levels, unpack_scale_min_k4

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_K]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (0, 2)
NMAX, RMIN, RDELTA, NSTEP = 15, -1.0, 0.1, 20  # make_qkx2_quants' arguments in quantize_row_q4_K_ref


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 256] -> u8[n, 144], byte-exact with ggml's quantize_row_q4_K_ref, or with
    quantize_row_q4_K_impl when quant_weights (an imatrix row, f32[cols]; x is then whole rows of
    cols weights) is given."""
    qw = None if quant_weights is None else block_weights(x.shape[0], quant_weights, BLOCK_SIZE)
    head, L = k4_levels(x, NMAX, RMIN, RDELTA, NSTEP, qw)
    q = L.reshape(-1, 4, 2, 32)
    out = np.empty((x.shape[0], TYPE_SIZE), np.uint8)
    out[:, :16] = head
    out[:, 16:] = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)
    return out


def sub_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u8[n, 144] -> (d*sc, dmin*m), f32[n, 8] each: the step and offset of every sub-block, as
    the decoder uses them and as the last quantization pass divides by (fp16 d, dmin widened)."""
    d = np.ascontiguousarray(blocks[:, 0:2]).view(np.float16).astype(F32)
    dmin = np.ascontiguousarray(blocks[:, 2:4]).view(np.float16).astype(F32)
    sc, m = unpack_scale_min_k4(blocks[:, 4:16])
    return d * sc.astype(F32), dmin * m.astype(F32)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 144] -> f32[n, 256] (d*sc * q - dmin*m, as ggml's dequantize_row_q4_K)."""
    n = blocks.shape[0]
    qs = blocks[:, 16:].reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    q = (qs & np.uint8(0x0F)).reshape(n, 8, 32).astype(F32)
    dl, ml = sub_scales(blocks)
    return (dl[:, :, None] * q - ml[:, :, None]).reshape(n, BLOCK_SIZE)

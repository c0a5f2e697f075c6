"""Q2_K: 256 weights per super-block, 16 sub-blocks of 16 with a 4-bit scale and min each, 2 bits
per weight. NumPy reference (the spec).

Block layout (84 bytes, ggml's `block_q2_K`)::

    offset  size  field
    0       16    scales[16]  sub-block j: scale sc[j] in the low nibble, min m[j] in the high nibble
    16      64    qs[64]      for each 128 weights h*128..: qs[32h + l] = q[128h + l] | q[128h + 32 + l] << 2
                              | q[128h + 64 + l] << 4 | q[128h + 96 + l] << 6
    80      2     d           fp16 super-block scale of the sub-block scales
    82      2     dmin        fp16 super-block scale of the sub-block mins
    weight i (sub-block j = i // 16) = d * sc[j] * q[i] - dmin * m[j],  q in 0..3

Mirrors `quantize_row_q2_K_ref` in ggml/src/ggml-quants.c (ggml_quantize_chunk without an importance
matrix), in float32 exactly as C evaluates it:

    per sub-block   scale, min = make_qkx2_quants(16, nmax=3, weights |x|, rmin=-0.5, rdelta=0.1,
                                                  nstep=15, mad=true)
    if max_scale > 0:  sc[j] = nearest_int(15/max_scale * scale[j]),  d = fp16(max_scale/15)
                       else sc = 0, d = 0
    if max_min > 0:    m[j] = nearest_int(15/max_min * min[j]),  dmin = fp16(max_min/15)  else 0
                       (the scales byte is `sc | m << 4` in uint8 arithmetic, as C stores it)
    q[i] = clamp(nearest_int((x[i] + fp32(dmin)*m[j]) / (fp32(d)*sc[j])), 0, 3)
           (when fp32(d)*sc[j] == 0 the sub-block keeps make_qkx2_quants' levels, as C `continue`s)

nearest_int is ggml's round-half-to-even by the 1.5*2^23 trick (_kquants.nearest_int); fp16 is
GGML_FP32_TO_FP16, round to nearest even.

With an importance matrix, `quantize_row_q2_K_impl`: sigma2 = sum(x^2)/256 per super-block (no factor
2 here), weights qw * sqrt(sigma2 + x^2), make_qkx3_quants(16, 3, rmin -0.9, rdelta 0.05, nstep 36,
squared error), then d, dmin and the 4-bit values from make_qp_quants(16, 15) of the scales and of the
mins, weighted by each sub-block's weight sum. The last pass is the same.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ._common import block_weights
from ._kquants import (F32, QK_K, fp16_round, imatrix_weights, make_qkx2_quants, make_qp_quants, nearest_int,
                        pack_2bit, requantize, running_max, superblock_sum_x2, unpack_2bit)

BLOCK_SIZE, TYPE_SIZE = GGML_QUANT_SIZES[GGMLQuantizationType.Q2_K]
# byte offsets of the block's fp16 fields (the layout above): a value too large for them
# becomes inf, which values.py and llama-quantize's ggml_validate_row_data refuse
FP16_FIELDS = (80, 82)
NMAX, RMIN, RDELTA, NSTEP = 3, -0.5, 0.1, 15  # make_qkx2_quants' arguments in quantize_row_q2_K_ref
Q4SCALE = F32(15)


def quantize_blocks(x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[n, 256] -> u8[n, 84], byte-exact with ggml's quantize_row_q2_K_ref, or with
    quantize_row_q2_K_impl when quant_weights (an imatrix row, f32[cols]; x is then whole rows of
    cols weights) is given."""
    n = x.shape[0]
    xs = x.reshape(n * 16, 16)
    out = np.empty((n, TYPE_SIZE), np.uint8)
    if quant_weights is None:
        scales, mins, L = make_qkx2_quants(xs, np.abs(xs), NMAX, RMIN, RDELTA, NSTEP, use_mad=True)
        scales, mins = scales.reshape(n, 16), mins.reshape(n, 16)
        max_scale, max_min = running_max(scales), running_max(mins)
        has_scale, has_min = max_scale > 0, max_min > 0
        with np.errstate(all="ignore"):
            ls = nearest_int((Q4SCALE / max_scale)[:, None] * scales)
            lm = nearest_int((Q4SCALE / max_min)[:, None] * mins)
        # C: `y.scales[j] = l` then `y.scales[j] |= (l << 4)`, both truncated to uint8
        byte = np.where(has_scale[:, None], ls, 0).astype(np.uint8)
        byte |= np.where(has_min[:, None], lm << 4, 0).astype(np.uint8)
        out[:, 80:82], d = fp16_round(np.where(has_scale, max_scale / Q4SCALE, F32(0)))
        out[:, 82:84], dmin = fp16_round(np.where(has_min, max_min / Q4SCALE, F32(0)))
    else:
        # quantize_row_q2_K_impl: sigma2 = sum(x^2)/256 over the super-block (no factor 2 here),
        # weights qw*sqrt(sigma2 + x^2), make_qkx3_quants(16, 3, rmin -0.9, rdelta 0.05, nstep 36,
        # squared error) (make_qkx2_quants' computation), then the 4-bit scales and mins from
        # make_qp_quants(16, 15) weighted by each sub-block's weight sum.
        qw = block_weights(n, quant_weights, BLOCK_SIZE).reshape(n * 16, 16)
        sigma2 = superblock_sum_x2(x) / F32(QK_K)
        weights, sw = imatrix_weights(xs, qw, np.repeat(sigma2, 16))
        scales, mins, L = make_qkx2_quants(xs, weights, NMAX, -0.9, 0.05, 36, use_mad=False)
        sw = sw.reshape(n, 16)
        dm, ls = make_qp_quants(scales.reshape(n, 16), 15, sw)
        mm, lm = make_qp_quants(mins.reshape(n, 16), 15, sw)
        byte = ls | (lm << 4)
        out[:, 80:82], d = fp16_round(dm)
        out[:, 82:84], dmin = fp16_round(mm)
    out[:, :16] = byte
    sub_d = (d[:, None] * (byte & 0x0F).astype(F32)).ravel()
    sub_m = (dmin[:, None] * (byte >> 4).astype(F32)).ravel()
    L = requantize(xs, sub_d, sub_m, 0, NMAX, keep=L).reshape(n, BLOCK_SIZE)
    out[:, 16:80] = pack_2bit(L)
    return out


def sub_scales(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u8[n, 84] -> (d*sc, dmin*m), f32[n, 16] each: the step and offset of every sub-block, as the
    decoder uses them and as the last quantization pass divides by (fp16 d, dmin widened)."""
    scales = blocks[:, :16]
    d = np.ascontiguousarray(blocks[:, 80:82]).view(np.float16).astype(F32)
    dmin = np.ascontiguousarray(blocks[:, 82:84]).view(np.float16).astype(F32)
    return d * (scales & 0x0F).astype(F32), dmin * (scales >> 4).astype(F32)


def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
    """u8[n, 84] -> f32[n, 256] (d*sc * q - dmin*m, as ggml's dequantize_row_q2_K)."""
    n = blocks.shape[0]
    dl, ml = sub_scales(blocks)
    q = unpack_2bit(blocks[:, 16:80]).reshape(n, 16, 16).astype(F32)
    return (dl[:, :, None] * q - ml[:, :, None]).reshape(n, BLOCK_SIZE)

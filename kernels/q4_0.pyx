# Q4_0 kernel: the same computation as qconvert/quants/q4_0.py (the spec), in C, GIL released.
#
# Block layout (18 bytes, ggml's block_q4_0):  d: fp16 scale (2 bytes, LE) | qs: uint8[16]
# qs[j] = q[j] | q[j + 16] << 4 (low nibbles weights 0..15, high nibbles 16..31); weight = d * (q - 8).
# Mirrors quantize_row_q4_0_ref (ggml/src/ggml-quants.c): max = the first x with the largest |x|
# (sign kept; +0.0 for an all-zero block), d = max / -8, id = d ? 1/d : 0,
# q[j] = MIN(15, (int8_t)(x[j]*id + 8.5f)): x*id rounded to float32, + 8.5f rounded to float32, then
# TRUNCATION. d stored via GGML_FP32_TO_FP16 (round to nearest even). No fused multiply-add
# (setup.py compiles with -ffp-contract=off; an FMA would round x*id + 8.5f once and change bytes).
#
# When 1/d overflows (|max| < ~2.4e-38) or x holds inf/NaN, C's float -> int8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: q = 0 there, as libggml.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q4_0_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2),
# d, L = make_qx_quants(32, 8, x, rmse_type 1, weight) (kernels/ggml_common.pxd), q = L.
# Both paths: kernels/legacy_common.pxd (absmax_blocks, shared with Q5_0).

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from legacy_common cimport LEGACY_GROUP, absmax_blocks

include "entry.pxi"

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 18
    GROUP = LEGACY_GROUP
    IMATRIX = WEIGHTED_SIGMA2


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float sigma2) noexcept nogil:
    cdef float d[GROUP]
    cdef uint8_t q[GROUP * QK]
    cdef uint16_t d16
    cdef int b, j
    absmax_blocks(x, m, 8, qw, sigma2, d, q)
    for b in range(m):
        d16 = fp32_to_fp16(d[b])
        memcpy(y + NBYTES * b, &d16, 2)     # little-endian hosts only, as ggml
        for j in range(HALF):
            y[NBYTES * b + 2 + j] = q[QK * b + j] | (q[QK * b + HALF + j] << 4)

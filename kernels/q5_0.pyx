# Q5_0 kernel: the same computation as qconvert/quants/q5_0.py (the spec), in C, GIL released.
#
# Block layout (22 bytes, ggml's block_q5_0):  d: fp16 (LE) | qh: uint32 (LE) | qs: uint8[16]
# qs[j] = q[j] & 15 | (q[j+16] & 15) << 4; bit j of qh = q[j] >> 4; weight j = d * (q[j] - 16).
# Mirrors quantize_row_q5_0_ref (ggml/src/ggml-quants.c): max = the first x with the largest |x|
# (sign kept; +0.0 for an all-zero block), d = max / -16, id = d ? 1/d : 0,
# q[j] = MIN(31, (int8_t)(x[j]*id + 16.5f)): x*id rounded to float32, + 16.5f rounded to float32,
# then TRUNCATION. d stored via GGML_FP32_TO_FP16 (round to nearest even). No fused multiply-add
# (setup.py compiles with -ffp-contract=off).
#
# When 1/d overflows (|max| < ~4.7e-38) or x holds NaN/inf, C's float -> int8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: the slow path spells that out.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q5_0_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2),
# d, L = make_qx_quants(32, 16, x, rmse_type 1, weight) (kernels/ggml_common.pxd), q = L.
# Both paths: kernels/legacy_common.pxd (absmax_blocks, shared with Q4_0).

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport pack_qh
from legacy_common cimport LEGACY_GROUP, absmax_blocks

include "entry.pxi"

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 22
    GROUP = LEGACY_GROUP
    IMATRIX = WEIGHTED_SIGMA2


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float sigma2) noexcept nogil:
    cdef float d[GROUP]
    cdef uint8_t q[GROUP * QK]
    cdef uint16_t d16
    cdef uint32_t qh
    cdef int b, j
    absmax_blocks(x, m, 16, qw, sigma2, d, q)
    for b in range(m):
        d16 = fp32_to_fp16(d[b])
        qh = pack_qh(q + QK * b)
        memcpy(y + NBYTES * b, &d16, 2)     # little-endian hosts only, as ggml
        memcpy(y + NBYTES * b + 2, &qh, 4)
        for j in range(HALF):
            y[NBYTES * b + 6 + j] = (q[QK * b + j] & 15) | ((q[QK * b + HALF + j] & 15) << 4)

# Q5_1 kernel: the same computation as qconvert/quants/q5_1.py (the spec), in C, GIL released.
#
# Block layout (24 bytes, ggml's block_q5_1):  d: fp16 (LE) | m: fp16 (LE) | qh: uint32 (LE) | qs: uint8[16]
# qs[j] = q[j] & 15 | (q[j+16] & 15) << 4; bit j of qh = q[j] >> 4; weight j = d * q[j] + m.
# Mirrors quantize_row_q5_1_ref (ggml/src/ggml-quants.c): min, max = strict `<` / `>` scans from
# +-FLT_MAX (the first of equal values: a zero min keeps the first zero's sign), d = (max - min)/31,
# id = d ? 1/d : 0, q[j] = (uint8_t)((x[j] - min)*id + 0.5f) (no clamp): each operation rounded
# to float32, then TRUNCATION. d and m = min stored via GGML_FP32_TO_FP16 (round to nearest even).
# No fused multiply-add (setup.py compiles with -ffp-contract=off).
#
# When 1/d overflows (max - min < ~9.1e-38), or x holds NaN/inf, C's float -> uint8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: the slow path spells that out.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q5_1_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2), then
# make_qkx3_quants(32, 31, x, weight, -0.9f, 0.05f, 36) (kernels/ggml_common.pxd);
# d = fp16(scale), m = fp16(-the_min), q = L.
# Both paths: kernels/legacy_common.pxd (minmax_blocks, shared with Q4_1).

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport pack_qh
from legacy_common cimport LEGACY_GROUP, minmax_blocks

include "entry.pxi"

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 24
    GROUP = LEGACY_GROUP
    IMATRIX = WEIGHTED_SIGMA2


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float sigma2) noexcept nogil:
    cdef float d[GROUP]
    cdef float mn[GROUP]
    cdef uint8_t q[GROUP * QK]
    cdef uint16_t d16, m16
    cdef uint32_t qh
    cdef int b, j
    minmax_blocks(x, m, 31, False, qw, sigma2, d, mn, q)
    for b in range(m):
        d16 = fp32_to_fp16(d[b])
        m16 = fp32_to_fp16(mn[b])
        qh = pack_qh(q + QK * b)
        memcpy(y + NBYTES * b, &d16, 2)     # little-endian hosts only, as ggml
        memcpy(y + NBYTES * b + 2, &m16, 2)
        memcpy(y + NBYTES * b + 4, &qh, 4)
        for j in range(HALF):
            y[NBYTES * b + 8 + j] = (q[QK * b + j] & 15) | ((q[QK * b + HALF + j] & 15) << 4)

# Q4_1 kernel: the same computation as qconvert/quants/q4_1.py (the spec), in C, GIL released.
#
# Block layout (20 bytes, ggml's block_q4_1):  d: fp16 (LE) | m: fp16 (LE) | qs: uint8[16]
# qs[j] = q[j] | q[j+16] << 4 (low nibbles weights 0..15, high nibbles 16..31); weight = d * q + m.
# Mirrors quantize_row_q4_1_ref (ggml/src/ggml-quants.c): min, max = strict `<` / `>` scans from
# +-FLT_MAX (the first of equal values: a zero min keeps the first zero's sign), d = (max - min)/15,
# id = d ? 1/d : 0, q[j] = MIN(15, (int8_t)((x[j] - min)*id + 0.5f)): each operation rounded to
# float32, then TRUNCATION. d and m = min stored via GGML_FP32_TO_FP16 (round to nearest even).
# No fused multiply-add (setup.py compiles with -ffp-contract=off).
#
# When 1/d overflows (max - min < ~4.4e-38), or x holds NaN/inf, C's float -> int8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: the slow path spells that out.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q4_1_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2), then
# make_qkx3_quants(32, 15, x, weight, -0.9f, 0.05f, 36) (kernels/ggml_common.pxd);
# d = fp16(scale), m = fp16(-the_min), q = L.
# Both paths: kernels/legacy_common.pxd (minmax_blocks, shared with Q5_1).

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from legacy_common cimport LEGACY_GROUP, minmax_blocks

include "entry.pxi"

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 20
    GROUP = LEGACY_GROUP
    IMATRIX = WEIGHTED_SIGMA2


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float sigma2) noexcept nogil:
    cdef float d[GROUP]
    cdef float mn[GROUP]
    cdef uint8_t q[GROUP * QK]
    cdef uint16_t d16, m16
    cdef int b, j
    minmax_blocks(x, m, 15, True, qw, sigma2, d, mn, q)
    for b in range(m):
        d16 = fp32_to_fp16(d[b])
        m16 = fp32_to_fp16(mn[b])
        memcpy(y + NBYTES * b, &d16, 2)     # little-endian hosts only, as ggml
        memcpy(y + NBYTES * b + 2, &m16, 2)
        for j in range(HALF):
            y[NBYTES * b + 4 + j] = q[QK * b + j] | (q[QK * b + HALF + j] << 4)

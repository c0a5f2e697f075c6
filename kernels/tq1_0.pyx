# TQ1_0 kernel: the same computation as qconvert/quants/tq1_0.py (the spec), in C, GIL released.
#
# Block layout (54 bytes, ggml's block_tq1_0):
#   qs[0:32]   5 trits a byte, byte m: weights m + 32 n (n = 0..4; weights 0..159)
#   qs[32:48]  5 trits a byte, byte 32 + m: weights 160 + m + 16 n (weights 160..239)
#   qh[4]      4 trits a byte, byte j: weights 240 + j + 4 n (n = 0..3), then times 3
#   d          fp16 scale (2 bytes, LE) at offset 52;  weight = d * (t - 1)
# A byte's trits, first most significant, make q in 0..242, stored as ceil(q * 256 / 243)
# = (q * 256 + 242) / 243 (uint16 arithmetic, as ggml). Mirrors quantize_row_tq1_0_ref
# (ggml/src/ggml-quants.c): d = max |x|, t = lroundf(x / d) + 1 (kernels/ternary_common.pxd), d stored
# via GGML_FP32_TO_FP16 (round to nearest even). ggml's quantize_tq1_0 ignores an importance matrix.

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from ternary_common cimport ternary_block

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 54
    GROUP = 1
    IMATRIX = IGNORED    # quantize_tq1_0 calls the _ref function regardless


cdef inline uint8_t _ceil243(uint8_t q) noexcept nogil:
    return <uint8_t>((<uint16_t>q * 256 + 242) // 243)


cdef inline uint8_t _horner(uint8_t q, uint8_t t) noexcept nogil:
    # C's `q *= 3; q += xi;` on a uint8_t q: modulo 256 (trits are 0..2 unless the block held inf/NaN)
    return <uint8_t>(q * 3 + t)


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint8_t t[QK]
    cdef uint16_t d16
    cdef int j
    d16 = fp32_to_fp16(ternary_block(x, t))
    for j in range(32):
        y[j] = _ceil243(_horner(_horner(_horner(_horner(t[j], t[32 + j]), t[64 + j]), t[96 + j]), t[128 + j]))
    for j in range(16):
        y[32 + j] = _ceil243(_horner(_horner(_horner(_horner(t[160 + j], t[176 + j]), t[192 + j]),
                                             t[208 + j]), t[224 + j]))
    for j in range(4):
        y[48 + j] = _ceil243(_horner(_horner(_horner(_horner(t[240 + j], t[244 + j]), t[248 + j]), t[252 + j]), 0))
    memcpy(y + 52, &d16, 2)             # little-endian hosts only, as ggml

# TQ2_0 kernel: the same computation as qconvert/quants/tq2_0.py (the spec), in C, GIL released.
#
# Block layout (66 bytes, ggml's block_tq2_0):  qs: uint8[64] | d: fp16 scale (2 bytes, LE)
# qs[32 c + m] bits 2k..2k+1 = trit of weight 128 c + 32 k + m (c = 0, 1; k = 0..3); weight = d * (t - 1).
# Mirrors quantize_row_tq2_0_ref (ggml/src/ggml-quants.c): d = max |x|, t = lroundf(x / d) + 1
# (kernels/ternary_common.pxd), d stored via GGML_FP32_TO_FP16 (round to nearest even), each trit's
# low 2 bits packed (`xi & 3`: only an inf/NaN block has others). ggml's quantize_tq2_0 ignores an importance matrix.

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from ternary_common cimport ternary_block

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 66
    GROUP = 1
    IMATRIX = IGNORED    # quantize_tq2_0 calls the _ref function regardless


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint8_t t[QK]
    cdef uint16_t d16
    cdef int c, j
    d16 = fp32_to_fp16(ternary_block(x, t))
    for c in range(2):
        for j in range(32):
            y[32 * c + j] = ((t[128 * c + j] & 3) | ((t[128 * c + 32 + j] & 3) << 2)   # `xi & 3`, as C:
                             | ((t[128 * c + 64 + j] & 3) << 4) | ((t[128 * c + 96 + j] & 3) << 6))
    memcpy(y + 64, &d16, 2)             # little-endian hosts only, as ggml

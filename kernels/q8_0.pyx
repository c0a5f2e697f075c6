# Q8_0 kernel: the same computation as qconvert/quants/q8_0.py (the spec), in C, GIL released.
#
# Block layout (34 bytes, ggml's block_q8_0):  d: fp16 scale (2 bytes, LE) | qs: int8[32]
# weight j = d * qs[j].
# Mirrors quantize_row_q8_0_ref (ggml/src/ggml-quants.c): amax = max|x|, d = amax / 127,
# id = d ? 1/d : 0, qs[j] = roundf(x[j] * id) (round half AWAY from zero), d stored via
# GGML_FP32_TO_FP16 (round to nearest even). All float32, no fused multiply-add
# (setup.py compiles with -ffp-contract=off).
#
# roundf is done inline and exactly: i = (int)v truncates, r = v - i is exact, then i steps away from
# zero when |r| >= 0.5. When 1/d overflows (amax < ~3.7e-37) every x*id is inf/NaN, C's float->int8
# conversion is undefined and x86-64 libggml writes 0: the whole qs is 0 here too.

from libc.stdint cimport int32_t, int8_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from libc.math cimport isinf

from ggml_fp16 cimport fp32_to_fp16

include "entry.pxi"

cdef enum:
    QK = 32
    NBYTES = 34
    GROUP = 1
    IMATRIX = IGNORED    # quantize_q8_0 has no _impl


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    # One block (GROUP = 1).
    cdef uint32_t bits[QK]
    cdef uint32_t amax_bits = 0, b
    cdef float amax, d, inv, v, r
    cdef uint16_t d16
    cdef int32_t i
    cdef int j
    # max |x| on the bit patterns: for non-NaN floats |x| orders like its bits as integers, and an
    # integer max reduction vectorizes where a float one (NaN and -0 rules) does not.
    memcpy(bits, x, sizeof(bits))
    for j in range(QK):
        b = bits[j] & 0x7FFFFFFFu
        amax_bits = b if b > amax_bits else amax_bits
    memcpy(&amax, &amax_bits, 4)
    d = amax / <float>127
    inv = (<float>1) / d if d != 0 else <float>0
    d16 = fp32_to_fp16(d)
    memcpy(y, &d16, 2)  # little-endian hosts only, as ggml
    if isinf(inv):
        memset(y + 2, 0, QK)
        return
    for j in range(QK):
        v = x[j] * inv
        i = <int32_t>v                  # |v| <= ~127, well-defined truncation
        r = v - <float>i
        i = i + <int32_t>(r >= <float>0.5) - <int32_t>(r <= <float>-0.5)
        y[2 + j] = <uint8_t><int8_t>i

# What the TQ1_0 and TQ2_0 kernels share: ggml's ternary rounding of one 256-weight block, the C twin
# of qconvert/quants/_ternary.py. Both quantize_row_tq{1,2}_0_ref (ggml/src/ggml-quants.c) compute
#   amax = max |x| (float32), d = amax, id = d ? 1/d : 0, t[j] = lroundf(x[j] * id) + 1 in {0, 1, 2}
# with lroundf rounding half AWAY from zero (x*id = +-0.5 goes to +-1), done inline and exactly:
# i = (int)v truncates, r = v - i is exact, i steps away from zero when |r| >= 0.5.
# When 1/d overflows (amax < 2^-128), every x*id is +-inf or NaN; glibc's lroundf returns LONG_MIN,
# and ggml's `int xi = LONG_MIN + 1` keeps the low 32 bits, 1: every trit is 1 (zero), as here.
# cimported, never compiled on its own; no fused multiply-add (setup.py: -ffp-contract=off).

from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset
from libc.math cimport isinf

cdef enum:
    QK_TERNARY = 256


cdef inline float ternary_block(const float* x, uint8_t* t) noexcept nogil:
    """One block: its trits t[0..255] in {0, 1, 2}; returns d (to be stored as fp16)."""
    cdef uint32_t bits[QK_TERNARY]
    cdef uint32_t amax_bits = 0, b
    cdef float amax, inv, v, r
    cdef int32_t i
    cdef int j
    # max |x| on the bit patterns: for non-NaN floats |x| orders like its bits as integers, and an
    # integer max reduction vectorizes where a float one (NaN and -0 rules) does not.
    memcpy(bits, x, sizeof(bits))
    for j in range(QK_TERNARY):
        b = bits[j] & 0x7FFFFFFFu
        amax_bits = b if b > amax_bits else amax_bits
    memcpy(&amax, &amax_bits, 4)
    inv = (<float>1) / amax if amax != 0 else <float>0
    if isinf(inv):
        memset(t, 1, QK_TERNARY)
        return amax
    for j in range(QK_TERNARY):
        v = x[j] * inv                  # |v| <= ~1: a well-defined truncation
        i = <int32_t>v
        r = v - <float>i
        t[j] = <uint8_t>(i + 1 + <int32_t>(r >= <float>0.5) - <int32_t>(r <= <float>-0.5))
    return amax

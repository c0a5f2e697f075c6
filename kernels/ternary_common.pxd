# What the TQ1_0 and TQ2_0 kernels share: ggml's ternary rounding of one 256-weight block, the C twin
# of qconvert/quants/_ternary.py. Both quantize_row_tq{1,2}_0_ref (ggml/src/ggml-quants.c) compute
#   amax = max |x| (float32), d = amax, id = d ? 1/d : 0, t[j] = lroundf(x[j] * id) + 1 in {0, 1, 2}
# with lroundf rounding half AWAY from zero (x*id = +-0.5 goes to +-1), done inline and exactly:
# i = (int)v truncates, r = v - i is exact, i steps away from zero when |r| >= 0.5.
# When 1/d overflows (amax < 2^-128), every x*id is +-inf or NaN; glibc's lroundf returns LONG_MIN,
# and ggml's `int xi = LONG_MIN + 1` keeps the low 32 bits, 1: every trit is 1 (zero), as here.
# A block holding inf or NaN (written only with --allow-nonfinite) takes C's MAX macro in C's order.
# cimported, never compiled on its own; no fused multiply-add (setup.py: -ffp-contract=off).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t
from libc.string cimport memcpy, memset
from libc.math cimport fabsf, isfinite, isinf

cdef enum:
    QK_TERNARY = 256


cdef inline float _nonfinite_block(const float* x, uint8_t* t) noexcept nogil:
    # amax = MAX(amax, fabsf(v)), MAX(a, b) being (a > b ? a : b): a NaN replaces amax, and the next
    # value replaces the NaN. Then every x*id that is not finite (x inf or NaN; id NaN or 0 * inf)
    # gets lroundf's LONG_MIN, whose `int xi = LONG_MIN + 1` is 1: the trit of 0.
    # An amax that a NaN reset can be below other |x|, so x*id may be far beyond +-1: lroundf's long
    # + 1, kept modulo 256 (TQ1_0 packs in uint8_t arithmetic, TQ2_0 takes its low 2 bits); from
    # 2^63 on, lroundf too returns LONG_MIN.
    cdef float amax = 0, a, inv, v, r
    cdef int64_t i
    cdef int j
    for j in range(QK_TERNARY):
        a = fabsf(x[j])
        amax = amax if amax > a else a
    inv = (<float>1) / amax if amax != 0 else <float>0
    for j in range(QK_TERNARY):
        v = x[j] * inv
        if isfinite(v) and fabsf(v) < <float>9223372036854775808.0:
            i = <int64_t>v
            r = v - <float>i
            t[j] = <uint8_t>(i + 1 + <int64_t>(r >= <float>0.5) - <int64_t>(r <= <float>-0.5))
        else:
            t[j] = 1
    return amax


cdef inline float ternary_block(const float* x, uint8_t* t) noexcept nogil:
    """One block: its trits t[0..255], in {0, 1, 2} for finite x (else lroundf(x*id) + 1 modulo 256);
    returns d (to be stored as fp16)."""
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
    if amax_bits >= 0x7F800000u:        # an inf or NaN in x: C's own order, its MAX and its lroundf
        return _nonfinite_block(x, t)
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

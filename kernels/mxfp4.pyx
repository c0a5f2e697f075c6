# MXFP4 kernel: the same computation as qconvert/quants/mxfp4.py (the spec), in C, GIL released.
#
# Block layout (17 bytes, ggml's block_mxfp4):  e: E8M0 exponent (1 byte) | qs: uint8[16]
# qs[j] = i[j] | i[j + 16] << 4;  weight = kvalues_mxfp4[i] * d, d = GGML_E8M0_TO_FP32_HALF(e) = 2^(e - 128),
# kvalues_mxfp4 = 0 1 2 3 4 6 8 12 -0 -1 -2 -3 -4 -6 -8 -12 (E2M1 doubled, ggml-common.h).
# Mirrors quantize_row_mxfp4_ref (ggml/src/ggml-quants.c):
#   amax = max |x| (`amax < fabsf(v)`: NaN skipped); e = amax > 0 ? (uint8_t)(floorf(log2f(amax)) - 2 + 127) : 0,
#   log2f from the C library as libggml calls it (it rounds an amax just below 2^k up to k); below
#   2^-125 the float is negative and x86-64 libggml keeps cvttss2si's low byte (cvtt_i32 & 0xFF here);
#   i = best_index_mxfp4(x, d): the first of the 16 indices with the smallest float32 |kvalues[i]*d - x|.
#
# best_index_mxfp4 tries all 16 levels per weight. For 2 <= e <= 252 (d and 1/d normal powers of
# two, 12 d finite) it is a handful of comparisons instead: t = |x| * (1/d) is exact, and the level is the number
# of midpoints 0.5 1.5 2.5 3.5 5 7 10 strictly below t, plus 8 for a negative x off level 0. Exactly
# C's choice: near a midpoint both differences kvalues*d - x are exact (Sterbenz), so C's strict `<`
# sees a true tie only at the midpoint itself and keeps the lower index, the smaller magnitude (and +0
# before -0); away from it, rounding is monotonic and cannot reverse the order. Other e take C's
# 16-way search literally: an all-zero or subnormal block, inf, e's wrap-around, and e = 253/254
# (an amax near FLT_MAX), where 8 d or 12 d overflows to inf and C never picks it.
# ggml's quantize_mxfp4 ignores an importance matrix.

from libc.stdint cimport int8_t, int32_t, uint8_t, uint32_t
from libc.string cimport memcpy
from libc.math cimport fabsf, floorf, log2f

from ggml_common cimport cvtt_i32

include "entry.pxi"

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 17
    GROUP = 1
    IMATRIX = IGNORED    # quantize_mxfp4 calls the _ref function regardless

cdef int8_t KVALUES[16]
KVALUES[:] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]

# floorf(log2f(amax)) for a normal amax without calling log2f per block: it is amax's exponent, plus
# one from the mantissa on where log2f rounds up to the next integer. ROUNDS_UP[b] is that mantissa
# for biased exponent b (0x800000: never), found once here with the C library's own log2f (the one
# a per-block call would use), by bisection: floorf(log2f) is monotonic within a binade.
cdef uint32_t ROUNDS_UP[256]


cdef inline float _from_bits(uint32_t bits) noexcept nogil:
    cdef float f
    memcpy(&f, &bits, 4)
    return f


cdef void _find_rounds_up() noexcept nogil:
    cdef uint32_t b, lo, hi, mid
    for b in range(256):
        ROUNDS_UP[b] = 0x800000
    for b in range(1, 255):
        lo, hi = 0, 0x800000         # the answer lies in [lo, hi]; hi: none rounds up
        while lo < hi:
            mid = (lo + hi) // 2
            if floorf(log2f(_from_bits((b << 23) | mid))) > <float>(<int>b - 127):
                hi = mid
            else:
                lo = mid + 1
        ROUNDS_UP[b] = lo


_find_rounds_up()


cdef inline float _pow2(int k) noexcept nogil:
    # 2^k for a normal float32 exponent, -126 <= k <= 127
    cdef uint32_t bits = <uint32_t>(k + 127) << 23
    cdef float f
    memcpy(&f, &bits, 4)
    return f


cdef inline float _e8m0_half(uint8_t e) noexcept nogil:
    # GGML_E8M0_TO_FP32_HALF (ggml-impl.h): 2^(e - 128); e = 0, 1 are the subnormals 2^-128, 2^-127
    cdef uint32_t bits = (<uint32_t>0x00200000 << e) if e < 2 else (<uint32_t>(e - 1) << 23)
    cdef float f
    memcpy(&f, &bits, 4)
    return f


cdef inline uint8_t _best_index(float x, float d) noexcept nogil:
    # best_index_mxfp4, literally
    cdef int best = 0, i
    cdef float best_err = fabsf(<float>KVALUES[0] * d - x), err
    for i in range(1, 16):
        err = fabsf(<float>KVALUES[i] * d - x)
        if err < best_err:
            best = i
            best_err = err
    return <uint8_t>best


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint32_t bits[QK]
    cdef uint8_t idx[QK]
    cdef int32_t idx32[QK]
    cdef int32_t m32
    cdef uint32_t amax_bits = 0, b
    cdef float amax, d, inv, t
    cdef uint8_t e, mag
    cdef int j
    memcpy(bits, x, sizeof(bits))
    for j in range(QK):                 # max |x| on the bit patterns, NaN skipped as C's `<` does
        b = bits[j] & 0x7FFFFFFFu
        b = b if b <= 0x7F800000u else 0
        amax_bits = b if b > amax_bits else amax_bits
    memcpy(&amax, &amax_bits, 4)
    if 0x00800000u <= amax_bits < 0x7F800000u:    # normal: the exponent, and the rounding above
        b = amax_bits >> 23
        e = <uint8_t>((<int>b - 127 + <int>((amax_bits & 0x7FFFFFu) >= ROUNDS_UP[b]) + 125) & 0xFF)
    else:                                           # 0, subnormal or inf: as C computes it
        e = <uint8_t>(cvtt_i32(floorf(log2f(amax)) - <float>2 + <float>127) & 0xFF) if amax > 0 else 0
    d = _e8m0_half(e)
    y[0] = e
    if 2 <= e <= 252:
        inv = _pow2(128 - <int>e)
        for j in range(QK):             # in 32-bit lanes throughout, so that it vectorizes
            t = fabsf(x[j]) * inv
            m32 = (<int32_t>(t > <float>0.5) + <int32_t>(t > <float>1.5) + <int32_t>(t > <float>2.5)
                   + <int32_t>(t > <float>3.5) + <int32_t>(t > <float>5) + <int32_t>(t > <float>7)
                   + <int32_t>(t > <float>10))
            idx32[j] = m32 | (<int32_t>((bits[j] >> 31) & <uint32_t>(m32 != 0)) << 3)
        for j in range(QK):
            idx[j] = <uint8_t>idx32[j]
    else:
        for j in range(QK):
            idx[j] = _best_index(x[j], d)
    for j in range(HALF):
        y[1 + j] = idx[j] | (idx[HALF + j] << 4)

# F16 kernel: the same bytes as qconvert/quants/floats.py's F16 (the spec), in C, GIL released.
#
# Layout: one little-endian IEEE half per weight (a "block" of 1 weight, 2 bytes), no header.
# Mirrors ggml_fp32_to_fp16_row (ggml/src/ggml.c), i.e. GGML_FP32_TO_FP16 per weight: round to
# nearest, ties to EVEN, fp16 subnormals kept; |x| >= 65520 (halfway past 65504) becomes inf; a NaN
# becomes sign | 0x7E00 (ggml's quiet NaN, its payload dropped).
#
# Written without branches so that gcc vectorizes the loop (SSE2: 4 weights per instruction): every
# case is computed, then selected by masks. Normal halves come from integer arithmetic on the bits (as
# kernels/ggml_fp16.pxd); below 2^-14 one float addition does the rounding: |x| + 0.5f lands in
# [0.5, 0.5 + 2^-14), where float32's ulp is 2^-24, the fp16 subnormal unit, so the sum's low
# mantissa bits are |x| in those units rounded to nearest even by the FPU (default rounding mode;
# a single addition: -ffp-contract cannot change it).

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from ggml_fp16 cimport f32_bits

include "entry.pxi"

cdef enum:
    QK = 1
    NBYTES = 2
    GROUP = 4096         # weights per _blocks call: one plain loop over them
    IMATRIX = IGNORED    # ggml_quantize_chunk converts F16 with no regard to an imatrix


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint32_t u, normal, sub, t, is_sub, is_inf, is_nan
    cdef int32_t a                      # |x|'s bits, <= 0x7FFFFFFF: signed compares, which SSE2 has
    cdef float f
    cdef uint16_t r
    cdef Py_ssize_t i
    for i in range(m):
        u = f32_bits(x[i])
        a = <int32_t>(u & 0x7FFFFFFFu)
        # Each case's half is built in the TOP 16 bits of t, and t >> 16 narrowed once at the end
        # (with the half in the low bits gcc narrows every operand to 16 bits: 3x the shuffles).
        # 2^-14 <= |x| < 65520: rebias the exponent (127 -> 15), round the 13 dropped mantissa bits
        # to nearest even (a carry out of the mantissa correctly bumps the exponent); << 3 moves
        # bits 13..28 to 16..31.
        normal = (<uint32_t>a - (112u << 23) + 0x0FFFu + ((<uint32_t>a >> 13) & 1u)) << 3
        memcpy(&f, &a, 4)
        f = f + <float>0.5               # |x| < 2^-14: units of 2^-24, rounded (see the header)
        sub = (f32_bits(f) - 0x3F000000u) << 16
        # the cases as all-ones masks (gcc keeps a chain of `?:` as branches, which do not vectorize)
        is_sub = 0u - <uint32_t>(a < 0x38800000)
        is_inf = 0u - <uint32_t>(a >= 0x477FF000)
        is_nan = 0u - <uint32_t>(a > 0x7F800000)
        t = (normal & ~is_sub) | (sub & is_sub)
        t = (t & ~is_inf) | (0x7C000000u & is_inf)
        t = (t & ~is_nan) | (0x7E000000u & is_nan)
        r = <uint16_t>(((u & 0x80000000u) | (t & 0x7FFF0000u)) >> 16)
        memcpy(y + 2 * i, &r, 2)         # little-endian hosts only, as ggml

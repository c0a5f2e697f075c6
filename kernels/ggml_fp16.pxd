# fp32 -> fp16 as ggml's GGML_FP32_TO_FP16 (ggml_compute_fp32_to_fp16 in ggml/src/ggml-impl.h):
# IEEE round to nearest, ties to even, with fp16 subnormals; |x| >= 65520 becomes inf; NaN becomes
# sign | 0x7E00 (ggml's quiet NaN). Integer arithmetic only, so no FPU mode or contraction matters.
# Shared by the kernels that store an fp16 scale `d`; cimported, never compiled on its own.

from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy


cdef inline uint32_t f32_bits(float f) noexcept nogil:
    cdef uint32_t u
    memcpy(&u, &f, 4)  # the defined way to type-pun in C; compiles to a register move
    return u


cdef inline uint16_t fp32_to_fp16(float f) noexcept nogil:
    cdef uint32_t u = f32_bits(f)
    cdef uint16_t sign = <uint16_t>((u >> 16) & 0x8000)
    cdef uint32_t a = u & 0x7FFFFFFF
    cdef uint32_t e, m, shift, h, rem, halfway
    if a > 0x7F800000:                 # NaN
        return sign | 0x7E00
    if a >= 0x477FF000:                # >= 65520 = halfway between 65504 and 2^16: rounds to inf
        return sign | 0x7C00
    if a >= 0x38800000:                # >= 2^-14: a normal half
        # Rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even;
        # a carry out of the mantissa correctly bumps the exponent.
        return sign | <uint16_t>((a - (112u << 23) + 0x0FFFu + ((a >> 13) & 1u)) >> 13)
    if a <= 0x33000000:                # <= 2^-25: half of the smallest subnormal ties to even 0
        return sign
    # fp16 subnormal: units of 2^-24, value = m * 2^(e - 150), so units = m >> (126 - e).
    e = a >> 23
    m = (a & 0x7FFFFF) | 0x800000
    shift = 126 - e                    # 14..24 here
    h = m >> shift
    rem = m & ((1u << shift) - 1)
    halfway = 1u << (shift - 1)
    if rem > halfway or (rem == halfway and (h & 1)):
        h += 1                         # 0x3FF + 1 = 0x400 is the smallest normal: still right
    return sign | <uint16_t>h

# IQ4_XS kernel: the same computation as qconvert/quants/iq4_xs.py (the spec), in C, GIL released.
#
# Block layout (136 bytes, ggml's block_iq4_xs):  d: fp16 | scales_h: uint16 | scales_l: uint8[4] |
# qs: uint8[128]. Sub-block ib's 6-bit scale ls = (scales_l[ib/2] >> 4*(ib%2)) & 15 | ((scales_h >> 2ib) & 3) << 4;
# qs[16ib + j] = L[32ib + j] | L[32ib + 16 + j] << 4; weight = d * (ls - 32) * kvalues_iq4nl[L].
# Mirrors quantize_iq4_xs (ggml/src/ggml-quants.c), which ggml_quantize_chunk calls with or without an
# imatrix: quantize_row_iq4_nl_impl(256, 32, ..., ntry 7) per super-block. Each sub-block's scale by
# IQ4_NL's search (kernels/iq4_common.pxd; with an imatrix sigma2 = 2/256 * sum x^2 of the
# super-block); max_scale = the first of largest |scale|; d = -max_scale/32 stored as fp16 (round to
# nearest even); from the float32 d: id = d ? 1/d : 0, l = clamp(nearest_int(id*scale), -32, 31)
# (round half to even), dl = d*l, L = best_index_int8((dl ? 1/dl : 0) * x).
# No fused multiply-add (setup.py compiles with -ffp-contract=off).

from libc.stdint cimport int32_t, uint8_t, uint16_t
from libc.string cimport memcpy
from libc.math cimport fabsf

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport nearest_int
from iq4_common cimport IQ4_SUB, best_index, iq4_scale, iq4_weights

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 136
    GROUP = 1
    IMATRIX = WEIGHTED
    NSUB = 8


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef float w[QK]
    cdef float scales[NSUB]
    cdef uint8_t L[QK]
    cdef float max_scale = 0, amax_scale = 0, d, inv, dl, idl
    cdef uint16_t d16, scales_h = 0
    cdef int32_t l
    cdef int ib, j
    iq4_weights(x, qw, QK, w)
    for ib in range(NSUB):
        scales[ib] = iq4_scale(x + IQ4_SUB * ib, w + IQ4_SUB * ib)
        if fabsf(scales[ib]) > amax_scale:
            amax_scale = fabsf(scales[ib])
            max_scale = scales[ib]
    d = -max_scale / 32
    d16 = fp32_to_fp16(d)
    memcpy(y, &d16, 2)                  # little-endian hosts only, as ggml
    inv = 1 / d if d != 0 else <float>0
    for j in range(4):
        y[4 + j] = 0
    for ib in range(NSUB):
        l = nearest_int(inv * scales[ib])
        l = 31 if l > 31 else l
        l = -32 if l < -32 else l
        dl = d * <float>l
        idl = 1 / dl if dl != 0 else <float>0
        for j in range(IQ4_SUB):
            L[IQ4_SUB * ib + j] = <uint8_t>best_index(idl * x[IQ4_SUB * ib + j])
        l += 32
        y[4 + ib // 2] |= <uint8_t>((l & 15) << (4 * (ib % 2)))
        scales_h |= <uint16_t>((l >> 4) << (2 * ib))
    memcpy(y + 2, &scales_h, 2)
    for ib in range(NSUB):
        for j in range(16):
            y[8 + 16 * ib + j] = L[32 * ib + j] | (L[32 * ib + 16 + j] << 4)

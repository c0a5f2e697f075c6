# IQ4_NL kernel: the same computation as qconvert/quants/iq4_nl.py (the spec), in C, GIL released.
#
# Block layout (18 bytes, ggml's block_iq4_nl):  d: fp16 scale (2 bytes, LE) | qs: uint8[16]
# qs[j] = L[j] | L[j + 16] << 4; weight j = d * kvalues_iq4nl[L[j]] (16 non-linear levels -127..113).
# Mirrors quantize_iq4_nl (ggml/src/ggml-quants.c), which ggml_quantize_chunk calls with or without an
# imatrix: quantize_row_iq4_nl_impl(32, 32, ..., ntry 7) per block. Weights x^2, or with an imatrix
# qw * sqrtf(sigma2 + x^2), sigma2 = 2/32 * sum x^2 of the block; the scale from 16 trials
# (kernels/iq4_common.pxd iq4_scale); d stored as GGML_FP32_TO_FP16 (round to nearest even); then the
# levels again from the float32 scale: L = best_index_int8((d ? 1/d : 0) * x). An all-zero block
# (max |x| < 1e-15) gets d = 0 and L = 8 (the level nearest 0, value 1).
# No fused multiply-add (setup.py compiles with -ffp-contract=off).

from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memcpy

from ggml_fp16 cimport fp32_to_fp16
from iq4_common cimport IQ4_SUB, best_index, iq4_scale, iq4_weights

include "entry.pxi"

cdef enum:
    QK = 32
    NBYTES = 18
    GROUP = 1
    IMATRIX = WEIGHTED


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef float w[QK]
    cdef uint8_t L[QK]
    cdef float d, inv
    cdef uint16_t d16
    cdef int j
    iq4_weights(x, qw, QK, w)
    d = iq4_scale(x, w)
    d16 = fp32_to_fp16(d)
    memcpy(y, &d16, 2)                  # little-endian hosts only, as ggml
    inv = 1 / d if d != 0 else <float>0
    for j in range(QK):
        L[j] = <uint8_t>best_index(inv * x[j])
    for j in range(QK // 2):
        y[2 + j] = L[j] | (L[j + QK // 2] << 4)

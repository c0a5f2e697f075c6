# BF16 kernel: the same bytes as qconvert/quants/floats.py's BF16 (the spec), in C, GIL released.
#
# Layout: one little-endian bfloat16 per weight (a "block" of 1 weight, 2 bytes), no header.
# Mirrors ggml_fp32_to_bf16_row_ref (ggml/src/ggml.c), i.e. ggml_compute_fp32_to_bf16 per weight
# (ggml/src/ggml-impl.h): the top 16 bits of the float32, rounded to nearest even,
# (u + 0x7FFF + ((u >> 16) & 1)) >> 16 (subnormals kept, not flushed; large values round up to inf);
# a NaN keeps its sign and top payload bits and is forced quiet: (u >> 16) | 0x40.
#
# Without branches (both answers computed, one selected by a mask), so that gcc vectorizes the loop.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy

from ggml_fp16 cimport f32_bits

include "entry.pxi"

cdef enum:
    QK = 1
    NBYTES = 2
    GROUP = 4096         # weights per _blocks call: one plain loop over them
    IMATRIX = IGNORED    # ggml_quantize_chunk converts BF16 with no regard to an imatrix


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint32_t u, nan, t
    cdef uint16_t r
    cdef Py_ssize_t i
    for i in range(m):
        u = f32_bits(x[i])
        # all ones for a NaN: |x|'s bits compared as int32 (<= 0x7FFFFFFF), which SSE2 has
        nan = 0u - <uint32_t>(<int32_t>(u & 0x7FFFFFFFu) > <int32_t>0x7F800000)
        # the answer in the top 16 bits: rounded (a NaN may wrap there: not selected), or the NaN's
        # own bits with the quiet bit 0x40 << 16 set; one narrowing after the select
        t = ((u + 0x7FFFu + ((u >> 16) & 1u)) & ~nan) | ((u | 0x00400000u) & nan)
        r = <uint16_t>(t >> 16)
        memcpy(y + 2 * i, &r, 2)         # little-endian hosts only, as ggml

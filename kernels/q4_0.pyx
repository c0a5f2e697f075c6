# Q4_0 kernel: the same computation as qconvert/quants/q4_0.py (the spec), in C, GIL released.
#
# Block layout (18 bytes, ggml's block_q4_0):  d: fp16 scale (2 bytes, LE) | qs: uint8[16]
# qs[j] = q[j] | q[j + 16] << 4 (low nibbles weights 0..15, high nibbles 16..31); weight = d * (q - 8).
# Mirrors quantize_row_q4_0_ref (ggml/src/ggml-quants.c): max = the first x with the largest |x|
# (sign kept; +0.0 for an all-zero block), d = max / -8, id = d ? 1/d : 0,
# q[j] = MIN(15, (int8_t)(x[j]*id + 8.5f)): x*id rounded to float32, + 8.5f rounded to float32, then
# TRUNCATION. d stored via GGML_FP32_TO_FP16 (round to nearest even). No fused multiply-add
# (setup.py compiles with -ffp-contract=off; an FMA would round x*id + 8.5f once and change bytes).
#
# When 1/d overflows (|max| < ~2.4e-38) every x*id + 8.5f is inf/NaN, C's float->int8 conversion
# is undefined and x86-64 libggml writes 0: all q are 0 here too.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from libc.math cimport isinf

import numpy as np

from ggml_fp16 cimport fp32_to_fp16

cdef enum:
    QK = 32
    HALF = 16
    NBYTES = 18

# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES


cdef inline void _block(const float* x, uint8_t* y) noexcept nogil:
    cdef uint32_t bits[QK]
    cdef uint32_t amax_bits = 0, b
    cdef float mx = 0, d, inv
    cdef uint16_t d16
    cdef int32_t q0, q1
    cdef int j
    # max |x| on the bit patterns (see q8_0.pyx), then the first element that has it: the same
    # element C's strict `amax < fabsf(v)` scan keeps.
    memcpy(bits, x, sizeof(bits))
    for j in range(QK):
        b = bits[j] & 0x7FFFFFFFu
        amax_bits = b if b > amax_bits else amax_bits
    if amax_bits != 0:
        for j in range(QK):
            if (bits[j] & 0x7FFFFFFFu) == amax_bits:
                mx = x[j]
                break
    d = mx / <float>-8
    inv = (<float>1) / d if d != 0 else <float>0
    d16 = fp32_to_fp16(d)
    memcpy(y, &d16, 2)  # little-endian hosts only, as ggml
    if isinf(inv):
        memset(y + 2, 0, HALF)
        return
    for j in range(HALF):
        q0 = <int32_t>(x[j] * inv + <float>8.5)          # in [0, 16]: well-defined truncation
        q1 = <int32_t>(x[HALF + j] * inv + <float>8.5)
        q0 = q0 if q0 < 15 else 15
        q1 = q1 if q1 < 15 else 15
        y[2 + j] = <uint8_t>(q0 | (q1 << 4))


cdef void _blocks(const float[:, ::1] x, uint8_t[:, ::1] out) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(x.shape[0]):
        _block(&x[k, 0], &out[k, 0])


def quantize_blocks_into(const float[:, ::1] x, uint8_t[:, ::1] out):
    """Quantize f32[n, 32] into a caller's u8[n, 18] (e.g. a slice of a bigger buffer); GIL released."""
    if x.shape[1] != QK or out.shape[0] != x.shape[0] or out.shape[1] != NBYTES:
        raise ValueError(f"Q4_0 kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
                         f"got ({x.shape[0]}, {x.shape[1]}) -> ({out.shape[0]}, {out.shape[1]})")
    with nogil:
        _blocks(x, out)


def quantize_blocks(const float[:, ::1] x):
    """f32[n, 32] -> u8[n, 18], byte-exact with qconvert.quants.q4_0.quantize_blocks."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out)
    return out

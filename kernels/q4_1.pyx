# Q4_1 kernel: the same computation as qconvert/quants/q4_1.py (the spec), in C, GIL released.
#
# Block layout (20 bytes, ggml's block_q4_1):  d: fp16 (LE) | m: fp16 (LE) | qs: uint8[16]
# qs[j] = q[j] | q[j+16] << 4 (low nibbles weights 0..15, high nibbles 16..31); weight = d * q + m.
# Mirrors quantize_row_q4_1_ref (ggml/src/ggml-quants.c): min, max = strict `<` / `>` scans from
# +-FLT_MAX (the first of equal values: a zero min keeps the first zero's sign), d = (max - min)/15,
# id = d ? 1/d : 0, q[j] = MIN(15, (int8_t)((x[j] - min)*id + 0.5f)): each operation rounded to
# float32, then TRUNCATION. d and m = min stored via GGML_FP32_TO_FP16 (round to nearest even).
# No fused multiply-add (setup.py compiles with -ffp-contract=off).
#
# When 1/d overflows (max - min < ~4.4e-38), or x holds NaN/inf, C's float -> int8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: the slow path spells that out.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q4_1_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2), then
# make_qkx3_quants(32, 15, x, weight, -0.9f, 0.05f, 36) (kernels/ggml_common.pxd);
# d = fp16(scale), m = fp16(-the_min), q = L.

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t
from libc.string cimport memcpy
from libc.math cimport fabsf, sqrtf

import numpy as np

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport cvtt_i32, first_min_max, minf, opaque, make_qkx3_quants, row_sigma2

cdef enum:
    QK = 32
    HALF = 16
    GROUP = 8          # blocks per _group: their divisions run packed (d, then 1/d: ~25 cycles)
    NBYTES = 20

# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES


cdef inline void _store(uint8_t* y, float d, float m, const uint8_t* q) noexcept nogil:
    cdef uint16_t d16 = fp32_to_fp16(d)
    cdef uint16_t m16 = fp32_to_fp16(m)
    cdef int j
    memcpy(y, &d16, 2)                  # little-endian hosts only, as ggml
    memcpy(y + 2, &m16, 2)
    for j in range(HALF):
        y[4 + j] = q[j] | (q[HALF + j] << 4)


cdef inline void _quantize(const float* x, uint8_t* y, float mn, float d, float inv,
                           bint nan) noexcept nogil:
    cdef uint8_t q[QK]
    cdef float top
    cdef int8_t c
    cdef int j
    # No NaN in x (an inf would make max - min inf), max - min and 1/d finite: then every
    # (x - min)*id + 0.5f lies in [0.5, 15.5] and the C conversion is well defined.
    if not nan and fabsf(d) <= <float>3.4028234663852886e+38 and fabsf(inv) <= <float>3.4028234663852886e+38:
        top = opaque(15)                # (a constant bound would defeat minps; see ggml_common.pxd)
        for j in range(QK):             # truncation is monotonic: MIN(15, trunc v) == trunc(MIN(v, 15))
            q[j] = <uint8_t><int32_t>minf((x[j] - mn) * inv + <float>0.5, top)
    else:
        for j in range(QK):             # libggml's x86-64 answer for the undefined cases
            c = <int8_t>cvtt_i32((x[j] - mn) * inv + <float>0.5)
            q[j] = <uint8_t>(c if c < 15 else 15)
    _store(y, d, mn, q)


cdef inline void _group(const float* x, uint8_t* y, int m) noexcept nogil:
    # m <= GROUP blocks at x (C-contiguous rows of QK) into y (rows of NBYTES).
    cdef float mn[GROUP]
    cdef float mx[GROUP]
    cdef float d[GROUP]
    cdef float inv[GROUP]
    cdef bint nan[GROUP]
    cdef int b
    for b in range(GROUP):
        mn[b] = 0
        mx[b] = 0
    for b in range(m):
        nan[b] = first_min_max(x + QK * b, QK, &mn[b], &mx[b])
    for b in range(GROUP):
        d[b] = (mx[b] - mn[b]) / <float>15
    for b in range(GROUP):             # id = d ? 1/d : 0
        inv[b] = (<float>1) / (d[b] if d[b] != 0 else <float>1)
        inv[b] = inv[b] if d[b] != 0 else <float>0
    for b in range(m):
        _quantize(x + QK * b, y + NBYTES * b, mn[b], d[b], inv[b], nan[b])


cdef inline void _block_imatrix(const float* x, uint8_t* y, const float* qw, float sigma2) noexcept nogil:
    cdef float weight[QK]
    cdef uint8_t L[QK]
    cdef uint8_t Laux[QK]
    cdef float scale, the_min
    cdef int j
    for j in range(QK):
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j])
    scale = make_qkx3_quants(QK, 15, x, weight, L, &the_min, Laux, <float>-0.9, <float>0.05, 36, False)
    _store(y, scale, -the_min, L)


cdef void _blocks(const float[:, ::1] x, uint8_t[:, ::1] out, const float* qw,
                  Py_ssize_t per_row) noexcept nogil:
    cdef Py_ssize_t i
    cdef float sigma2 = 0
    if qw == NULL:
        i = 0
        while i < x.shape[0]:
            _group(&x[i, 0], &out[i, 0], <int>(x.shape[0] - i if x.shape[0] - i < GROUP else GROUP))
            i += GROUP
        return
    for i in range(x.shape[0]):
        if i % per_row == 0:
            sigma2 = row_sigma2(&x[i, 0], per_row * QK)
        _block_imatrix(&x[i, 0], &out[i, 0], qw + QK * (i % per_row), sigma2)


def quantize_blocks_into(const float[:, ::1] x, uint8_t[:, ::1] out, quant_weights=None):
    """Quantize f32[n, 32] into a caller's u8[n, 20] (e.g. a slice of a bigger buffer); GIL released.

    quant_weights: an imatrix row f32[cols] (cols a multiple of 32); x is then whole rows of cols.
    """
    cdef const float[::1] qw
    cdef const float* qwp = NULL
    cdef Py_ssize_t per_row = 1
    if x.shape[1] != QK or out.shape[0] != x.shape[0] or out.shape[1] != NBYTES:
        raise ValueError(f"Q4_1 kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
                         f"got ({x.shape[0]}, {x.shape[1]}) -> ({out.shape[0]}, {out.shape[1]})")
    if quant_weights is not None:
        qw = np.ascontiguousarray(quant_weights, dtype=np.float32).ravel()
        if qw.shape[0] == 0 or qw.shape[0] % QK or x.shape[0] % (qw.shape[0] // QK):
            raise ValueError(f"quant_weights of length {qw.shape[0]} does not describe rows of whole "
                             f"{QK}-blocks covering {x.shape[0]} blocks")
        qwp = &qw[0]
        per_row = qw.shape[0] // QK
    with nogil:
        _blocks(x, out, qwp, per_row)


def quantize_blocks(const float[:, ::1] x, quant_weights=None):
    """f32[n, 32] -> u8[n, 20], byte-exact with qconvert.quants.q4_1.quantize_blocks."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out, quant_weights)
    return out

# Q5_0 kernel: the same computation as qconvert/quants/q5_0.py (the spec), in C, GIL released.
#
# Block layout (22 bytes, ggml's block_q5_0):  d: fp16 (LE) | qh: uint32 (LE) | qs: uint8[16]
# qs[j] = q[j] & 15 | (q[j+16] & 15) << 4; bit j of qh = q[j] >> 4; weight j = d * (q[j] - 16).
# Mirrors quantize_row_q5_0_ref (ggml/src/ggml-quants.c): max = the first x with the largest |x|
# (sign kept; +0.0 for an all-zero block), d = max / -16, id = d ? 1/d : 0,
# q[j] = MIN(31, (int8_t)(x[j]*id + 16.5f)): x*id rounded to float32, + 16.5f rounded to float32,
# then TRUNCATION. d stored via GGML_FP32_TO_FP16 (round to nearest even). No fused multiply-add
# (setup.py compiles with -ffp-contract=off).
#
# When 1/d overflows (|max| < ~4.7e-38) or x holds NaN/inf, C's float -> int8 conversion is
# undefined; x86-64 libggml (cvttps2dq) yields INT32_MIN, low byte 0: the slow path spells that out.
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q5_0_impl instead: per row
# sigma2 = sum(x^2)/cols; per block weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2),
# d, L = make_qx_quants(32, 16, x, rmse_type 1, weight) (kernels/ggml_common.pxd), q = L.

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy
from libc.math cimport fabsf, sqrtf

import numpy as np

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport cvtt_i32, first_absmax_fast, make_qx_quants, minf, opaque, pack_qh, row_sigma2

cdef enum:
    QK = 32
    HALF = 16
    GROUP = 8          # blocks per _group: their 1/d divisions run packed
    NBYTES = 22

# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES


cdef inline void _store(uint8_t* y, float d, const uint8_t* q) noexcept nogil:
    cdef uint16_t d16 = fp32_to_fp16(d)
    cdef uint32_t qh = pack_qh(q)
    cdef int j
    memcpy(y, &d16, 2)                  # little-endian hosts only, as ggml
    memcpy(y + 2, &qh, 4)
    for j in range(HALF):
        y[6 + j] = (q[j] & 15) | ((q[HALF + j] & 15) << 4)


cdef inline void _quantize(const float* x, uint8_t* y, float d, float inv, bint finite) noexcept nogil:
    cdef uint8_t q[QK]
    cdef float top
    cdef int8_t c
    cdef int j
    # x finite and 1/d finite: x*id + 16.5f lies in [0, 32.5] and the C conversion is well defined
    if finite and fabsf(inv) <= <float>3.4028234663852886e+38:
        top = opaque(31)                # (a constant bound would defeat minps; see ggml_common.pxd)
        for j in range(QK):             # truncation is monotonic: MIN(31, trunc v) == trunc(MIN(v, 31))
            q[j] = <uint8_t><int32_t>minf(x[j] * inv + <float>16.5, top)
    else:
        for j in range(QK):             # libggml's x86-64 answer for the undefined cases
            c = <int8_t>cvtt_i32(x[j] * inv + <float>16.5)
            q[j] = <uint8_t>(c if c < 31 else 31)
    _store(y, d, q)


cdef inline void _group(const float* x, uint8_t* y, int m) noexcept nogil:
    # m <= GROUP blocks at x (C-contiguous rows of QK) into y (rows of NBYTES).
    cdef float mx[GROUP]
    cdef float d[GROUP]
    cdef float inv[GROUP]
    cdef bint finite[GROUP]
    cdef int b
    for b in range(GROUP):
        mx[b] = 0
    for b in range(m):
        finite[b] = first_absmax_fast(x + QK * b, QK, &mx[b]) < 0x7F800000u
    for b in range(GROUP):             # d = max / -16, id = d ? 1/d : 0
        d[b] = mx[b] / <float>-16
        inv[b] = (<float>1) / (d[b] if d[b] != 0 else <float>1)
        inv[b] = inv[b] if d[b] != 0 else <float>0
    for b in range(m):
        _quantize(x + QK * b, y + NBYTES * b, d[b], inv[b], finite[b])


cdef inline void _block_imatrix(const float* x, uint8_t* y, const float* qw, float sigma2) noexcept nogil:
    cdef float weight[QK]
    cdef int8_t L[QK]
    cdef float d
    cdef int j
    for j in range(QK):
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j])
    d = make_qx_quants(QK, 16, x, L, weight)
    _store(y, d, <const uint8_t*>L)


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
    """Quantize f32[n, 32] into a caller's u8[n, 22] (e.g. a slice of a bigger buffer); GIL released.

    quant_weights: an imatrix row f32[cols] (cols a multiple of 32); x is then whole rows of cols.
    """
    cdef const float[::1] qw
    cdef const float* qwp = NULL
    cdef Py_ssize_t per_row = 1
    if x.shape[1] != QK or out.shape[0] != x.shape[0] or out.shape[1] != NBYTES:
        raise ValueError(f"Q5_0 kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
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
    """f32[n, 32] -> u8[n, 22], byte-exact with qconvert.quants.q5_0.quantize_blocks."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out, quant_weights)
    return out

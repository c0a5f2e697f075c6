# Q5_K kernel: the same computation as qconvert/quants/q5_k.py (the spec), in C, GIL released.
#
# Block layout (176 bytes, ggml's block_q5_K):
#   d: fp16 | dmin: fp16 | scales: uint8[12] | qh: uint8[32] | qs: uint8[128]
# scales: eight 6-bit sub-block scales sc[j] and mins m[j] in get_scale_min_k4's packing;
# qs[32c + l] = (q[64c + l] & 15) | (q[64c + 32 + l] & 15) << 4, and bits 2c, 2c+1 of qh[l] are the
# fifth bits of q[64c + l], q[64c + 32 + l]; weight i = d*sc[i/32] * q[i] - dmin*m[i/32], q in 0..31.
# Mirrors quantize_row_q5_K_ref (ggml/src/ggml-quants.c): Q4_K's computation (kernels/q4_k.pyx) with
# make_qkx2_quants(nmax 31, rmin -0.5, rdelta 0.1, nstep 15, squared error) and q clamped to 0..31.
# Rounding: nearest_int's round-half-even (1.5*2^23 trick), fp16 round to nearest even. All float32 in
# C's order, no fused multiply-add (setup.py compiles with -ffp-contract=off).
# With quant_weights (an imatrix row), quantize_row_q5_K_impl instead (see qconvert/quants/_kquants.py
# k4_levels). Shared pieces: kernels/kquants_common.pxd.

from libc.stdint cimport uint8_t
from libc.string cimport memcpy

import numpy as np

from kquants_common cimport k4_levels

cdef enum:
    QK = 256
    NBYTES = 176
    NMAX = 31            # make_qkx2_quants(32, 31, ..., rmin -0.5, rdelta 0.1, nstep 15, squared error)
    NSTEP = 15

cdef float RMIN = -0.5, RDELTA = 0.1   # as float32: the C literals -0.5f and 0.1f

# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES


cdef inline void _pack(const uint8_t* L, uint8_t* y) noexcept nogil:
    cdef uint8_t* qh = y + 16
    cdef uint8_t* ql = y + 48
    cdef uint8_t l1, l2
    cdef int c, l
    for l in range(32):
        qh[l] = 0
    for c in range(4):
        for l in range(32):
            l1 = L[64 * c + l]
            l2 = L[64 * c + 32 + l]
            qh[l] |= ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1))
            ql[32 * c + l] = (l1 & 15) | ((l2 & 15) << 4)


cdef void _blocks(const float[:, ::1] x, uint8_t[:, ::1] out, const float* qw,
                  Py_ssize_t per_row) noexcept nogil:
    # Two super-blocks per call (k4_levels fills 16 lanes with their 16 sub-blocks); an odd last
    # block is paired with a copy of itself. With an imatrix, block k reads qw[256 * (k % per_row):].
    cdef float pair[2 * QK]
    cdef uint8_t head[32]
    cdef uint8_t L[2 * QK]
    cdef Py_ssize_t n = x.shape[0], k
    cdef const float* q0 = NULL
    cdef const float* q1 = NULL
    for k in range(0, n - 1, 2):
        if qw != NULL:
            q0 = qw + QK * (k % per_row)
            q1 = qw + QK * ((k + 1) % per_row)
        k4_levels(&x[k, 0], NMAX, RMIN, RDELTA, NSTEP, q0, q1, True, head, L)
        memcpy(&out[k, 0], head, 16)
        memcpy(&out[k + 1, 0], head + 16, 16)
        _pack(L, &out[k, 0])
        _pack(L + QK, &out[k + 1, 0])
    if n % 2:
        if qw != NULL:
            q0 = qw + QK * ((n - 1) % per_row)
        memcpy(pair, &x[n - 1, 0], QK * sizeof(float))
        memcpy(pair + QK, &x[n - 1, 0], QK * sizeof(float))
        k4_levels(pair, NMAX, RMIN, RDELTA, NSTEP, q0, q0, True, head, L)
        memcpy(&out[n - 1, 0], head, 16)
        _pack(L, &out[n - 1, 0])


def quantize_blocks_into(const float[:, ::1] x, uint8_t[:, ::1] out, quant_weights=None):
    """Quantize f32[n, 256] into a caller's u8[n, 176] (e.g. a slice of a bigger buffer); GIL released.

    quant_weights: an imatrix row f32[cols] (cols a multiple of 256); x is then whole rows of cols,
    and quantize_row_Q5_K_impl is what runs.
    """
    cdef const float[::1] qw
    cdef const float* qwp = NULL
    cdef Py_ssize_t per_row = 1
    if x.shape[1] != QK or out.shape[0] != x.shape[0] or out.shape[1] != NBYTES:
        raise ValueError(f"Q5_K kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
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
    """f32[n, 256] -> u8[n, 176], byte-exact with qconvert.quants.q5_k.quantize_blocks (with or without
    quant_weights)."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out, quant_weights)
    return out

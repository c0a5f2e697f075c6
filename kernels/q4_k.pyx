# Q4_K kernel: the same computation as qconvert/quants/q4_k.py (the spec), in C, GIL released.
#
# Block layout (144 bytes, ggml's block_q4_K):  d: fp16 | dmin: fp16 | scales: uint8[12] | qs: uint8[128]
# scales: eight 6-bit sub-block scales sc[j] and mins m[j] in get_scale_min_k4's packing;
# qs[32c + l] = q[64c + l] | q[64c + 32 + l] << 4; weight i = d*sc[i/32] * q[i] - dmin*m[i/32], q in 0..15.
# Mirrors quantize_row_q4_K_ref (ggml/src/ggml-quants.c): per sub-block of 32, weights
# sqrtf(sum x^2 / 32) + |x| and make_qkx2_quants(nmax 15, rmin -1, rdelta 0.1, nstep 20, squared error);
# d = fp16(max_scale/63), dmin = fp16(max_min/63), sc/m = MIN(63, (uint8)nearest_int(63/max * v));
# then q = clamp(nearest_int((x + dmin*m) / (d*sc)), 0, 15) with the fp16-rounded d, dmin (a sub-block
# whose d*sc is 0 keeps make_qkx2_quants' levels). Rounding: nearest_int's round-half-even
# (1.5*2^23 trick), fp16 round to nearest even. All float32 in C's order, no fused multiply-add
# (setup.py compiles with -ffp-contract=off).
# With quant_weights (an imatrix row), quantize_row_q4_K_impl instead: weights qw*sqrtf(sigma2 + x^2),
# make_qkx3_quants (-0.9, 0.05, 36), make_qp_quants(8, 63) for the scales and the mins, unclamped
# (see qconvert/quants/_kquants.py k4_levels). Shared pieces: kernels/kquants_common.pxd.

from libc.stdint cimport uint8_t
from libc.string cimport memcpy

import numpy as np

from kquants_common cimport k4_levels

cdef enum:
    QK = 256
    NBYTES = 144
    NMAX = 15            # make_qkx2_quants(32, 15, ..., rmin -1, rdelta 0.1, nstep 20, squared error)
    NSTEP = 20

cdef float RMIN = -1.0, RDELTA = 0.1   # as float32: the C literals -1.f and 0.1f

# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES


cdef inline void _pack(const uint8_t* L, uint8_t* y) noexcept nogil:
    cdef int c, l
    for c in range(4):
        for l in range(32):
            y[16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4)


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
        k4_levels(&x[k, 0], NMAX, RMIN, RDELTA, NSTEP, q0, q1, False, head, L)
        memcpy(&out[k, 0], head, 16)
        memcpy(&out[k + 1, 0], head + 16, 16)
        _pack(L, &out[k, 0])
        _pack(L + QK, &out[k + 1, 0])
    if n % 2:
        if qw != NULL:
            q0 = qw + QK * ((n - 1) % per_row)
        memcpy(pair, &x[n - 1, 0], QK * sizeof(float))
        memcpy(pair + QK, &x[n - 1, 0], QK * sizeof(float))
        k4_levels(pair, NMAX, RMIN, RDELTA, NSTEP, q0, q0, False, head, L)
        memcpy(&out[n - 1, 0], head, 16)
        _pack(L, &out[n - 1, 0])


def quantize_blocks_into(const float[:, ::1] x, uint8_t[:, ::1] out, quant_weights=None):
    """Quantize f32[n, 256] into a caller's u8[n, 144] (e.g. a slice of a bigger buffer); GIL released.

    quant_weights: an imatrix row f32[cols] (cols a multiple of 256); x is then whole rows of cols,
    and quantize_row_Q4_K_impl is what runs.
    """
    cdef const float[::1] qw
    cdef const float* qwp = NULL
    cdef Py_ssize_t per_row = 1
    if x.shape[1] != QK or out.shape[0] != x.shape[0] or out.shape[1] != NBYTES:
        raise ValueError(f"Q4_K kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
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
    """f32[n, 256] -> u8[n, 144], byte-exact with qconvert.quants.q4_k.quantize_blocks (with or without
    quant_weights)."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out, quant_weights)
    return out

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

from kquants_common cimport k4_blocks

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 176
    GROUP = 2            # super-blocks per k4_levels call: its 16 lanes are their 16 sub-blocks
    IMATRIX = WEIGHTED
    NMAX = 31            # make_qkx2_quants(32, 31, ..., rmin -0.5, rdelta 0.1, nstep 15, squared error)
    NSTEP = 15

cdef float RMIN = -0.5, RDELTA = 0.1   # as float32: the C literals -0.5f and 0.1f


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


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint8_t L[2 * QK]
    cdef int b
    k4_blocks(x, m, qw, NMAX, RMIN, RDELTA, NSTEP, True, y, NBYTES, L)
    for b in range(m):
        _pack(L + QK * b, y + NBYTES * b)

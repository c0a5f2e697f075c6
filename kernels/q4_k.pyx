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

from kquants_common cimport k4_blocks

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 144
    GROUP = 2            # super-blocks per k4_levels call: its 16 lanes are their 16 sub-blocks
    IMATRIX = WEIGHTED
    NMAX = 15            # make_qkx2_quants(32, 15, ..., rmin -1, rdelta 0.1, nstep 20, squared error)
    NSTEP = 20

cdef float RMIN = -1.0, RDELTA = 0.1   # as float32: the C literals -1.f and 0.1f


cdef inline void _pack(const uint8_t* L, uint8_t* y) noexcept nogil:
    cdef int c, l
    for c in range(4):
        for l in range(32):
            y[16 + 32 * c + l] = L[64 * c + l] | (L[64 * c + 32 + l] << 4)


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    cdef uint8_t L[2 * QK]
    cdef int b
    k4_blocks(x, m, qw, NMAX, RMIN, RDELTA, NSTEP, False, y, NBYTES, L)
    for b in range(m):
        _pack(L + QK * b, y + NBYTES * b)

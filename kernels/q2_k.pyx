# Q2_K kernel: the same computation as qconvert/quants/q2_k.py (the spec), in C, GIL released.
#
# Block layout (84 bytes, ggml's block_q2_K):  scales: uint8[16] | qs: uint8[64] | d: fp16 | dmin: fp16
# scales[j] = sc[j] | m[j] << 4 (4-bit scale and min of sub-block j of 16 weights);
# qs[32h + l] = q[128h+l] | q[128h+l+32] << 2 | q[128h+l+64] << 4 | q[128h+l+96] << 6;
# weight i = d*sc[i/16] * q[i] - dmin*m[i/16], q in 0..3.
# Mirrors quantize_row_q2_K_ref (ggml/src/ggml-quants.c): per sub-block, weights |x| and
# make_qkx2_quants(16, nmax 3, rmin -0.5, rdelta 0.1, nstep 15, absolute error); when max_scale > 0,
# sc = nearest_int(15/max_scale * scale) and d = fp16(max_scale/15) (else 0), the same for the mins
# into the high nibble (uint8 arithmetic, as C); then q = clamp(nearest_int((x + dmin*m) / (d*sc)), 0, 3)
# with the fp16-rounded d, dmin (a sub-block whose d*sc is 0 keeps make_qkx2_quants' levels).
# Rounding: nearest_int's round-half-even (1.5*2^23 trick), fp16 round to nearest even. All float32 in
# C's order, no fused multiply-add (setup.py: -ffp-contract=off).
# With quant_weights (an imatrix row), quantize_row_q2_K_impl instead (see qconvert/quants/q2_k.py).
# Shared pieces: kernels/kquants_common.pxd.

from libc.stdint cimport uint8_t, uint32_t
from libc.math cimport fabsf

from kquants_common cimport (NL, fp16_round, imatrix_lanes, make_qkx2_lanes, make_qp_quants, nearest_int,
                             pack_2bit, requantize_lanes, superblock_sum_x2, transpose_in)

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 84
    GROUP = 1
    IMATRIX = WEIGHTED
    NMAX = 3             # make_qkx2_quants(16, 3, ..., rmin -0.5, rdelta 0.1, nstep 15, absolute error)
    NSTEP = 15

cdef float RMIN = -0.5, RDELTA = 0.1   # as float32: the C literals -0.5f and 0.1f
cdef float Q4SCALE = 15


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    # One super-block (GROUP = 1).
    cdef float xt[QK]
    cdef float wt[QK]
    cdef float Lt[QK]
    cdef float scales[NL]
    cdef float mins[NL]
    cdef float sd[NL]
    cdef float dm[NL]
    cdef float sw[NL]
    cdef float sig[NL]
    cdef const float* qwl[NL]
    cdef uint8_t ls[NL]
    cdef uint8_t lm[NL]
    cdef uint8_t L[QK]
    cdef float max_scale = 0, max_min = 0, iscale, d, dmin, sigma2
    cdef int i, j
    transpose_in(x, xt, 16)
    if qw == NULL:
        for i in range(QK):
            wt[i] = fabsf(xt[i])
        make_qkx2_lanes(xt, wt, 16, NMAX, RMIN, RDELTA, NSTEP, True, scales, mins, Lt)
        for j in range(16):
            if scales[j] > max_scale:
                max_scale = scales[j]
            if mins[j] > max_min:
                max_min = mins[j]
        if max_scale > 0:
            iscale = Q4SCALE / max_scale
            for j in range(16):
                y[j] = <uint8_t>nearest_int(iscale * scales[j])
            d = fp16_round(max_scale / Q4SCALE, y + 80)
        else:
            for j in range(16):
                y[j] = 0
            d = fp16_round(0, y + 80)
        if max_min > 0:
            iscale = Q4SCALE / max_min
            for j in range(16):
                y[j] |= <uint8_t>((<uint32_t>nearest_int(iscale * mins[j])) << 4)
            dmin = fp16_round(max_min / Q4SCALE, y + 82)
        else:
            dmin = fp16_round(0, y + 82)
    else:
        # quantize_row_q2_K_impl: sigma2 = sum(x^2)/256 (no factor 2 here), weights
        # qw*sqrtf(sigma2 + x^2), make_qkx3_quants(16, 3, ..., -0.9f, 0.05f, 36, false) (the
        # computation of make_qkx2_quants), make_qp_quants(16, 15) of the scales and of the mins.
        sigma2 = superblock_sum_x2(x) / <float>QK
        for j in range(16):
            sig[j] = sigma2
            qwl[j] = qw + 16 * j
        imatrix_lanes(xt, qwl, 16, sig, wt, sw)
        make_qkx2_lanes(xt, wt, 16, NMAX, <float>-0.9, <float>0.05, 36, False, scales, mins, Lt)
        d = fp16_round(make_qp_quants(16, 15, scales, ls, sw), y + 80)
        dmin = fp16_round(make_qp_quants(16, 15, mins, lm, sw), y + 82)
        for j in range(16):
            y[j] = <uint8_t>(ls[j] | (lm[j] << 4))
    for j in range(16):
        sd[j] = d * <float>(y[j] & 0x0F)
        dm[j] = dmin * <float>(y[j] >> 4)
    requantize_lanes(xt, 16, sd, dm, 0, NMAX, Lt, L)
    pack_2bit(L, y + 16)

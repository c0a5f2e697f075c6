# Q3_K kernel: the same computation as qconvert/quants/q3_k.py (the spec), in C, GIL released.
#
# Block layout (110 bytes, ggml's block_q3_K):  hmask: uint8[32] | qs: uint8[64] | scales: uint8[12] | d: fp16
# bit k of hmask[l] is q[32k + l] >> 2; qs holds q & 3 packed as Q2_K's; scales: sixteen 6-bit
# s[j] = scale + 32 (low nibbles in bytes 0-7: s[j] for j < 8, s[j] << 4 in byte j-8 for j >= 8; bits 4-5
# at bit 2(j/4) of byte 8 + j%4); weight i = d * (s[i/16] - 32) * (q[i] - 4), q in 0..7.
# Mirrors quantize_row_q3_K_ref (ggml/src/ggml-quants.c): per sub-block of 16,
# make_q3_quants(16, nmax 4, do_rmse=true); max_scale = the first scale of largest |scale|; if it is not
# 0: iscale = -32/max_scale, s = clamp((int8)nearest_int(iscale*scale), -32, 31) + 32, d = fp16(1/iscale)
# (else s = 0, d = 0); then q = clamp(nearest_int(x / (d*(s-32))), -4, 3) + 4 with the fp16-rounded d
# (a sub-block whose d*(s-32) is 0 keeps make_q3_quants' levels). Rounding: nearest_int's
# round-half-even (1.5*2^23 trick), fp16 round to nearest even. All float32 in C's order, no fused
# multiply-add (setup.py: -ffp-contract=off).
# With quant_weights (an imatrix row), quantize_row_q3_K_impl instead (see qconvert/quants/q3_k.py), its
# make_qx_quants from kernels/ggml_common.pxd. Shared pieces: kernels/kquants_common.pxd.

from libc.stdint cimport int8_t, uint8_t
from libc.string cimport memset
from libc.math cimport fabsf, sqrtf

from ggml_common cimport make_qx_quants
from kquants_common cimport (NL, fp16_round, make_q3_lanes, nearest_int, pack_2bit, requantize_lanes,
                             superblock_sum_x2, transpose_in)

include "entry.pxi"

cdef enum:
    QK = 256
    NBYTES = 110
    GROUP = 1
    IMATRIX = WEIGHTED
    NMAX = 4             # make_q3_quants(16, 4, x, L, true)


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    # One super-block (GROUP = 1).
    cdef float xt[QK]
    cdef float Lt[QK]
    cdef float w[QK]
    cdef int8_t Lq[QK]
    cdef int8_t ls[NL]
    cdef float sd[NL]
    cdef float dm[NL]
    cdef float sw[NL]
    cdef float scales[NL]
    cdef int s[NL]
    cdef uint8_t L[QK]
    cdef uint8_t* hmask = y
    cdef uint8_t* sc = y + 96
    cdef float amax = 0, max_scale = 0, iscale, d, sigma2, v
    cdef int i, j, k, l
    transpose_in(x, xt, 16)
    if qw == NULL:
        make_q3_lanes(xt, 16, NMAX, scales, Lt)
        for j in range(16):
            if fabsf(scales[j]) > amax:
                amax = fabsf(scales[j])
                max_scale = scales[j]
        if max_scale != 0:
            iscale = <float>-32 / max_scale
            for j in range(16):
                l = <int8_t>nearest_int(iscale * scales[j])     # int -> int8 wraps first, as C
                l = l if l < 31 else 31
                s[j] = (l if l > -32 else -32) + 32
            d = fp16_round((<float>1) / iscale, y + 108)
        else:
            for j in range(16):
                s[j] = 0
            d = fp16_round(0, y + 108)
    else:
        # quantize_row_q3_K_impl: sigma2 = 2*sum(x^2)/256, weights qw*sqrtf(sigma2 + x^2),
        # make_qx_quants(16, 4, rmse_type 1, weights) per sub-block, then the 6-bit scales from
        # make_qx_quants(16, 32, rmse_type 1) weighted by the sub-blocks' weight sums.
        sigma2 = <float>2 * superblock_sum_x2(x) / <float>QK
        for j in range(16):
            sw[j] = 0
            for i in range(16):
                v = x[16 * j + i]
                w[16 * j + i] = qw[16 * j + i] * sqrtf(sigma2 + v * v)
                sw[j] += w[16 * j + i]
        for j in range(16):
            scales[j] = make_qx_quants(16, NMAX, x + 16 * j, Lq + 16 * j, w + 16 * j)
            for i in range(16):
                Lt[i * NL + j] = <float>Lq[16 * j + i]
        d = fp16_round(make_qx_quants(16, 32, scales, ls, sw), y + 108)
        for j in range(16):
            s[j] = ls[j]
    memset(sc, 0, 12)
    for j in range(16):
        if j < 8:
            sc[j] = s[j] & 0x0F
        else:
            sc[j - 8] |= (s[j] & 0x0F) << 4
        sc[8 + j % 4] |= (s[j] >> 4) << (2 * (j // 4))
    for j in range(16):
        sd[j] = d * <float>(s[j] - 32)
        dm[j] = 0
    requantize_lanes(xt, 16, sd, dm, -4, 3, Lt, L)   # stores l + 4
    memset(hmask, 0, 32)
    for k in range(8):           # the high bit of weight 32k + l goes to bit k of hmask[l]
        for l in range(32):
            hmask[l] |= <uint8_t>((L[32 * k + l] >> 2) << k)
            L[32 * k + l] &= 3
    pack_2bit(L, y + 32)

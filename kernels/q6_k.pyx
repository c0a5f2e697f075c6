# Q6_K kernel: the same computation as qconvert/quants/q6_k.py (the spec), in C, GIL released.
#
# Block layout (210 bytes, ggml's block_q6_K):
#   ql: uint8[128] low nibbles | qh: uint8[64] high 2 bits | scales: int8[16] | d: fp16 (LAST, LE)
# Half h (weights 128h..128h+127) owns ql[64h:64h+64], qh[32h:32h+32]; for l < 32, L' = L[128h:]:
#   ql[64h+l] = L'[l]&15 | (L'[l+64]&15)<<4,  ql[64h+32+l] = L'[l+32]&15 | (L'[l+96]&15)<<4,
#   qh[32h+l] = L'[l]>>4 | L'[l+32]>>4<<2 | L'[l+64]>>4<<4 | L'[l+96]>>4<<6
# weight j = d * scales[j/16] * (L[j] - 32).
#
# Mirrors quantize_row_q6_K_ref (ggml/src/ggml-quants.c): per sub-block of 16, scale_k and levels
# from make_qx_quants(16, 32, rmse_type 1) (kernels/ggml_common.pxd); max_scale = the first scale
# with the largest |scale| (below 1e-15: the block is 210 zero bytes); iscale = -128/max_scale;
# d = fp16(1/iscale); scales[k] = (int8)MIN(127, nearest_int(iscale*scale_k)); then every
# sub-block with dk = fp16_to_fp32(d) * scales[k] != 0 is re-quantized against the ROUNDED scale:
# L = clamp(nearest_int(x / dk), -32, 31) + 32 (a true division). nearest_int rounds half to EVEN
# via the 1.5*2^23 magic number. All float32, no fused multiply-add (-ffp-contract=off).
#
# With quant_weights (an imatrix row, f32[cols]), quantize_row_q6_K_impl instead: make_qx_quants
# weighs sub-block k of super-block i (its index within the row) by imatrix[256 i + 16 k ...].

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t
from libc.string cimport memcpy, memset
from libc.math cimport fabsf

from ggml_fp16 cimport fp32_to_fp16
from ggml_common cimport fp16_to_fp32, make_qx_quants, nearest_int

include "entry.pxi"

cdef enum:
    QK = 256
    SUB = 16
    NSUB = 16
    NBYTES = 210
    GROUP = 1
    IMATRIX = WEIGHTED
    OFF_QH = 128
    OFF_SC = 192
    OFF_D = 208


cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float unused) noexcept nogil:
    # One super-block (GROUP = 1).
    cdef int8_t L[QK]
    cdef float scales[NSUB]
    cdef int8_t sc[NSUB]
    cdef float max_scale = 0, max_abs_scale = 0, scale, iscale, dd, df
    cdef uint16_t d16
    cdef int32_t l
    cdef int k, j, h
    cdef const uint8_t* u
    cdef uint8_t* ql
    cdef uint8_t* qh
    for k in range(NSUB):
        scale = make_qx_quants(SUB, 32, x + SUB * k, L + SUB * k, qw + SUB * k if qw != NULL else NULL)
        scales[k] = scale
        if fabsf(scale) > max_abs_scale:
            max_abs_scale = fabsf(scale)
            max_scale = scale
    if max_abs_scale < <float>1e-15:    # GROUP_MAX_EPS
        memset(y, 0, NBYTES)
        return
    iscale = <float>-128.0 / max_scale
    d16 = fp32_to_fp16(1 / iscale)
    df = fp16_to_fp32(d16)
    for k in range(NSUB):
        l = nearest_int(iscale * scales[k])
        sc[k] = <int8_t>(l if l < 127 else 127)
    for k in range(NSUB):
        dd = df * <float>sc[k]
        if dd == 0:                     # keep make_qx_quants' levels (NaN != 0 goes on, as in C)
            continue
        for j in range(SUB):
            l = nearest_int(x[SUB * k + j] / dd)
            l = -32 if l < -32 else l
            l = 31 if l > 31 else l
            L[SUB * k + j] = <int8_t>(l + 32)
    ql = y
    qh = y + OFF_QH
    u = <const uint8_t*>L
    for h in range(2):
        for j in range(32):
            ql[j] = (u[j] & 15) | ((u[j + 64] & 15) << 4)
            ql[j + 32] = (u[j + 32] & 15) | ((u[j + 96] & 15) << 4)
            qh[j] = (u[j] >> 4) | ((u[j + 32] >> 4) << 2) | ((u[j + 64] >> 4) << 4) | ((u[j + 96] >> 4) << 6)
        ql += 64
        qh += 32
        u += 128
    memcpy(y + OFF_SC, sc, NSUB)
    memcpy(y + OFF_D, &d16, 2)          # little-endian hosts only, as ggml

# What the legacy kernels share: the levels of Q4_0 / Q5_0 (absmax_blocks) and of Q4_1 / Q5_1
# (minmax_blocks), for up to LEGACY_GROUP blocks of 32 at once, by both of ggml's paths:
#
#   qw == NULL  quantize_row_q{4,5}_{0,1}_ref: per block, a scale from the block's extremes, then
#               each level by TRUNCATION of a float32 expression. The blocks' divisions run side by
#               side (packed divps: 4 blocks for the latency of one scalar division).
#   qw != NULL  quantize_row_q{4,5}_{0,1}_impl: weight[j] = qw[j] * sqrtf(sigma2 + x[j]^2), sigma2 the
#               row's sum of x^2 / its length, then make_qx_quants (absmax types, kernels/ggml_common.pxd)
#               or make_qkx3_quants (min/max types). The latter is 37 sequential trials per block,
#               each a chain of dependent float sums; it runs one block per lane, 16 blocks side by
#               side (make_qkx2_lanes, kernels/kquants_common.pxd: the same computation, vectorized
#               across blocks, each lane in C's order).
#
# The caller (kernels/q4_0.pyx, ...) only packs d, m and the levels into its block layout.
# The NumPy twins: qconvert/quants/q4_0.py, q4_1.py, q5_0.py, q5_1.py.
# cimported, never compiled on its own; no fused multiply-add (setup.py: -ffp-contract=off).

from libc.stdint cimport int8_t, int32_t, uint8_t
from libc.float cimport FLT_MAX
from libc.math cimport fabsf, sqrtf
from libc.string cimport memcpy, memset

from ggml_common cimport cvtt_i32, first_absmax_fast, first_min_max, make_qx_quants, minf, opaque
from kquants_common cimport NL, imatrix_lanes, make_qkx2_lanes, transpose_in

cdef enum:
    QK_LEGACY = 32
    LEGACY_GROUP = NL    # blocks per call at most (the including kernel's GROUP, kernels/entry.pxi):
                         # make_qkx2_lanes' 16 lanes


cdef inline void _impl_weights(const float* x, const float* qw, float sigma2, float* weight) noexcept nogil:
    # quantize_row_q4_0_impl & co.: weight[j] = qw[j] * sqrtf(sigma2 + xb[j]*xb[j])
    cdef int j
    for j in range(QK_LEGACY):
        weight[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j])


cdef inline void absmax_blocks(const float* x, int m, int nmax, const float* qw, float sigma2,
                               float* d, uint8_t* q) noexcept nogil:
    """Q4_0 (nmax 8) and Q5_0 (nmax 16): m <= LEGACY_GROUP blocks at x into their scales d[b] and levels
    q[32 b + j] in 0..2 nmax - 1 (weight = d * (q - nmax)).

    _ref: max = the first x of largest |x| (+0.0 if none is > 0), d = max / -nmax, id = d ? 1/d : 0,
    q = MIN(2 nmax - 1, (int8_t)(x*id + (nmax + 0.5f))). When x holds inf/NaN or 1/d overflows, that
    conversion is undefined in C; x86-64 libggml (cvttps2dq) yields INT32_MIN, whose low byte is 0:
    the slow branch spells that out. _impl: d, q = make_qx_quants(32, nmax, x, rmse_type 1, weight)."""
    cdef float weight[QK_LEGACY]
    cdef float mx[LEGACY_GROUP]
    cdef float inv[LEGACY_GROUP]
    cdef bint finite[LEGACY_GROUP]
    cdef float top, id, half = <float>nmax + <float>0.5
    cdef const float* xb
    cdef uint8_t* qb
    cdef int8_t c
    cdef int b, j
    if qw != NULL:
        for b in range(m):
            _impl_weights(x + QK_LEGACY * b, qw + QK_LEGACY * b, sigma2, weight)
            d[b] = make_qx_quants(QK_LEGACY, nmax, x + QK_LEGACY * b, <int8_t*>(q + QK_LEGACY * b), weight)
        return
    for b in range(LEGACY_GROUP):
        mx[b] = 0
    for b in range(m):
        finite[b] = first_absmax_fast(x + QK_LEGACY * b, QK_LEGACY, &mx[b]) < 0x7F800000u
    for b in range(LEGACY_GROUP): # all lanes, so that the divisions pack
        d[b] = mx[b] / <float>(-nmax)
        inv[b] = (<float>1) / (d[b] if d[b] != 0 else <float>1)
        inv[b] = inv[b] if d[b] != 0 else <float>0
    for b in range(m):
        xb = x + QK_LEGACY * b
        qb = q + QK_LEGACY * b
        id = inv[b]                     # a local: stores through uint8_t* may alias any array
        # x finite and 1/d finite: x*id + nmax + 0.5 lies in [0, 2 nmax + 0.5], the C conversion is
        # well defined, and truncation is monotonic: MIN(top, trunc v) == trunc(MIN(v, top)).
        if finite[b] and fabsf(id) <= FLT_MAX:
            top = opaque(<float>(2 * nmax - 1))     # a constant bound would defeat minps (ggml_common.pxd)
            for j in range(QK_LEGACY):
                qb[j] = <uint8_t><int32_t>minf(xb[j] * id + half, top)
        else:
            for j in range(QK_LEGACY):
                c = <int8_t>cvtt_i32(xb[j] * id + half)
                qb[j] = <uint8_t>(c if c < 2 * nmax - 1 else 2 * nmax - 1)


cdef inline void _minmax_impl(const float* x, int m, int nmax, const float* qw, float sigma2,
                              float* d, float* mn, uint8_t* q) noexcept nogil:
    # quantize_row_q4_1_impl / q5_1_impl for m <= NL blocks, block b in lane b: weights
    # qw * sqrtf(sigma2 + x^2), then make_qkx3_quants(32, nmax, x, weight, L, &the_min, Laux, -0.9f,
    # 0.05f, 36, false), which computes what make_qkx2_quants does (its early exit `max <= min` is
    # make_qkx2's `max == min`, as max >= min). Unused lanes hold zeros, their results dropped.
    cdef float xpad[NL * QK_LEGACY]
    cdef float xt[NL * QK_LEGACY]
    cdef float wt[NL * QK_LEGACY]
    cdef float Lt[NL * QK_LEGACY]
    cdef float sw[NL]
    cdef float sig[NL]
    cdef float scales[NL]
    cdef float the_min[NL]
    cdef const float* qwl[NL]
    cdef int b, i
    if m < NL:
        memcpy(xpad, x, m * QK_LEGACY * sizeof(float))
        memset(xpad + m * QK_LEGACY, 0, (NL - m) * QK_LEGACY * sizeof(float))
        x = xpad
    transpose_in(x, xt, QK_LEGACY)
    for b in range(NL):
        sig[b] = sigma2
        qwl[b] = qw + QK_LEGACY * (b if b < m else 0)
    imatrix_lanes(xt, qwl, QK_LEGACY, sig, wt, sw)
    make_qkx2_lanes(xt, wt, QK_LEGACY, nmax, <float>-0.9, <float>0.05, 36, False, scales, the_min, Lt)
    for b in range(m):
        d[b] = scales[b]
        mn[b] = -the_min[b]
        for i in range(QK_LEGACY):
            q[QK_LEGACY * b + i] = <uint8_t>Lt[i * NL + b]


cdef inline void minmax_blocks(const float* x, int m, int nmax, bint clamp, const float* qw, float sigma2,
                               float* d, float* mn, uint8_t* q) noexcept nogil:
    """Q4_1 (nmax 15, clamp) and Q5_1 (nmax 31): m <= LEGACY_GROUP blocks at x into their scales d[b],
    minimums mn[b] and levels q[32 b + j] in 0..nmax (weight = d * q + mn).

    _ref: min, max = strict `<` / `>` scans from +-FLT_MAX, d = (max - min) / nmax, id = d ? 1/d : 0,
    q = (int8_t)((x - min)*id + 0.5f), then Q4_1's MIN(15, ...) when clamp (Q5_1 converts to uint8_t
    with no MIN). When x holds NaN/inf or 1/d overflows the conversion is undefined; x86-64 libggml's
    INT32_MIN leaves a low byte of 0, which the slow branch spells out.
    _impl: make_qkx3_quants(32, nmax, x, weight, ..., -0.9f, 0.05f, 36); d = scale, mn = -the_min."""
    cdef float mx[LEGACY_GROUP]
    cdef float inv[LEGACY_GROUP]
    cdef bint nan[LEGACY_GROUP]
    cdef float top, lo, id
    cdef const float* xb
    cdef uint8_t* qb
    cdef int8_t c
    cdef int b, j
    if qw != NULL:
        _minmax_impl(x, m, nmax, qw, sigma2, d, mn, q)
        return
    for b in range(LEGACY_GROUP):
        mn[b] = 0
        mx[b] = 0
    for b in range(m):
        nan[b] = first_min_max(x + QK_LEGACY * b, QK_LEGACY, &mn[b], &mx[b])
    for b in range(LEGACY_GROUP): # all lanes, so that the divisions pack
        d[b] = (mx[b] - mn[b]) / <float>nmax
    for b in range(LEGACY_GROUP):
        inv[b] = (<float>1) / (d[b] if d[b] != 0 else <float>1)
        inv[b] = inv[b] if d[b] != 0 else <float>0
    for b in range(m):
        xb = x + QK_LEGACY * b
        qb = q + QK_LEGACY * b
        lo = mn[b]                      # locals: stores through uint8_t* may alias any array
        id = inv[b]
        # No NaN in x (an inf would make max - min inf), max - min and 1/d finite: then every
        # (x - min)*id + 0.5f lies in [0.5, nmax + 0.5] and the C conversion is well defined.
        if not nan[b] and fabsf(d[b]) <= FLT_MAX and fabsf(id) <= FLT_MAX:
            if clamp:                   # truncation is monotonic: MIN(top, trunc v) == trunc(MIN(v, top))
                top = opaque(<float>nmax)
                for j in range(QK_LEGACY):
                    qb[j] = <uint8_t><int32_t>minf((xb[j] - lo) * id + <float>0.5, top)
            else:
                for j in range(QK_LEGACY):
                    qb[j] = <uint8_t><int32_t>((xb[j] - lo) * id + <float>0.5)
        else:
            for j in range(QK_LEGACY):
                c = <int8_t>cvtt_i32((xb[j] - lo) * id + <float>0.5)
                qb[j] = <uint8_t>(c if c < nmax or not clamp else nmax)

# What the IQ4_NL and IQ4_XS kernels share: ggml's quantize_row_iq4_nl_impl (ggml/src/ggml-quants.c)
# for one sub-block of 32, as quantize_iq4_nl / quantize_iq4_xs call it (ntry = 7), in C, float32
# in C's order. The spec is qconvert/quants/iq4_nl.py (block_scales, best_index, impl_weights).
#
#   KV              kvalues_iq4nl (ggml-common.h) as floats: -127 ... 113, 16 sorted levels
#   best_index      best_index_int8(16, kvalues_iq4nl, x), branch-free (below)
#   iq4_trials      the 16 trial scales' sums, kvalues_iq4nl[best_index(x)] branch-free (C)
#   iq4_weights     x^2, or qw * sqrtf(sigma2 + x^2) with sigma2 = sum(x^2) * 2/super_block
#   iq4_scale       the sub-block's scale: 1 + 15 trial scales, the best kept as C decides
#
# Branch-free best_index_int8. C: 0 if x <= val[0], 15 if x >= val[15], else the bracket
# val[m-1] <= x < val[m] from a binary search, then `x - val[m-1] < val[m] - x ? m-1 : m`.
# Write c_k = (x - val[k-1] >= val[k] - x) for k = 1..15, in float32. For k < m both differences
# have fixed signs (x - val[k-1] > 0 >= val[k] - x: a non-zero difference of floats never rounds
# to 0), so c_k is true; for k > m likewise false; c_m is exactly the negation of C's test. So
# best_index = sum of c_k, and the level's value is val[0] + sum of c_k * (val[k] - val[k-1]) (small
# integers: exact). Outside (val[0], val[15]) every c_k is false, resp. true, as C's early returns.
# Only a NaN x differs (every comparison false: 0 here, 15 in C's search), so it is mapped to 15.
# The 15 compares vectorize; the search's data-dependent branches, which make ggml's loop slow
# (a mispredicted branch per level or two), are gone.
#
# The 16 trials of the scale search are independent until C's final in-order decision: their sums
# are accumulated side by side (each in index order, so bit-identical), trial t in lane t.
# cimported by kernels/iq4_nl.pyx and iq4_xs.pyx, never compiled on its own; no fused
# multiply-add (setup.py: -ffp-contract=off).

from libc.math cimport fabsf, sqrtf

from ggml_common cimport first_absmax

cdef extern from *:
    # The hot loop in C with SSE2 intrinsics (gcc does not if-convert the level compares of the
    # plain loop, below for other targets, so it would not vectorize): trial t in lane t % 4 of
    # vector t / 4; per level k a compare, an and and an add (the header's sum of c_k terms).
    """
    static const float qconvert_kvalues_iq4nl[16] = {
        -127.f, -104.f, -83.f, -65.f, -49.f, -35.f, -22.f, -10.f, 1.f, 13.f, 25.f, 38.f, 53.f, 69.f, 89.f, 113.f};
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline void qconvert_iq4_trials(const float* x, const float* w, const float* isc,
                                           float* sx, float* s2) {
        const float* kv = qconvert_kvalues_iq4nl;
        __m128 is[4], ax[4], aq[4], vx[4], v2[4];
        int i, t, k;
        for (t = 0; t < 4; t++) {
            is[t] = _mm_loadu_ps(isc + 4 * t);
            vx[t] = _mm_setzero_ps();
            v2[t] = _mm_setzero_ps();
        }
        for (i = 0; i < 32; i++) {
            const __m128 xi = _mm_set1_ps(x[i]), wi = _mm_set1_ps(w[i]);
            for (t = 0; t < 4; t++) {
                ax[t] = _mm_mul_ps(is[t], xi);
                aq[t] = _mm_set1_ps(kv[0]);
            }
            #pragma GCC unroll 16
            for (k = 1; k < 16; k++) {      /* unrolled: the levels become constant operands */
                const __m128 lo = _mm_set1_ps(kv[k - 1]), hi = _mm_set1_ps(kv[k]);
                const __m128 step = _mm_set1_ps(kv[k] - kv[k - 1]);
                for (t = 0; t < 4; t++) {   /* c_k = (al - val[k-1] >= val[k] - al) */
                    const __m128 c = _mm_cmpge_ps(_mm_sub_ps(ax[t], lo), _mm_sub_ps(hi, ax[t]));
                    aq[t] = _mm_add_ps(aq[t], _mm_and_ps(c, step));
                }
            }
            for (t = 0; t < 4; t++) {
                const __m128 nan = _mm_cmpunord_ps(ax[t], ax[t]);   /* C's search gives 15 */
                const __m128 q = _mm_or_ps(_mm_andnot_ps(nan, aq[t]), _mm_and_ps(nan, _mm_set1_ps(kv[15])));
                const __m128 wq = _mm_mul_ps(wi, q);
                vx[t] = _mm_add_ps(vx[t], _mm_mul_ps(wq, xi));
                v2[t] = _mm_add_ps(v2[t], _mm_mul_ps(wq, q));
            }
        }
        for (t = 0; t < 4; t++) {
            _mm_storeu_ps(sx + 4 * t, vx[t]);
            _mm_storeu_ps(s2 + 4 * t, v2[t]);
        }
    }
    #else
    static inline void qconvert_iq4_trials(const float* x, const float* w, const float* isc,
                                           float* sx, float* s2) {
        const float* kv = qconvert_kvalues_iq4nl;
        int i, t, k;
        for (t = 0; t < 16; t++) { sx[t] = 0.f; s2[t] = 0.f; }
        for (i = 0; i < 32; i++) {
            for (t = 0; t < 16; t++) {
                const float al = isc[t] * x[i];
                float q = kv[0], wq;
                for (k = 1; k < 16; k++) q += (al - kv[k - 1] >= kv[k] - al) ? kv[k] - kv[k - 1] : 0.f;
                q = al == al ? q : kv[15];
                wq = w[i] * q;
                sx[t] = sx[t] + wq * x[i];
                s2[t] = s2[t] + wq * q;
            }
        }
    }
    #endif
    """
    const float KV "qconvert_kvalues_iq4nl"[16]
    void iq4_trials "qconvert_iq4_trials"(const float* x, const float* w, const float* isc,
                                          float* sx, float* s2) noexcept nogil

cdef enum:
    IQ4_SUB = 32         # weights per sub-block (QK4_NL, and IQ4_XS's block_size)
    IQ4_NTRY = 7         # quantize_iq4_nl's / quantize_iq4_xs's ntry
    IQ4_TRIALS = 16      # the first scale -max/-127, then itry = -7..7


cdef inline int best_index(float x) noexcept nogil:
    cdef int k, idx = 0
    for k in range(1, 16):
        idx += (x - KV[k - 1]) >= (KV[k] - x)
    return idx if x == x else 15


cdef inline void iq4_weights(const float* x, const float* qw, int super_block, float* w) noexcept nogil:
    """The weights of a super-block's super_block values (whole sub-blocks) into w."""
    cdef float sigma2 = 0
    cdef int j
    if qw == NULL:
        for j in range(super_block):
            w[j] = x[j] * x[j]
        return
    for j in range(super_block):
        sigma2 += x[j] * x[j]
    sigma2 *= <float>2 / <float>super_block
    for j in range(super_block):
        w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j])


cdef inline float iq4_scale(const float* x, const float* w) noexcept nogil:
    """quantize_row_iq4_nl_impl's scale of one sub-block of 32 (ntry 7): 0 when max |x| < 1e-15."""
    cdef float isc[IQ4_TRIALS]
    cdef float sx[IQ4_TRIALS]
    cdef float s2[IQ4_TRIALS]
    cdef float mx, d, best
    cdef int t
    mx = first_absmax(x, IQ4_SUB)
    if fabsf(mx) < <float>1e-15:        # GROUP_MAX_EPS
        return 0
    d = -mx / KV[0]
    isc[0] = 1 / d
    for t in range(1, IQ4_TRIALS):
        isc[t] = <float>(t - 1 - IQ4_NTRY + <int>KV[0]) / mx
    iq4_trials(x, w, isc, sx, s2)
    d = sx[0] / s2[0] if s2[0] > 0 else <float>0
    best = d * sx[0]
    for t in range(1, IQ4_TRIALS):
        if s2[t] > 0 and sx[t] * sx[t] > best * s2[t]:
            d = sx[t] / s2[t]
            best = d * sx[t]
    return d

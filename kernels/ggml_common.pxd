# Helpers the quant kernels share, each the C twin of a function in qconvert/quants/_common.py and
# each mirroring one ggml helper (ggml/src/ggml-quants.c, ggml-impl.h) in float32 exactly.
# cimported, never compiled on its own. Everything is noexcept nogil and allocation-free.
#
#   fp16_to_fp32       GGML_FP16_TO_FP32 (exact, integer arithmetic)
#   nearest_int        round half to EVEN by the 1.5 * 2^23 magic number, bit for bit
#   cvtt_i32           C's float -> int conversion as x86-64 libggml executes it (cvttss2si):
#                      truncation, INT32_MIN for NaN, inf and anything out of range
#   first_absmax       the signed x with the largest |x| (first of equals), +0.0 if none is > 0;
#                      first_absmax_fast the same, from minmax8's min and max
#   first_min_max      the `if (v < min) min = v; if (v > max) max = v;` scans from +-FLT_MAX, in
#                      8 SSE lanes (exact: only +-0 can be "equal but different", fixed afterwards);
#                      also says whether x holds a NaN
#   clampf, minf, maxf, opaque   C one-liners gcc turns into maxps/minps (see below)
#   pack_qh            the fifth bits of 32 levels as Q5_0/Q5_1's little-endian uint32 qh
#   row_sigma2         sum_x2 / n_per_row of the legacy imatrix paths, summed in index order
#   make_qx_quants     rmse_type 1, with or without importance weights; its 19 trial scales are
#                      evaluated side by side (each sum still accumulates in index order, so the
#                      result is bit-identical while the trials vectorize)
#   make_qkx3_quants   as ggml's, scalar: a winning trial moves `min`, so the trials are sequential
#
# Floating point: the including module is compiled with -ffp-contract=off (setup.py), so every
# a*b + c below rounds twice, as in libggml (built without FMA contraction).

from libc.stdint cimport int8_t, int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.math cimport fabsf

from ggml_fp16 cimport f32_bits

cdef extern from *:
    # Plain C, so that gcc sees `lo > v ? lo : v` whole and vectorizes it to maxps/minps (exact:
    # for non-NaN v this is max(lo, min(v, hi))). With constant bounds (after inlining) gcc 12
    # instead fuses the two clamps into a compare-and-blend chain five times longer; opaque()
    # hides the constant behind an empty asm so the min/max form survives.
    """
    static inline float qconvert_clampf(float v, float lo, float hi) {
        v = lo > v ? lo : v;
        return hi < v ? hi : v;
    }
    static inline float qconvert_minf(float a, float b) { return a < b ? a : b; }  /* minps */
    static inline float qconvert_maxf(float a, float b) { return a > b ? a : b; }  /* maxps */
    static inline float qconvert_opaque(float v) {
    #if defined(__GNUC__)
        __asm__("" : "+m"(v));
    #endif
        return v;
    }
    /* Eight lanes of `if (v < lo) lo = v; if (v > hi) hi = v;` from +-FLT_MAX over x[0..n), n % 8
       == 0, then the lanes combined the same way; returns whether any x is NaN. SSE's minps(a, b)
       is exactly `a < b ? a : b` (ties and NaN give b), so the lanes match C's scan; gcc does not
       vectorize that scan itself (the reduction is not associative), hence the intrinsics. */
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline int qconvert_minmax8(const float* x, int n, float* pmin, float* pmax) {
        __m128 lo0 = _mm_set1_ps(3.40282347e+38f), lo1 = lo0;
        __m128 hi0 = _mm_set1_ps(-3.40282347e+38f), hi1 = hi0;
        __m128 nan = _mm_setzero_ps();
        float lo[8], hi[8];
        float mn, mx;
        int j;
        for (j = 0; j < n; j += 8) {
            __m128 a = _mm_loadu_ps(x + j), b = _mm_loadu_ps(x + j + 4);
            lo0 = _mm_min_ps(a, lo0); lo1 = _mm_min_ps(b, lo1);
            hi0 = _mm_max_ps(a, hi0); hi1 = _mm_max_ps(b, hi1);
            nan = _mm_or_ps(nan, _mm_cmpunord_ps(a, b));
        }
        _mm_storeu_ps(lo, lo0); _mm_storeu_ps(lo + 4, lo1);
        _mm_storeu_ps(hi, hi0); _mm_storeu_ps(hi + 4, hi1);
        mn = lo[0]; mx = hi[0];
        for (j = 1; j < 8; j++) {
            mn = lo[j] < mn ? lo[j] : mn;
            mx = hi[j] > mx ? hi[j] : mx;
        }
        *pmin = mn; *pmax = mx;
        return _mm_movemask_ps(nan) != 0;
    }
    #else
    static inline int qconvert_minmax8(const float* x, int n, float* pmin, float* pmax) {
        float mn = 3.40282347e+38f, mx = -3.40282347e+38f;
        int j, nan = 0;
        for (j = 0; j < n; j++) {
            mn = x[j] < mn ? x[j] : mn;
            mx = x[j] > mx ? x[j] : mx;
            nan |= x[j] != x[j];
        }
        *pmin = mn; *pmax = mx;
        return nan;
    }
    #endif
    """
    float clampf "qconvert_clampf"(float v, float lo, float hi) noexcept nogil
    float opaque "qconvert_opaque"(float v) noexcept nogil
    float minf "qconvert_minf"(float a, float b) noexcept nogil
    float maxf "qconvert_maxf"(float a, float b) noexcept nogil
    bint minmax8 "qconvert_minmax8"(const float* x, int n, float* pmin, float* pmax) noexcept nogil

cdef enum:
    QX_TRIES = 20      # the 19 tries of make_qx_quants (is = -9..9), padded to a multiple of 4
    QX_MAXN = 32       # the largest group make_qx_quants is called with (Q5_0's 32; Q6_K's 16)


cdef inline float fp16_to_fp32(uint16_t h) noexcept nogil:
    cdef uint32_t sign = (<uint32_t>h & 0x8000u) << 16
    cdef uint32_t e = (h >> 10) & 0x1F
    cdef uint32_t m = h & 0x3FF
    cdef uint32_t u
    cdef float f
    if e == 0:                          # zero or subnormal: m * 2^-24, exact in float32
        f = <float>m * <float>5.9604644775390625e-08
        return -f if sign else f
    if e == 31:                         # inf / NaN, payload kept
        u = sign | 0x7F800000u | (m << 13)
    else:
        u = sign | ((e + 112) << 23) | (m << 13)
    memcpy(&f, &u, 4)
    return f


cdef inline int32_t nearest_int(float fval) noexcept nogil:
    # bits(fval + 1.5*2^23): for |fval| <= 4194303 the sum's low 23 bits are 0x400000 + round(fval),
    # ties to even (the float addition rounds); beyond that the same bit arithmetic, as libggml.
    cdef float val = fval + <float>12582912.0
    cdef int32_t i
    memcpy(&i, &val, 4)
    return (i & 0x007FFFFF) - 0x00400000


cdef inline int32_t cvtt_i32(float v) noexcept nogil:
    # (int)v without C's undefined behaviour: cvttss2si's answer for NaN/inf/out-of-range spelled out.
    if fabsf(v) < <float>2147483648.0:
        return <int32_t>v
    return <int32_t>(-2147483647 - 1)


cdef inline float first_absmax(const float* x, int n) noexcept nogil:
    cdef float amax = 0, mx = 0, ax
    cdef int i
    for i in range(n):
        ax = fabsf(x[i])
        if ax > amax:
            amax = ax
            mx = x[i]
    return mx


cdef inline uint32_t first_absmax_fast(const float* x, int n, float* pmax) noexcept nogil:
    # *pmax = first_absmax(x, n), n % 8 == 0; returns max |x|'s bits, >= 0x7F800000 when x holds
    # inf or NaN. From the block's min and max (minmax8: SSE, no NaN): C's pick is whichever of the
    # two has the larger magnitude, since every element of that magnitude then equals it. Only a
    # tie (-min == max, including an all-zero block, where C keeps max = +0.0) or a NaN (which C's
    # `amax < fabsf(v)` never picks) needs the scalar scan; both are rare, so their branches are
    # predictable, and the common choice between min and max is a select, not a branch.
    cdef float mn, mx, amax
    if minmax8(x, n, &mn, &mx):
        pmax[0] = first_absmax(x, n)
        return 0x7FC00000u
    amax = maxf(-mn, mx)
    if -mn == mx:
        pmax[0] = first_absmax(x, n)
    else:
        pmax[0] = mx if mx == amax else mn
    return f32_bits(amax)


cdef inline bint first_min_max(const float* x, int n, float* pmin, float* pmax) noexcept nogil:
    # ggml's legacy min/max scan (quantize_row_q4_1_ref): min = FLT_MAX, max = -FLT_MAX, then
    # `if (v < min) min = v; if (v > max) max = v;`, done in 8 lanes by minmax8 (n % 8 == 0). The
    # smallest lane minimum is the true minimum; equal floats are identical except +0.0 / -0.0,
    # and C keeps the FIRST element equal to the final minimum, so a zero result takes the sign of
    # the first zero in x. NaN never enters. Returns whether x holds a NaN.
    cdef float mn, mx
    cdef bint nan = minmax8(x, n, &mn, &mx)
    cdef int j
    if mn == 0:
        for j in range(n):
            if x[j] == 0:
                mn = x[j]
                break
    if mx == 0:
        for j in range(n):
            if x[j] == 0:
                mx = x[j]
                break
    pmin[0] = mn
    pmax[0] = mx
    return nan


cdef inline uint32_t pack_qh(const uint8_t* q) noexcept nogil:
    # Bit j of qh = bit 4 of level q[j], j < 32 (quantize_row_q5_0_ref's qh). Eight 0/1 bytes read
    # as a little-endian uint64 times 0x0102040810204080 put byte k's bit at bit 56 + k, with no
    # carries (every partial product lands on its own bit), so >> 56 is the packed byte.
    cdef uint8_t b[32]
    cdef uint64_t u
    cdef uint32_t qh = 0
    cdef int j
    for j in range(32):
        b[j] = (q[j] >> 4) & 1
    for j in range(4):
        memcpy(&u, b + 8 * j, 8)
        qh |= <uint32_t>((u * <uint64_t>0x0102040810204080) >> 56) << (8 * j)
    return qh


cdef inline float row_sigma2(const float* x, Py_ssize_t n) noexcept nogil:
    # quantize_row_q4_1_impl & co.: sum_x2 += x[j]*x[j] in index order, then / n_per_row.
    cdef float s = 0
    cdef Py_ssize_t j
    for j in range(n):
        s = s + x[j] * x[j]
    return s / <float>n


cdef inline float make_qx_quants(int n, int nmax, const float* x, int8_t* L,
                                 const float* qw) noexcept nogil:
    # ggml's make_qx_quants(n, nmax, x, L, rmse_type = 1, qw), n <= QX_MAXN: levels L in 0..2*nmax-1.
    # Try t holds is = t - 9 (t = 9 is the first, unshifted scale -nmax/max; t = 19 is padding).
    cdef float w[QX_MAXN]
    cdef float wx[QX_MAXN]
    cdef float isc[QX_TRIES]
    cdef float sx[QX_TRIES]
    cdef float s2[QX_TRIES]
    cdef float mx, amax, xi, wi, wxi, lf, scale, best
    cdef float flo = opaque(<float>-nmax), fhi = opaque(<float>(nmax - 1))
    cdef int32_t l, lo = -nmax, hi = nmax - 1
    cdef uint32_t bad = 0
    cdef bint finite
    cdef int i, t, win
    mx = first_absmax(x, n)
    amax = fabsf(mx)
    if amax < <float>1e-15:             # GROUP_MAX_EPS (ggml-quants.c): all zero
        memset(L, 0, n)
        return 0
    for i in range(n):
        wi = qw[i] if qw != NULL else x[i] * x[i]
        w[i] = wi
        wx[i] = wi * x[i]               # C's w*x[i]*l is (w*x[i])*l
        bad |= (f32_bits(x[i]) & 0x7FFFFFFFu) >= 0x7F800000u
    finite = bad == 0
    for t in range(QX_TRIES - 1):
        isc[t] = -(<float>nmax + <float>0.1 * <float>(t - 9)) / mx
    isc[QX_TRIES - 1] = isc[9]
    for t in range(QX_TRIES):
        sx[t] = 0
        s2[t] = 0
    if finite:
        # Every |isc*x| <= nmax + 1 here, far inside nearest_int's exact range, where its integer is
        # (v + 1.5*2^23) - 1.5*2^23 as a float (both steps exact but the rounding one): the same
        # level, without int<->float traffic; clamping in float is then exact too.
        for i in range(n):
            xi = x[i]
            wi = w[i]
            wxi = wx[i]
            for t in range(QX_TRIES):   # independent tries: this loop is the SIMD one
                lf = clampf((isc[t] * xi + <float>12582912.0) - <float>12582912.0, flo, fhi)
                sx[t] = sx[t] + wxi * lf
                s2[t] = s2[t] + (wi * lf) * lf
    else:                               # inf/NaN in x: nearest_int's bit arithmetic, as libggml
        for i in range(n):
            xi = x[i]
            wi = w[i]
            wxi = wx[i]
            for t in range(QX_TRIES):
                l = nearest_int(isc[t] * xi)
                l = lo if l < lo else l
                l = hi if l > hi else l
                lf = <float>l
                sx[t] = sx[t] + wxi * lf
                s2[t] = s2[t] + (wi * lf) * lf
    # Then decide as C does, try by try in order: first is = 0, then is = -9 .. 9 skipping 0.
    scale = sx[9] / s2[9] if s2[9] != 0 else <float>0
    best = scale * sx[9]
    win = 9
    for t in range(QX_TRIES - 1):
        if t != 9 and s2[t] > 0 and sx[t] * sx[t] > best * s2[t]:
            scale = sx[t] / s2[t]
            best = scale * sx[t]
            win = t
    for i in range(n):
        l = nearest_int(isc[win] * x[i])
        l = lo if l < lo else l
        l = hi if l > hi else l
        L[i] = <int8_t>(l + nmax)
    return scale


cdef inline float make_qkx3_quants(int n, int nmax, const float* x, const float* weights,
                                   uint8_t* L, float* the_min, uint8_t* Laux, float rmin,
                                   float rdelta, int nstep, bint use_mad) noexcept nogil:
    # ggml's make_qkx3_quants, statement for statement. x ~ scale * L - the_min, L in 0..nmax.
    cdef float mn = x[0], mx = x[0]
    cdef float sum_w = weights[0] if weights != NULL else x[0] * x[0]
    cdef float sum_x = sum_w * x[0]
    cdef float w, iscale, scale, best_mad, diff, sum_l, sum_l2, sum_xl, D, this_scale, this_min, mad
    cdef int32_t l
    cdef int i, step
    for i in range(1, n):
        if x[i] < mn:
            mn = x[i]
        if x[i] > mx:
            mx = x[i]
        w = weights[i] if weights != NULL else x[i] * x[i]
        sum_w = sum_w + w
        sum_x = sum_x + w * x[i]
    if mn > 0:
        mn = 0
    if mx <= mn:
        memset(L, 0, n)
        the_min[0] = -mn
        return 0
    iscale = <float>nmax / (mx - mn)
    scale = 1 / iscale
    best_mad = 0
    for i in range(n):
        l = nearest_int(iscale * (x[i] - mn))
        l = 0 if l < 0 else l
        l = nmax if l > nmax else l
        L[i] = <uint8_t>l
        diff = scale * <float>L[i] + mn - x[i]
        diff = fabsf(diff) if use_mad else diff * diff
        w = weights[i] if weights != NULL else x[i] * x[i]
        best_mad = best_mad + w * diff
    if nstep < 1:
        the_min[0] = -mn
        return scale
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * <float>step + <float>nmax) / (mx - mn)
        sum_l = 0
        sum_l2 = 0
        sum_xl = 0
        for i in range(n):
            l = nearest_int(iscale * (x[i] - mn))
            l = 0 if l < 0 else l
            l = nmax if l > nmax else l
            Laux[i] = <uint8_t>l
            w = weights[i] if weights != NULL else x[i] * x[i]
            sum_l = sum_l + w * <float>l
            sum_l2 = sum_l2 + w * <float>l * <float>l
            sum_xl = sum_xl + w * <float>l * x[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = 0
                this_scale = sum_xl / sum_l2
            mad = 0
            for i in range(n):
                diff = this_scale * <float>Laux[i] + this_min - x[i]
                diff = fabsf(diff) if use_mad else diff * diff
                w = weights[i] if weights != NULL else x[i] * x[i]
                mad = mad + w * diff
            if mad < best_mad:
                memcpy(L, Laux, n)
                best_mad = mad
                scale = this_scale
                mn = this_min
    the_min[0] = -mn
    return scale

# What the K-quant kernels share: ggml's helpers from ggml/src/ggml-quants.c, in "lanes".
# The spec is qconvert/quants/_kquants.py; these compute the same floats, in C.
#
# Lanes: ggml quantizes each sub-block (16 or 32 weights) on its own, with sums accumulated element
# by element. Here the NL sub-blocks of a super-block run side by side: arrays are transposed to
# [element i][lane j], and every loop is `for i: for j in lanes: <C's statement for sub-block j>`.
# Each lane performs exactly ggml's float32 operations in ggml's order, so the bytes are identical;
# the inner loop over lanes has no dependency between iterations, so the compiler vectorizes it
# (SSE2 is 4 lanes) and the latency of the sequential sums overlaps across sub-blocks.
# C's early exits become per-lane selects: a lane that ggml would leave keeps its values.
#
# nearest_int (ggml's): float32 v + 1.5*2^23, then (bits & 0x7FFFFF) - 0x400000: round half to even
# for |v| <= 2^22, and defined (if meaningless) bits beyond. Levels are clamped as ints, as C does,
# then kept as floats (exact: they are small integers) for the sums that use them.
# No fused multiply-add (setup.py: -ffp-contract=off).
#
#   make_qkx2_lanes    make_qkx2_quants; also make_qkx3_quants, which computes the same thing
#                      (the imatrix paths pass their weights and -0.9, 0.05, 36)
#   make_q3_lanes      make_q3_quants(do_rmse=true), sweeping only the sub-blocks still changing
#   make_qp_quants     scalar: one call per super-block (the imatrix paths' scales and mins)
#   requantize_lanes   the last pass every K-quant ends with: nearest_int((x + dm)/d), clamped
#   k4_levels          the body of Q4_K and Q5_K, _ref and _impl, two super-blocks at a time;
#                      k4_blocks its call for one or two blocks, writing their headers
#
# cimported by kernels/q{2,3,4,5}_k.pyx (and kernels/legacy_common.pxd: Q4_1/Q5_1's imatrix path
# is make_qkx2_lanes too), never compiled on its own.

from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset
from libc.math cimport sqrtf, fabsf

from ggml_fp16 cimport fp32_to_fp16

cdef enum:
    QK_K = 256
    NL = 16              # lanes: the 16 sub-blocks of one Q2_K/Q3_K super-block, or of two Q4_K/Q5_K ones
    MAXN = 32            # weights per sub-block, at most


cdef inline int32_t nearest_int(float f) noexcept nogil:
    cdef float v = f + <float>12582912.0
    cdef int32_t i
    memcpy(&i, &v, 4)
    return (i & 0x007FFFFF) - 0x00400000


cdef inline float level(float v, int32_t lo, int32_t hi) noexcept nogil:
    """MAX(lo, MIN(hi, nearest_int(v))) as a float (exact: see the header). Clamped as ints: a
    float clamp against a negative bound defeats GCC's if-conversion, and nothing vectorizes."""
    cdef int32_t r = nearest_int(v)
    r = r if r < hi else hi
    r = r if r > lo else lo
    return <float>r


cdef inline void requantize_lanes(const float* xt, int n, const float* d, const float* dm,
                                  int lo, int hi, const float* Lt, uint8_t* L) noexcept nogil:
    """The last pass of every K-quant, on [n][NL] lanes: for sub-block j,
    `if (!d) continue; l = MAX(lo, MIN(hi, nearest_int((x + dm)/d)))` (the symmetric Q3_K passes
    dm = 0: x + 0 only turns -0.0 into +0.0, and nearest_int(+-0/d) is 0 either way), where C's
    `continue` keeps the levels Lt found before. L gets l - lo as bytes, in weight order L[j*n + i].
    """
    cdef float Lq[MAXN * NL]
    cdef int i, j, k
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            Lq[k] = level((xt[k] + dm[j]) / d[j], lo, hi) - <float>lo
    for j in range(NL):
        if d[j] == 0:
            for i in range(n):
                Lq[i * NL + j] = Lt[i * NL + j]
    for j in range(NL):
        for i in range(n):
            L[j * n + i] = <uint8_t><int32_t>Lq[i * NL + j]


cdef inline float fp16_to_fp32(uint16_t h) noexcept nogil:
    """GGML_FP16_TO_FP32: exact."""
    cdef uint32_t sign = (<uint32_t>h & 0x8000u) << 16
    cdef uint32_t e = (h >> 10) & 0x1Fu
    cdef uint32_t m = h & 0x3FFu
    cdef uint32_t bits
    cdef float f
    if e == 0x1F:
        bits = sign | 0x7F800000u | (m << 13)
    elif e != 0:
        bits = sign | ((e + 112u) << 23) | (m << 13)
    else:
        f = <float>m * <float>5.9604644775390625e-08   # m * 2^-24, exact
        return -f if sign else f
    memcpy(&f, &bits, 4)
    return f


cdef inline float fp16_round(float f, uint8_t* dst) noexcept nogil:
    """Store GGML_FP32_TO_FP16(f) at dst (little-endian) and return GGML_FP16_TO_FP32 of it."""
    cdef uint16_t h = fp32_to_fp16(f)
    memcpy(dst, &h, 2)
    return fp16_to_fp32(h)


cdef inline void transpose_in(const float* x, float* xt, int n) noexcept nogil:
    """x[j*n + i] (sub-block j, element i) -> xt[i*NL + j]."""
    cdef int i, j
    for j in range(NL):
        for i in range(n):
            xt[i * NL + j] = x[j * n + i]


cdef inline void make_qkx2_lanes(const float* xt, const float* wt, int n, int nmax,
                                 float rmin, float rdelta, int nstep, bint use_mad,
                                 float* scale_out, float* the_min, float* Lt) noexcept nogil:
    """ggml's make_qkx2_quants for NL sub-blocks at once: xt, wt, Lt are [n][NL].

    Out: scale_out[j], the_min[j] (= -min), levels Lt (as floats 0..nmax). The levels of the
    winning trial are recomputed at the end from its (iscale, min): same operations, same values.
    """
    cdef float mn[NL]
    cdef float mx[NL]
    cdef float sw[NL]
    cdef float sx[NL]
    cdef float best[NL]
    cdef float scale[NL]
    cdef float isc[NL]
    cdef float bisc[NL]
    cdef float bmin[NL]
    cdef float fmin[NL]
    cdef float sl[NL]
    cdef float sl2[NL]
    cdef float sxl[NL]
    cdef float ts[NL]
    cdef float tm[NL]
    cdef float cur[NL]
    cdef float D[NL]
    cdef int flat[NL]
    cdef float laux[MAXN * NL]
    cdef float fnmax = <float>nmax
    cdef float v, w, f, wl, diff, top
    cdef int i, j, k, step, take
    for j in range(NL):
        mn[j] = xt[j]
        mx[j] = xt[j]
        sw[j] = wt[j]
        sx[j] = wt[j] * xt[j]
    for i in range(1, n):
        for j in range(NL):
            k = i * NL + j
            v = xt[k]
            mn[j] = v if v < mn[j] else mn[j]
            mx[j] = v if v > mx[j] else mx[j]
            w = wt[k]
            sw[j] += w
            sx[j] += w * v
    for j in range(NL):
        mn[j] = <float>0 if mn[j] > 0 else mn[j]
        flat[j] = mx[j] == mn[j]
        fmin[j] = mn[j]
        isc[j] = fnmax / (mx[j] - mn[j])
        scale[j] = (<float>1) / isc[j]
        bisc[j] = isc[j]
        bmin[j] = mn[j]
        best[j] = 0
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            v = xt[k]
            f = level(isc[j] * (v - mn[j]), 0, nmax)
            diff = scale[j] * f + mn[j] - v
            diff = fabsf(diff) if use_mad else diff * diff
            best[j] += wt[k] * diff
    for step in range(nstep + 1):
        top = rmin + rdelta * <float>step + fnmax
        for j in range(NL):
            isc[j] = top / (mx[j] - mn[j])
            sl[j] = 0
            sl2[j] = 0
            sxl[j] = 0
            cur[j] = 0
        for i in range(n):
            for j in range(NL):
                k = i * NL + j
                v = xt[k]
                f = level(isc[j] * (v - mn[j]), 0, nmax)
                laux[k] = f
                wl = wt[k] * f
                sl[j] += wl
                sl2[j] += wl * f
                sxl[j] += wl * v
        for j in range(NL):
            D[j] = sw[j] * sl2[j] - sl[j] * sl[j]
            ts[j] = (sw[j] * sxl[j] - sx[j] * sl[j]) / D[j]
            tm[j] = (sl2[j] * sx[j] - sl[j] * sxl[j]) / D[j]
            if tm[j] > 0:
                tm[j] = 0
                ts[j] = sxl[j] / sl2[j]
        for i in range(n):
            for j in range(NL):
                k = i * NL + j
                diff = ts[j] * laux[k] + tm[j] - xt[k]
                diff = fabsf(diff) if use_mad else diff * diff
                cur[j] += wt[k] * diff
        for j in range(NL):
            take = (D[j] > 0) & (cur[j] < best[j])
            best[j] = cur[j] if take else best[j]
            scale[j] = ts[j] if take else scale[j]
            bisc[j] = isc[j] if take else bisc[j]
            bmin[j] = mn[j] if take else bmin[j]
            mn[j] = tm[j] if take else mn[j]
    for j in range(NL):
        scale_out[j] = 0 if flat[j] else scale[j]
        the_min[j] = -fmin[j] if flat[j] else -mn[j]
        if flat[j]:
            bisc[j] = 0     # level(0 * (x - min)) == 0: C's L = 0
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            Lt[k] = level(bisc[j] * (xt[k] - bmin[j]), 0, nmax)


cdef inline int q3_sweep(const float* xt, const float* wq, const float* wx, float* Lt, float* sumlx,
                         float* suml2, int* changed, int n, int ngroups, int lo, int hi) noexcept nogil:
    """One sweep of make_q3_quants' refinement over lanes 0 .. 4*ngroups-1 of [n][NL] arrays:
    for each i in order, move L[i] to nearest_int(x*sl2/slx) when that raises sumlx^2/suml2.
    changed[j] says whether lane j moved anything; returns whether any lane did."""
    cdef float v, w, wv, li, slx, sl2, nl, slx2, sl22
    cdef int i, g, j, k, take, any_change = 0
    for j in range(4 * ngroups):
        changed[j] = 0
    for i in range(n):
        for g in range(ngroups):
            for j in range(4 * g, 4 * g + 4):
                k = i * NL + j
                v = xt[k]
                w = wq[k]
                wv = wx[k]                 # w*x[i], as C's `w*x[i]*L[i]` groups it
                li = Lt[k]
                slx = sumlx[j] - wv * li
                sl2 = suml2[j] - w * li * li
                nl = level(v * sl2 / slx, lo, hi)
                slx2 = slx + wv * nl
                sl22 = sl2 + w * nl * nl
                take = ((slx > 0) & (nl != li) & (sl22 > 0)
                        & (slx2 * slx2 * suml2[j] > sumlx[j] * sumlx[j] * sl22))
                Lt[k] = nl if take else li
                sumlx[j] = slx2 if take else sumlx[j]
                suml2[j] = sl22 if take else suml2[j]
                changed[j] |= take
    for j in range(4 * ngroups):
        any_change |= changed[j]
    return any_change


cdef inline void make_q3_lanes(const float* xt, int n, int nmax,
                               float* scale_out, float* Lt) noexcept nogil:
    """ggml's make_q3_quants(n, nmax, x, L, do_rmse=true) for NL sub-blocks: xt, Lt are [n][NL].

    Lt gets the levels 0..2*nmax-1 (0 for an all-zero sub-block, as C). The first sweep runs on all
    lanes; after it, only the sub-blocks that changed something still need sweeps (C `break`s the
    others), and they are packed into the first lanes of a scratch copy so that later sweeps cost
    one vector per 4 of them (most sub-blocks converge after one sweep).
    """
    cdef float amax[NL]
    cdef float mx[NL]
    cdef float isc[NL]
    cdef float sumlx[NL]
    cdef float suml2[NL]
    cdef int changed[NL]
    cdef int lane[NL]
    cdef int lane_changed[NL]
    cdef float wq[MAXN * NL]
    cdef float wx[MAXN * NL]
    cdef float cx[MAXN * NL]        # the packed copy: lane a holds sub-block lane[a]
    cdef float cw[MAXN * NL]
    cdef float cwx[MAXN * NL]
    cdef float cL[MAXN * NL]
    cdef float cs1[NL]
    cdef float cs2[NL]
    cdef int lo = -nmax, hi = nmax - 1
    cdef float v, a, f, w
    cdef int i, j, k, itry, m, mp, src, a_
    for j in range(NL):
        amax[j] = 0
        mx[j] = 0
        sumlx[j] = 0
        suml2[j] = 0
    for i in range(n):
        for j in range(NL):
            v = xt[i * NL + j]
            a = fabsf(v)
            mx[j] = v if a > amax[j] else mx[j]
            amax[j] = a if a > amax[j] else amax[j]
    for j in range(NL):
        isc[j] = <float>(-nmax) / mx[j]
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            v = xt[k]
            f = level(isc[j] * v, lo, hi)
            Lt[k] = f
            w = v * v
            wq[k] = w
            wx[k] = w * v
            sumlx[j] += w * v * f
            suml2[j] += w * f * f
    if q3_sweep(xt, wq, wx, Lt, sumlx, suml2, changed, n, NL // 4, lo, hi):
        for itry in range(1, 5):
            m = 0
            for j in range(NL):
                if changed[j] and amax[j] >= <float>1e-15:   # all-zero lanes: discarded anyway
                    lane[m] = j
                    m += 1
            if m == 0:
                break
            mp = (m + 3) & ~3
            for a_ in range(mp):
                src = lane[a_ if a_ < m else m - 1]       # pad with copies of the last lane
                cs1[a_] = sumlx[src]
                cs2[a_] = suml2[src]
                for i in range(n):
                    cx[i * NL + a_] = xt[i * NL + src]
                    cw[i * NL + a_] = wq[i * NL + src]
                    cwx[i * NL + a_] = wx[i * NL + src]
                    cL[i * NL + a_] = Lt[i * NL + src]
            q3_sweep(cx, cw, cwx, cL, cs1, cs2, changed, n, mp // 4, lo, hi)
            for a_ in range(m):
                src = lane[a_]
                sumlx[src] = cs1[a_]
                suml2[src] = cs2[a_]
                for i in range(n):
                    Lt[i * NL + src] = cL[i * NL + a_]
            for j in range(NL):                           # changed[] now indexes packed lanes
                lane_changed[j] = 0
            for a_ in range(m):
                lane_changed[lane[a_]] = changed[a_]
            for j in range(NL):
                changed[j] = lane_changed[j]
    for j in range(NL):
        scale_out[j] = sumlx[j] / suml2[j] if suml2[j] > 0 else <float>0
        if amax[j] < <float>1e-15:      # GROUP_MAX_EPS: C returns L = 0, scale 0
            scale_out[j] = 0
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            Lt[k] = 0 if amax[j] < <float>1e-15 else Lt[k] + <float>nmax


cdef inline void pack_2bit(const uint8_t* L, uint8_t* qs) noexcept nogil:
    """Q2_K/Q3_K qs: qs[32h + l] = L[128h+l] | L[128h+l+32] << 2 | L[128h+l+64] << 4 | L[128h+l+96] << 6."""
    cdef int h, l
    for h in range(2):
        for l in range(32):
            qs[32 * h + l] = <uint8_t>(L[128 * h + l] | (L[128 * h + l + 32] << 2)
                                       | (L[128 * h + l + 64] << 4) | (L[128 * h + l + 96] << 6))


cdef inline float make_qp_quants(int n, int nmax, const float* x, uint8_t* L,
                                 const float* qw) noexcept nogil:
    """ggml's make_qp_quants (the imatrix paths' quantizer of sub-block scales and mins), scalar:
    x ~ scale * L, L in 0..nmax (a uint8_t array, as C: a negative level wraps). See
    _kquants.make_qp_quants."""
    cdef float mx = 0, iscale, iscale_is, scale, scale_is, best_mse = 0, mse, diff, w
    cdef float sumlx = 0, suml2 = 0, slx, sl2
    cdef int32_t l, new_l
    cdef int i, step, itry, n_changed
    for i in range(n):
        mx = mx if mx > x[i] else x[i]           # MAX(max, x[i])
    if mx < <float>1e-15:                        # GROUP_MAX_EPS
        memset(L, 0, n)
        return 0
    iscale = <float>nmax / mx
    for i in range(n):
        L[i] = <uint8_t>nearest_int(iscale * x[i])
    scale = (<float>1) / iscale
    for i in range(n):
        diff = x[i] - scale * <float>L[i]
        best_mse += qw[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (<float>0.1 * <float>step + <float>nmax) / mx
        scale_is = (<float>1) / iscale_is
        mse = 0
        for i in range(n):
            l = nearest_int(iscale_is * x[i])
            l = l if l < nmax else nmax
            diff = x[i] - scale_is * <float>l
            mse += qw[i] * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = l if l < nmax else nmax
        L[i] = <uint8_t>l
        w = qw[i]
        sumlx += w * x[i] * <float>l
        suml2 += w * <float>l * <float>l
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = qw[i]
            slx = sumlx - w * x[i] * <float>L[i]
            sl2 = suml2 - w * <float>L[i] * <float>L[i]
            if slx > 0 and sl2 > 0:
                new_l = nearest_int(x[i] * sl2 / slx)
                new_l = new_l if new_l < nmax else nmax
                if new_l != L[i]:
                    slx += w * x[i] * <float>new_l
                    sl2 += w * <float>new_l * <float>new_l
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = <uint8_t>new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if not n_changed:
            break
    return sumlx / suml2 if suml2 > 0 else <float>0


cdef inline float superblock_sum_x2(const float* x) noexcept nogil:
    """`float sum_x2 = 0; for (l < QK_K) sum_x2 += x[l]*x[l];`: the imatrix paths' sigma2, in order."""
    cdef float s = 0
    cdef int i
    for i in range(QK_K):
        s += x[i] * x[i]
    return s


cdef inline void imatrix_lanes(const float* xt, const float** qw, int n, const float* sigma2,
                               float* wt, float* sw) noexcept nogil:
    """The imatrix paths' weights on [n][NL] lanes: wt = qw * sqrtf(sigma2 + x^2), where lane j
    reads qw[j][i] (its sub-block's imatrix entries) and sigma2[j]; sw[j] their sum, in order."""
    cdef float v
    cdef int i, j, k
    for j in range(NL):
        sw[j] = 0
    for i in range(n):
        for j in range(NL):
            k = i * NL + j
            v = xt[k]
            wt[k] = qw[j][i] * sqrtf(sigma2[j] + v * v)
            sw[j] += wt[k]


cdef inline void k4_levels(const float* x, int nmax, float rmin, float rdelta, int nstep,
                           const float* qw0, const float* qw1, bint clamp_impl,
                           uint8_t* head, uint8_t* L) noexcept nogil:
    """The body Q4_K and Q5_K share, for TWO consecutive super-blocks x[0:512] (one per 8 lanes; see
    _kquants.k4_levels): head[16*b:16*b+16] gets block b's d, dmin and 12 scale bytes,
    L[256*b:256*b+256] its levels in weight order.

    qw0 == NULL: quantize_row_q4_K_ref / _q5_K_ref. Else quantize_row_q4_K_impl / _q5_K_impl with
    the blocks' imatrix entries qw0[0:256] and qw1[0:256] (clamp_impl: Q5_K's MIN(63, ...))."""
    cdef float xt[2 * QK_K]
    cdef float wt[2 * QK_K]
    cdef float Lt[2 * QK_K]
    cdef float sumx2[NL]
    cdef float sd[NL]
    cdef float dm[NL]
    cdef float av[NL]
    cdef float sw[NL]
    cdef float sig[NL]
    cdef const float* qwl[NL]
    cdef float scales[NL]
    cdef float mins[NL]
    cdef uint8_t ls[8]
    cdef uint8_t lm[8]
    cdef float max_scale, max_min, inv_scale, inv_min, d, dmin, v, d_block, m_block, sigma2
    cdef uint8_t* sc
    cdef int b, i, j, k
    transpose_in(x, xt, 32)
    if qw0 == NULL:
        for j in range(NL):
            sumx2[j] = 0
        for i in range(32):
            for j in range(NL):
                v = xt[i * NL + j]
                sumx2[j] += v * v
        for j in range(NL):
            av[j] = sqrtf(sumx2[j] / <float>32)
        for i in range(32):
            for j in range(NL):
                k = i * NL + j
                wt[k] = av[j] + fabsf(xt[k])
        make_qkx2_lanes(xt, wt, 32, nmax, rmin, rdelta, nstep, False, scales, mins, Lt)
    else:
        for b in range(2):
            sigma2 = <float>2 * superblock_sum_x2(x + QK_K * b) / <float>QK_K
            for j in range(8):
                sig[8 * b + j] = sigma2
                qwl[8 * b + j] = (qw0 if b == 0 else qw1) + 32 * j
        imatrix_lanes(xt, qwl, 32, sig, wt, sw)
        # make_qkx3_quants(32, nmax, ..., -0.9f, 0.05f, 36, false): make_qkx2_quants' computation
        make_qkx2_lanes(xt, wt, 32, nmax, <float>-0.9, <float>0.05, 36, False, scales, mins, Lt)
    for b in range(2):
        if qw0 == NULL:
            max_scale = 0
            max_min = 0
            for j in range(8 * b, 8 * b + 8):
                if scales[j] > max_scale:
                    max_scale = scales[j]
                if mins[j] > max_min:
                    max_min = mins[j]
            inv_scale = <float>63 / max_scale if max_scale > 0 else <float>0
            inv_min = <float>63 / max_min if max_min > 0 else <float>0
            for j in range(8):
                ls[j] = <uint8_t>nearest_int(inv_scale * scales[8 * b + j])   # uint8 wrap, then MIN
                lm[j] = <uint8_t>nearest_int(inv_min * mins[8 * b + j])
                ls[j] = ls[j] if ls[j] < 63 else 63
                lm[j] = lm[j] if lm[j] < 63 else 63
            d_block = max_scale / <float>63
            m_block = max_min / <float>63
        else:
            d_block = make_qp_quants(8, 63, scales + 8 * b, ls, sw + 8 * b)
            m_block = make_qp_quants(8, 63, mins + 8 * b, lm, sw + 8 * b)
            if clamp_impl:
                for j in range(8):
                    ls[j] = ls[j] if ls[j] < 63 else 63
                    lm[j] = lm[j] if lm[j] < 63 else 63
        sc = head + 16 * b + 4
        for j in range(4):
            sc[j] = ls[j] | ((ls[j + 4] >> 4) << 6)
            sc[j + 4] = lm[j] | ((lm[j + 4] >> 4) << 6)
            sc[j + 8] = (ls[j + 4] & 0x0F) | ((lm[j + 4] & 0x0F) << 4)
        d = fp16_round(d_block, head + 16 * b)
        dmin = fp16_round(m_block, head + 16 * b + 2)
        for j in range(8):                        # get_scale_min_k4: what a decoder reads back
            if j < 4:
                sd[8 * b + j] = d * <float>(sc[j] & 63)
                dm[8 * b + j] = dmin * <float>(sc[j + 4] & 63)
            else:
                sd[8 * b + j] = d * <float>((sc[j + 4] & 0x0F) | ((sc[j - 4] >> 6) << 4))
                dm[8 * b + j] = dmin * <float>((sc[j + 4] >> 4) | ((sc[j] >> 6) << 4))
    requantize_lanes(xt, 32, sd, dm, 0, nmax, Lt, L)


cdef inline void k4_blocks(const float* x, int m, const float* qw, int nmax, float rmin, float rdelta,
                           int nstep, bint clamp_impl, uint8_t* y, int nbytes, uint8_t* L) noexcept nogil:
    """k4_levels for m (1 or 2) consecutive super-blocks at x, weighted by qw[0:256 m] (or NULL):
    block b's 16 header bytes (d, dmin, scales) go to y + nbytes*b, its levels to L[256*b:]. A lone
    block is paired with a copy of itself (the 16 lanes want two)."""
    cdef float pair[2 * QK_K]
    cdef uint8_t head[32]
    cdef const float* qw1 = qw + QK_K if qw != NULL else NULL
    cdef int b
    if m == 1:
        memcpy(pair, x, QK_K * sizeof(float))
        memcpy(pair + QK_K, x, QK_K * sizeof(float))
        x = pair
        qw1 = qw
    k4_levels(x, nmax, rmin, rdelta, nstep, qw, qw1, clamp_impl, head, L)
    for b in range(m):
        memcpy(y + nbytes * b, head + 16 * b, 16)

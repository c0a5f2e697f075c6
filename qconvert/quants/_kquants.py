"""What the K-quant references share: ggml's helpers from ggml/src/ggml-quants.c, vectorized over blocks.

Every function takes a batch of independent (sub-)blocks as rows, x: f32[N, n], and runs ggml's
per-block algorithm on all rows at once. Byte-exactness with ggml rests on three rules:

  * float32 everywhere C uses `float` (NumPy keeps float32 as long as every operand is float32;
    an int array is turned into float32 first, as C converts `w*l` with l an int);
  * sums are accumulated element by element in C's order (`_acc`), never by np.sum, whose pairwise
    summation rounds differently;
  * operations are grouped as C parses them: `w*l*x` is `(w*l)*x`, `scale*L + min - x` is
    `((scale*L) + min) - x`. No fused multiply-add, as the kernels are compiled.

C's early exits (`return` for a flat block, `continue` for a zero scale, `break` when nothing changed)
become masks: every row is computed, and rows that C would have left early keep their earlier values.
"""

from __future__ import annotations

import numpy as np

from ._common import GROUP_MAX_EPS, first_absmax, nearest_int  # ggml's helpers, shared with other types

F32 = np.float32
QK_K = 256


def fp16_round(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GGML_FP32_TO_FP16 then GGML_FP16_TO_FP32: (little-endian fp16 bytes u8[..., 2], float32 value).

    Scales are finite here (their NaN never wins a strict `>`), so numpy's cast is ggml's rounding.
    """
    with np.errstate(over="ignore"):
        h = np.asarray(v, F32).astype(np.float16)
    return h.view(np.uint8).reshape(*h.shape, 2), h.astype(F32)


def _acc(terms: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """`float s = start (or 0); for i: s += terms[i]` for every row: float32, left to right."""
    s = np.zeros(terms.shape[0], F32) if start is None else np.array(start, F32)
    for column in np.ascontiguousarray(terms.T):
        s += column
    return s


def running_max(v: np.ndarray) -> np.ndarray:
    """`float m = 0; for j: if (v[j] > m) m = v[j];` per row: +0.0 unless some v is > 0; NaN never wins."""
    m = np.zeros(v.shape[0], F32)
    for column in v.T:
        m = np.where(column > m, column, m)
    return m


def make_qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float,
                     nstep: int, use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx2_quants on every row: (scale f32[N], the_min f32[N] (>= 0), L u8[N, n]).

    Fits x ~ scale * L - the_min with L in 0..nmax, minimizing the weighted squared (or, with
    use_mad, absolute) error. First L from the block's range, then nstep + 1 trial scales
    (nmax + rmin + rdelta*is) / (max - min), each refit by weighted least squares, the best kept.
    As in C, a trial that wins replaces `min`, and later trials measure from that new min.
    """
    n = x.shape[1]
    mn = x[:, 0].copy()
    mx = x[:, 0].copy()
    for i in range(1, n):
        c = x[:, i]
        mn = np.where(c < mn, c, mn)
        mx = np.where(c > mx, c, mx)
    sum_w = _acc(weights[:, 1:], start=weights[:, 0])
    sum_x = _acc(weights[:, 1:] * x[:, 1:], start=weights[:, 0] * x[:, 0])
    mn = np.where(mn > 0, F32(0), mn)
    flat = mx == mn  # C returns here: L = 0, scale 0, the_min = -min
    flat_min = mn

    def error(scale: np.ndarray, low: np.ndarray, lf: np.ndarray) -> np.ndarray:
        diff = scale[:, None] * lf + low[:, None] - x
        return _acc(weights * (np.abs(diff) if use_mad else diff * diff))

    def levels(iscale: np.ndarray, low: np.ndarray) -> np.ndarray:
        return np.clip(nearest_int(iscale[:, None] * (x - low[:, None])), 0, nmax)

    with np.errstate(all="ignore"):
        iscale = F32(nmax) / (mx - mn)
        scale = F32(1) / iscale
        L = levels(iscale, mn)
        best = error(scale, mn, L.astype(F32))
        for step in range(nstep + 1):
            top = F32(F32(rmin) + F32(rdelta) * F32(step)) + F32(nmax)
            iscale = top / (mx - mn)
            laux = levels(iscale, mn)
            lf = laux.astype(F32)
            wl = weights * lf
            sum_l, sum_l2, sum_xl = _acc(wl), _acc(wl * lf), _acc(wl * x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            clamp = this_min > 0  # the fit wants a positive offset: refit through the origin
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
            this_min = np.where(clamp, F32(0), this_min)
            cur = error(this_scale, this_min, lf)
            take = (D > 0) & (cur < best)
            L = np.where(take[:, None], laux, L)
            best = np.where(take, cur, best)
            scale = np.where(take, this_scale, scale)
            mn = np.where(take, this_min, mn)
    L = np.where(flat[:, None], 0, L).astype(np.uint8)
    return np.where(flat, F32(0), scale), -np.where(flat, flat_min, mn), L


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_q3_quants(n, nmax, x, L, do_rmse=true) on every row: (scale f32[N], L u8[N, n]).

    Symmetric: x ~ scale * (L - nmax), L in 0..2*nmax-1. Starts from iscale = -nmax / max (max: the
    first value of largest |x|), then up to 5 sweeps that move one L at a time when that raises
    sumlx^2 / suml2 (weights x^2). A sweep without change ends C's loop; for a row that has
    converged another sweep changes nothing, so all rows simply run until none changes.
    A row with max|x| < 1e-15 gets L = 0 (not nmax) and scale 0, as in C.
    """
    n = x.shape[1]
    mx = first_absmax(x)
    zero = np.abs(mx) < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / mx
        L = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = L.astype(F32)
        w = x * x
        sumlx = _acc(w * x * lf)
        suml2 = _acc(w * lf * lf)
        for _ in range(5):
            changed = False
            for i in range(n):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new_l = np.clip(nearest_int(xi * sl2 / slx), -nmax, nmax - 1)
                nf = new_l.astype(F32)
                slx_new = slx + wi * xi * nf
                sl2_new = sl2 + wi * nf * nf
                take = ((slx > 0) & (new_l != L[:, i]) & (sl2_new > 0)
                        & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
                L[:, i] = np.where(take, new_l, L[:, i])
                sumlx = np.where(take, slx_new, sumlx)
                suml2 = np.where(take, sl2_new, suml2)
                changed = changed or bool(take.any())
            if not changed:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    L = np.where(zero[:, None], 0, L + nmax).astype(np.uint8)
    return np.where(zero, F32(0), scale), L


def requantize(x: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int,
               keep: np.ndarray) -> np.ndarray:
    """The last pass of every K-quant: `if (!d) continue; l = nearest_int((x + dm)/d)` clamped.

    x: f32[N, n], d and dm: f32[N] (the fp16-rounded super-block scale times the 4- or 6-bit
    sub-block scale; dm None for the symmetric types, which compute x/d), keep: the L to leave
    where d == 0. Returns int32 levels in lo..hi.
    """
    with np.errstate(all="ignore"):
        v = (x if dm is None else x + dm[:, None]) / d[:, None]
        L = np.clip(nearest_int(v), lo, hi)
    return np.where((d != 0)[:, None], L, keep.astype(np.int32))


def pack_2bit(L: np.ndarray) -> np.ndarray:
    """u8[n, 256] levels 0..3 -> qs u8[n, 64] as Q2_K/Q3_K store them: for each half of 128,
    qs[32h + l] = L[128h + l] | L[128h + l + 32] << 2 | L[128h + l + 64] << 4 | L[128h + l + 96] << 6."""
    q = L.astype(np.uint8).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def unpack_2bit(qs: np.ndarray) -> np.ndarray:
    """qs u8[n, 64] -> u8[n, 256], the inverse of pack_2bit."""
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return ((qs.reshape(-1, 2, 1, 32) >> shifts) & np.uint8(3)).reshape(-1, 256)


def pack_scale_min_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins -> the 12 `scales` bytes of Q4_K/Q5_K.

    The layout get_scale_min_k4 reads (bit 7 first; A-H the scales 0-7, a-h the mins)::

        byte 0-3   EEAAAAAA FFBBBBBB GGCCCCCC HHDDDDDD   scales 0-3, top 2 bits of scales 4-7
        byte 4-7   eeaaaaaa ffbbbbbb ggcccccc hhdddddd   mins 0-3, top 2 bits of mins 4-7
        byte 8-11  eeeeEEEE ffffFFFF ggggGGGG hhhhHHHH   low 4 bits of mins and scales 4-7
    """
    ls = ls.astype(np.uint8)
    lm = lm.astype(np.uint8)
    out = np.empty((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0x0F) | ((lm[:, 4:] & 0x0F) << 4)
    return out


def unpack_scale_min_k4(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 12 `scales` bytes -> (scales u8[n, 8], mins u8[n, 8]): ggml's get_scale_min_k4 for j = 0..7."""
    s = scales.astype(np.uint8)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def make_qp_quants(x: np.ndarray, nmax: int, quant_weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qp_quants on every row (the imatrix paths' quantizer of sub-block scales and mins):
    x f32[N, n] (>= 0 but for float noise), weights f32[N, n] -> (scale f32[N], L u8[N, n]).

    x ~ scale * L, L in 0..nmax. iscale = nmax / max(x), then the best of 8 nudged iscales
    (nmax + 0.1*is) / max by weighted squared error, then up to 5 sweeps moving one L at a time to
    nearest_int(x*sl2/slx) while that raises sumlx^2 / suml2. As in C, L is a uint8_t array (a
    negative level, possible only for a negative x, wraps) while the trial levels are ints.
    """
    n = x.shape[1]
    w = quant_weights
    mx = np.zeros(x.shape[0], F32)
    for column in x.T:
        mx = np.where(mx > column, mx, column)  # MAX(max, x[i]): a NaN x wins, as in C
    zero = mx < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(nmax) / mx
        L = nearest_int(iscale[:, None] * x).astype(np.uint8)
        scale = F32(1) / iscale
        diff = x - scale[:, None] * L.astype(F32)
        best = _acc(w * diff * diff)
        for step in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / mx
            scale_is = F32(1) / iscale_is
            lf = np.minimum(nearest_int(iscale_is[:, None] * x), nmax).astype(F32)
            diff = x - scale_is[:, None] * lf
            mse = _acc(w * diff * diff)
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, iscale_is, iscale)
        lv = np.minimum(nearest_int(iscale[:, None] * x), nmax)
        L = lv.astype(np.uint8)
        lf = lv.astype(F32)
        sumlx = _acc(w * x * lf)
        suml2 = _acc(w * lf * lf)
        for _ in range(5):
            changed = False
            for i in range(n):
                wi, xi, li = w[:, i], x[:, i], L[:, i].astype(F32)
                slx = sumlx - wi * xi * li
                sl2 = suml2 - wi * li * li
                new_l = np.minimum(nearest_int(xi * sl2 / slx), nmax)
                nf = new_l.astype(F32)
                slx_new = slx + wi * xi * nf
                sl2_new = sl2 + wi * nf * nf
                take = ((slx > 0) & (sl2 > 0) & (new_l != L[:, i])
                        & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))
                L[:, i] = np.where(take, new_l.astype(np.uint8), L[:, i])
                sumlx = np.where(take, slx_new, sumlx)
                suml2 = np.where(take, sl2_new, suml2)
                changed = changed or bool(take.any())
            if not changed:
                break
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale), np.where(zero[:, None], np.uint8(0), L)


def imatrix_weights(xs: np.ndarray, qw: np.ndarray, sigma2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The imatrix paths' per-weight importance, qw * sqrtf(sigma2 + x^2), and its per-sub-block
    sum (accumulated in order): xs, qw f32[N, n] (sub-blocks), sigma2 f32[N] -> (f32[N, n], f32[N])."""
    weights = qw * np.sqrt(sigma2[:, None] + xs * xs)
    return weights, _acc(weights)


def superblock_sum_x2(x: np.ndarray) -> np.ndarray:
    """`float sum_x2 = 0; for (l < QK_K) sum_x2 += x[l]*x[l];` per super-block: f32[n, 256] -> f32[n]."""
    return _acc(x * x)


def k4_levels(x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
              quant_weights: np.ndarray | None = None,
              clamp_impl_scales: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The body Q4_K and Q5_K share: f32[n, 256] -> (d | dmin | scales, u8[n, 16]; L u8[n, 256] in
    0..nmax, in weight order).

    Without quant_weights, quantize_row_q4_K_ref / _q5_K_ref: per sub-block of 32, weights
    av_x + |x| (av_x = sqrt(mean x^2)), make_qkx2_quants(rmin, rdelta, nstep). The super-block
    scales d = max_scale/63 and dmin = max_min/63 (fp16); each sub-block's scale and min as a
    6-bit multiple of them, MIN(63, (uint8)nearest_int(63/max * v)).

    With quant_weights (f32[n, 256], the imatrix entries of each block), quantize_row_q4_K_impl /
    _q5_K_impl: sigma2 = 2*sum(x^2)/256 over the super-block, weights qw*sqrt(sigma2 + x^2),
    make_qkx3_quants(32, nmax, rmin -0.9, rdelta 0.05, nstep 36) (the very computation of
    make_qkx2_quants; only its defaults differ), then d and the 6-bit scales from make_qp_quants(8,
    63) of the scales weighted by each sub-block's weight sum, the same for dmin and the mins. Q5_K
    clamps those to 63 (clamp_impl_scales); Q4_K packs them as they are.

    Both then re-quantize every weight with the fp16-rounded d * sc and dmin * m, as a decoder reads
    them back (get_scale_min_k4): l = nearest_int((x + dmin*m) / (d*sc)), clamped to 0..nmax; a
    sub-block whose d*sc is 0 keeps its first levels.
    """
    n = x.shape[0]
    xs = x.reshape(n * 8, 32)
    head = np.empty((n, 16), np.uint8)
    if quant_weights is None:
        av_x = np.sqrt(_acc(xs * xs) / F32(32))
        weights = av_x[:, None] + np.abs(xs)
        scales, mins, L = make_qkx2_quants(xs, weights, nmax, rmin, rdelta, nstep, use_mad=False)
        scales, mins = scales.reshape(n, 8), mins.reshape(n, 8)
        max_scale, max_min = running_max(scales), running_max(mins)
        with np.errstate(all="ignore"):
            inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
            inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
            # `uint8_t ls = nearest_int(...)` wraps modulo 256 before MIN(63, ls)
            ls = np.minimum(nearest_int(inv_scale[:, None] * scales).astype(np.uint8), np.uint8(63))
            lm = np.minimum(nearest_int(inv_min[:, None] * mins).astype(np.uint8), np.uint8(63))
        head[:, 0:2], d = fp16_round(max_scale / F32(63))
        head[:, 2:4], dmin = fp16_round(max_min / F32(63))
    else:
        sigma2 = F32(2) * superblock_sum_x2(x) / F32(QK_K)
        weights, sw = imatrix_weights(xs, quant_weights.reshape(n * 8, 32), np.repeat(sigma2, 8))
        scales, mins, L = make_qkx2_quants(xs, weights, nmax, -0.9, 0.05, 36, use_mad=False)
        sw = sw.reshape(n, 8)
        d_block, ls = make_qp_quants(scales.reshape(n, 8), 63, sw)
        m_block, lm = make_qp_quants(mins.reshape(n, 8), 63, sw)
        if clamp_impl_scales:
            ls, lm = np.minimum(ls, np.uint8(63)), np.minimum(lm, np.uint8(63))
        head[:, 0:2], d = fp16_round(d_block)
        head[:, 2:4], dmin = fp16_round(m_block)
    head[:, 4:16] = pack_scale_min_k4(ls, lm)
    sc, m = unpack_scale_min_k4(head[:, 4:16])  # what a decoder reads back
    L = requantize(xs, (d[:, None] * sc.astype(F32)).ravel(), (dmin[:, None] * m.astype(F32)).ravel(),
                   0, nmax, keep=L)
    return head, L.reshape(n, 256).astype(np.uint8)


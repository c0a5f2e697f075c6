"""NumPy pieces several quant references share, each mirroring one ggml helper in float32 exactly.

    first_absmax      the `if (fabsf(v) > amax) { amax = fabsf(v); max = v; }` scan
    first_min_max     the `if (v < min) min = v; if (v > max) max = v;` scan
    trunc_low_byte    C's float -> (u)int8_t conversion as x86-64 libggml executes it
    nearest_int       ggml's nearest_int: round half to even by the 1.5 * 2^23 magic number
    make_qx_quants    ggml's make_qx_quants with rmse_type 1 (the only one ggml calls), with or
                      without importance weights
    make_qkx3_quants  ggml's make_qkx3_quants (the legacy and K-quant imatrix paths' min/scale fit)
    block_weights     an imatrix row tiled over the blocks of whole rows
    row_sigma2        the `sum_x2/n_per_row` of the legacy types' imatrix paths
    pack_q5, unpack_q5  5-bit levels <-> the low nibbles qs[16] and the fifth bits qh (uint32)
    store_fp16, load_fp16  GGML_FP32_TO_FP16 into a byte column, and back

Everything works on a batch: a leading axis of independent groups, the group along the last axis.
"""

from __future__ import annotations

import numpy as np

# ggml-quants.c: `#define GROUP_MAX_EPS 1e-15f`: a group with max |x| below it is all zero.
GROUP_MAX_EPS = np.float32(1e-15)
MAGIC = np.float32(12582912.0)  # 1.5 * 2^23: adding it leaves round(v) in the low mantissa bits


def first_absmax(x: np.ndarray) -> np.ndarray:
    """The signed x[..., j] with the largest |x| (the first of equals) along the last axis; +0.0 when
    every |x| is 0 (C starts from amax = 0 and replaces only on a strictly larger |x|).

    >>> first_absmax(np.array([[1, -3, 3], [-0.0, 0, 0]], np.float32)).tolist()
    [-3.0, 0.0]
    """
    absx = np.abs(x)
    if x.shape[-1] == 0 or x.size == 0:
        return np.zeros(x.shape[:-1], np.float32)
    first = absx.argmax(axis=-1)[..., None]  # argmax keeps the first of equal values
    mx = np.take_along_axis(x, first, axis=-1)[..., 0]
    return np.where(np.take_along_axis(absx, first, axis=-1)[..., 0] > 0, mx, np.float32(0))


def first_min_max(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) along the last axis as C's strict `<` / `>` scans find them: the first of equal
    values, which decides the sign when the extreme is a zero (-0.0 and +0.0 compare equal).

    >>> [v.tolist() for v in first_min_max(np.array([[-0.0, 0.0, 0.0], [0.0, -0.0, 1]], np.float32))]
    [[-0.0, 0.0], [-0.0, 1.0]]
    """
    if x.size == 0:
        z = np.zeros(x.shape[:-1], np.float32)
        return z, z.copy()
    lo = np.take_along_axis(x, x.argmin(axis=-1)[..., None], axis=-1)[..., 0]
    hi = np.take_along_axis(x, x.argmax(axis=-1)[..., None], axis=-1)[..., 0]
    return lo, hi


def trunc_low_byte(v: np.ndarray) -> np.ndarray:
    """(uint8_t)(int8_t)v as libggml's x86-64 code computes it: cvttps2dq truncates toward zero and
    gives INT32_MIN for NaN, inf and anything out of int32 range; the low byte of that is kept.
    (C leaves those cases undefined; this is what the shipped library does, byte for byte.)

    >>> trunc_low_byte(np.array([15.99, -0.5, np.inf, np.nan, 300.0], np.float32)).tolist()
    [15, 0, 0, 0, 44]
    """
    with np.errstate(invalid="ignore"):
        t = np.trunc(v)
        ok = np.abs(t) < np.float32(2.0 ** 31)  # False for NaN
        i = np.where(ok, t, np.float32(-(2.0 ** 31))).astype(np.int64)
    return (i & 0xFF).astype(np.uint8)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int(fval): bits(fval + 12582912.f) & 0x7FFFFF, minus 0x400000, as int32.

    The float32 addition rounds to an integer, ties to even; exact for |fval| <= 4194303 (ggml
    asserts that in debug builds only). Outside it the same bit arithmetic is reproduced, garbage
    and all, since release libggml returns it too.

    >>> nearest_int(np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999998], np.float32)).tolist()
    [0, 2, 2, 0, -2, 2]
    """
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.asarray(v, np.float32) + MAGIC
    return (s.view(np.int32) & np.int32(0x7FFFFF)) - np.int32(0x400000)


def _qx_trial(x: np.ndarray, w: np.ndarray, wx: np.ndarray, iscale: np.ndarray, nmax: int):
    """One candidate scale of make_qx_quants: clamped levels and C's sequential float32 sums."""
    with np.errstate(over="ignore", invalid="ignore"):
        lev = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        lf = lev.astype(np.float32)
        sumlx = np.zeros(len(x), np.float32)
        suml2 = np.zeros(len(x), np.float32)
        for i in range(x.shape[1]):  # in index order: float addition is not associative
            sumlx += wx[:, i] * lf[:, i]                 # w*x[i]*l  == (w*x[i])*l
            suml2 += (w[:, i] * lf[:, i]) * lf[:, i]     # w*l*l     == (w*l)*l
    return lev, sumlx, suml2


def make_qx_quants(x: np.ndarray, nmax: int, qw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ggml's make_qx_quants(n, nmax, x, L, rmse_type=1, qw) for each row of x: f32[m, n].

    Returns (scale f32[m], L int8[m, n] in 0..2*nmax-1). Weights are qw (f32[m, n]) if given, else
    x*x. The search, in float32 and in C's order of operations:

        max    = the first x with the largest |x|; amax < GROUP_MAX_EPS -> scale 0, L = 0
        iscale = -nmax / max, levels l = clamp(nearest_int(iscale * x), -nmax, nmax - 1)
        scale  = sumlx / suml2 (0 if suml2 == 0), best = scale * sumlx,
                 with sumlx = sum w*x*l and suml2 = sum w*l*l accumulated in index order
        for is in -9..9 except 0: iscale = -(nmax + 0.1f*is) / max, same sums; it wins when
                 suml2 > 0 and sumlx*sumlx > best*suml2 (strictly: an equal later try loses)
    """
    m, n = x.shape
    mx = first_absmax(x)
    w = x * x if qw is None else np.asarray(qw, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        wx = w * x
    fnmax = np.float32(nmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        L, sumlx, suml2 = _qx_trial(x, w, wx, -fnmax / mx, nmax)
        scale = np.where(suml2 != 0, sumlx / suml2, np.float32(0)).astype(np.float32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = -(fnmax + np.float32(0.1) * np.float32(step)) / mx
            lev, sx, s2 = _qx_trial(x, w, wx, iscale, nmax)
            better = (s2 > 0) & (sx * sx > best * s2)
            L = np.where(better[:, None], lev, L)
            scale = np.where(better, sx / s2, scale).astype(np.float32)
            best = np.where(better, scale * sx, best)
    zero = np.abs(mx) < GROUP_MAX_EPS
    L = np.where(zero[:, None], 0, L + nmax).astype(np.int8)
    scale = np.where(zero, np.float32(0), scale).astype(np.float32)
    return scale, L


def block_weights(n: int, quant_weights: np.ndarray, block_size: int) -> np.ndarray:
    """The imatrix entries of each of n blocks: f32[cols] tiled over rows -> f32[n, block_size].

    quant_weights is one row's worth (cols = a multiple of block_size) and the n blocks are whole
    rows of that length, back to back, as quantize_rows hands them over.
    """
    qw = np.ascontiguousarray(quant_weights, np.float32).ravel()
    if len(qw) == 0 or len(qw) % block_size or (n * block_size) % len(qw):
        raise ValueError(f"quant_weights of length {len(qw)} does not describe rows of whole "
                         f"{block_size}-blocks covering {n} blocks")
    per_row = len(qw) // block_size
    return np.broadcast_to(qw.reshape(1, per_row, block_size),
                           (n // per_row, per_row, block_size)).reshape(n, block_size)


def store_fp16(out: np.ndarray, v: np.ndarray) -> None:
    """GGML_FP32_TO_FP16(v) little-endian into out[:, 2] (round to nearest even; >= 65520 is inf)."""
    with np.errstate(over="ignore"):
        out[:] = v.astype(np.float32).astype(np.float16).reshape(-1, 1).view(np.uint8)


def load_fp16(b: np.ndarray) -> np.ndarray:
    """f32[n, 1] from little-endian fp16 bytes u8[n, 2] (GGML_FP16_TO_FP32, exact)."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def row_sigma2(x: np.ndarray, cols: int) -> np.ndarray:
    """sum_x2 / n_per_row of each row, per block: f32[n, block] (whole rows of `cols`) -> f32[n, 1].

    C sums `sum_x2 += x[j]*x[j]` over the row in index order; cumsum (a sequential accumulate,
    unlike np.sum's pairwise sum) rounds the same way.
    """
    n, block = x.shape
    rows = x.reshape(-1, cols)
    sq = rows * rows
    total = np.cumsum(sq, axis=1, dtype=np.float32)[:, -1] if cols else np.zeros(len(rows), np.float32)
    sigma2 = total / np.float32(cols)
    return np.repeat(sigma2, cols // block)[:, None]


def pack_q5(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """u8[n, 32] levels 0..31 -> (qh u8[n, 4], qs u8[n, 16]) as block_q5_0 / block_q5_1 store them:
    qs[j] = q[j] & 15 | (q[j + 16] & 15) << 4, and bit j of the little-endian uint32 qh is q[j] >> 4.
    """
    qs = (q[:, :16] & np.uint8(15)) | ((q[:, 16:] & np.uint8(15)) << np.uint8(4))
    qh = np.packbits((q >> np.uint8(4)) & np.uint8(1), axis=1, bitorder="little")
    return qh, qs


def unpack_q5(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """(qh u8[n, 4], qs u8[n, 16]) -> levels u8[n, 32], the inverse of pack_q5."""
    hi = np.unpackbits(qh, axis=1, bitorder="little")
    lo = np.concatenate([qs & np.uint8(15), qs >> np.uint8(4)], axis=1)
    return lo | (hi << np.uint8(4))


def make_qkx3_quants(x: np.ndarray, nmax: int, weights: np.ndarray | None = None,
                     rmin: float = -0.9, rdelta: float = 0.05, nstep: int = 36,
                     use_mad: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's make_qkx3_quants(n, nmax, x, weights, L, &the_min, Laux, rmin, rdelta, nstep, use_mad)
    for each row of x: f32[m, n]. Returns (scale f32[m], the_min f32[m], L uint8[m, n] in 0..nmax);
    the block is x ~ scale * L - the_min. Weights default to x*x. In float32, in C's order:

        min, max = strict scans from x[0]; min = 0 if min > 0; max <= min -> scale 0, L = 0
        sum_w, sum_x = sum w, sum w*x (index order); iscale = nmax / (max - min), scale = 1/iscale
        L = clamp(nearest_int(iscale * (x - min)), 0, nmax); best_mad = sum w*(scale*L + min - x)^2
        for is in 0..nstep: iscale = (rmin + rdelta*is + nmax) / (max - min); levels l as above;
            D = sum_w*sum_l2 - sum_l^2; if D > 0: the weighted least-squares scale and min from
            the sums (min > 0 -> min = 0, scale = sum_xl/sum_l2); it wins when its mad < best_mad,
            and then its min is the `min` every later try shifts x by and divides max - min with
    """
    m, n = x.shape
    w = x * x if weights is None else np.asarray(weights, np.float32)
    if n == 0 or m == 0:
        return np.zeros(m, np.float32), np.zeros(m, np.float32), np.zeros((m, n), np.uint8)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        mn, mx = x[:, 0].copy(), x[:, 0].copy()
        sum_w, sum_x = w[:, 0].copy(), w[:, 0] * x[:, 0]
        for i in range(1, n):
            mn = np.where(x[:, i] < mn, x[:, i], mn)
            mx = np.where(x[:, i] > mx, x[:, i], mx)
            sum_w += w[:, i]
            sum_x += w[:, i] * x[:, i]
        mn = np.where(mn > 0, np.float32(0), mn)
        flat = mx <= mn
        fnmax = np.float32(nmax)

        def levels(iscale, lmin):
            return np.clip(nearest_int(iscale[:, None] * (x - lmin[:, None])), 0, nmax).astype(np.float32)

        def mad(scale, lmin, lf):
            total = np.zeros(m, np.float32)
            for i in range(n):
                diff = (scale * lf[:, i] + lmin) - x[:, i]
                diff = np.abs(diff) if use_mad else diff * diff
                total += w[:, i] * diff
            return total

        iscale = fnmax / (mx - mn)
        scale = np.float32(1) / iscale
        L = levels(iscale, mn)
        best_mad = mad(scale, mn, L)
        lmin = mn  # C's `min`: a winning try replaces it, and later tries start from the new one
        for step in range(nstep + 1):
            iscale = ((np.float32(rmin) + np.float32(rdelta) * np.float32(step)) + fnmax) / (mx - lmin)
            lf = levels(iscale, lmin)
            sum_l = np.zeros(m, np.float32)
            sum_l2 = np.zeros(m, np.float32)
            sum_xl = np.zeros(m, np.float32)
            for i in range(n):
                wl = w[:, i] * lf[:, i]
                sum_l += wl
                sum_l2 += wl * lf[:, i]
                sum_xl += wl * x[:, i]
            D = sum_w * sum_l2 - sum_l * sum_l  # (D > 0 gates everything below, as in C)
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_min = np.where(pos, np.float32(0), this_min)
            this_scale = np.where(pos, sum_xl / sum_l2, this_scale)
            this_mad = mad(this_scale, this_min, lf)
            better = (D > 0) & (this_mad < best_mad)
            L = np.where(better[:, None], lf, L)
            best_mad = np.where(better, this_mad, best_mad)
            scale = np.where(better, this_scale, scale)
            lmin = np.where(better, this_min, lmin)
    L = np.where(flat[:, None], np.float32(0), L).astype(np.uint8)
    scale = np.where(flat, np.float32(0), scale).astype(np.float32)
    the_min = -np.where(flat, mn, lmin).astype(np.float32)
    return scale, the_min, L

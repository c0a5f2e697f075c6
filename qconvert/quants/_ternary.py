"""What TQ1_0 and TQ2_0 share: ggml's ternary rounding of a 256-weight block (BitNet b1.58, TriLMs).

quantize_row_tq1_0_ref and quantize_row_tq2_0_ref (ggml/src/ggml-quants.c) start alike, in float32:

    amax  = max |x[j]|                 over the 256-weight super-block (MAX macro, a plain max here)
    d     = amax                       stored as GGML_FP32_TO_FP16(d): round to nearest even
    id    = 1/d if d != 0 else 0       (float32)
    t[j]  = lroundf(x[j] * id) + 1     x*id rounded to float32, then lroundf: round half AWAY from
                                       zero, so x*id = +-0.5 exactly goes to +-1; t in {0, 1, 2}
                                       for -1, 0, +1 (weight = d * (t - 1))

One case C leaves to the library: when amax < 2^-128 (a subnormal block), 1/d overflows to inf and
every x*id is +-inf or NaN (0 * inf). glibc's lroundf returns LONG_MIN for those on x86-64, and
`int xi = LONG_MIN + 1` keeps the low 32 bits, 1: the trit of 0. We write t = 1 there too, so such
a block is all zeros with d = fp16(amax) = 0, as libggml writes it. Likewise every x*id that is not
finite (x inf or NaN, id NaN: inputs written only with --allow-nonfinite) gets t = 1; amax then
follows C's MAX macro in C's order (_c_amax).
"""

from __future__ import annotations

import numpy as np

from ._common import store_fp16

QK_K = 256


def _c_amax(absx: np.ndarray) -> np.ndarray:
    """f32[n, 1]: C's `amax = MAX(amax, fabsf(v))` from 0 in index order, MAX(a, b) = (a > b ? a : b).
    A NaN replaces amax and the next value replaces the NaN, so a block's amax is the max of what
    follows its last NaN, NaN when a NaN comes last; without NaN, the plain max."""
    n, k = absx.shape
    nan = np.isnan(absx)
    last = np.where(nan.any(axis=1), k - 1 - nan[:, ::-1].argmax(axis=1), -1)[:, None] if n else np.zeros((0, 1), int)
    tail = np.where(np.arange(k)[None, :] > last, absx, np.float32(0))
    amax = tail.max(axis=1, keepdims=True) if n else np.zeros((0, 1), np.float32)
    return np.where(last == k - 1, np.float32(np.nan), amax).astype(np.float32)


def ternary(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """f32[n, 256] -> (d f32[n, 1], t u8[n, 256]), as the two ggml _ref functions: t in {0, 1, 2}
    for finite x; with inf/NaN, lroundf(x*id) + 1 modulo 256 (C packs it modulo 256, or its low 2 bits)."""
    d = _c_amax(np.abs(x))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
        v = x * inv
        whole = np.trunc(v)
        frac = v - whole  # exact for every float32 (Sterbenz for |v| >= 1; whole == 0 below)
        # lroundf's long: finite and below 2^63 (|v| <= ~1 unless a NaN reset amax), else LONG_MIN
        fits = np.isfinite(v) & (np.abs(v) < np.float32(2.0 ** 63))
        r = np.where(fits, whole, np.float32(0)).astype(np.int64) + (frac >= 0.5) - (frac <= -0.5)
        t = np.where(fits, r + 1, 1) & 0xFF  # `int xi = lroundf(...) + 1`, modulo 256 as the packing uses it
    return d.astype(np.float32), t.astype(np.uint8)


def store_d(out: np.ndarray, d: np.ndarray) -> None:
    """The fp16 scale d into the block's last two bytes (both types keep d after the trits)."""
    store_fp16(out[:, -2:], d)

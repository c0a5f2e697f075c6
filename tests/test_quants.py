"""Every quant type in the registry, both implementations, against ggml byte for byte.

One shared checker parametrized over qconvert.quants.REGISTRY: a new type gets every check here by
adding its registry line (plus an ERROR_BOUND entry, and optionally BOUNDARY cases for its rounding).

    1. bytes == ggml_quantize_chunk (libggml from llama-cpp-python; missing -> FAIL, not skip)
    2. bytes == gguf.quants.quantize, where gguf-py implements the type
    3. gguf.quants.dequantize(our bytes) is within the type's error bound, and equals ours
    4. golden vectors in tests/fixtures/quants/ (written by scripts/make_quant_fixtures.py)
    5. with an importance matrix: == ggml_quantize_chunk given that imatrix (the _impl paths of the
       types registered imatrix="weighted"; the "ignored" ones write their unweighted bytes)
"""

from __future__ import annotations

import functools
import importlib
import inspect
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

import ggml_oracle
from qconvert import quants
from qconvert.errors import QuantizationError, UnsupportedError, UsageError
from qconvert.quants import _base

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "quants"
COLS = 256  # a multiple of every block size (32 now, 256 for the K-quants)


# --- implementations under test --------------------------------------------------------------


def implementations() -> list:
    """(QuantType, backend) for every distinct implementation: the reference, and the kernel if any."""
    out = []
    for qt in quants.REGISTRY.values():
        out.append(pytest.param(qt, "reference", id=f"{qt.name}-reference"))
        if qt.kernel is not None:
            out.append(pytest.param(qt, "compiled", id=f"{qt.name}-compiled"))
    return out


def block_fn(qt: quants.QuantType, backend: str) -> Callable[[np.ndarray], np.ndarray]:
    """The implementation itself, imported directly (QCONVERT_BACKEND plays no part here)."""
    if backend == "reference":
        return qt.quantize_blocks_ref
    return importlib.import_module(f"qconvert._kernels.{qt.kernel}").quantize_blocks


def quantize(qt: quants.QuantType, backend: str, x: np.ndarray) -> np.ndarray:
    rows, cols = x.shape
    out = block_fn(qt, backend)(np.ascontiguousarray(x).reshape(-1, qt.block_size))
    return out.reshape(rows, cols // qt.block_size * qt.type_size)


def oracle() -> ggml_oracle.GGML:
    try:
        return ggml_oracle.load()
    except ggml_oracle.OracleUnavailable as e:
        pytest.fail(f"libggml (the oracle) is unavailable: {e}", pytrace=False)


def assert_same_bytes(got: np.ndarray, want: np.ndarray, qt: quants.QuantType, what: str,
                      x: np.ndarray | None = None) -> None:
    """Equal bytes, or a message naming the first bad block and how many bits differ."""
    assert got.shape == want.shape, f"{qt.name} {what}: shape {got.shape} != {want.shape}"
    if np.array_equal(got, want):
        return
    g = got.reshape(-1, qt.type_size)
    w = want.reshape(-1, qt.type_size)
    bad = np.flatnonzero((g != w).any(axis=1))
    i = int(bad[0])
    bits = int(np.unpackbits(g[i] ^ w[i]).sum())
    total = int(np.unpackbits((g ^ w).ravel()).sum())
    per_row = got.shape[1] // qt.type_size
    msg = (f"{qt.name} {what}: {len(bad)} of {len(g)} blocks differ ({total} bits); first bad block "
           f"{i} (row {i // per_row}, block {i % per_row}): {bits} bits differ\n"
           f"  got  {g[i].tobytes().hex()}\n  want {w[i].tobytes().hex()}")
    if x is not None:
        msg += f"\n  input {x.reshape(-1, qt.block_size)[i].tolist()}"
    raise AssertionError(msg)


# --- inputs ----------------------------------------------------------------------------------


def as_rows(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Flat float32 values -> [rows, COLS], padded with `fill` (keeps block alignment for 32 | COLS)."""
    flat = np.asarray(values, dtype=np.float32).ravel()
    pad = (-len(flat)) % COLS
    return np.concatenate([flat, np.full(pad, fill, np.float32)]).reshape(-1, COLS)


def rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(name.encode()) * 7919)


def _normal(): return rng("normal").standard_normal((48, COLS), np.float32) * np.float32(0.02)
def _student_t(): return rng("t").standard_t(3, (48, COLS)).astype(np.float32)
def _positive(): return rng("pos").uniform(0.0, 3.0, (48, COLS)).astype(np.float32)


def _zero_rows():
    x = rng("zr").standard_normal((16, COLS), np.float32)
    x[::3] = 0
    return x


def _wide_scales():  # every block its own magnitude, from 1e-20 to 1e+4
    x = rng("wide").standard_normal((32, COLS), np.float32).reshape(-1, 32)
    x *= (10.0 ** rng("wide2").uniform(-20, 4, (len(x), 1))).astype(np.float32)
    return x.reshape(-1, COLS)


def _zero_blocks():
    x = rng("zb").standard_normal((4, COLS), np.float32).reshape(-1, 32)
    x[::2] = 0.0
    x[1::4] = -0.0  # ggml's Q4_0 keeps max = +0.0 for these, so d = -0.0
    return x.reshape(-1, COLS)


def _one_huge():
    x = rng("huge").standard_normal((4, COLS), np.float32).reshape(-1, 32) * np.float32(0.01)
    idx = rng("huge2").integers(0, 32, len(x))
    x[np.arange(len(x)), idx] = np.where(np.arange(len(x)) % 2, 1000.0, -1000.0)
    return x.reshape(-1, COLS)


def _constant_rows():
    return np.array([[0.37] * COLS, [-0.37] * COLS, [1.0] * COLS, [-5e-3] * COLS, [1e-30] * COLS],
                    np.float32)


def _denormals():
    sub = rng("den").uniform(-1, 1, (8, COLS)).astype(np.float32) * np.float32(1e-38)  # many subnormal
    tiny = np.array([1e-45, -1e-45, 1e-40, -3e-39, 1.1754942e-38] * 6 + [0.0, 0.0], np.float32)
    mixed = rng("den2").standard_normal((2, COLS), np.float32)
    mixed[:, ::3] = 1e-40  # subnormals beside normal values
    return np.concatenate([sub, as_rows(tiny), mixed])


def _scale_overflows():  # |amax| just where 1/d overflows float32: ggml's undefined int conversion
    m = np.float32(np.finfo(np.float32).max)
    edges = [127 / m, 8 / m, 3.7e-37, 3.8e-37, 2.3e-38, 2.4e-38]
    blocks = []
    for e in edges:
        for s in (1.0, -1.0):
            for step in (-2, -1, 0, 1, 2):
                v = np.float32(e) * np.float32(s)
                for _ in range(abs(step)):
                    v = np.nextafter(v, np.float32(np.inf) if step > 0 else np.float32(-np.inf))
                b = rng("so").uniform(-1, 1, 32).astype(np.float32) * v
                b[7] = v
                blocks.append(b)
    return as_rows(np.array(blocks))


def _equal_magnitude():  # the same |max| with both signs: Q4_0 keeps the first one's sign
    out = []
    for first in (1.0, -1.0):
        b = rng("eq").uniform(-0.5, 0.5, 32).astype(np.float32)
        b[3], b[20] = first * 2.5, -first * 2.5
        out.append(b)
        c = b.copy()
        c[0], c[31] = -first * 3.0, first * 3.0
        out.append(c)
    return as_rows(np.array(out))


INPUTS: dict[str, Callable[[], np.ndarray]] = {
    "normal": _normal, "student_t": _student_t, "positive": _positive, "zero_rows": _zero_rows,
    "wide_scales": _wide_scales, "zero_blocks": _zero_blocks, "one_huge": _one_huge,
    "constant_rows": _constant_rows, "denormals": _denormals, "scale_overflows": _scale_overflows,
    "equal_magnitude": _equal_magnitude,
}
RANDOM = ("normal", "student_t", "positive", "zero_rows")  # realistic weights: round-trip checked


def _fp16_midpoints() -> np.ndarray:
    """float32 values exactly halfway between neighbouring fp16 values, and their neighbours."""
    h = np.concatenate([np.arange(0, 0x0400, 7), np.arange(0x0400, 0x7BFF, 61), [0x03FF, 0x7BFE]])
    h = np.unique(h).astype(np.uint16)
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + np.uint16(1)).view(np.float16).astype(np.float32)
    mid = (lo + hi) / np.float32(2)  # exact: one more bit than fp16 has
    mid = np.concatenate([mid, [65520.0, 65504.0, 2.0 ** -25, 2.0 ** -24, 2.0 ** -14]]).astype(np.float32)
    return np.concatenate([mid, np.nextafter(mid, np.float32(0)), np.nextafter(mid, np.float32(np.inf))])


def _product_lands_on(levels: np.ndarray, inv: np.float32, limit: float) -> list[np.float32]:
    """x whose float32 product x*inv rounds onto a level exactly while the exact product does not."""
    found = []
    for level in levels:
        x0 = np.float32(level / np.float64(inv))
        for k in range(-4, 5):
            x = x0
            for _ in range(abs(k)):
                x = np.nextafter(x, np.float32(np.inf) if k > 0 else np.float32(-np.inf))
            # float(level): a Python float compared with a float32 would be cast down to float32
            if abs(x) <= limit and np.float32(x * inv) == level and float(x) * float(inv) != float(level):
                found.append(x)
    return found


def _q8_0_boundaries() -> np.ndarray:
    g = rng("q8b")
    blocks = []
    halves = np.arange(-127, 127, dtype=np.float32) + np.float32(0.5)  # x*id == k + 0.5 exactly
    for s in (1.0, 2.0 ** -12, 2.0 ** 10):  # amax = 127 * 2^e: d = 2^e, id = 2^-e, products exact
        vals = np.concatenate([halves, np.nextafter(halves, np.float32(0)),
                               np.nextafter(halves, np.float32(np.inf) * halves)]) * np.float32(s)
        for chunk in np.array_split(vals, len(vals) // 31 + 1):
            blocks.append(np.concatenate([[np.float32(127 * s)], chunk, np.zeros(31 - len(chunk))]))
    for m in g.uniform(0.5, 2.0, 6).astype(np.float32):  # inexact products rounding onto k + 0.5
        d = m / np.float32(127)
        inv = np.float32(1) / d
        vals = _product_lands_on(halves, inv, float(m))
        for chunk in np.array_split(np.array(vals, np.float32), max(1, len(vals) // 31 + 1)):
            blocks.append(np.concatenate([[m], chunk, np.zeros(31 - len(chunk))]))
    for t in _fp16_midpoints():  # d = amax / 127 == t exactly, an fp16 tie
        b = g.uniform(-1, 1, 32).astype(np.float32) * np.float32(127 * t)
        b[g.integers(32)] = np.float32(127 * t) * np.float32(g.choice([-1, 1]))
        blocks.append(b)
    return as_rows(np.array(blocks, np.float32))


def _q4_0_boundaries() -> np.ndarray:
    g = rng("q4b")
    blocks = []
    halves = np.arange(-8, 8, dtype=np.float32) + np.float32(0.5)  # x*id + 8.5 lands on an integer
    for s in (1.0, -1.0, 2.0 ** -12, -(2.0 ** 9)):  # max = -8 s: d = s, id = 1/s, products exact
        vals = np.concatenate([halves, np.nextafter(halves, np.float32(-np.inf)),
                               np.nextafter(halves, np.float32(np.inf))])
        for k in (2, 3):  # a few ulps below: x*id + 8.5 rounds up onto the integer
            vals = np.concatenate([vals, halves - np.float32(k * 2.0 ** -24)])
        vals = vals[np.abs(vals) < 8] * np.float32(s)
        for chunk in np.array_split(vals, len(vals) // 31 + 1):
            blocks.append(np.concatenate([[np.float32(-8 * s)], chunk, np.zeros(31 - len(chunk))]))
    for m in g.uniform(0.5, 2.0, 48).astype(np.float32) * np.float32(-1) ** np.arange(48):
        inv = np.float32(1) / (m / np.float32(-8))  # inexact products rounding onto k + 0.5
        vals = _product_lands_on(halves, inv, float(abs(m)) * 0.999)
        for chunk in np.array_split(np.array(vals, np.float32), max(1, len(vals) // 31 + 1)):
            blocks.append(np.concatenate([[m], chunk, np.zeros(31 - len(chunk))]))
    for t in _fp16_midpoints():  # d = max / -8 == t exactly, an fp16 tie
        b = g.uniform(-1, 1, 32).astype(np.float32) * np.float32(8 * t)
        b[g.integers(32)] = np.float32(8 * t) * np.float32(g.choice([-1, 1]))
        blocks.append(b)
    return as_rows(np.array(blocks, np.float32))


def _q5_0_boundaries() -> np.ndarray:
    g = rng("q5b")
    blocks = []
    halves = np.arange(-16, 16, dtype=np.float32) + np.float32(0.5)  # x*id + 16.5 lands on an integer
    for s in (1.0, -1.0, 2.0 ** -12, -(2.0 ** 9)):  # max = -16 s: d = s, id = 1/s, products exact
        vals = np.concatenate([halves, np.nextafter(halves, np.float32(-np.inf)),
                               np.nextafter(halves, np.float32(np.inf))])
        for k in (2, 3):  # a few ulps below: x*id + 16.5 rounds up onto the integer
            vals = np.concatenate([vals, halves - np.float32(k * 2.0 ** -24)])
        vals = vals[np.abs(vals) < 16] * np.float32(s)
        for chunk in np.array_split(vals, len(vals) // 31 + 1):
            blocks.append(np.concatenate([[np.float32(-16 * s)], chunk, np.zeros(31 - len(chunk))]))
    for m in g.uniform(0.5, 2.0, 48).astype(np.float32) * np.float32(-1) ** np.arange(48):
        inv = np.float32(1) / (m / np.float32(-16))  # inexact products rounding onto k + 0.5
        vals = _product_lands_on(halves, inv, float(abs(m)) * 0.999)
        for chunk in np.array_split(np.array(vals, np.float32), max(1, len(vals) // 31 + 1)):
            blocks.append(np.concatenate([[m], chunk, np.zeros(31 - len(chunk))]))
    for t in _fp16_midpoints():  # d = max / -16 == t exactly, an fp16 tie
        b = g.uniform(-1, 1, 32).astype(np.float32) * np.float32(16 * t)
        b[g.integers(32)] = np.float32(16 * t) * np.float32(g.choice([-1, 1]))
        blocks.append(b)
    return as_rows(np.array(blocks, np.float32))


def _min_max_boundaries(nmax: int, name: str) -> np.ndarray:
    """Q4_1 / Q5_1 (d = (max - min) / nmax, q = trunc((x - min)*id + 0.5f)): inputs on the rounding
    edges of q, of fp16(d) and fp16(m), on the sign of a zero min, and where 1/d overflows."""
    g = rng(name)
    blocks = []
    halves = np.arange(nmax, dtype=np.float32) + np.float32(0.5)  # (x - min)*id + 0.5 is an integer
    for s in (1.0, 2.0 ** -12, 2.0 ** 9):  # max - min = nmax s: d = s, id = 1/s, all exact
        for base in (0.0, -8.0, -float(nmax)):
            lo, hi = np.float32(base * s), np.float32((base + nmax) * s)
            vals = np.concatenate([halves, np.nextafter(halves, np.float32(0)),
                                   np.nextafter(halves, np.float32(np.inf))])
            for k in (2, 3, 5):  # a few ulps below: + 0.5f rounds up onto the integer
                vals = np.concatenate([vals, halves - np.float32(k * 2.0 ** -24)])
            vals = (vals[(vals > 0) & (vals < nmax)] + np.float32(base)) * np.float32(s)
            for chunk in np.array_split(vals, len(vals) // 30 + 1):
                blocks.append(np.concatenate([[lo], chunk, [hi], np.full(30 - len(chunk), lo)]))
    for top in g.uniform(0.5, 2.0, 32).astype(np.float32):  # min = 0: (x - 0)*id inexact onto k + 0.5
        inv = np.float32(1) / (top / np.float32(nmax))
        vals = _product_lands_on(halves, inv, float(top) * 0.999)
        for chunk in np.array_split(np.array(vals, np.float32), max(1, len(vals) // 30 + 1)):
            blocks.append(np.concatenate([[0.0], chunk, [top], np.zeros(30 - len(chunk))]))
    for t in _fp16_midpoints():  # d == t, then m == -t: fp16 ties in both stored halves
        b = g.uniform(0, 1, 32).astype(np.float32) * np.float32(nmax * t)
        b[g.integers(32)], b[g.integers(32)] = 0.0, np.float32(nmax * t)
        blocks.append(b)
        c = g.uniform(-1, 1, 32).astype(np.float32) * np.float32(t)
        c[g.integers(32)] = -t
        blocks.append(c)
    zeros = []  # the first zero decides a zero min's sign (and m's fp16 sign bit)
    for first in (-0.0, 0.0):
        b = np.abs(g.uniform(-1, 1, 32)).astype(np.float32)
        b[[5, 9]] = first, -first
        zeros.append(b)
        zeros.append(-b)
        zeros.append(np.array([first, -first] * 16, np.float32))
    blocks.extend(zeros)
    tiny = np.float32(2.0 ** -128) * np.float32(nmax)  # d = (max - min)/nmax around 1/FLT_MAX
    for step in range(-3, 4):
        top = tiny
        for _ in range(abs(step)):
            top = np.nextafter(top, np.float32(np.inf) if step > 0 else np.float32(0))
        for lo in (np.float32(0), -top / np.float32(2)):
            b = (g.uniform(0, 1, 32).astype(np.float32) * (top - lo) + lo).astype(np.float32)
            b[3], b[17] = lo, top
            blocks.append(b)
    return as_rows(np.array(blocks, np.float32))


def _q6_k_boundaries() -> np.ndarray:
    """Q6_K: super-blocks whose levels land on nearest_int's half-way points (round half to EVEN)
    in make_qx_quants and in the re-quantization x / (d * scales[k]); sub-blocks around
    GROUP_MAX_EPS; scales that round to 0 or clamp at 127; equal |scale| of both signs."""
    g = rng("q6b")
    out = []
    ints = np.arange(-31, 32, dtype=np.float32)
    for e in (0, -7, 5, -20):
        s = np.float32(2.0 ** e)
        for variant in range(16):
            # Integer multiples of s with a max of +-32 s fit exactly: every sub-block's scale is
            # s (or within fp16 rounding of it), d = s/128 and scales[k] = -128, so x / dk is x / s.
            # A few small half-integers hardly move the fit, so they land exactly on a .5 both in
            # make_qx_quants (iscale = 1/s) and in the re-quantization.
            x = g.choice(ints, (16, 16)) * s
            x[np.arange(16), g.integers(0, 16, 16)] = np.float32(32) * s * np.float32((-1) ** variant)
            halves = g.integers(0, 16, (16, 4))
            x[np.arange(16)[:, None], halves] = (g.integers(-5, 5, (16, 4)) + np.float32(0.5)) * s
            out.append(x.ravel())
    for eps in (1e-15, 3.2e-14):  # a sub-block at GROUP_MAX_EPS; a super-block's max scale near it
        for step in (-1, 0, 1):
            v = np.float32(eps)
            v = np.nextafter(v, np.float32(np.inf) if step > 0 else np.float32(0)) if step else v
            x = g.uniform(-1, 1, 256).astype(np.float32) * v
            x[::16] = v
            y = g.standard_normal(256).astype(np.float32)
            y[16:32] = x[16:32]
            out += [x, y]
    base = g.standard_normal(256).astype(np.float32)
    for f in (1 / 300, 1 / 256, 1 / 200, 1 / 180, 3 / 256, 5 / 256):  # sub-block scale near 0.5, 1.5, ... of d
        x = base.copy()
        x[32:48] *= np.float32(f)
        out.append(x)
    # Exactly opposite scales (an integer grid and its negation both fit exactly): the first max
    # |scale| sets the sign of d, and the other's nearest_int(-128/max * -max) = 128 clamps to 127.
    a = g.choice(ints, (16, 16)).astype(np.float32)
    a[:, 3] = 32
    a[1] = -a[0]
    out += [a.ravel(), -a.ravel(), a[::-1].ravel()]
    return as_rows(np.array(out, np.float32))


# K-quants: (nmax, weights per sub-block, lowest level of the last pass) for the boundary inputs.
K_LEVELS = {T.Q2_K: (3, 16, 0), T.Q3_K: (4, 16, -4), T.Q4_K: (15, 32, 0), T.Q5_K: (31, 32, 0)}


def _k_requant_ties(qtype: T, g: np.random.Generator, n: int) -> np.ndarray:
    """Super-blocks with weights moved onto the half-way points of the last pass, where float32
    (x + dmin*m) / (d*sc) (Q3_K: x / (d*s)) == k + 0.5 exactly and round-half-to-EVEN picks the level.

    The steps d*sc come from ggml's own bytes. The sub-blocks that set d and dmin are left alone, and
    only weights already near a half-way point move; a move can still shift a 6-bit scale, so blocks
    are re-quantized and re-aimed until their scales hold (those that never settle are dropped)."""
    mod = getattr(quants, qtype.name.lower())
    nmax, sub, lo = K_LEVELS[qtype]
    hi = nmax - 1 if lo else nmax  # the last pass clamps to lo..hi
    moves = 1 if qtype == T.Q3_K else 3  # Q3_K's least-squares scales (weights x^2) move most
    ggml = oracle()
    x = g.standard_normal((n, 256)).astype(np.float32) * (10.0 ** g.uniform(-3, 1, (n, 1))).astype(np.float32)
    x[1::4] += x[1::4].std(axis=1, keepdims=True) * g.uniform(-2, 2, (len(x[1::4]), 1)).astype(np.float32)
    y = x.copy()
    settled = np.zeros(n, bool)
    d, dm = mod.sub_scales(ggml.quantize(qtype, y))
    with np.errstate(all="ignore"):
        for _ in range(6):
            fixed = np.abs(d) == np.abs(d).max(axis=1, keepdims=True)  # these set d and dmin: keep them
            fixed |= (dm == dm.max(axis=1, keepdims=True)) & (dm != 0)
            u = (y.reshape(n, -1, sub).astype(np.float64) + dm[:, :, None]) / d[:, :, None]
            near = np.abs(u - np.floor(u) - 0.5) + (u < lo) + (u > hi)  # inside the levels, near a half
            near[fixed | (d == 0) | settled[:, None]] = np.inf
            order = np.argsort(near, axis=2)
            pos = order[:, :, :moves]  # the weights nearest a half in each sub-block
            ok = np.isfinite(np.take_along_axis(near, pos, axis=2))
            target = np.floor(np.take_along_axis(u, pos, axis=2)).astype(np.float32) + np.float32(0.5)
            dd = np.broadcast_to(d[:, :, None], target.shape)
            mm = np.broadcast_to(dm[:, :, None], target.shape)
            v = (target.astype(np.float64) * dd - mm).astype(np.float32)
            for _ in range(8):  # walk ulps until the float32 quotient is exactly the half
                q = (v + mm) / dd
                v = np.where(q == target, v, np.nextafter(v, np.where(q < target, np.inf, -np.inf).astype(np.float32)))
            hit = ok & ((v + mm) / dd == target)
            ys = y.reshape(n, -1, sub)
            np.put_along_axis(ys, pos, np.where(hit, v, np.take_along_axis(ys, pos, axis=2)), axis=2)
            d2, dm2 = mod.sub_scales(ggml.quantize(qtype, y))
            settled |= (d2 == d).all(axis=1) & (dm2 == dm).all(axis=1)
            d, dm = d2, dm2
    return y[settled]


def _k_first_pass_ties(qtype: T, g: np.random.Generator) -> np.ndarray:
    """Sub-blocks on a grid of step s = 2^e placed so that the first guess is exact and lands on
    halves: make_qkx2_quants' iscale = nmax / (max - min) = 1/s with x - min = (k + 0.5) s, and
    make_q3_quants' iscale = -4 / max = -+1/s with x = (k + 0.5) s."""
    nmax, sub, lo = K_LEVELS[qtype]
    out = []
    for e in (0, -9, 7, -24):
        s = np.float32(2.0 ** e)
        for _ in range(8):
            blk = np.empty((256 // sub, sub), np.float32)
            for j in range(len(blk)):
                i1, i2 = g.choice(sub, 2, replace=False)
                if lo:  # Q3_K: the first largest |x| is +-4 s
                    blk[j] = (g.integers(-4, 4, sub) + np.float32(0.5)) * s
                    blk[j, i1] = np.float32(4 * g.choice([-1, 1])) * s
                else:   # min = -a s (<= 0), max = (nmax - a) s
                    a = g.integers(0, nmax + 1)
                    blk[j] = (g.integers(0, nmax, sub) + np.float32(0.5) - a) * s
                    blk[j, i1], blk[j, i2] = -a * s, (nmax - a) * s
            out.append(blk.ravel())
    return np.array(out, np.float32)


def _k_special(qtype: T, g: np.random.Generator) -> np.ndarray:
    """Flat and zero sub-blocks (C's early returns), a sub-block whose 6/4-bit scale rounds to 0 (the
    last pass `continue`s and keeps the first levels), all-negative sub-blocks with a tiny positive
    weight (max barely above 0: the fit's min is the whole range), and sub-blocks around
    GROUP_MAX_EPS = 1e-15 (make_q3_quants' all-zero test)."""
    nmax, sub, lo = K_LEVELS[qtype]
    z = g.standard_normal((12, 256)).astype(np.float32)
    z[0, :sub], z[0, 3 * sub:4 * sub] = -0.3, 0.7     # flat (max == min <= 0); constant > 0 (min -> 0)
    z[1, :sub], z[1, sub:2 * sub] = 0.0, -0.0
    z[2], z[3] = 0.0, -0.0
    z[4, sub:2 * sub] *= np.float32(1e-4)             # its scale rounds to 0 against the others
    z[5, 2 * sub:3 * sub] *= np.float32(3e-3)
    z[6] = -g.uniform(0.1, 3, 256).astype(np.float32)
    z[6, ::7] = 1e-30
    z[7] = -np.abs(z[7])
    z[7, 5::sub] = 1e-38
    for row, eps in zip((8, 9, 10), (np.nextafter(np.float32(1e-15), np.float32(0)), np.float32(1e-15),
                                     np.nextafter(np.float32(1e-15), np.float32(1)))):
        z[row, :sub] = g.uniform(-1, 1, sub).astype(np.float32) * eps
        z[row, 0] = eps
    z[11] = np.float32(1e-15) * g.uniform(-1, 1, 256).astype(np.float32)
    return z


@functools.lru_cache(maxsize=None)
def _k_boundaries(qtype: T) -> np.ndarray:
    g = rng(f"k-boundaries {qtype.name}")
    x = np.concatenate([_k_requant_ties(qtype, g, 640 if qtype == T.Q3_K else 160),
                        _k_first_pass_ties(qtype, g), _k_special(qtype, g)])
    x.setflags(write=False)  # cached: shared by every test that asks
    return x


def _f16_boundaries() -> np.ndarray:
    t = _fp16_midpoints()
    nans = np.array([0x7FC00000, 0xFFC00001, 0x7F800001, 0x7FFFFFFF, 0x7FA00000], np.uint32).view(np.float32)
    return as_rows(np.concatenate([t, -t, nans, np.array([np.inf, -np.inf], np.float32)]))


def _bf16_boundaries() -> np.ndarray:
    g = rng("bf")
    hi = g.integers(0, 0xFFFF, 4096, dtype=np.uint32) << np.uint32(16)
    low = np.array([0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint32)
    bits = (hi[:, None] | low[None, :]).ravel()
    specials = np.array([0x7F7F8000, 0x7F7FFFFF, 0xFF7F8000, 0x00008000, 0x00018000,  # to inf, subnormals
                         0x7FC00000, 0xFFC00001, 0x7F800001, 0xFF80FFFF, 0x7FFFFFFF,   # NaNs
                         0x7F800000, 0xFF800000], np.uint32)                            # ±inf
    return as_rows(np.concatenate([bits, specials]).view(np.float32))


def _f32_boundaries() -> np.ndarray:
    return as_rows(rng("f32").integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(np.uint32).view(np.float32))


def _ternary_boundaries() -> np.ndarray:
    """TQ1_0 / TQ2_0 (d = max |x|, t = lroundf(x * (1/d)) + 1): x*id exactly +-0.5 (lroundf rounds it
    away from zero) and its neighbours, products rounding onto +-0.5, fp16 ties of d, and amax around
    1/FLT_MAX, where 1/d overflows."""
    g = rng("tqb")
    out = []
    halves = np.array([0.5, -0.5], np.float32)
    for s in (1.0, -1.0, 2.0 ** -12, 2.0 ** 10, -(2.0 ** -30)):  # amax = s: id = 1/s, products exact
        vals = np.concatenate([halves, np.nextafter(halves, np.float32(0)), np.nextafter(halves, halves * 2)])
        x = g.choice(vals, 256).astype(np.float32) * np.float32(s)
        x[g.integers(256)] = np.float32(s)
        out.append(x)
    for m in g.uniform(0.5, 2.0, 24).astype(np.float32):  # inexact products x * (1/m) rounding onto +-0.5
        vals = _product_lands_on(halves, np.float32(1) / m, float(m))
        if vals:
            x = g.choice(np.array(vals, np.float32), 256)
            x[g.integers(256)] = -m if len(out) % 2 else m
            out.append(x)
    for t in _fp16_midpoints():  # d = amax == t, an fp16 tie
        x = g.uniform(-1, 1, 256).astype(np.float32) * t
        x[g.integers(256)] = t * np.float32(g.choice([-1, 1]))
        out.append(x)
    edge = np.float32(1) / np.float32(np.finfo(np.float32).max)  # amax below it: 1/d is inf
    for step in range(-3, 4):
        v = edge
        for _ in range(abs(step)):
            v = np.nextafter(v, np.float32(np.inf) if step > 0 else np.float32(0))
        x = g.uniform(-1, 1, 256).astype(np.float32) * v
        x[g.integers(256)] = v
        out.append(x)
    return np.array(out, np.float32)


def _nonfinite_blocks(g: np.random.Generator, size: int) -> list[np.ndarray]:
    """Blocks holding NaN or inf (written only with --allow-nonfinite): C's MAX macro lets a NaN reset
    the TQ types' amax (then |x*id| goes far beyond 1 and lroundf's value wraps modulo 256), MXFP4's
    `amax < fabsf(v)` skips it; inf makes the scale inf and every x*id non-finite or 0."""
    out = []
    for k in range(12):
        x = g.standard_normal(size).astype(np.float32)
        for _ in range(1 + k % 3):
            x[g.integers(size)] = g.choice(np.array([np.nan, np.inf, -np.inf], np.float32))
        out.append(x)
    for special in ([np.nan], [np.inf], [-np.inf, np.nan]):
        x = g.standard_normal(size).astype(np.float32) * np.float32(1e6)
        x[-len(special):] = special  # a NaN last: C's amax is NaN
        x[:4] = np.float32(1e-3)      # a NaN first: then amax comes from what follows
        x[0] = np.nan
        out.append(x)
    return out


def _mxfp4_boundaries() -> np.ndarray:
    """MXFP4 (e = floor(log2f(amax)) + 125, d = 2^(e - 128), the nearest of 16 levels, the first of equals):
    amax at and a few ulps around powers of two (log2f rounds an amax just below 2^k up to k), amax
    below 2^-125 (e wraps modulo 256), and values on the midpoints between levels and beside them."""
    g = rng("mxb")
    blocks = []
    for k in list(range(-149, 128, 7)) + [-127, -126, -125, -124, 0, 1, 2, 3, 126, 127]:
        p = np.float32(2.0 ** k)
        below = [p - np.float32(j) * np.spacing(p) / 2 for j in range(1, 9)]  # ulps below 2^k are half 2^k's
        for a in [p, *below, np.nextafter(p, np.float32(np.inf))]:
            if a > 0:
                b = g.uniform(-1, 1, 32).astype(np.float32) * np.float32(a)
                b[g.integers(32)] = a * np.float32(g.choice([-1, 1]))
                blocks.append(b)
    # every binade's top mantissas (where log2f may round up) and its first ones: e for every exponent,
    # and up to FLT_MAX, where 8 d and 12 d overflow to inf and best_index_mxfp4 never picks them
    tops = np.array([(b << 23) | m for b in range(255) for m in [*range(0x7FFFFF - 23, 0x800000), 0, 1, 0x400000]],
                    np.uint32).view(np.float32)
    for a in tops:
        b = g.uniform(-1, 1, 32).astype(np.float32) * a
        b[g.integers(32)] = a * np.float32(g.choice([-1, 1]))
        blocks.append(b)
    mids = np.array([0.5, 1.5, 2.5, 3.5, 5, 7, 10, 14], np.float32)
    vals = np.concatenate([mids, -mids, np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(99)),
                           -np.nextafter(mids, np.float32(0)), -np.nextafter(mids, np.float32(99)),
                           [0.0, -0.0, 1e-3, -1e-3, 12, -12, 15.99, -15.99]]).astype(np.float32)
    for s in (1.0, 2.0 ** -20, 2.0 ** 40, 2.0 ** -126, 2.0 ** -128, 2.0 ** -130):  # d = s: x = vals * s exactly
        for chunk in np.array_split(vals, len(vals) // 31 + 1):
            blocks.append(np.concatenate([[np.float32(12 * s)], chunk * np.float32(s), np.zeros(31 - len(chunk))]))
    return as_rows(np.array(blocks, np.float32))


IQ4_MIDPOINTS = (quants.iq4_nl.KVALUES_F[1:] + quants.iq4_nl.KVALUES_F[:-1]) / np.float32(2)  # exact


def iq4_final_inverse(qtype: T, x: np.ndarray) -> np.ndarray:
    """The inverse scale each sub-block of 32 is finally re-quantized with (no imatrix), from the
    reference's float32 steps: IQ4_NL 1/d, IQ4_XS 1/(d*l); 0 where C uses 0. f32[n, bs] -> f32[n * bs/32]."""
    from qconvert.quants import iq4_nl
    from qconvert.quants._common import first_absmax, nearest_int
    xs = x.reshape(-1, 32)
    scales = iq4_nl.block_scales(xs, xs * xs)
    with np.errstate(all="ignore"):
        if qtype == T.IQ4_NL:
            step = scales
        else:
            scales = scales.reshape(-1, 8)
            d = -first_absmax(scales) / np.float32(32)
            inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
            step = (d[:, None] * np.clip(nearest_int(inv[:, None] * scales), -32, 31).astype(np.float32)).ravel()
        return np.where(step != 0, np.float32(1) / step, np.float32(0)).astype(np.float32)


def _iq4_final_ties(qtype: T, g: np.random.Generator, n: int) -> np.ndarray:
    """Blocks with a few weights moved so that the last pass's float32 product (1/d) * x lands
    exactly half-way between two levels, where best_index_int8 takes the upper one. A move shifts
    the refitted scale a little, so blocks are re-aimed until their scales hold (the others dropped)."""
    bs = quants.get(qtype).block_size
    x = g.standard_t(5, (n, bs)).astype(np.float32)
    xs = x.reshape(-1, 32)
    settled = np.zeros(len(xs), bool)
    inv = iq4_final_inverse(qtype, x)
    with np.errstate(all="ignore"):
        for _ in range(6):
            al = inv[:, None] * xs
            k = np.clip(np.searchsorted(IQ4_MIDPOINTS, al), 1, len(IQ4_MIDPOINTS) - 1)
            near = np.minimum(np.abs(al - IQ4_MIDPOINTS[k - 1]), np.abs(al - IQ4_MIDPOINTS[k]))
            near[np.arange(len(xs)), np.abs(xs).argmax(axis=1)] = np.inf  # keep the max: it sets the scale
            near[settled | (inv == 0)] = np.inf
            pos = np.argsort(near, axis=1)[:, :3]
            a = np.take_along_axis(al, pos, axis=1)
            kk = np.clip(np.searchsorted(IQ4_MIDPOINTS, a), 1, len(IQ4_MIDPOINTS) - 1)
            lo, hi = IQ4_MIDPOINTS[kk - 1], IQ4_MIDPOINTS[kk]
            target = np.where(np.abs(a - lo) < np.abs(a - hi), lo, hi).astype(np.float32)
            iv = np.broadcast_to(inv[:, None], target.shape)
            v = (target.astype(np.float64) / iv).astype(np.float32)
            for _ in range(8):  # walk ulps until the float32 product is exactly the midpoint
                p = iv * v
                up = (p < target) == (iv > 0)
                v = np.where(p == target, v, np.nextafter(v, np.where(up, np.inf, -np.inf).astype(np.float32)))
            ok = np.isfinite(np.take_along_axis(near, pos, axis=1)) & (iv * v == target)
            np.put_along_axis(xs, pos, np.where(ok, v, np.take_along_axis(xs, pos, axis=1)), axis=1)
            inv2 = iq4_final_inverse(qtype, x)
            settled |= inv2 == inv
            inv = inv2
    keep = settled.reshape(n, -1).all(axis=1)
    return x[keep]


def _iq4_grid(g: np.random.Generator) -> np.ndarray:
    """Sub-blocks on a grid of step s = 2^e with max |x| = 127 s: the first trial's scale is s, so
    its products are the grid points themselves, many of them exactly half-way between levels."""
    points = np.concatenate([IQ4_MIDPOINTS, quants.iq4_nl.KVALUES_F, np.arange(-126, 113, dtype=np.float32)])
    out = []
    for e in (0, -9, 7, -30):
        for sign in (1, -1):
            for _ in range(16):
                b = np.where(g.random(32) < 0.5, g.choice(IQ4_MIDPOINTS, 32), g.choice(points, 32))
                b[g.integers(32)] = 127
                out.append(b.astype(np.float32) * np.float32(sign * 2.0 ** e))
    return np.array(out, np.float32).reshape(-1, 256)


def _iq4_special(g: np.random.Generator) -> np.ndarray:
    """Blocks around GROUP_MAX_EPS (1e-15: all-zero below), sub-blocks of equal |scale| and opposite
    signs (IQ4_XS: nearest_int gives +32, clamped to 31), zero and tiny sub-blocks beside large ones
    (a 6-bit scale that rounds to 0), values near the largest the quantizers take (2^24), and
    non-finite ones (written under --allow-nonfinite): a NaN scale never becomes IQ4_XS's max_scale,
    and best_index_int8 maps a NaN to 15."""
    z = g.standard_normal((12, 256)).astype(np.float32)
    for row, eps in zip((0, 1, 2), (np.nextafter(np.float32(1e-15), np.float32(0)), np.float32(1e-15),
                                     np.nextafter(np.float32(1e-15), np.float32(1)))):
        z[row] = g.uniform(-1, 1, 256).astype(np.float32) * eps
        z[row, ::32] = eps
    z[3, 32:64] = -z[3, :32]
    z[4, 64:96] = 0.0
    z[4, 96:128] *= np.float32(1e-3)
    z[5, 128:160] *= np.float32(1e-2)
    z[6] *= np.float32(2.0 ** 24 / 8)
    z[7, ::5] = np.float32(2.0 ** 24)
    z[8] = np.float32(1e-15) * g.uniform(-1, 1, 256).astype(np.float32)
    z[9, :32] = -0.0
    z[10, [3, 70, 200]] = np.nan, np.inf, -np.inf
    z[11, [5, 100]] = np.float32(1e30), np.float32(-3e38)
    return z


@functools.lru_cache(maxsize=None)
def _iq4_boundaries(qtype: T) -> np.ndarray:
    g = rng(f"iq4-boundaries {qtype.name}")
    ties = _iq4_final_ties(qtype, g, 768 if qtype == T.IQ4_NL else 96)
    x = np.concatenate([as_rows(ties[:len(ties) // (COLS // ties.shape[1]) * (COLS // ties.shape[1])]),
                        _iq4_grid(g), _iq4_special(g)])
    x.setflags(write=False)  # cached: shared by every test that asks
    return x


# Inputs aimed at one type's rounding rules, on top of INPUTS (which every type gets).
BOUNDARY: dict[T, Callable[[], np.ndarray]] = {
    T.F32: _f32_boundaries,
    T.F16: _f16_boundaries,
    T.BF16: _bf16_boundaries,
    T.Q8_0: _q8_0_boundaries,
    T.Q4_0: _q4_0_boundaries,
    T.Q4_1: lambda: _min_max_boundaries(15, "q41b"),
    T.Q5_0: _q5_0_boundaries,
    T.Q5_1: lambda: _min_max_boundaries(31, "q51b"),
    T.Q6_K: _q6_k_boundaries,
    T.Q4_K: lambda: _k_boundaries(T.Q4_K),
    T.Q5_K: lambda: _k_boundaries(T.Q5_K),
    T.Q2_K: lambda: _k_boundaries(T.Q2_K),
    T.Q3_K: lambda: _k_boundaries(T.Q3_K),
    T.TQ1_0: _ternary_boundaries,
    T.TQ2_0: _ternary_boundaries,
    T.MXFP4: _mxfp4_boundaries,
    T.IQ4_NL: lambda: _iq4_boundaries(T.IQ4_NL),
    T.IQ4_XS: lambda: _iq4_boundaries(T.IQ4_XS),
}


def _cases():
    for p in implementations():
        qt, backend = p.values
        for name in (*INPUTS, "boundaries"):
            yield pytest.param(qt, backend, name, id=f"{p.id}-{name}")


def make_input(qt: quants.QuantType, name: str) -> np.ndarray:
    if name == "boundaries":
        assert qt.qtype in BOUNDARY, f"add rounding-boundary inputs for {qt.name} to BOUNDARY"
        return BOUNDARY[qt.qtype]()
    return INPUTS[name]()


# --- 1. byte-exact against ggml ---------------------------------------------------------------


@pytest.mark.parametrize("qt, backend, name", list(_cases()))
def test_matches_ggml(qt, backend, name):
    ggml = oracle()
    x = make_input(qt, name)
    assert_same_bytes(quantize(qt, backend, x), ggml.quantize(qt.qtype, x), qt,
                      f"{backend} vs ggml_quantize_chunk on {name}", x)


@np.errstate(all="ignore")
def test_boundary_inputs_hit_their_boundaries():
    """The boundary generators really produce the cases they claim (so the tests above mean it)."""
    x = _q8_0_boundaries().reshape(-1, 32)
    amax = np.abs(x).max(axis=1, keepdims=True)
    d = amax / np.float32(127)
    v = x * (np.float32(1) / d)
    exact = x.astype(np.float64) * (np.float32(1) / d).astype(np.float64)
    on_half = np.abs(v - np.trunc(v)) == np.float32(0.5)
    assert on_half.sum() > 1000 and (on_half & (exact != v)).sum() > 500  # exactly, and by rounding
    x = _q4_0_boundaries().reshape(-1, 32)
    first = np.abs(x).argmax(axis=1)[:, None]
    d = np.take_along_axis(x, first, axis=1) / np.float32(-8)
    w = x * (np.float32(1) / d) + np.float32(8.5)
    exact = x.astype(np.float64) * (np.float32(1) / d).astype(np.float64) + 8.5
    assert ((w == np.round(w)) & (exact != w)).sum() > 50  # the rounding decided the integer


@np.errstate(all="ignore")
def test_boundary_inputs_hit_their_boundaries_q4_1_q5_0_q5_1_q6_k():
    """Same for the legacy min/max types, Q5_0 and Q6_K's round-half-even (nearest_int) ties."""
    from qconvert.quants._common import first_absmax, first_min_max

    for nmax, name in ((15, "q41b"), (31, "q51b")):
        x = _min_max_boundaries(nmax, name).reshape(-1, 32)
        lo, hi = first_min_max(x)
        inv = (np.float32(1) / ((hi - lo) / np.float32(nmax)))[:, None]
        v = (x - lo[:, None]) * inv + np.float32(0.5)
        exact = (x.astype(np.float64) - lo[:, None]) * inv.astype(np.float64) + 0.5
        on = np.isfinite(v) & (v == np.round(v))
        assert on.sum() > 800 and (on & (exact != v)).sum() > 400, nmax
    x = _q5_0_boundaries().reshape(-1, 32)
    inv = (np.float32(1) / (first_absmax(x) / np.float32(-16)))[:, None]
    w = x * inv + np.float32(16.5)
    exact = x.astype(np.float64) * inv.astype(np.float64) + 16.5
    assert ((w == np.round(w)) & (exact != w)).sum() > 500
    x = _q6_k_boundaries().reshape(-1, 256)
    q = quants.q6_k.quantize_blocks(x)
    dk = np.ascontiguousarray(q[:, 208:]).view(np.float16).astype(np.float32) * q[:, 192:208].view(np.int8)
    v = x.reshape(-1, 16, 16) / dk[:, :, None]  # the re-quantization's nearest_int(x / dk)
    assert ((np.abs(v - np.trunc(v)) == np.float32(0.5)) & (dk[:, :, None] != 0)).sum() > 1000
    assert (q[:, 192:208].view(np.int8) == 127).sum() >= 3  # MIN(127, ...) clamps
    sub = x.reshape(-1, 16)
    p = (np.float32(-32) / first_absmax(sub))[:, None] * sub  # make_qx_quants' first try
    assert (np.abs(p - np.trunc(p)) == np.float32(0.5)).sum() > 1000


@np.errstate(all="ignore")
@pytest.mark.parametrize("qtype", list(K_LEVELS), ids=lambda t: t.name)
def test_boundary_inputs_hit_their_boundaries_k_quants(qtype):
    """The K-quant boundary inputs land on nearest_int's halves, in the last pass and the first guess."""
    mod = getattr(quants, qtype.name.lower())
    nmax, sub, lo = K_LEVELS[qtype]
    x = _k_boundaries(qtype)
    d, dm = mod.sub_scales(mod.quantize_blocks(x))
    v = (x.reshape(len(x), -1, sub) + dm[:, :, None]) / d[:, :, None]  # the last pass, as C divides
    assert ((v - np.floor(v) == np.float32(0.5)) & (d[:, :, None] != 0)).sum() > 1000
    sb = x.reshape(-1, sub)
    if lo:  # make_q3_quants: iscale = -nmax / (the first value of largest |x|)
        from qconvert.quants._common import first_absmax
        p = (np.float32(-nmax) / first_absmax(sb))[:, None] * sb
    else:   # make_qkx2_quants: iscale = nmax / (max - min(min, 0))
        low = np.minimum(sb.min(axis=1), np.float32(0))[:, None]
        p = (np.float32(nmax) / (sb.max(axis=1)[:, None] - low)) * (sb - low)
    assert (np.isfinite(p) & (p - np.floor(p) == np.float32(0.5))).sum() > 1000


@np.errstate(all="ignore")
def test_boundary_inputs_hit_their_boundaries_tq_mxfp4():
    """TQ: x*id lands on +-0.5 exactly and by rounding, and 1/d overflows; MXFP4: log2f rounds amax up
    into the next binade, e wraps below 2^-125, and weights sit on the midpoints between levels."""
    x = _ternary_boundaries()
    amax = np.abs(x).max(axis=1, keepdims=True)
    inv = np.float32(1) / amax
    v = x * inv
    exact = x.astype(np.float64) * inv.astype(np.float64)
    on_half = np.abs(v) == np.float32(0.5)
    assert on_half.sum() > 1000 and (on_half & (exact != v)).sum() > 100
    assert np.isinf(inv).sum() >= 3 and (np.isfinite(inv) & (amax < 3e-39)).sum() >= 1
    x = _mxfp4_boundaries().reshape(-1, 32)
    amax = np.abs(x).max(axis=1)
    lg = np.floor(np.log2(amax.astype(np.float64)).astype(np.float32))
    assert (lg != np.floor(np.log2(amax.astype(np.float64)))).sum() > 20  # log2f rounded up to 2^k
    assert ((amax > 0) & (lg < -125)).sum() > 10                          # e wraps modulo 256
    e = quants.mxfp4.quantize_blocks(x)[:, 0]
    t = np.abs(x) / quants.mxfp4.e8m0_to_fp32_half(e)[:, None]
    assert np.isin(t, np.array([0.5, 1.5, 2.5, 3.5, 5, 7, 10], np.float32)).sum() > 80  # exact ties


# Types whose implementations follow ggml into blocks holding NaN or inf too (what --allow-nonfinite
# writes); the others only promise finite inputs.
NONFINITE_EXACT = (T.TQ1_0, T.TQ2_0, T.MXFP4)


@pytest.mark.parametrize("qt, backend", [p for p in implementations() if p.values[0].qtype in NONFINITE_EXACT])
def test_nonfinite_blocks_match_ggml(qt, backend):
    g = rng(f"nonfinite {qt.name}")
    x = as_rows(np.array(_nonfinite_blocks(g, qt.block_size), np.float32))
    with np.errstate(all="ignore"):
        got = quantize(qt, backend, x)
    assert_same_bytes(got, oracle().quantize(qt.qtype, x), qt, f"{backend} vs ggml_quantize_chunk on NaN/inf", x)


@pytest.mark.parametrize("qtype", [T.IQ4_NL, T.IQ4_XS], ids=lambda t: t.name)
def test_boundary_inputs_hit_their_boundaries_iq4(qtype):
    """The IQ4 boundary inputs put weights exactly half-way between two levels, in the last pass
    (best_index_int8's tie: the upper level) and in the scale search's first trial (x / (max/127))."""
    from qconvert.quants._common import first_absmax
    x = _iq4_boundaries(qtype)
    last = iq4_final_inverse(qtype, x)[:, None] * x.reshape(-1, 32)
    assert np.isin(last, IQ4_MIDPOINTS).sum() > 500
    sub = x.reshape(-1, 32)
    first = (np.float32(1) / (-first_absmax(sub) / np.float32(-127)))[:, None] * sub
    assert np.isin(first, IQ4_MIDPOINTS).sum() > 1000


# --- 2. equal to gguf-py ----------------------------------------------------------------------

# Inputs where gguf-py itself disagrees with ggml (its bug, not ours): (type, input) -> reason.
GGUF_PY_DIFFERS = {
    (T.Q4_0, "zero_blocks"): "gguf-py takes max = x[0] = -0.0 for an all -0.0 block, ggml keeps +0.0",
    (T.Q5_0, "zero_blocks"): "gguf-py takes max = x[0] = -0.0 for an all -0.0 block, ggml keeps +0.0",
    (T.Q4_1, "boundaries"): "gguf-py's min of a -0.0, +0.0, ... block is +0.0; ggml keeps the first, -0.0",
    (T.Q5_1, "boundaries"): "gguf-py's min of a -0.0, +0.0, ... block is +0.0; ggml keeps the first, -0.0",
    (T.F16, "boundaries"): "gguf-py's astype(float16) keeps NaN payloads, ggml writes sign | 0x7E00",
}


def gguf_py_quantizes(qtype: T) -> bool:
    """gguf-py decodes every type but encodes only some (none of the K-quants)."""
    try:
        gguf.quants.quantize(np.zeros((1, 256), np.float32), qtype)
        return True
    except NotImplementedError:
        return False


# Only the types gguf-py can encode; the K-quants are checked against ggml and decoded by gguf-py.
@pytest.mark.parametrize("qt, backend, name", [c for c in _cases() if gguf_py_quantizes(c.values[0].qtype)])
def test_matches_gguf_py(qt, backend, name):
    x = make_input(qt, name)
    with np.errstate(all="ignore"):
        want = gguf.quants.quantize(x, qt.qtype)
    want = np.ascontiguousarray(want).view(np.uint8).reshape(x.shape[0], -1)
    got = quantize(qt, backend, x)
    if (qt.qtype, name) in GGUF_PY_DIFFERS:
        # ggml is the reference (checked above); here we only confirm gguf-py still differs in
        # the documented way, so this entry is removed the day gguf-py changes.
        assert not np.array_equal(got, want), f"gguf-py now agrees: drop {GGUF_PY_DIFFERS[qt.qtype, name]!r}"
        return
    assert_same_bytes(got, want, qt, f"{backend} vs gguf.quants.quantize on {name}", x)


# --- 3. decodes with gguf-py, within the type's error bound -----------------------------------


def _fp16_error(d: np.ndarray) -> np.ndarray:  # |d - fp16(d)|: half an fp16 ulp, relative or subnormal
    return np.abs(d) * 2.0 ** -11 + 2.0 ** -25


def _q8_0_bound(x: np.ndarray) -> np.ndarray:
    d = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 127
    return 0.5 * d + 127 * _fp16_error(d) + d * 1e-5


def _q4_0_bound(x: np.ndarray) -> np.ndarray:
    d = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 8
    return d + 8 * _fp16_error(d) + d * 1e-5  # the side opposite the max is clamped at +7 d: error d


def _q5_0_bound(x: np.ndarray) -> np.ndarray:
    d = np.abs(x).max(axis=1, keepdims=True).astype(np.float64) / 16
    return d + 16 * _fp16_error(d) + d * 1e-5  # as Q4_0: the side opposite the max clamps at +15 d


def _min_max_bound(nmax: int) -> Callable[[np.ndarray], np.ndarray]:
    """Q4_1 / Q5_1: half a step d = (max - min)/nmax, plus fp16(d) times the level and fp16(m)."""
    def bound(x: np.ndarray) -> np.ndarray:
        lo = x.min(axis=1, keepdims=True).astype(np.float64)
        d = (x.max(axis=1, keepdims=True) - lo) / nmax
        return 0.5 * d + nmax * _fp16_error(d) + _fp16_error(lo) + d * 1e-5 + np.abs(lo) * 1e-6
    return bound


def _q6_k_bound(x: np.ndarray) -> np.ndarray:
    """The sub-block holding the super-block's max |x| = B steps by ~B/32; the side opposite its max
    clamps at +31 and the int8 scale may miss by ~1%: error < 1.5 B/31. Smaller sub-blocks step in
    multiples of d ~ B/(31*128) (fp16: up to 4096 of its rounding errors) and err far less."""
    b = np.abs(x).max(axis=1, keepdims=True).astype(np.float64)
    return 1.5 * b / 31 + 4096 * _fp16_error(b / (31 * 128))


def _k_bound(nmax: int, scale_max: int, symmetric: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """K-quants: per super-block, with R its range including 0 (Q3_K: max |x|), a step is about R/nmax.
    Half a step of rounding plus up to a step of clamping where a sub-block's 6-bit (Q2_K: 4-bit)
    scale rounds down: 1.5 R/nmax. Then fp16: d and dmin carry their rounding error (absolute 2^-25
    once subnormal) times sc*q + m <= scale_max*(nmax + 1); twice that covers the clamping a badly
    rounded subnormal d causes (tiny blocks, where d may even round to 0 and keep only -dmin*m)."""
    def bound(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        if symmetric:
            r = np.abs(x).max(axis=1, keepdims=True)
        else:
            r = np.maximum(x.max(axis=1, keepdims=True), 0) - np.minimum(x.min(axis=1, keepdims=True), 0)
        return 1.5 * r / nmax + 2 * scale_max * (nmax + 1) * _fp16_error(r / nmax / scale_max)
    return bound


def _ternary_bound(x: np.ndarray) -> np.ndarray:
    """TQ1_0 / TQ2_0: levels -d, 0, d with d = max |x|: half a step, plus fp16(d)'s error."""
    d = np.abs(x).max(axis=1, keepdims=True).astype(np.float64)
    return 0.5 * d + _fp16_error(d) + d * 1e-6


def _mxfp4_bound(x: np.ndarray) -> np.ndarray:
    """MXFP4: d = 2^(floor(log2 amax) - 3), levels 0..12 d at most 2 d apart (8 d to 12 d), and above
    12 d the top level: max(2 d, amax - 12 d). Plus 2^-124: below 2^-125 ggml's e wraps modulo 256 and
    the block decodes as zeros (a huge d), an error of |x| there."""
    a = np.abs(x).max(axis=1, keepdims=True).astype(np.float64)
    with np.errstate(divide="ignore"):
        d = np.where(a > 0, 2.0 ** (np.floor(np.log2(np.where(a > 0, a, 1))) - 3), 0)
    return np.maximum(2 * d, a - 12 * d) * (1 + 1e-6) + 2.0 ** -124


def _iq4_bound(sub_scales: int) -> Callable[[np.ndarray], np.ndarray]:
    """IQ4_NL / IQ4_XS, per (super-)block with B = max |x|: the scale is about B/127 (the search
    tries B/120 .. B/134 and refits); inside the levels an error is at most half the widest gap
    (89 to 113: 12 steps), beyond them the side opposite the max clamps at 113 of 127 steps (14,
    0.11 B); IQ4_XS's 6-bit sub-block scales add half a step of d = B/(127*32) per level. 0.15 B
    holds them (the shared inputs reach 0.098 B). fp16: d carries its rounding error (absolute
    2^-25 once subnormal) times level * scale, at most 127 * sub_scales (IQ4_XS: 32), which also
    covers a d that rounds to 0."""
    def bound(x: np.ndarray) -> np.ndarray:
        b = np.abs(x.astype(np.float64)).max(axis=1, keepdims=True)
        return 0.15 * b + 2 * 127 * sub_scales * _fp16_error(b / (127 * sub_scales))
    return bound


# Per-element max |x - dequantize(quantize(x))| for x: f32[n, block_size]. Required for every type.
ERROR_BOUND: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.F32: lambda x: np.zeros_like(x, np.float64),
    T.F16: lambda x: _fp16_error(x.astype(np.float64)),
    T.BF16: lambda x: np.abs(x).astype(np.float64) * 2.0 ** -8 + 2.0 ** -134,
    T.Q8_0: _q8_0_bound,
    T.Q4_0: _q4_0_bound,
    T.Q4_1: _min_max_bound(15),
    T.Q5_0: _q5_0_bound,
    T.Q5_1: _min_max_bound(31),
    T.Q6_K: _q6_k_bound,
    T.Q4_K: _k_bound(15, 63),
    T.Q5_K: _k_bound(31, 63),
    T.Q2_K: _k_bound(3, 15),
    T.Q3_K: _k_bound(4, 32, symmetric=True),
    T.TQ1_0: _ternary_bound,
    T.TQ2_0: _ternary_bound,
    T.MXFP4: _mxfp4_bound,
    T.IQ4_NL: _iq4_bound(1),
    T.IQ4_XS: _iq4_bound(32),
}


@pytest.mark.parametrize("name", RANDOM + ("denormals", "one_huge", "zero_blocks", "equal_magnitude"))
@pytest.mark.parametrize("qt, backend", implementations())
def test_roundtrip_within_bound(qt, backend, name):
    assert qt.qtype in ERROR_BOUND, f"add {qt.name}'s error bound to ERROR_BOUND"
    x = INPUTS[name]()
    q = quantize(qt, backend, x)
    y = gguf.quants.dequantize(q, qt.qtype).reshape(x.shape)
    ours = qt.dequantize_blocks(q.reshape(-1, qt.type_size)).reshape(x.shape)
    np.testing.assert_array_equal(ours, y, err_msg=f"{qt.name}: our dequantize_blocks != gguf-py's")
    blocks = x.reshape(-1, qt.block_size)
    err = np.abs(y.reshape(blocks.shape).astype(np.float64) - blocks)
    bound = np.broadcast_to(ERROR_BOUND[qt.qtype](blocks), blocks.shape)
    over = np.argwhere(err > bound)
    assert len(over) == 0, (f"{qt.name} {backend} on {name}: {len(over)} weights beyond the bound; first "
                            f"block {over[0][0]}: x={blocks[over[0][0]].tolist()} "
                            f"y={y.reshape(blocks.shape)[over[0][0]].tolist()}")


# --- 4. golden vectors ------------------------------------------------------------------------


@pytest.mark.parametrize("qt, backend", implementations())
def test_golden_vectors(qt, backend):
    path = FIXTURES / f"{qt.name}.npz"
    assert path.exists(), f"no golden vectors for {qt.name}: run python scripts/make_quant_fixtures.py"
    with np.load(path) as f:
        x, want = f["x"], f["q"]
    assert_same_bytes(quantize(qt, backend, x), want, qt, f"{backend} vs {path.name}", x)


# --- 5. with an importance matrix (ggml's quantize_row_<type>_impl) ---------------------------
#
# ggml_quantize_chunk takes the _ref path when imatrix is NULL and the _impl path otherwise, for the
# types whose registry entry says imatrix="weighted": their quantize_blocks take quant_weights (an
# imatrix row, f32[cols]; the blocks are whole rows) and get these checks. The imatrix is random and
# positive, as llama-imatrix's are. "ignored" types (ggml calls _ref regardless) take none.

WEIGHTED = [qt for qt in quants.REGISTRY.values() if qt.imatrix == "weighted"]


def takes_imatrix(fn: Callable) -> bool:
    try:
        return "quant_weights" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _wide_rows():  # several blocks (and Q6_K super-blocks) per row: imatrix offsets and sigma2 per row
    return rng("wide rows").standard_t(4, (6, 4 * COLS)).astype(np.float32)


def random_imatrix(name: str, cols: int) -> np.ndarray:
    return rng(f"imatrix {name}").uniform(0.01, 10.0, cols).astype(np.float32)


def _imatrix_cases():
    for p in implementations():
        qt, backend = p.values
        if qt.imatrix == "weighted":
            for name in (*INPUTS, "boundaries", "wide_rows"):
                yield pytest.param(qt, backend, name, id=f"{p.id}-{name}")


def quantize_imatrix(qt: quants.QuantType, backend: str, x: np.ndarray, imatrix: np.ndarray) -> np.ndarray:
    blocks = np.ascontiguousarray(x).reshape(-1, qt.block_size)
    return block_fn(qt, backend)(blocks, quant_weights=imatrix).reshape(x.shape[0], -1)


@pytest.mark.parametrize("qt, backend, name", list(_imatrix_cases()))
def test_imatrix_matches_ggml(qt, backend, name):
    ggml = oracle()
    x = _wide_rows() if name == "wide_rows" else make_input(qt, name)
    imatrix = random_imatrix(name, x.shape[1])
    with np.errstate(all="ignore"):
        want = ggml.quantize(qt.qtype, x, imatrix)
        got = quantize_imatrix(qt, backend, x, imatrix)
    assert_same_bytes(got, want, qt, f"{backend} with an imatrix vs ggml_quantize_chunk on {name}", x)


@pytest.mark.parametrize("qt", WEIGHTED, ids=lambda qt: qt.name)
def test_imatrix_of_ones_is_not_the_plain_path(qt):
    """ggml's _impl differs from its _ref even with all-ones weights (other weighting, other search):
    an imatrix of ones must not be treated as "no imatrix"."""
    x = _normal()
    ones = np.ones(x.shape[1], np.float32)
    with_ones = quantize_imatrix(qt, "reference", x, ones)
    assert_same_bytes(with_ones, oracle().quantize(qt.qtype, x, ones), qt, "imatrix of ones vs ggml", x)
    assert not np.array_equal(with_ones, quantize(qt, "reference", x))
    bad = np.ones(x.shape[1] - 1, np.float32)  # not whole blocks
    for backend in ("reference", "compiled") if qt.kernel else ("reference",):
        with pytest.raises(ValueError, match="quant_weights of length"):
            quantize_imatrix(qt, backend, x, bad)


@pytest.mark.parametrize("qt", list(quants.REGISTRY.values()), ids=lambda qt: qt.name)
def test_imatrix_field_matches_the_code(qt):
    """The registry's imatrix field is what the implementations do: "weighted" references take
    quant_weights, the others do not, and their kernels refuse them (TypeError, as the reference)."""
    assert takes_imatrix(qt.quantize_blocks_ref) == (qt.imatrix == "weighted"), qt.name
    if qt.kernel is not None and qt.imatrix != "weighted":
        blocks = _normal()[:1].reshape(-1, qt.block_size)
        with pytest.raises(TypeError, match=f"{qt.name} takes no quant_weights"):
            block_fn(qt, "compiled")(blocks, quant_weights=np.ones(COLS, np.float32))


@pytest.mark.parametrize("qt", list(quants.REGISTRY.values()), ids=lambda qt: qt.name)
def test_quantize_rows_with_imatrix_is_ggml(qt):
    """The public path (quants.quantize_rows through _base, this run's backend) with an imatrix is
    ggml_quantize_chunk with that imatrix, for every type: the weighted _impl bytes where ggml has
    them, and for the "ignored" types (Q8_0, F16, BF16, F32) the unweighted bytes, as ggml's."""
    ggml = oracle()
    for x in (_wide_rows(), _student_t()):
        w = random_imatrix(qt.name, x.shape[1])
        if qt.imatrix == "missing":  # ggml would weigh these; we refuse rather than write other bytes
            with pytest.raises(UnsupportedError, match="with an importance matrix is not supported"):
                quants.quantize_rows(qt.qtype, x, w)
            continue
        got = quants.quantize_rows(qt.qtype, x, w)
        assert_same_bytes(got, ggml.quantize(qt.qtype, x, w), qt, "quantize_rows(x, imatrix) vs ggml", x)
        if qt.imatrix == "ignored":
            assert_same_bytes(got, ggml.quantize(qt.qtype, x), qt, "quantize_rows(x, imatrix) vs no imatrix", x)
        else:
            assert not np.array_equal(got, ggml.quantize(qt.qtype, x)), f"{qt.name}: the imatrix changed nothing"


# --- the public API ---------------------------------------------------------------------------


def test_supported_and_registry():
    assert quants.SUPPORTED[:5] == (T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0)
    assert quants.SUPPORTED == tuple(quants.REGISTRY)
    for qtype, qt in quants.REGISTRY.items():
        assert (qt.qtype, qt.name) == (qtype, qtype.name)
        assert (qt.block_size, qt.type_size) == gguf.GGML_QUANT_SIZES[qtype]
        expected = qt.quantize_blocks_ref if quants.BACKEND == "reference" or qt.kernel is None \
            else block_fn(qt, "compiled")
        assert qt.quantize_blocks is expected


@pytest.mark.parametrize("qt", list(quants.REGISTRY.values()), ids=lambda qt: qt.name)
def test_quantize_rows_public(qt):
    x = _normal()[:4]
    got = quants.quantize_rows(qt.name.lower(), x)
    assert got.dtype == np.uint8 and got.shape == (4, quants.row_nbytes(qt.qtype, COLS))
    assert_same_bytes(got, quantize(qt, "reference", x), qt, "quantize_rows vs reference")
    # not C-contiguous: copied once in _base, same bytes
    xt = np.asfortranarray(x)
    assert_same_bytes(quants.quantize_rows(qt.qtype, xt), got, qt, "Fortran-ordered input")
    assert quants.quantize_rows(qt.qtype, np.zeros((0, COLS), np.float32)).shape == (0, got.shape[1])


def test_get_by_name_and_enum():
    assert quants.get("q8_0") is quants.get(T.Q8_0) is quants.get("Q8_0")
    assert quants.get(T.BF16).block_size == 1


def test_row_nbytes():
    assert quants.row_nbytes("Q8_0", 4096) == 4096 // 32 * 34
    assert quants.row_nbytes("Q4_0", 4096) == 4096 // 32 * 18
    assert quants.row_nbytes("F16", 7) == 14
    assert quants.row_nbytes("BF16", 3) == 6
    assert quants.row_nbytes("F32", 5) == 20


def test_bad_cols():
    with pytest.raises(QuantizationError, match="row length 4097 is not a multiple of Q8_0's block size 32"):
        quants.quantize_rows("Q8_0", np.zeros((2, 4097), np.float32))
    with pytest.raises(QuantizationError, match="row length 48 is not a multiple of Q4_0's block size 32"):
        quants.row_nbytes("Q4_0", 48)


@pytest.mark.parametrize("bad", ["Q9_9", "nope", "IQ2_XXS", T.IQ2_XXS, T.Q8_1])
def test_unknown_type_lists_supported(bad):
    with pytest.raises(UnsupportedError) as e:
        quants.get(bad)
    name = bad if isinstance(bad, str) else bad.name
    assert f"quant type {name} is not supported; supported: " in str(e.value)
    assert ", ".join(t.name for t in quants.SUPPORTED) in str(e.value)
    assert "F32, F16, BF16, Q8_0, Q4_0" in str(e.value)


@pytest.mark.parametrize("x", [np.zeros((2, 64), np.float16), np.zeros((2, 64), np.float64),
                               np.zeros((2, 64), np.int32), [[0.0] * 64]], ids=["f16", "f64", "i32", "list"])
def test_non_float32_input(x):
    with pytest.raises(TypeError, match="float32"):
        quants.quantize_rows("Q8_0", x)


def test_not_2d():
    with pytest.raises(TypeError, match="2-D"):
        quants.quantize_rows("Q8_0", np.zeros(64, np.float32))


def test_backend_switch(monkeypatch):
    monkeypatch.setenv("QCONVERT_BACKEND", "reference")
    assert _base.choose_backend() == "reference"
    monkeypatch.setenv("QCONVERT_BACKEND", "Compiled")
    assert _base.choose_backend() == "compiled"
    monkeypatch.delenv("QCONVERT_BACKEND")
    assert _base.choose_backend() == "compiled"
    monkeypatch.setenv("QCONVERT_BACKEND", "fast")
    with pytest.raises(UsageError, match="'fast' is not a backend"):
        _base.choose_backend()
    ref = _base.define(T.Q8_0, quants.q8_0, backend="reference", kernel="q8_0")
    assert ref.quantize_blocks is quants.q8_0.quantize_blocks


def test_missing_kernel_fails_loudly():
    with pytest.raises(ImportError, match=r"pip install -e \."):
        _base.define(T.Q8_0, quants.q8_0, backend="compiled", kernel="no_such_kernel")


@pytest.mark.parametrize("qt", [qt for qt in quants.REGISTRY.values() if qt.kernel],
                         ids=lambda qt: qt.name)
def test_kernel_writes_into_slices(qt):
    """The second entry point, for splitting rows across threads: fills exactly the slice given."""
    kernel = importlib.import_module(f"qconvert._kernels.{qt.kernel}")
    blocks = _student_t().reshape(-1, qt.block_size)
    out = np.full((len(blocks), qt.type_size), 0xAB, np.uint8)
    half = len(blocks) // 2
    kernel.quantize_blocks_into(blocks[half:], out[half:])
    assert (out[:half] == 0xAB).all()
    kernel.quantize_blocks_into(blocks[:half], out[:half])
    assert_same_bytes(out, qt.quantize_blocks_ref(blocks), qt, "quantize_blocks_into")
    with pytest.raises(ValueError, match="wants"):
        kernel.quantize_blocks_into(blocks, out[:half])


# --- 6. real weights (slow) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_weights(smollm2_dir) -> np.ndarray:
    """SmolLM2-135M's matrices of layers 0 and 29, laid out as rows of 2304 (9 super-blocks; its
    own rows are 576 wide, not whole 256-blocks): weights that lie on a Q4_1 grid (the checkpoint is
    rebuilt from a Q4_1 GGUF), so full of equal values and exact ties."""
    from qconvert.reader import Checkpoint

    ckpt = Checkpoint.open(smollm2_dir)
    try:
        parts = [ckpt.load(name).reshape(-1) for name in sorted(ckpt.tensors)
                 if len(ckpt.tensors[name].shape) == 2 and ("layers.0." in name or "layers.29." in name)]
    finally:
        ckpt.close()
    flat = np.concatenate(parts).astype(np.float32)
    return flat[:len(flat) // 2304 * 2304].reshape(-1, 2304)


@pytest.mark.slow
@pytest.mark.parametrize("qt, backend", implementations())
def test_real_weights_match_ggml(qt, backend, real_weights):
    """Real weights, with and (for the weighted types) without an imatrix, against ggml_quantize_chunk."""
    x = real_weights if backend == "compiled" else real_weights[:256]  # the NumPy references are slow
    ggml = oracle()
    assert_same_bytes(quantize(qt, backend, x), ggml.quantize(qt.qtype, x), qt, f"{backend} on SmolLM2 weights")
    if qt.imatrix == "weighted":
        w = random_imatrix("real", x.shape[1])
        assert_same_bytes(quantize_imatrix(qt, backend, x, w), ggml.quantize(qt.qtype, x, w), qt,
                          f"{backend} with an imatrix on SmolLM2 weights")

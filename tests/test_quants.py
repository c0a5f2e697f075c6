"""Every quant type in the registry, both implementations, against ggml byte for byte.

One shared checker parametrized over qconvert.quants.REGISTRY: a new type gets every check here by
adding its registry line (plus an ERROR_BOUND entry, and optionally BOUNDARY cases for its rounding).

    1. bytes == ggml_quantize_chunk (libggml from llama-cpp-python; missing -> FAIL, not skip)
    2. bytes == gguf.quants.quantize, where gguf-py implements the type
    3. gguf.quants.dequantize(our bytes) is within the type's error bound, and equals ours
    4. golden vectors in tests/fixtures/quants/ (written by scripts/make_quant_fixtures.py)
"""

from __future__ import annotations

import importlib
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


# Inputs aimed at one type's rounding rules, on top of INPUTS (which every type gets).
BOUNDARY: dict[T, Callable[[], np.ndarray]] = {
    T.F32: _f32_boundaries,
    T.F16: _f16_boundaries,
    T.BF16: _bf16_boundaries,
    T.Q8_0: _q8_0_boundaries,
    T.Q4_0: _q4_0_boundaries,
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


# --- 2. equal to gguf-py ----------------------------------------------------------------------

# Inputs where gguf-py itself disagrees with ggml (its bug, not ours): (type, input) -> reason.
GGUF_PY_DIFFERS = {
    (T.Q4_0, "zero_blocks"): "gguf-py takes max = x[0] = -0.0 for an all -0.0 block, ggml keeps +0.0",
    (T.F16, "boundaries"): "gguf-py's astype(float16) keeps NaN payloads, ggml writes sign | 0x7E00",
}


@pytest.mark.parametrize("qt, backend, name", list(_cases()))
def test_matches_gguf_py(qt, backend, name):
    x = make_input(qt, name)
    try:
        with np.errstate(all="ignore"):
            want = gguf.quants.quantize(x, qt.qtype)
    except NotImplementedError:
        pytest.skip(f"gguf-py cannot quantize {qt.name}")
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


# Per-element max |x - dequantize(quantize(x))| for x: f32[n, block_size]. Required for every type.
ERROR_BOUND: dict[T, Callable[[np.ndarray], np.ndarray]] = {
    T.F32: lambda x: np.zeros_like(x, np.float64),
    T.F16: lambda x: _fp16_error(x.astype(np.float64)),
    T.BF16: lambda x: np.abs(x).astype(np.float64) * 2.0 ** -8 + 2.0 ** -134,
    T.Q8_0: _q8_0_bound,
    T.Q4_0: _q4_0_bound,
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

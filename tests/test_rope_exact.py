"""Generated tensors are the correctly rounded float32 of their formula (qconvert/exact.py).

llama3's rope_freqs and Phi-3's LongRoPE factors, made through the adapters as a conversion makes
them, on a sweep of configurations (rope theta, factor, low/high frequency factors, original
context, head sizes 64 to 256), against:

- the same formula evaluated by mpmath at 60 digits and rounded to float32's 24 bits: equal,
  every value (0 ulp);
- llama.cpp's converter's formula (conversion/llama.py, LlamaModel.generate_extra_tensors) run
  in float64: within an ulp (float64's own error can move a value across a float32 rounding
  boundary, rarely);
- the converter's own float32 torch arithmetic, as it runs on this machine: the distance is
  reported, and on the released Llama 3 configurations within conftest.GENERATED_ULPS, what the
  equality tests with the converter's files allow.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from conftest import GENERATED_ULPS, report, ulp_distance
from qconvert import exact
from qconvert.arch import for_config

THETAS = (10000.0, 500000.0, 1000000.0, 150000.0, 8000000.0)
FACTORS = (8.0, 32.0, 4.0, 16.0, 2.5)
LOW_HIGH = ((1.0, 4.0), (1.0, 32.0), (0.5, 2.0), (2.0, 8.0), (1.0, 1.5))
ORIGINAL = (8192, 2048, 64, 131072, 4096)
HEAD_DIMS = (64, 80, 96, 128, 256)


def sweep() -> list[tuple[dict, int]]:
    """125 configurations: every head size, theta and original context, with the factor and the
    low/high pair cycling through their values (so each meets every other setting)."""
    out = []
    for k, (head_dim, theta, original) in enumerate(itertools.product(HEAD_DIMS, THETAS, ORIGINAL)):
        low, high = LOW_HIGH[k % len(LOW_HIGH)]
        rope = {"rope_type": "llama3", "rope_theta": theta, "factor": FACTORS[(k // 5) % len(FACTORS)],
                "low_freq_factor": low, "high_freq_factor": high, "original_max_position_embeddings": original}
        out.append((rope, head_dim))
    return out


def ours_llama3(rope: dict, head_dim: int) -> np.ndarray:
    """rope_freqs.weight as a conversion generates it (the adapter of a Llama with this rope)."""
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 2 * head_dim, "num_attention_heads": 2,
              "num_key_value_heads": 2, "head_dim": head_dim, "intermediate_size": 64, "num_hidden_layers": 1,
              "vocab_size": 100, "rope_parameters": rope}
    (freqs,) = [s for s in for_config(config).tensors({}) if s.gguf_name == "rope_freqs.weight"]
    return np.asarray(freqs.generate(), dtype=np.float32)


def mp_to_f32(x: mpmath.mpf) -> np.float32:
    """x rounded to float32's 24 significant bits, to nearest (mpmath's own rounding; the values
    here are normal float32 numbers)."""
    with mpmath.workprec(24):
        r = +x
    return np.float32(float(r))


def mp_llama3(rope: dict, head_dim: int) -> np.ndarray:
    """The llama3 formula in mpmath at 60 digits, each value rounded once to float32."""
    out = []
    with mpmath.workdps(60):
        base, factor = mpmath.mpf(rope["rope_theta"]), mpmath.mpf(rope["factor"])
        low, high = mpmath.mpf(rope["low_freq_factor"]), mpmath.mpf(rope["high_freq_factor"])
        old = mpmath.mpf(rope["original_max_position_embeddings"])
        for i in range(0, head_dim, 2):
            freq = 1 / base ** (mpmath.mpf(i) / head_dim)
            wavelen = 2 * mpmath.pi / freq
            if wavelen < old / high:
                value = mpmath.mpf(1)
            elif wavelen > old / low:
                value = factor
            else:
                smooth = (old / wavelen - low) / (high - low)
                value = 1 / ((1 - smooth) / factor + smooth)
            out.append(mp_to_f32(value))
    return np.array(out, dtype=np.float32)


def converter_llama3(rope: dict, head_dim: int, float_type) -> np.ndarray:
    """The converter's code path (conversion/llama.py) with its float32 torch tensors replaced by
    `float_type` arrays (np.float64: the formula in float64), rounded to float32 at the end as
    its torch.tensor(rope_factors, dtype=torch.float32) does."""
    base = rope["rope_theta"]
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=float_type) / float_type(head_dim)))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float64).astype(np.float32)


def torch_converter_llama3(rope: dict, head_dim: int) -> np.ndarray:
    """The converter's arithmetic as it runs: torch float32 tensors (conversion/llama.py)."""
    import torch

    base = rope["rope_theta"]
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
    old = rope["original_max_position_embeddings"]
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32).numpy()


def test_sweep_covers_every_band():
    """Not vacuous: across the sweep, values of all three bands (1, factor, smoothed between)."""
    kept = scaled = smoothed = 0
    for rope, head_dim in sweep():
        v = ours_llama3(rope, head_dim)
        kept += int((v == 1).sum())
        scaled += int((v == np.float32(rope["factor"])).sum())
        smoothed += int(((v != 1) & (v != np.float32(rope["factor"]))).sum())
    assert min(kept, scaled, smoothed) > 100, (kept, scaled, smoothed)
    report(f"llama3 rope sweep: {len(sweep())} configurations, {kept} values kept, {scaled} scaled, "
           f"{smoothed} smoothed")


def test_llama3_factors_are_correctly_rounded():
    """0 ulp from mpmath's 60-digit evaluation, for every value of every configuration."""
    for rope, head_dim in sweep():
        got, want = ours_llama3(rope, head_dim), mp_llama3(rope, head_dim)
        assert got.shape == (head_dim // 2,)
        bad = np.flatnonzero(ulp_distance(got, want))
        assert bad.size == 0, (rope, head_dim, [(int(i), float(got[i]), float(want[i])) for i in bad])


def test_llama3_factors_against_the_converters_formula_in_float64():
    """The converter's code path in float64, rounded to float32: within one ulp of ours."""
    worst, differ, total = 0, 0, 0
    for rope, head_dim in sweep():
        ulps = ulp_distance(ours_llama3(rope, head_dim), converter_llama3(rope, head_dim, np.float64))
        worst, differ, total = max(worst, int(ulps.max())), differ + int((ulps > 0).sum()), total + ulps.size
    report(f"llama3 rope sweep: the converter's formula in float64 differs in {differ} of {total} values, "
           f"by at most {worst} ulp")
    assert worst <= 1, worst


# Llama 3.1 (8B, 70B, 405B: 128-wide heads) and Llama 3.2 (1B, 3B: 64-wide) as released
RELEASED_LLAMA3 = [
    ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, 128),
    ({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, 64),
]


def test_llama3_factors_against_the_converters_float32_torch():
    """The converter's own float32 arithmetic on this machine, reported: how far it is from the
    correctly rounded values. Its pow's exponent i / head_dim is itself rounded to float32 (exact
    only for power-of-two head sizes) and the smoothed band amplifies the error by up to
    high / (high - low): on this sweep it reaches tens of ulp (80- and 96-wide heads, high/low
    1.5). On the released Llama 3 configurations it stays within what the equality tests with
    the converter's files allow (conftest.GENERATED_ULPS)."""
    worst, where = 0, None
    for rope, head_dim in sweep():
        ulps = int(ulp_distance(ours_llama3(rope, head_dim), torch_converter_llama3(rope, head_dim)).max())
        if ulps > worst:
            worst, where = ulps, (head_dim, rope)
    released = [int(ulp_distance(ours_llama3(r, d), torch_converter_llama3(r, d)).max()) for r, d in RELEASED_LLAMA3]
    report(f"llama3 rope sweep: the converter's torch float32 is at most {worst} ulp from the correctly rounded "
           f"values (head_dim {where[0]}, {where[1]}); on released Llama 3.1/3.2 configurations {released}")
    assert max(released) <= GENERATED_ULPS, released


def longrope_config(long: list[float], short: list[float]) -> dict:
    """A Phi-3 with LongRoPE over 16-wide heads: 8 factors each."""
    return {"architectures": ["Phi3ForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 4, "intermediate_size": 64, "num_hidden_layers": 1, "vocab_size": 100,
            "max_position_embeddings": 4096, "original_max_position_embeddings": 256,
            "rope_scaling": {"type": "longrope", "long_factor": long, "short_factor": short}}


def test_longrope_factors_are_correctly_rounded():
    """LongRoPE's factors are the config's numbers (the float64 json.loads gives), each rounded
    once to float32: equal to the exact rounding of that float64 (qconvert/exact.py and mpmath),
    on random values and on the hard cases, float64s exactly halfway between two float32s (ties
    go to the even one) and one float64 ulp to either side of such a midpoint."""
    rng = np.random.default_rng(13)
    values = list(np.exp(rng.uniform(0, np.log(100.0), 200)))
    midpoints = set()
    for f in np.float32(1.5) + np.arange(8, dtype=np.float32) * np.finfo(np.float32).eps:
        mid = (float(f) + float(np.nextafter(f, np.float32(np.inf)))) / 2  # exact in float64
        midpoints.add(mid)
        values += [mid, math.nextafter(mid, 0.0), math.nextafter(mid, math.inf)]
    ties = 0
    for k in range(0, len(values), 8):
        chunk = (values[k:k + 8] + [1.0] * 8)[:8]
        sources = for_config(longrope_config(chunk, chunk[::-1])).tensors({})
        got = {s.gguf_name: s.generate() for s in sources}
        for name, want_values in (("rope_factors_long.weight", chunk), ("rope_factors_short.weight", chunk[::-1])):
            assert got[name].dtype == np.float32
            for g, v in zip(got[name], want_values):
                assert g == exact.nearest_f32(Fraction(v)) == mp_to_f32(mpmath.mpf(v)), (name, v, g)
                if v in midpoints:
                    ties += 1
                    assert int(g.view(np.uint32)) % 2 == 0, (name, v, g)  # ties to even
    assert ties == 2 * len(midpoints)


@pytest.mark.parametrize("value", [Fraction(1, 3), Fraction(2**24 + 1, 2**24), Fraction(10**30 + 7, 10**29)])
def test_nearest_f32_is_the_closest_float32(value: Fraction):
    """exact.nearest_f32 against a brute force over the float32 neighbourhood."""
    got = exact.nearest_f32(value)
    f = np.float32(float(value))
    around = [f]
    for _ in range(3):
        around += [np.nextafter(around[0], np.float32(-np.inf)), np.nextafter(around[-1], np.float32(np.inf))]
    best = min(around, key=lambda c: (abs(Fraction(float(c)) - value), int(c.view(np.uint32)) % 2))
    assert got == best

"""Generated tensors as the correctly rounded float32 of their exact formula.

A few GGUF tensors are computed from config.json rather than read (llama3's rope_freqs, see
arch/llama.py). llama.cpp's converter computes them in float32 with torch, whose `pow` depends
on the CPU's vector unit (a SIMD library or libm); NumPy's float32 power differs again, in 7 of
a 32-frequency rope_freqs. Bit identity with those is not a well-defined target, so qconvert
computes each value once more precisely than float32 can tell: in decimal arithmetic of
PRECISION significant digits, from the config's values as JSON gives them (float64, exactly),
and rounds the result once to the nearest float32 (ties to even). Every machine gets the same
bytes, and no other float32 is closer to the formula's value. The tests compare with the
converter's files within a few ulp for these tensors only (tests/test_rope_exact.py checks the
rounding against mpmath on a sweep of configurations).
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import numpy as np

# 50 digits: the rounding to float32's 24 bits (about 7 digits) is decided by the first ~10, and
# exp/ln of Decimal are correctly rounded at the context's precision, so 40 digits of margin
# remain for the few operations of a formula.
PRECISION = 50
# pi to 64 digits (the decimal module has no pi of its own)
PI = Decimal("3.141592653589793238462643383279502884197169399375105820974944592")


def context():
    """`with exact.context():` decimal arithmetic at PRECISION digits, rounding to nearest."""
    return localcontext(prec=PRECISION)


def nearest_f32(value: Decimal | Fraction | float) -> np.float32:
    """The float32 nearest to `value` (a finite number in float32's range), ties to even.

    float() of a Decimal or Fraction is the nearest float64, and that float64 to float32 would
    round twice (wrong when the float64 lands on a float32 midpoint): the result is instead the
    one of that float32 and its two neighbours closest to the exact value.

    >>> float(nearest_f32(Decimal(1) / 3)) == float(np.float32(1 / 3))
    True
    >>> nearest_f32(Fraction(1) + Fraction(1, 2**24))  # halfway between 1 and the next float32: to even
    np.float32(1.0)
    """
    exact = Fraction(value)
    guess = np.float32(float(exact))
    assert np.isfinite(guess), value
    best, best_err = guess, None
    for candidate in (np.nextafter(guess, np.float32(-np.inf)), guess, np.nextafter(guess, np.float32(np.inf))):
        err = abs(Fraction(float(candidate)) - exact)
        even = int(candidate.view(np.uint32)) % 2 == 0
        if best_err is None or err < best_err or (err == best_err and even):
            best, best_err = candidate, err
    return np.float32(best)

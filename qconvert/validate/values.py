"""Values that llama.cpp cannot run: NaN, Inf, and numbers too large for the type written.

Checked chunk by chunk inside the converting pass (convert.py), on the float32 rows about to be
written and on the bytes they became, so a bad weight costs no second read of the checkpoint:

- the input rows: any NaN or Inf, and any magnitude the type cannot take (`QuantType.overflow`:
  65520 for F16, where it would round to inf; 2**24 for the block types, see quants/_base.py);
- the output blocks' fp16 fields (`QuantType.fp16_fields`: scales and mins), which turn inf when a
  block's values are too large for them (Q8_0's d = amax/127 overflows from about 8.3e6);
- the output blocks' E8M0 exponents (`QuantType.e8m0_fields`, MXFP4), which ggml's rounding sets to
  0xFF, E8M0's NaN, for a block whose largest |x| lies in [2^-126, 2^-125).

This is llama-quantize's row validation (`ggml_validate_row_data` in ggml/src/ggml-quants.c,
which refuses a row whose fp16 scales or float values are NaN or Inf), applied to every type,
and stricter than llama.cpp's converter, which writes such values. `--allow-nonfinite` skips it.

The common case costs one pass over the chunk, an integer max of the magnitude bits
(kernels/magnitude.pyx), and a look at one or two fp16 fields per block; only a chunk that fails
them is searched row by row for the culprit.
"""

from __future__ import annotations

import numpy as np

from ..quants import BACKEND, QuantType
from ..quants._base import load_kernel
from ..reader import decode_to_f32


def max_magnitude_bits_ref(bits: np.ndarray) -> int:
    """The largest `bits & 0x7FFFFFFF` of a uint32 view of float32 values (0 if empty): the bits
    of the largest magnitude, every NaN above +Inf above every finite value. The spec of
    kernels/magnitude.pyx.

    >>> max_magnitude_bits_ref(np.array([1.0, -2.0], np.float32).view(np.uint32)) == 0x40000000
    True
    """
    return int((bits & np.uint32(0x7FFFFFFF)).max(initial=0))


def widen_bf16_ref(raw: np.ndarray, out: np.ndarray) -> int:
    """out[:raw.size] = raw << 16 (bfloat16 bits to float32 bits, exact, as reader.decode_to_f32),
    returning max_magnitude_bits of the result: the decode and the check in one pass. The spec of
    kernels/magnitude.pyx's widen_bf16."""
    dst = out[:raw.size]
    np.left_shift(raw, 16, out=dst, dtype=np.uint32)
    return max_magnitude_bits_ref(dst)


if BACKEND == "compiled":
    _kernel = load_kernel("magnitude")
    max_magnitude_bits, widen_bf16 = _kernel.max_magnitude_bits, _kernel.widen_bf16
else:
    max_magnitude_bits, widen_bf16 = max_magnitude_bits_ref, widen_bf16_ref


def decode_and_measure(raw: np.ndarray, dtype: str, out: np.ndarray) -> tuple[np.ndarray, int]:
    """Stored values (raw, [rows, cols] of a checkpoint dtype) widened to float32 in `out` (a
    float32 buffer of at least raw.size values) as reader.decode_to_f32 widens them, and the bits
    of their largest magnitude (max_magnitude_bits). bfloat16, the usual checkpoint dtype, is
    measured as it is widened; the others take a pass of their own."""
    if dtype == "BF16":
        flat = np.ascontiguousarray(raw).reshape(-1)
        bits = widen_bf16(flat, out.view(np.uint32))
        return out[:raw.size].reshape(raw.shape), bits
    x = decode_to_f32(raw, dtype, out)
    return x, max_magnitude_bits(x.reshape(-1).view(np.uint32))


def limit_bits(qt: QuantType) -> int:
    """The float32 bits of the smallest magnitude `qt` refuses (+Inf's when only NaN/Inf are)."""
    limit = np.float32(qt.overflow) if qt.overflow < np.finfo(np.float32).max else np.float32(np.inf)
    return int(limit.view(np.uint32))


def first_bad_row(x: np.ndarray, qt: QuantType, out: np.ndarray, magnitude: int | None = None
                  ) -> tuple[int, str] | None:
    """The first row of x (f32[rows, cols], C-contiguous) that cannot be written as `qt` (out,
    u8[rows, row bytes], is what it became), with what is wrong with it; None when every row is
    sound. `magnitude`, if the caller has it (decode_and_measure), is x's max_magnitude_bits.

    >>> from qconvert import quants
    >>> x = np.ones((3, 32), np.float32); x[1, 5] = np.nan
    >>> first_bad_row(x, quants.get("Q8_0"), quants.quantize_rows("Q8_0", x))
    (1, 'NaN')
    >>> x = np.full((2, 32), 1e7, np.float32)
    >>> first_bad_row(x, quants.get("Q8_0"), quants.quantize_rows("Q8_0", x))
    (0, "1e+07, too large for Q8_0's fp16 block scales")
    """
    limit = limit_bits(qt)
    if magnitude is None:
        magnitude = max_magnitude_bits(x.reshape(-1).view(np.uint32))
    if magnitude >= limit:
        return _bad_input_row(x, limit, qt)
    if qt.fp16_fields and out.size:
        blocks = out.reshape(-1, qt.type_size)
        for offset in qt.fp16_fields:
            # an fp16 is Inf or NaN when its exponent bits, 0x7C of its high (little-endian: second)
            # byte, are all set
            bad = (blocks[:, offset + 1] & np.uint8(0x7C)) == np.uint8(0x7C)
            if bad.any():
                row = int(np.argmax(bad)) // (blocks.shape[0] // x.shape[0])
                big = float(np.abs(x[row]).max())
                return row, f"{big:.3g}, too large for {qt.name}'s fp16 block scales"
    if qt.e8m0_fields and out.size:
        blocks = out.reshape(-1, qt.type_size)
        for offset in qt.e8m0_fields:
            bad = blocks[:, offset] == np.uint8(0xFF)
            if bad.any():
                per_row = blocks.shape[0] // x.shape[0]
                b = int(np.argmax(bad))
                block = x.reshape(-1, qt.block_size)[b]
                return b // per_row, (f"a block whose largest |x| is {float(np.abs(block).max()):.3g}, "
                                      f"which ggml gives {qt.name}'s E8M0 NaN scale (0xFF)")
    return None


def _bad_input_row(x: np.ndarray, limit: int, qt: QuantType) -> tuple[int, str]:
    magnitude = x.view(np.uint32) & np.uint32(0x7FFFFFFF)
    row = int(np.argmax((magnitude >= limit).any(axis=1)))
    v = x[row][magnitude[row] >= limit][0]
    if np.isnan(v):
        return row, "NaN"
    if np.isinf(v):
        return row, "+Inf" if v > 0 else "-Inf"
    return row, f"{float(v):.7g}, beyond what {qt.name} can hold (|x| < {qt.overflow:.7g})"

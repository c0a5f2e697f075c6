"""Values that llama.cpp cannot run: NaN, Inf, and numbers too large for the type written.

Checked chunk by chunk inside the converting pass (convert.py), on the float32 rows about to be
written and on the bytes they became, so a bad weight costs no second read of the checkpoint:

- the input rows: any NaN or Inf, and any magnitude the type cannot take (`QuantType.overflow`:
  65520 for F16, where it would round to inf; 2**24 for the block types, see quants/_base.py);
- the output blocks' fp16 fields (`QuantType.fp16_fields`: scales and mins), which turn inf when a
  block's values are too large for them (Q8_0's d = amax/127 overflows from about 8.3e6).

This is llama-quantize's row validation (`ggml_validate_row_data` in ggml/src/ggml-quants.c,
which refuses a row whose fp16 scales or float values are NaN or Inf), applied to every type,
and stricter than llama.cpp's converter, which writes such values. `--allow-nonfinite` skips it.

The common case costs two vectorized reductions over the chunk (min and max, both of which
propagate NaN) and a look at one or two fp16 fields per block; only a chunk that fails them is
searched row by row for the culprit.
"""

from __future__ import annotations

import numpy as np

from ..quants import QuantType


def first_bad_row(x: np.ndarray, qt: QuantType, out: np.ndarray) -> tuple[int, str] | None:
    """The first row of x (f32[rows, cols]) that cannot be written as `qt` (out, u8[rows, row
    bytes], is what it became), with what is wrong with it; None when every row is sound.

    >>> from qconvert import quants
    >>> x = np.ones((3, 32), np.float32); x[1, 5] = np.nan
    >>> first_bad_row(x, quants.get("Q8_0"), quants.quantize_rows("Q8_0", x))
    (1, 'NaN')
    >>> x = np.full((2, 32), 1e7, np.float32)
    >>> first_bad_row(x, quants.get("Q8_0"), quants.quantize_rows("Q8_0", x))
    (0, "1e+07, too large for Q8_0's fp16 block scales")
    """
    limit = np.float32(qt.overflow) if qt.overflow < np.finfo(np.float32).max else np.float32(np.inf)
    lo, hi = x.min(initial=np.inf), x.max(initial=-np.inf)  # NaN propagates through both
    if not (-limit < lo and hi < limit):
        return _bad_input_row(x, limit, qt)
    if qt.fp16_fields and out.size:
        blocks = out.reshape(-1, qt.type_size)
        for offset in qt.fp16_fields:
            field = np.ascontiguousarray(blocks[:, offset:offset + 2]).view("<f2").reshape(-1)
            if not np.isfinite(field).all():
                block = int(np.argmin(np.isfinite(field)))
                row = block // (blocks.shape[0] // x.shape[0])
                big = float(np.abs(x[row]).max())
                return row, f"{big:.3g}, too large for {qt.name}'s fp16 block scales"
    return None


def _bad_input_row(x: np.ndarray, limit: np.float32, qt: QuantType) -> tuple[int, str]:
    with np.errstate(invalid="ignore"):
        bad_rows = ~(np.abs(x) < limit).all(axis=1)
    row = int(np.argmax(bad_rows))
    values = x[row][~(np.abs(x[row]) < limit)]
    v = values[0]
    if np.isnan(v):
        return row, "NaN"
    if np.isinf(v):
        return row, "+Inf" if v > 0 else "-Inf"
    return row, f"{float(v):.7g}, beyond what {qt.name} can hold (|x| < {qt.overflow:.7g})"

"""GGML quantization: one module per type, a NumPy reference (the spec) and a compiled kernel (the speed).

    >>> import numpy as np
    >>> from qconvert import quants
    >>> quants.quantize_rows("Q8_0", np.ones((2, 64), np.float32)).shape
    (2, 68)

Backend: the compiled kernels in qconvert._kernels (built by `pip install -e .`); set
QCONVERT_BACKEND=reference to run the NumPy references instead. A missing build raises ImportError.

Adding a type: write <type>.py (quantize_blocks, dequantize_blocks, layout comment), optionally
kernels/<type>.pyx (its block arithmetic; kernels/entry.pxi adds the Python entry points), and add
one line to REGISTRY below (with imatrix="weighted" if ggml's quantizer uses an importance matrix,
"required" if ggml refuses to quantize it without one). Everything else about a type (its name, as
every parser reads it, its block and bits, whether it is a float type, the lists of supported
types in messages and help) is derived from that line and gguf's GGML_QUANT_SIZES.
tests/test_quants.py then checks it against ggml; give it an ERROR_BOUND (and BOUNDARY inputs)
there, and write its golden vectors with `python scripts/make_quant_fixtures.py`.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from ..errors import UnsupportedError
from . import floats, q4_0, q8_0
from . import q4_1, q5_0, q5_1, q6_k
from . import q2_k, q3_k, q4_k, q5_k
from . import iq4_nl, iq4_xs, mxfp4, tq1_0, tq2_0
from ._base import QuantType, block_size, choose_backend, define, is_float, type_named
from ._base import quantize_rows as _quantize_rows

BACKEND: str = choose_backend()

REGISTRY: dict[T, QuantType] = {qt.qtype: qt for qt in (
    define(T.F32, floats.F32, backend=BACKEND),
    define(T.F16, floats.F16, backend=BACKEND, kernel="f16"),
    define(T.BF16, floats.BF16, backend=BACKEND, kernel="bf16"),
    define(T.Q8_0, q8_0, backend=BACKEND, kernel="q8_0"),
    define(T.Q4_0, q4_0, backend=BACKEND, kernel="q4_0", imatrix="weighted"),
    define(T.Q4_1, q4_1, backend=BACKEND, kernel="q4_1", imatrix="weighted"),
    define(T.Q5_0, q5_0, backend=BACKEND, kernel="q5_0", imatrix="weighted"),
    define(T.Q5_1, q5_1, backend=BACKEND, kernel="q5_1", imatrix="weighted"),
    define(T.Q6_K, q6_k, backend=BACKEND, kernel="q6_k", imatrix="weighted"),
    define(T.Q4_K, q4_k, backend=BACKEND, kernel="q4_k", imatrix="weighted"),
    define(T.Q5_K, q5_k, backend=BACKEND, kernel="q5_k", imatrix="weighted"),
    define(T.Q2_K, q2_k, backend=BACKEND, kernel="q2_k", imatrix="weighted"),
    define(T.Q3_K, q3_k, backend=BACKEND, kernel="q3_k", imatrix="weighted"),
    define(T.TQ1_0, tq1_0, backend=BACKEND, kernel="tq1_0"),
    define(T.TQ2_0, tq2_0, backend=BACKEND, kernel="tq2_0"),
    define(T.MXFP4, mxfp4, backend=BACKEND, kernel="mxfp4"),
    define(T.IQ4_NL, iq4_nl, backend=BACKEND, kernel="iq4_nl", imatrix="weighted"),
    define(T.IQ4_XS, iq4_xs, backend=BACKEND, kernel="iq4_xs", imatrix="weighted"),
)}

SUPPORTED: tuple[T, ...] = tuple(REGISTRY)


def get(qtype: T | str) -> QuantType:
    """The registry entry for a GGMLQuantizationType or its name (case-insensitive)."""
    key = type_named(qtype) if isinstance(qtype, str) else qtype
    qt = REGISTRY.get(key) if key is not None else None
    if qt is None:
        name = qtype if isinstance(qtype, str) else getattr(qtype, "name", repr(qtype))
        raise UnsupportedError(
            f"quant type {name} is not supported; supported: {', '.join(t.name for t in SUPPORTED)}")
    return qt


def quantize_rows(qtype: T | str, x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[rows, cols] (C-contiguous) -> u8[rows, row_nbytes(qtype, cols)], the GGUF tensor bytes;
    `quant_weights` (f32[cols]) is the rows' importance matrix, used where ggml uses one."""
    return _quantize_rows(get(qtype), x, quant_weights)


def row_nbytes(qtype: T | str, cols: int) -> int:
    """Bytes one row of `cols` weights takes in `qtype`; QuantizationError if cols is not whole blocks."""
    return get(qtype).row_nbytes(cols)


__all__ = ["BACKEND", "REGISTRY", "SUPPORTED", "QuantType", "block_size", "get", "is_float", "quantize_rows",
           "row_nbytes", "type_named"]

"""The layer every caller goes through: the QuantType record, the backend choice, the row checks.

Kernels and references only ever see C-contiguous float32 blocks f32[n, block_size]; every shape,
dtype and contiguity check happens here, once per call.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from ..errors import QuantizationError, UnsupportedError, UsageError

BACKEND_ENV = "QCONVERT_BACKEND"
BACKENDS = ("compiled", "reference")

BlockFn = Callable[[np.ndarray], np.ndarray]
IMATRIX_USES = ("weighted", "required", "ignored", "missing")  # QuantType.imatrix

# The largest input magnitude the block quantizers take (2**24): their float32 searches sum
# products of up to four weights (weighted squared errors), which stay far inside float32's range
# below it, while far above it (1e30 in Q6_K) a block can silently come out as zeros. No block
# type's fp16 scales can hold much more anyway (Q8_0's d = amax/127 overflows from 8.3e6).
BLOCK_INPUT_LIMIT = float(2**24)


def type_named(text: str) -> GGMLQuantizationType | None:
    """A GGML type by its name, case-insensitive, as llama-quantize's parse_ggml_type reads it: the one
    parser of type names (options, the registry, manifests go through it). None if there is none.

    >>> type_named(" q4_k "), type_named("Q4_K_M")
    (<GGMLQuantizationType.Q4_K: 12>, None)
    """
    return GGMLQuantizationType.__members__.get(text.strip().upper())


def block_size(qtype: GGMLQuantizationType) -> int:
    """Weights per block, from gguf's table (ggml's type traits)."""
    return GGML_QUANT_SIZES[qtype][0]


def is_float(qtype: GGMLQuantizationType) -> bool:
    """An unquantized type: ggml's one-element blocks (F32, F16, BF16; the integer types too, which no
    recipe uses)."""
    return block_size(qtype) == 1


def choose_backend() -> str:
    """'compiled' unless QCONVERT_BACKEND=reference asks for the NumPy references."""
    value = os.environ.get(BACKEND_ENV, "").strip().lower() or "compiled"
    if value not in BACKENDS:
        raise UsageError(f"{BACKEND_ENV}={value!r} is not a backend; use one of: {', '.join(BACKENDS)}")
    return value


def load_kernel(name: str) -> ModuleType:
    """Import qconvert._kernels.<name>, or fail loudly: a broken build never falls back silently."""
    module = f"qconvert._kernels.{name}"
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"compiled kernel {module} cannot be imported ({e}). Build the kernels with "
            f"`pip install -e .` (or `python setup.py build_ext --inplace` in a checkout; needs a C "
            f"compiler), or set {BACKEND_ENV}=reference to run the slow NumPy references."
        ) from e


@dataclass(frozen=True)
class QuantType:
    """One GGML type: its sizes (from gguf.GGML_QUANT_SIZES) and its block functions.

    quantize_blocks      f32[n, block_size] -> u8[n, type_size], the backend's choice
    quantize_blocks_ref  the NumPy reference, the spec the kernel must match byte for byte
    dequantize_blocks    u8[n, type_size] -> f32[n, block_size], NumPy
    kernel               module name under qconvert._kernels, or None when NumPy is the only code
    """

    qtype: GGMLQuantizationType
    name: str
    block_size: int
    type_size: int
    quantize_blocks: BlockFn
    quantize_blocks_ref: BlockFn
    dequantize_blocks: BlockFn
    kernel: str | None = None
    # ggml's quantize_<type> with an importance matrix: "weighted" (its _impl path, which this
    # type's quantize_blocks takes as quant_weights), "required" (weighted, and ggml refuses to
    # quantize without one: ggml_quantize_requires_imatrix), "ignored" (ggml uses _ref regardless),
    # or "missing" (ggml has an _impl path qconvert does not reproduce yet).
    imatrix: str = "ignored"
    # What ggml_validate_row_data checks of the written bytes (validate/values.py): the byte
    # offsets of a block's fp16 fields (scales, mins), which an input too large for them turns
    # into inf; and, for the float types, the magnitude from which a value itself becomes inf.
    fp16_fields: tuple[int, ...] = ()
    overflow: float = float("inf")
    # the byte offsets of a block's E8M0 scale exponents (MXFP4), whose 0xFF (NaN) ggml refuses
    e8m0_fields: tuple[int, ...] = ()

    @property
    def bits(self) -> float:
        """Bits per weight: 4.5 for Q4_0, 16 for F16."""
        return self.type_size * 8 / self.block_size

    @property
    def is_float(self) -> bool:
        return is_float(self.qtype)

    def row_nbytes(self, cols: int) -> int:
        self.check_cols(cols)
        return cols // self.block_size * self.type_size

    def check_cols(self, cols: int) -> None:
        if cols % self.block_size:
            raise QuantizationError(
                f"row length {cols} is not a multiple of {self.name}'s block size {self.block_size}")


def define(qtype: GGMLQuantizationType, spec: Any, *, backend: str, kernel: str | None = None,
           imatrix: str = "ignored") -> QuantType:
    """A registry entry from a reference module (or namespace) and the name of its compiled kernel."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    quantize = spec.quantize_blocks
    if kernel is not None and backend == "compiled":
        module = load_kernel(kernel)
        # C needs its sizes as compile-time constants; make sure they are gguf's.
        assert (module.block_size, module.type_size) == (block_size, type_size), (kernel, qtype.name)
        quantize = module.quantize_blocks
    assert imatrix in IMATRIX_USES, imatrix
    return QuantType(qtype, qtype.name, block_size, type_size, quantize, spec.quantize_blocks,
                     spec.dequantize_blocks, kernel, imatrix, tuple(getattr(spec, "FP16_FIELDS", ())),
                     float(getattr(spec, "OVERFLOW", BLOCK_INPUT_LIMIT if hasattr(spec, "FP16_FIELDS")
                                   else float("inf"))), tuple(getattr(spec, "E8M0_FIELDS", ())))


def quantize_rows(qt: QuantType, x: np.ndarray, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """f32[rows, cols] -> u8[rows, row_nbytes]: the GGUF bytes of the tensor, row by row.

    `quant_weights` (f32[cols]) is the importance matrix of these rows; the types whose ggml
    quantizer uses one get ggml's weighted (_impl) bytes, the others ignore it as ggml does.
    For F32 the result is a view of x (after a copy only if x was not C-contiguous).
    """
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"quantize_rows wants a float32 ndarray, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 2:
        raise TypeError(f"quantize_rows wants a 2-D [rows, cols] array, got shape {x.shape}")
    rows, cols = x.shape
    nbytes = qt.row_nbytes(cols)
    blocks = np.ascontiguousarray(x).reshape(-1, qt.block_size)
    if quant_weights is None and qt.imatrix == "required":
        raise UnsupportedError(f"{qt.name} needs an importance matrix (ggml refuses to quantize it without one); "
                               "give --imatrix or choose another type")
    if quant_weights is None or qt.imatrix == "ignored":
        out = qt.quantize_blocks(blocks)
    elif qt.imatrix == "missing":
        raise UnsupportedError(f"{qt.name} with an importance matrix is not supported yet; quantize "
                               f"without --imatrix or choose another type for these tensors")
    else:
        qw = np.ascontiguousarray(quant_weights, dtype=np.float32).reshape(-1)
        if qw.size != cols:
            raise QuantizationError(f"importance matrix has {qw.size} weights for rows of {cols}")
        out = qt.quantize_blocks(blocks, qw)
    assert out.dtype == np.uint8 and out.shape == (blocks.shape[0], qt.type_size), (qt.name, out.shape)
    return out.reshape(rows, nbytes)

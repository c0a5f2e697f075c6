"""The judge: ggml's own quantizer, `ggml_quantize_chunk`, called through ctypes.

The library is the libggml shipped inside the installed `llama_cpp` package (the `test` extra:
`pip install -e .[test]`), found without importing llama_cpp:

    1. $QCONVERT_LIBGGML, if set: the path of a libggml-base / libggml shared library;
    2. else <llama_cpp package dir>/lib/ then <llama_cpp package dir>/, first match of
       libggml-base.{so,dylib,dll} then libggml.{so,dylib,dll} that exports ggml_quantize_chunk.

    size_t ggml_quantize_chunk(enum ggml_type type, const float * src, void * dst, int64_t start,
                               int64_t nrows, int64_t n_per_row, const float * imatrix);

ggml aborts the process on a failed GGML_ASSERT, so every argument is checked here first.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

LIB_ENV = "QCONVERT_LIBGGML"
LIB_NAMES = [f"{stem}{ext}" for stem in ("libggml-base", "ggml-base", "libggml", "ggml")
             for ext in (".so", ".dylib", ".dll")]
SYMBOL = "ggml_quantize_chunk"
INSTALL_HINT = "install the test extra: pip install -e '.[test]' (it brings llama-cpp-python and its libggml)"


class OracleUnavailable(RuntimeError):
    """libggml could not be found or loaded."""


def candidate_paths() -> list[Path]:
    if os.environ.get(LIB_ENV):
        return [Path(os.environ[LIB_ENV])]
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise OracleUnavailable(f"the llama_cpp package is not installed; {INSTALL_HINT}")
    pkg = Path(next(iter(spec.submodule_search_locations)))
    return [d / name for d in (pkg / "lib", pkg) for name in LIB_NAMES if (d / name).exists()]


class GGML:
    """ggml_quantize_chunk from one shared library."""

    def __init__(self, path: Path):
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        fn = self.lib.ggml_quantize_chunk
        fn.restype = ctypes.c_size_t
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self._quantize_chunk = fn
        row_size = self.lib.ggml_row_size
        row_size.restype = ctypes.c_size_t
        row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        self._row_size = row_size

    def row_size(self, qtype: GGMLQuantizationType, cols: int) -> int:
        return int(self._row_size(int(qtype), cols))

    def quantize(self, qtype: GGMLQuantizationType, x: np.ndarray,
                 imatrix: np.ndarray | None = None) -> np.ndarray:
        """f32[rows, cols] -> u8[rows, row bytes], exactly what llama.cpp's quantizer writes."""
        qtype = GGMLQuantizationType(qtype)
        x = np.ascontiguousarray(x, dtype=np.float32)
        assert x.ndim == 2, x.shape
        rows, cols = x.shape
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        assert cols % block_size == 0, (qtype.name, cols)  # ggml would abort
        nbytes = cols // block_size * type_size
        # Our enum must be ggml's enum: a mismatch here would make every comparison meaningless.
        assert self.row_size(qtype, cols) == nbytes, (qtype.name, self.row_size(qtype, cols), nbytes)
        imatrix_ptr = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            assert imatrix.shape == (cols,), (imatrix.shape, cols)
            imatrix_ptr = imatrix.ctypes.data
        out = np.zeros((rows, nbytes), dtype=np.uint8)
        if rows:
            written = self._quantize_chunk(int(qtype), x.ctypes.data, out.ctypes.data, 0, rows, cols,
                                           imatrix_ptr)
            assert written == out.nbytes, (written, out.nbytes)
        return out


@lru_cache(maxsize=1)
def load() -> GGML:
    """The oracle, or OracleUnavailable saying what to install."""
    tried = []
    for path in candidate_paths():
        try:
            lib = GGML(path)
        except (OSError, AttributeError) as e:  # not loadable, or does not export the symbol
            tried.append(f"{path}: {e}")
            continue
        return lib
    raise OracleUnavailable(
        f"no libggml exporting {SYMBOL} found (tried: {tried or 'nothing'}); {INSTALL_HINT}")

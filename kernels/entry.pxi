# The Python side of every kernel module, written once: `include "entry.pxi"` (a textual include)
# right after a kernels/<type>.pyx's cimports. The module then defines only its arithmetic:
#
#   cdef enum:
#       QK        weights per block    } checked against gguf.GGML_QUANT_SIZES when the registry
#       NBYTES    bytes per block      } loads the module (qconvert/quants/_base.py)
#       GROUP     blocks per _blocks call at most (> 1: a kernel works on blocks side by side, e.g.
#                 their divisions packed, or one block per SIMD lane)
#       IMATRIX   what ggml's quantize_<type> does with an importance matrix: IGNORED (it calls
#                 quantize_row_<type>_ref regardless), WEIGHTED (quantize_row_<type>_impl weighs each
#                 block by its imatrix entries) or WEIGHTED_SIGMA2 (the same, and also wants sigma2,
#                 the row's sum of x^2 / its length: the legacy types' _impl)
#
#   cdef void _blocks(const float* x, uint8_t* y, int m, const float* qw, float sigma2) noexcept nogil
#       m consecutive blocks (1 <= m <= GROUP) from x (m * QK floats) into y (m * NBYTES bytes).
#       qw == NULL: ggml's _ref path. Else its _impl path: the m blocks lie in one row, and block b
#       of them is weighted by qw[QK * b : QK * (b + 1)]; sigma2 is that row's (WEIGHTED_SIGMA2 only:
#       the other kernels name the parameter `unused`).
#
# Here: quantize_blocks / quantize_blocks_into (the module's API), their shape and imatrix checks,
# and ggml_quantize_chunk's loop over the blocks, run without the GIL. The smallest user: q8_0.pyx.

from libc.stdint cimport uint8_t

import numpy as np

from ggml_common cimport row_sigma2

cdef enum:
    IGNORED = 0
    WEIGHTED = 1
    WEIGHTED_SIGMA2 = 2

_NAME = __name__.rpartition(".")[2].upper()     # qconvert._kernels.q4_0 -> Q4_0


cdef void _run(const float* x, uint8_t* y, Py_ssize_t n, const float* qw, Py_ssize_t per_row) noexcept nogil:
    # ggml_quantize_chunk: without an imatrix, quantize_row_<type>_ref over all n blocks at once (so
    # a GROUP may span rows); with one, quantize_row_<type>_impl row by row, each with the same qw.
    cdef Py_ssize_t r = 0, i
    cdef int m
    cdef float sigma2 = 0
    if qw == NULL:
        per_row = n
    while r < n:                        # (a Cython range() with a variable step is a Python loop)
        if qw != NULL and <int>IMATRIX == WEIGHTED_SIGMA2:
            sigma2 = row_sigma2(x + QK * r, per_row * QK)
        i = 0
        while i < per_row:
            m = <int>(per_row - i if per_row - i < GROUP else GROUP)
            _blocks(x + QK * (r + i), y + NBYTES * (r + i), m, qw + QK * i if qw != NULL else NULL, sigma2)
            i += GROUP
        r += per_row

def quantize_blocks_into(const float[:, ::1] x, uint8_t[:, ::1] out, quant_weights=None):
    """Quantize f32[n, block_size] into a caller's u8[n, type_size] (e.g. a slice of a bigger
    buffer), byte-exact with the NumPy reference qconvert.quants.<type>.quantize_blocks; GIL released.

    quant_weights: an imatrix row f32[cols] (cols a multiple of block_size); x is then whole rows of
    cols. Only for the types whose ggml quantizer uses one (the others raise TypeError, as their
    references, which take no quant_weights, do).
    """
    cdef const float[::1] qw
    cdef const float* qwp = NULL
    cdef Py_ssize_t n = x.shape[0], per_row = 1
    if x.shape[1] != QK or out.shape[0] != n or out.shape[1] != NBYTES:
        raise ValueError(f"{_NAME} kernel wants f32[n, {QK}] -> u8[n, {NBYTES}], "
                         f"got ({x.shape[0]}, {x.shape[1]}) -> ({out.shape[0]}, {out.shape[1]})")
    if quant_weights is not None:
        if <int>IMATRIX == IGNORED:
            raise TypeError(f"{_NAME} takes no quant_weights: ggml's quantize_{_NAME.lower()} ignores an imatrix")
        qw = np.ascontiguousarray(quant_weights, dtype=np.float32).ravel()
        if qw.shape[0] == 0 or qw.shape[0] % QK or n % (qw.shape[0] // QK):
            raise ValueError(f"quant_weights of length {qw.shape[0]} does not describe rows of whole "
                             f"{QK}-blocks covering {n} blocks")
        qwp = &qw[0]
        per_row = qw.shape[0] // QK
    if n:
        with nogil:
            _run(&x[0, 0], &out[0, 0], n, qwp, per_row)


def quantize_blocks(const float[:, ::1] x, quant_weights=None):
    """f32[n, block_size] -> u8[n, type_size]: quantize_blocks_into a new array."""
    out = np.empty((x.shape[0], NBYTES), dtype=np.uint8)
    quantize_blocks_into(x, out, quant_weights)
    return out


# Checked against gguf.GGML_QUANT_SIZES when the registry loads this module (qconvert/quants/_base.py).
block_size = QK
type_size = NBYTES

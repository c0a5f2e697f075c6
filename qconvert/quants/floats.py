"""F32, F16, BF16: the unquantized types, as blocks of one element. NumPy references (the spec);
F16 and BF16 also have compiled kernels (kernels/f16.pyx, kernels/bf16.pyx), F32 is a view.

Byte layout: one little-endian value per weight, no header.

    F32   the float32 bits unchanged (ggml_quantize_chunk memcpy's them).
    F16   IEEE half, round to nearest even: numpy's float32 -> float16 cast, as GGML_FP32_TO_FP16;
          |x| >= 65520 becomes inf. A NaN becomes sign | 0x7E00 as in ggml (numpy would keep payload
          bits, and can even turn a quiet NaN into a signalling one).
    BF16  ggml_compute_fp32_to_bf16 in ggml/src/ggml-impl.h: the top 16 bits of the float32, rounded
          to nearest even (u + 0x7FFF + ((u >> 16) & 1)) >> 16; a NaN keeps its sign and top payload
          bits and is forced quiet ((u >> 16) | 0x40). Subnormals are kept, not flushed.
"""

from __future__ import annotations

import numpy as np


class F32:
    @staticmethod
    def quantize_blocks(x: np.ndarray) -> np.ndarray:
        """f32[n, 1] -> u8[n, 4]; a view of x, no copy."""
        return x.view(np.uint8)

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view(np.float32)


class F16:
    # the smallest magnitude that rounds to inf: values.py refuses it (or a NaN/Inf) in the input
    OVERFLOW = 65520.0

    @staticmethod
    def quantize_blocks(x: np.ndarray) -> np.ndarray:
        """f32[n, 1] -> u8[n, 2], round to nearest even."""
        with np.errstate(over="ignore"):  # |x| >= 65520 becomes inf, as in ggml
            h = x.astype(np.float16).view(np.uint16)
        nan = np.isnan(x)
        if nan.any():
            sign = (x[nan].view(np.uint32) >> np.uint32(16)).astype(np.uint16) & np.uint16(0x8000)
            h[nan] = sign | np.uint16(0x7E00)
        return h.view(np.uint8)

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view(np.float16).astype(np.float32)


class BF16:
    # the smallest magnitude that rounds to inf: 0x7F7F8000, halfway to inf, rounds to even (up)
    OVERFLOW = float(np.array(0x7F7F8000, np.uint32).view(np.float32))

    @staticmethod
    def quantize_blocks(x: np.ndarray) -> np.ndarray:
        """f32[n, 1] -> u8[n, 2], ggml_compute_fp32_to_bf16."""
        u = x.view(np.uint32)
        r = u >> np.uint32(16)                       # in place from here: one temporary
        r &= np.uint32(1)
        r += np.uint32(0x7FFF)
        r += u  # no wrap: non-NaN u <= 0xFF800000 (-inf); NaNs (which may wrap) are rewritten below
        r >>= np.uint32(16)
        nan = np.isnan(x)
        if nan.any():
            r[nan] = (u[nan] >> np.uint32(16)) | np.uint32(0x40)
        return r.astype(np.uint16).view(np.uint8)

    @staticmethod
    def dequantize_blocks(blocks: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(blocks).view(np.uint16).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32)

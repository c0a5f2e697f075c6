"""The ground floor: the data types that cross layers, and nothing else.

    reader   -> TensorInfo    where a checkpoint tensor lives
             -> BlockScales   an FP8 checkpoint's scale blocks (validate/quantization.py reads them)
    arch     -> SourceTensor  one GGUF tensor to write, and how its values come from the checkpoint
             -> Metadata      the GGUF keys of the model's settings
             -> ModelFacts    what llama-quantize's type rules read about the model
    planner  -> PlanRow       one tensor's type in an output, and why

Every other module imports these from here, downward; this module imports nothing of qconvert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import gguf
import numpy as np


@dataclass(frozen=True)
class BlockScales:
    """How an FP8 checkpoint's weights are scaled: rows and columns of one scale's block."""

    rows: int
    cols: int

    def grid(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The scale tensor's shape for a weight of `shape` ([out, in]): one per block, the
        blocks at the right and bottom edges cut short.

        >>> BlockScales(128, 128).grid((320, 256))
        (3, 2)
        """
        return math.ceil(shape[0] / self.rows), math.ceil(shape[1] / self.cols)


@dataclass(frozen=True)
class TensorInfo:
    """Where one checkpoint tensor lives: its shard, absolute byte offset, dtype and shape
    (reader.py builds them from the safetensors headers). A float8 weight carries its block
    scales (`scale`, a tensor of `blocks.grid(shape)`), which the checkpoint then does not list on
    their own (validate/quantization.py)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int
    scale: TensorInfo | None = None
    blocks: BlockScales | None = None

    @property
    def n_rows(self) -> int:
        """Rows of the tensor seen as 2-D [prod(shape[:-1]), shape[-1]]."""
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1


@dataclass(frozen=True)
class SourceTensor:
    """One GGUF tensor to write. `src` names the checkpoint tensor it is read from; generated
    tensors (rope_freqs) have `src=None` and a `generate` function instead.

    How the stored values become the written ones, each optional:

    - `row_order` reorders (or selects) the first axis: row i of the GGUF tensor is row
      `row_order[i]` of the checkpoint's (seen as 2-D). An index map rather than a function, so
      the pipeline can read any range of output rows straight from the file.
    - `stack` lists several checkpoint tensors of one shape stacked on a new first axis (the
      experts of a MoE layer: llama.cpp wants one 3-D tensor per layer); `src` is the first.
    - `transpose`: the checkpoint stores the 2-D matrix transposed (GPT-2's Conv1D layers keep
      [in, out]). Such a tensor is read and decoded whole, outside the pipeline's chunk bound
      (convert.py CHUNK_ELEMENTS), so for it memory is bounded by the largest tensor (times the
      worker threads) rather than by the chunk size: fine for GPT-2, whose largest Conv1D
      weight, GPT-2 XL's mlp.c_fc (1600 x 6400), is 41 MB in float32.
    - `transform` changes the float32 values in place after decoding (Gemma's norm offset)."""

    gguf_name: str
    shape: tuple[int, ...]  # NumPy (row-major) shape of what is written; GGUF reverses it
    src: str | None
    src_dtype: str
    row_order: np.ndarray | None = field(default=None, compare=False)
    generate: Callable[[], np.ndarray] | None = None
    stack: tuple[str, ...] = ()
    transpose: bool = False
    transform: Callable[[np.ndarray], None] | None = field(default=None, compare=False)

    @property
    def n_dims(self) -> int:
        return len(self.shape)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def sources(self) -> tuple[str, ...]:
        """Every checkpoint tensor this one is read from."""
        return self.stack or ((self.src,) if self.src is not None else ())


@dataclass(frozen=True)
class ModelFacts:
    """What llama-quantize's type rules look at besides the tensor (see planner.py)."""

    n_layer: int = 0
    n_gqa: int = 1            # attention heads per KV head
    n_expert: int = 0
    is_70b: bool = False      # llama.cpp's LLM_TYPE_70B


@dataclass
class Metadata:
    """GGUF key/values in insertion order, with their GGUF value types."""

    items: dict[str, tuple[Any, gguf.GGUFValueType]] = field(default_factory=dict)

    def add(self, key: str, value: Any, vtype: gguf.GGUFValueType | None = None) -> None:
        if vtype is None:
            vtype = (gguf.GGUFValueType.BOOL if isinstance(value, bool)
                     else gguf.GGUFValueType.UINT32 if isinstance(value, int)
                     else gguf.GGUFValueType.FLOAT32 if isinstance(value, float)
                     else gguf.GGUFValueType.STRING)
        self.items[key] = (value, vtype)

    def write_to(self, writer: gguf.GGUFWriter) -> None:
        for key, (value, vtype) in self.items.items():
            writer.add_key_value(key, value, vtype)


@dataclass(frozen=True)
class PlanRow:
    """One tensor of an output as the planner decided it (planner.plan)."""

    src: str | None          # checkpoint tensor name (None for generated tensors)
    gguf_name: str
    shape: tuple[int, ...]   # NumPy shape; GGUF stores it reversed
    src_dtype: str
    qtype: gguf.GGMLQuantizationType
    reason: str
    wanted: gguf.GGMLQuantizationType | None = None  # the rule's type when the rows did not fit it (a fallback)

    @property
    def fell_back(self) -> bool:
        return self.wanted is not None

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return self.n_elements // block * size

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

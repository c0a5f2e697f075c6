"""What every architecture adapter shares: hparams from config.json, tensor names, row orders.

An adapter turns a checkpoint into (a) GGUF metadata keys for its hyper-parameters and (b) a
list of `SourceTensor`s: which GGUF tensor comes from which checkpoint tensor, with its rows in
which order. It decides nothing about types (that is the planner) and does no I/O of its own.

Configs in the wild come from transformers 4 (`rope_theta`, `rope_scaling`, `torch_dtype`) and
transformers 5 (`rope_parameters`, `dtype`); `Hparams` reads both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import gguf
import numpy as np

from ..errors import CheckpointError, UnsupportedError
from ..reader import DTYPES, TensorInfo

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
      [in, out]); such a tensor is read whole.
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
class Hparams:
    """config.json, flattened (`text_config` merged in) and readable by several key spellings."""

    raw: dict

    def get(self, *keys: str, default: Any = None) -> Any:
        for k in keys:
            if k in self.raw and self.raw[k] is not None:
                return self.raw[k]
        return default

    def require(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise CheckpointError(f"config.json has no {' / '.join(keys)}")
        return value

    def rope(self) -> dict:
        """Rope settings in one dict whatever the config style: rope_type, rope_theta, factor...

        transformers 5 writes `rope_parameters` (with rope_theta inside, possibly per attention
        kind); transformers 4 writes top-level `rope_theta` and an optional `rope_scaling`."""
        params = dict(self.get("rope_parameters", "rope_scaling", default={}) or {})
        if "full_attention" in params:
            params = dict(params["full_attention"])
        if "rope_theta" not in params and (theta := self.get("rope_theta")) is not None:
            params["rope_theta"] = theta
        if "rope_type" not in params and "type" in params:
            params["rope_type"] = params["type"]
        if ("original_max_position_embeddings" not in params
                and (ctx := self.get("original_max_position_embeddings")) is not None):
            params["original_max_position_embeddings"] = ctx
        return params


def flatten_config(config: dict) -> dict:
    """Multimodal wrappers nest the language model's settings under text_config."""
    if isinstance(config.get("text_config"), dict):
        return {**config, **config["text_config"]}
    return dict(config)


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


class Architecture:
    """Base adapter. Subclasses set `gguf_arch` and `hf_architectures` and override only what
    differs (see llama.py, the base of most decoder-only models)."""

    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    hf_architectures: ClassVar[tuple[str, ...]] = ()
    # Checkpoint tensors that llama.cpp has no use for (recomputed at load time).
    skip_patterns: ClassVar[tuple[str, ...]] = (r"\.rotary_emb\.inv_freq$", r"\.attention\.masked_bias$",
                                                r"\.attention\.bias$")
    # Whether llama.cpp converts the family with LlamaModel.set_vocab, which adds tokenizer_config's
    # add_prefix_space and a no-BOS rule for 49152-token vocabularies (see tokenizer.py).
    llama_set_vocab: ClassVar[bool] = False
    # tokenizer.ggml.add_space_prefix that the family's set_vocab writes for a SentencePiece vocab
    # (Gemma's: False), or None to leave it to the tokenizer files.
    spm_add_space_prefix: ClassVar[bool | None] = None
    # The checkpoint folder, for adapters that read files besides config.json (BERT reads
    # sentence-transformers' modules.json for the pooling type); set by `arch.for_config`.
    model_dir: Path | None = None

    def __init__(self, config: dict):
        self.hp = Hparams(flatten_config(config))
        self.n_blocks = int(self.hp.require("num_hidden_layers", "n_layer", "num_layers"))
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_blocks)

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def key(self, template: str) -> str:
        return template.format(arch=self.arch_name)

    # -- metadata -------------------------------------------------------------------------------

    def metadata(self) -> Metadata:
        raise NotImplementedError

    # -- tensors --------------------------------------------------------------------------------

    def map_name(self, hf_name: str) -> str:
        mapped = self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UnsupportedError(
                f"tensor {hf_name} has no GGUF name for architecture {self.arch_name}; "
                "is the checkpoint a variant qconvert does not know?")
        return mapped

    def model_facts(self) -> ModelFacts:
        return ModelFacts(n_layer=self.n_blocks)

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """How the tensor's first axis is reordered for llama.cpp, or None to keep it."""
        return None

    def extra_tensors(self) -> list[SourceTensor]:
        """Tensors that the checkpoint does not have but llama.cpp needs (e.g. rope_freqs)."""
        return []

    def sources_for(self, name: str, info: TensorInfo) -> list[SourceTensor]:
        """The GGUF tensors that the checkpoint tensor `name` gives, written where it is read:
        usually one; none while it waits for the rest of a stack (MoE experts, see moe.py)."""
        return [SourceTensor(self.map_name(name), info.shape, name, info.dtype,
                             row_order=self.row_order_for(name, info.shape))]

    def tensors(self, infos: dict[str, TensorInfo]) -> list[SourceTensor]:
        """GGUF tensors in write order (the reader yields shards in name order, names sorted)."""
        out = list(self.extra_tensors())
        for name, info in infos.items():
            if any(re.search(p, name) for p in self.skip_patterns):
                continue
            if info.dtype not in DTYPES:  # integer buffers are fine only where skipped above
                raise UnsupportedError(
                    f"tensor {name} has dtype {info.dtype}; supported dtypes are {', '.join(DTYPES)}")
            out.extend(self.sources_for(name, info))
        seen: set[str] = set()
        for t in out:
            if t.gguf_name in seen:
                raise CheckpointError(f"two checkpoint tensors map to {t.gguf_name}")
            seen.add(t.gguf_name)
        # Generated tensors first, then shards in name order and tensors sorted by name within
        # each: the order llama.cpp's converter writes (blk.10 before blk.2).
        return out

"""Architecture registry: config.json's `architectures[0]` -> adapter class. One line a family.

The adapters form a tree rooted at base.TextModel (see base.py); CONTRIBUTING.md says how to add one."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError, UnsupportedError
from .base import TextModel
from .bert import Bert
from .gemma import Gemma2, Gemma3
from .gpt2 import GPT2
from .llama import Llama, Mistral
from .moe import Mixtral
from .olmo2 import Olmo2
from .phi3 import Phi3
from .qwen import Qwen2, Qwen3, Qwen3Moe
from .smollm3 import SmolLM3

ADAPTERS: tuple[type[TextModel], ...] = (
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Mixtral,
    Qwen3Moe,
    Phi3,
    GPT2,
    Bert,
    Gemma2, Gemma3,
    SmolLM3,
    Olmo2,
)

REGISTRY: dict[str, type[TextModel]] = {hf: cls for cls in ADAPTERS for hf in cls.hf_architectures}


def for_config(config: dict, model_dir: Path | None = None) -> TextModel:
    """The adapter for a checkpoint's config, or an error that lists what is supported.
    `model_dir`, the checkpoint folder, is for adapters that read other files of it."""
    names = config.get("architectures") or []
    if not names:
        raise CheckpointError("config.json has no 'architectures' entry; cannot tell the model family")
    if not isinstance(names, list) or not isinstance(names[0], str):
        raise CheckpointError(f"config.json: architectures is {str(names)[:40]}; expected a list of class names")
    cls = REGISTRY.get(names[0])
    if cls is None:
        raise UnsupportedError(
            f"architecture {names[0]} is not supported; supported: {', '.join(sorted(REGISTRY))}")
    return cls(config, model_dir)


__all__ = ["ADAPTERS", "REGISTRY", "TextModel", "for_config"]

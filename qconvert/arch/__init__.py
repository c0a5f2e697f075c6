"""Architecture registry: config.json's `architectures[0]` -> adapter class. One line a family."""

from __future__ import annotations

from ..errors import CheckpointError, UnsupportedError
from .base import Architecture, ModelFacts, SourceTensor
from .llama import Llama
from .qwen import Qwen2, Qwen3

ADAPTERS: tuple[type[Architecture], ...] = (
    Llama,
    Qwen2,
    Qwen3,
)

REGISTRY: dict[str, type[Architecture]] = {hf: cls for cls in ADAPTERS for hf in cls.hf_architectures}


def for_config(config: dict) -> Architecture:
    """The adapter for a checkpoint's config, or an error that lists what is supported."""
    names = config.get("architectures") or []
    if not names:
        raise CheckpointError("config.json has no 'architectures' entry; cannot tell the model family")
    cls = REGISTRY.get(names[0])
    if cls is None:
        raise UnsupportedError(
            f"architecture {names[0]} is not supported; supported: {', '.join(sorted(REGISTRY))}")
    return cls(config)


__all__ = ["Architecture", "ModelFacts", "SourceTensor", "REGISTRY", "for_config"]

"""Layer patterns as data: which layers are the odd ones out (global among sliding-window ones,
without rope among rotary ones).

A config says it per layer (a list: Gemma's `layer_types`, SmolLM3's `no_rope_layers`) or by an
interval (every n-th layer: Gemma's `sliding_window_pattern`, SmolLM3's `no_rope_layer_interval`),
and transformers' config classes build the list from the interval when there is none. llama.cpp
assumes its own interval per architecture (llama_hparams::set_swa_pattern for Gemma, gemma2:
every 2nd layer global, gemma3: every 6th; n_no_rope_layer_step for SmolLM3: every 4th layer
without rope), unless a key lists the layers (Gemma's attention.sliding_window_pattern; SmolLM3
has none). An adapter compares the two: writes the list where llama.cpp has a key for it,
refuses the checkpoint where it has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import UnsupportedError
from .base import Hparams


@dataclass(frozen=True)
class LayerPattern:
    """Which layers are "marked" (sliding-window, or without rope), read from a config.

    `list_key` names the per-layer list and `marked` the value that marks a layer in it;
    `interval_key` the every-n-th setting, whose n-th layers are the marked ones (`nth_marked`,
    SmolLM3's NoPE layers) or the only unmarked ones (Gemma's global layers among sliding ones);
    `interval` is its transformers default and llama.cpp's assumption for the architecture."""

    list_key: str
    marked: Any
    interval_key: str
    interval: int
    nth_marked: bool = True

    def layers(self, hp: Hparams, n_blocks: int) -> list[bool]:
        """The marked layers, as transformers builds them from the config."""
        values = hp.get(self.list_key)
        if values is not None:
            if len(values) != n_blocks:
                raise UnsupportedError(f"config.json has {len(values)} {self.list_key} for {n_blocks} layers")
            return [v == self.marked for v in values]
        return self.every(int(hp.get(self.interval_key, default=self.interval)), n_blocks)

    def assumed(self, n_blocks: int) -> list[bool]:
        """The layers llama.cpp marks when no key lists them."""
        return self.every(self.interval, n_blocks)

    def every(self, n: int, n_blocks: int) -> list[bool]:
        return [nth == self.nth_marked for nth in every_nth(n_blocks, n)]


def every_nth(n_blocks: int, n: int) -> list[bool]:
    """Every n-th layer marked (the last of each group of n).

    >>> every_nth(6, 3)
    [False, False, True, False, False, True]
    """
    return [(i + 1) % n == 0 for i in range(n_blocks)]

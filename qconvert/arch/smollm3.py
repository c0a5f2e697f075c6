"""SmolLM3 (SmolLM3ForCausalLM): Llama with NoPE layers, llama.cpp's `smollm3`.

Mirrors llama.cpp's converter (conversion/llama.py SmolLM3Model: LlamaModel with arch smollm3,
nothing else) and what llama.cpp runs (src/models/smollm3.cpp):

- the NoPE layers: transformers rotates Q and K only in the layers `no_rope_layers` marks 1 (by
  default all but every `no_rope_layer_interval`-th, 4); llama.cpp skips rope in every 4th layer
  (`n_no_rope_layer_step = 4`) and has no key to say otherwise. The converter writes any pattern
  and llama.cpp then rotates the wrong layers; we refuse a pattern that is not llama.cpp's.
- no sliding window (SmolLM3's `use_sliding_window`, off in its releases), no rope_freqs tensor
  (llama3 rope scaling, which LlamaModel would write and smollm3.cpp does not load): refused.
- everything else is Llama's: TextModel's keys plus vocab_size and rope.dimension_count, Q/K
  rows permuted (llama.cpp runs smollm3 with normal rope), LlamaModel's vocabulary rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gguf

from ..errors import UnsupportedError
from .layers import LayerPattern
from .llama import Llama


class SmolLM3(Llama):
    gguf_arch = gguf.MODEL_ARCH.SMOLLM3
    hf_architectures = ("SmolLM3ForCausalLM",)
    # SmolLM3Config's (no head_dim: the converter writes no key_length; default_theta 2e6); its
    # __post_init__ replaces a null num_key_value_heads by the head count
    defaults: ClassVar[dict] = dict(
        vocab_size=128256, max_position_embeddings=32768, num_attention_heads=16, num_key_value_heads=4,
        rms_norm_eps=1e-6, rope_theta=2_000_000.0, use_sliding_window=False, no_rope_layer_interval=4,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False)
    # The layers without rope: no_rope_layers' zeros, or every no_rope_layer_interval-th layer;
    # llama.cpp's n_no_rope_layer_step is 4
    nope_layers: ClassVar[LayerPattern] = LayerPattern("no_rope_layers", 0, "no_rope_layer_interval", interval=4)
    # smollm3.cpp applies linear and yarn scaling through TextModel's keys; it loads no rope_freqs
    rope_types = ("default", "linear", "yarn")

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        hp = self.hp
        nope = self.nope_layers.layers(hp, self.n_blocks)
        if nope != self.nope_layers.assumed(self.n_blocks):
            listed = [i for i, skip in enumerate(nope) if skip]
            raise UnsupportedError(
                f"SmolLM3 without rope in layers {listed or 'none'} ({self.nope_layers.list_key} / "
                f"{self.nope_layers.interval_key}): llama.cpp's smollm3 skips rope in every "
                f"{self.nope_layers.interval}th layer and has no key to change it")
        types = hp.get("layer_types") or ["sliding_attention" if skip else "full_attention" for skip in nope]
        if hp.get("use_sliding_window") and hp.get("sliding_window") is not None and "sliding_attention" in types:
            raise UnsupportedError("SmolLM3 with use_sliding_window true: llama.cpp's smollm3 has no sliding window")

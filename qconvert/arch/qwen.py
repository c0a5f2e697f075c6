"""Qwen2 (q/k/v biases) and Qwen3 (per-head q_norm/k_norm): Llama with NEOX rope.

Mirrors llama.cpp's converter (conversion/qwen.py: Qwen2Model, Qwen3Model). Both derive from
its TextModel, not LlamaModel, so they differ from the Llama adapter in three ways:

- no Q/K row permutation: llama.cpp runs qwen2/qwen3 with LLAMA_ROPE_TYPE_NEOX, which rotates
  the halves of each head as Hugging Face does, so the rows stay in checkpoint order;
- no `vocab_size` and no `rope.dimension_count` keys (llama.cpp takes them from the tokenizer
  and the head size);
- `key_length`/`value_length` only when the config has a head_dim (TextModel writes them only
  then); transformers' Qwen3Config always has one (default 128), Qwen2Config never fills it in;
- the tokenizer gets none of LlamaModel.set_vocab's additions (add_space_prefix from
  tokenizer_config, the 49152-vocab no-BOS rule).

The biases and q_norm/k_norm need nothing here: gguf's TensorNameMap names them for these archs.
"""

from __future__ import annotations

import gguf
import numpy as np

from .base import Metadata
from .llama import Llama

K = gguf.Keys


class Qwen2(Llama):
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    hf_architectures = ("Qwen2ForCausalLM",)
    llama_set_vocab = False  # Qwen2Model.set_vocab: sentencepiece, else plain gpt2 BPE

    def metadata(self) -> Metadata:
        md = super().metadata()
        dropped = [K.LLM.VOCAB_SIZE, K.Rope.DIMENSION_COUNT]
        if self.hp.get("head_dim") is None:
            dropped += [K.Attention.KEY_LENGTH, K.Attention.VALUE_LENGTH]
        for template in dropped:
            del md.items[self.key(template)]
        return md

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return None  # NEOX rope: HF's rotate-half layout is what llama.cpp expects


class Qwen3(Qwen2):
    gguf_arch = gguf.MODEL_ARCH.QWEN3
    hf_architectures = ("Qwen3ForCausalLM",)

    def __init__(self, config: dict):
        super().__init__(config)
        # Qwen3Config's default, which both transformers and the converter (reading the config
        # through transformers) use when config.json has no head_dim.
        if self.hp.get("head_dim") is None:
            self.hp.raw["head_dim"] = 128
            self.head_dim = 128

"""OLMo 2 (Olmo2ForCausalLM): norms after the attention and the FFN, Q/K norms over all heads.

Mirrors llama.cpp's converter (conversion/olmo.py Olmo2Model, a TextModel: TextModel's keys and
names, nothing else for OLMo 2) and what llama.cpp loads (src/models/olmo2.cpp):

- no norm before the attention or the FFN: post_attention_layernorm and post_feedforward_layernorm
  (gguf's name map for olmo2: attn_post_norm, ffn_post_norm) normalize their outputs;
- q_norm / k_norm are RMSNorms over the whole Q (heads x head size) and K (KV heads x head
  size) projections, not per head as Qwen3's: sizes "q" and "kv";
- NEOX rope (llama_model_rope_type): no Q/K row permutation;
- llama.cpp's olmo2 requires the output tensor and loads no attention output bias, so a tied
  checkpoint (no lm_head) and attention_bias (o_proj.bias) are refused; a `sliding_window` in
  the config, which Olmo2Config does not have and transformers' OLMo 2 ignores, is refused too:
  the converter would write it (Olmo2Model serves OLMo 3 as well) and llama.cpp would slide.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gguf

from ..errors import UnsupportedError
from .base import DECODER_GLOBALS, TextModel, W

T = gguf.MODEL_TENSOR


class Olmo2(TextModel):
    gguf_arch = gguf.MODEL_ARCH.OLMO2
    hf_architectures = ("Olmo2ForCausalLM",)
    # Olmo2Config's; its __post_init__ replaces a null num_key_value_heads by the head count
    defaults: ClassVar[dict] = dict(
        vocab_size=50304, max_position_embeddings=2048, num_attention_heads=32, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False, attention_bias=False)
    global_tensors = DECODER_GLOBALS
    # Olmo2DecoderLayer
    layer_tensors = (
        W(T.ATTN_Q, "q", "embd"), W(T.ATTN_K, "kv", "embd"), W(T.ATTN_V, "kv", "embd"), W(T.ATTN_OUT, "embd", "q"),
        W(T.ATTN_Q_NORM, "q"), W(T.ATTN_K_NORM, "kv"), W(T.ATTN_POST_NORM, "embd"),
        W(T.FFN_GATE, "ff", "embd"), W(T.FFN_UP, "ff", "embd"), W(T.FFN_DOWN, "embd", "ff"), W(T.FFN_POST_NORM, "embd"),
    )
    tensor_flag_keys: ClassVar[dict] = {}
    # olmo2.cpp applies linear and yarn scaling through TextModel's keys; it loads no rope_freqs
    rope_types = ("default", "linear", "yarn")

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        hp = self.hp
        if hp.get("tie_word_embeddings"):
            raise UnsupportedError("OLMo 2 with tie_word_embeddings true: llama.cpp's olmo2 requires an output "
                                   "tensor (lm_head)")
        if hp.get("attention_bias"):
            raise UnsupportedError("OLMo 2 with attention_bias true: llama.cpp's olmo2 loads no attention output bias")
        if hp.get("sliding_window") is not None:
            raise UnsupportedError("OLMo 2 with a sliding_window: transformers' OLMo 2 ignores it, llama.cpp's "
                                   "olmo2 would slide")

"""Qwen2 (q/k/v biases), Qwen3 (per-head q_norm/k_norm) and Qwen3-MoE: decoders with NEOX rope.

Mirrors llama.cpp's converter (conversion/qwen.py: Qwen2Model, Qwen3Model, Qwen3MoeModel over
Qwen2MoeModel). Each derives from its TextModel, not LlamaModel, and so does each adapter here,
with none of Llama's pieces:

- no Q/K row permutation: llama.cpp runs qwen2/qwen3 with LLAMA_ROPE_TYPE_NEOX, which rotates
  the halves of each head as Hugging Face does, so the rows stay in checkpoint order;
- TextModel's keys only: no `vocab_size` and no `rope.dimension_count` (llama.cpp takes them from
  the tokenizer and the head size); `key_length`/`value_length` only when the config has a
  head_dim (TextModel writes them only then); transformers' Qwen3Config always has one (default
  128), Qwen2Config and Qwen3MoeConfig never fill it in (their `defaults` have none);
- the tokenizer gets none of LlamaModel.set_vocab's additions (add_space_prefix from
  tokenizer_config, the 49152-vocab no-BOS rule).

The biases and q_norm/k_norm need nothing here: gguf's TensorNameMap names them for these archs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

import gguf

from ..errors import UnsupportedError
from ..types import Metadata
from .base import ATTENTION, DECODER_GLOBALS, DENSE_FFN, QK_NORM, TextModel
from .moe import MOE_FFN, Experts

K = gguf.Keys

# Qwen2Config's; its __post_init__ replaces a null num_key_value_heads by the head count
QWEN2_DEFAULTS = dict(
    vocab_size=151936, max_position_embeddings=32768, num_attention_heads=32, num_key_value_heads=32,
    rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)


class Qwen2(TextModel):
    gguf_arch = gguf.MODEL_ARCH.QWEN2
    hf_architectures = ("Qwen2ForCausalLM",)
    defaults: ClassVar[dict] = QWEN2_DEFAULTS
    global_tensors = DECODER_GLOBALS
    layer_tensors = ATTENTION + DENSE_FFN
    # Qwen2Attention: q/k/v always with biases, o_proj without; Qwen2MLP without
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": True, "out_bias": False, "mlp_bias": False}


class Qwen3(Qwen2):
    gguf_arch = gguf.MODEL_ARCH.QWEN3
    hf_architectures = ("Qwen3ForCausalLM",)
    defaults: ClassVar[dict] = {**Qwen2.defaults, "head_dim": 128, "attention_bias": False}  # Qwen3Config's
    layer_tensors = Qwen2.layer_tensors + QK_NORM
    # Qwen3Attention: q/k/v/o with bias=config.attention_bias
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": "attention_bias", "out_bias": "attention_bias", "mlp_bias": False}


class Qwen3Moe(Experts, TextModel):
    """Qwen3MoeForCausalLM: Qwen3's attention (q_norm/k_norm) and an MoE FFN in every layer.

    The converter's Qwen3MoeModel derives from Qwen2MoeModel, a TextModel: TextModel's keys (no
    vocab_size, no rope dimension count, key_length only from a config head_dim; Qwen3MoeConfig,
    unlike Qwen3Config, has no head_dim default: transformers uses hidden_size / heads), plus the
    expert keys and expert_feed_forward_length (moe_intermediate_size)."""

    gguf_arch = gguf.MODEL_ARCH.QWEN3MOE
    hf_architectures = ("Qwen3MoeForCausalLM",)
    expert_pattern = re.compile(r"\.layers\.(?P<bid>\d+)\.mlp\.experts\.(?P<xid>\d+)\."
                                r"(?P<kind>down_proj|gate_proj|up_proj)\.weight$")
    expert_kinds = ("down_proj", "gate_proj", "up_proj")
    stack_name = "model.layers.{bid}.mlp.experts.{kind}.weight"
    gate_up_down = ("gate_proj", "up_proj", "down_proj")
    expert_ff_key = "moe_intermediate_size"
    global_tensors = DECODER_GLOBALS
    layer_tensors = ATTENTION + QK_NORM + MOE_FFN
    tensor_flag_keys = Qwen3.tensor_flag_keys

    # Qwen3MoeConfig's (no head_dim: transformers uses hidden_size / heads); its __post_init__
    # turns a null mlp_only_layers into []
    defaults: ClassVar[dict] = {
        **QWEN2_DEFAULTS, "num_key_value_heads": 4, "num_experts": 128, "num_experts_per_tok": 8,
        "attention_bias": False, "norm_topk_prob": False, "decoder_sparse_step": 1, "mlp_only_layers": lambda hp: []}

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        hp = self.hp
        # llama.cpp's qwen3moe graph puts experts in every layer and always renormalizes the
        # top-k router weights (qwen3moe.cpp: build_moe_ffn(..., norm_w = true)); the converter
        # writes other checkpoints without complaint, and llama.cpp then computes another model.
        # (On the qwen3moe fixture, top-2 of 4 experts, norm_topk_prob false moves transformers'
        # logits 1.0e-2 of their scale away from llama.cpp's.)
        if hp.raw["mlp_only_layers"] or hp.get("decoder_sparse_step") != 1:
            raise UnsupportedError(
                "Qwen3-MoE with dense layers (mlp_only_layers / decoder_sparse_step) is not supported: "
                "llama.cpp's qwen3moe expects experts in every layer")
        if not hp.get("norm_topk_prob"):
            raise UnsupportedError(
                "Qwen3-MoE with norm_topk_prob false (transformers' default when config.json has none) "
                "is not supported: llama.cpp's qwen3moe always renormalizes the top-k expert weights, "
                "so the GGUF would compute a different model")

    def metadata(self) -> Metadata:
        md = super().metadata()  # TextModel's, expert_count and expert_used_count included
        md.add(self.key(K.LLM.EXPERT_FEED_FORWARD_LENGTH), int(self.hp.require("moe_intermediate_size")))
        return md

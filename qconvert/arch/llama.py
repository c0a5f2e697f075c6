"""LLaMA family (LlamaForCausalLM, MistralForCausalLM): the base of most decoder-only models.

Mirrors llama.cpp's converter (conversion/llama.py, conversion/base.py TextModel): the same
GGUF keys and values, the Q/K rotary permutation, and llama3's rope_freqs tensor. Where the
config lacks a key llama.cpp requires, we write transformers' LlamaConfig default instead of
leaving llama.cpp to fail at load time.
"""

from __future__ import annotations

import math

import gguf
import numpy as np

from .base import Architecture, Metadata, ModelFacts, SourceTensor

K = gguf.Keys


def rotary_row_order(rows: int, n_head: int) -> np.ndarray:
    """Q/K rows from Hugging Face's rotate-half layout to llama.cpp's interleaved pairs.

    HF keeps, per head, the first halves of all rotary pairs and then the second halves; ggml's
    rope rotates adjacent elements. The converter's `LlamaModel.permute` reshapes the weight to
    (n_head, 2, rows/n_head/2, ...) and swaps axes 1 and 2; applied to the row numbers, the same
    reshape gives which source row each output row is.

    >>> rotary_row_order(8, 1).tolist()
    [0, 4, 1, 5, 2, 6, 3, 7]
    """
    return np.arange(rows).reshape(n_head, 2, rows // n_head // 2).swapaxes(1, 2).reshape(rows)


def llama3_rope_factors(rope: dict, head_dim: int) -> np.ndarray:
    """Per-frequency divisors of llama3 rope scaling (transformers' _compute_llama3_parameters)."""
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    # All in float32, as the converter's torch scalar arithmetic is, so the bytes match its.
    f32 = np.float32
    freqs = f32(1.0) / (f32(base) ** (np.arange(0, head_dim, 2, dtype=np.float32) / f32(head_dim)))
    out = []
    for freq in freqs:
        wavelen = f32(2 * math.pi) / freq
        if wavelen < f32(old_ctx / high):
            out.append(f32(1.0))
        elif wavelen > f32(old_ctx / low):
            out.append(f32(factor))
        else:
            smooth = (f32(old_ctx) / wavelen - f32(low)) / f32(high - low)
            out.append(f32(1.0) / ((f32(1.0) - smooth) / f32(factor) + smooth))
    return np.array(out, dtype=np.float32)


class Llama(Architecture):
    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM")
    llama_set_vocab = True

    def __init__(self, config: dict):
        super().__init__(config)
        hp = self.hp
        self.n_embd = int(hp.require("hidden_size", "n_embd", "dim"))
        self.n_head = int(hp.require("num_attention_heads", "n_head", "n_heads"))
        self.n_head_kv = int(hp.get("num_key_value_heads", "n_kv_heads", default=self.n_head))
        self.head_dim = int(hp.get("head_dim", default=self.n_embd // self.n_head))
        self.rope = hp.rope()

    def metadata(self) -> Metadata:
        hp, md, key = self.hp, Metadata(), self.key
        md.add(key(K.LLM.VOCAB_SIZE), int(hp.require("vocab_size")))
        md.add(key(K.LLM.CONTEXT_LENGTH), int(hp.get("max_position_embeddings", "n_ctx", default=2048)))
        md.add(key(K.LLM.EMBEDDING_LENGTH), self.n_embd)
        md.add(key(K.LLM.BLOCK_COUNT), self.n_blocks)
        md.add(key(K.LLM.FEED_FORWARD_LENGTH), int(hp.require("intermediate_size", "n_inner", "hidden_dim")))
        md.add(key(K.Attention.HEAD_COUNT), self.n_head)
        md.add(key(K.Attention.HEAD_COUNT_KV), self.n_head_kv)
        md.add(key(K.Attention.LAYERNORM_RMS_EPS), float(hp.get("rms_norm_eps", "norm_eps", default=1e-6)))
        md.add(key(K.Rope.FREQ_BASE), float(self.rope.get("rope_theta", 10000.0)))
        md.add(key(K.Rope.DIMENSION_COUNT), self.head_dim)
        # Always written: the converter reads config.json through transformers, whose LlamaConfig
        # fills head_dim in (hidden_size / heads) when the file lacks it.
        md.add(key(K.Attention.KEY_LENGTH), self.head_dim)
        md.add(key(K.Attention.VALUE_LENGTH), self.head_dim)
        self.add_rope_scaling(md)
        return md

    def add_rope_scaling(self, md: Metadata) -> None:
        """linear and yarn go in metadata; llama3 is a rope_freqs tensor (extra_tensors)."""
        rope, key = self.rope, self.key
        rope_type, factor = rope.get("rope_type"), rope.get("factor")
        if rope_type == "linear" and factor is not None:
            md.add(key(K.Rope.SCALING_TYPE), gguf.RopeScalingType.LINEAR.value)
            md.add(key(K.Rope.SCALING_FACTOR), float(factor))
        elif rope_type == "yarn" and factor is not None:
            md.add(key(K.Rope.SCALING_TYPE), gguf.RopeScalingType.YARN.value)
            md.add(key(K.Rope.SCALING_FACTOR), float(factor))
            md.add(key(K.Rope.SCALING_ORIG_CTX_LEN), int(rope["original_max_position_embeddings"]))
            for src, dst in (("extrapolation_factor", K.Rope.SCALING_YARN_EXT_FACTOR),
                             ("attention_factor", K.Rope.SCALING_YARN_ATTN_FACTOR),
                             ("beta_fast", K.Rope.SCALING_YARN_BETA_FAST),
                             ("beta_slow", K.Rope.SCALING_YARN_BETA_SLOW)):
                if rope.get(src) is not None:
                    md.add(key(dst), float(rope[src]))

    def model_facts(self) -> ModelFacts:
        # llama.cpp calls an 80-layer llama with grouped-query attention LLM_TYPE_70B, and
        # llama-quantize gives that model's attn_v more bits; an 8-expert one it sizes by layer
        # count as 8x7B/8x22B instead (llama_model_llama::load_arch_hparams).
        n_expert = int(self.hp.get("num_local_experts", default=0))
        return ModelFacts(n_layer=self.n_blocks, n_gqa=self.n_head // self.n_head_kv, n_expert=n_expert,
                          is_70b=n_expert != 8 and self.n_blocks == 80 and self.n_head != self.n_head_kv)

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return rotary_row_order(shape[0], self.n_head)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return rotary_row_order(shape[0], self.n_head_kv)
        return None

    def extra_tensors(self) -> list[SourceTensor]:
        if str(self.rope.get("rope_type", "")).lower() != "llama3":
            return []
        factors = llama3_rope_factors(self.rope, self.head_dim)
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        return [SourceTensor(name, factors.shape, None, "F32", generate=lambda: factors)]

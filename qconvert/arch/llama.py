"""LLaMA family (LlamaForCausalLM, MistralForCausalLM), and LlamaModel's two opt-in pieces.

Mirrors llama.cpp's converter (conversion/llama.py LlamaModel, over conversion/base.py
TextModel): the same GGUF keys and values, the Q/K rotary permutation, and llama3's rope_freqs
tensor. Where the config lacks a setting, the value is transformers' config class default
(`defaults`), which the converter, reading the config through transformers, writes too.

The pieces, for families the converter derives from LlamaModel (or that share its rules):

- `PermuteQK`: Q/K rows from Hugging Face's rotate-half layout to the interleaved pairs of
  llama.cpp's normal rope (LlamaModel.undo_permute). Families llama.cpp runs with NEOX rope,
  which rotates halves as Hugging Face does (Qwen, Gemma, Phi-3), do not list it.
- `LlamaVocab`: LlamaModel.set_vocab's additions (tokenizer_config's add_prefix_space, the
  no-BOS rule for 49152-token vocabularies; see tokenizer.py).
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import gguf
import numpy as np

from .. import exact
from ..types import Metadata, SourceTensor
from .base import ATTENTION, DECODER_GLOBALS, DENSE_FFN, EMBD_KEYS, HEAD_KEYS, Hparams, TextModel

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
    """Per-frequency divisors of llama3 rope scaling (transformers' _compute_llama3_parameters),
    each the correctly rounded float32 of its exact value (see qconvert/exact.py).

    The formula is the converter's (conversion/llama.py, LlamaModel.generate_extra_tensors): for
    i = 0, 2, ..., head_dim - 2, the wavelength 2 pi base^(i / head_dim); the divisor is 1 below
    original_max_position_embeddings / high_freq_factor, `factor` above original / low_freq_factor,
    and between them 1 / ((1 - s) / factor + s) with s = (original / wavelength - low) / (high - low).
    The converter evaluates it in float32 with torch (an ulp or two off, depending on the CPU's
    pow); here in decimal arithmetic of 50 digits from the config's float64 values, rounded once.
    (A wavelength, 2 pi times a power of the base, is never exactly a band's rational edge, so
    the bands are decided exactly too.)"""
    base = Decimal(float(rope.get("rope_theta", 10000.0)))
    factor = Decimal(float(rope.get("factor", 8.0)))
    low = Decimal(float(rope.get("low_freq_factor", 1.0)))
    high = Decimal(float(rope.get("high_freq_factor", 4.0)))
    old_ctx = Decimal(float(rope.get("original_max_position_embeddings", 8192)))
    out = []
    with exact.context():
        ln_base, high_wavelen, low_wavelen = base.ln(), old_ctx / high, old_ctx / low
        for i in range(0, head_dim, 2):
            wavelen = 2 * exact.PI * (ln_base * i / head_dim).exp()
            if wavelen < high_wavelen:
                value = Decimal(1)
            elif wavelen > low_wavelen:
                value = factor
            else:
                smooth = (old_ctx / wavelen - low) / (high - low)
                value = 1 / ((1 - smooth) / factor + smooth)
            out.append(exact.nearest_f32(value))
    return np.array(out, dtype=np.float32)


def all_heads(hp: Hparams) -> int:
    """num_key_value_heads where the config has none (or null), as the config classes'
    __post_init__ set it: the head count, i.e. no grouped-query attention."""
    return int(hp.require(*HEAD_KEYS))


def per_head(hp: Hparams) -> int:
    """LlamaConfig's (and MistralConfig's) head_dim when the config has none: hidden_size / heads."""
    return int(hp.require(*EMBD_KEYS)) // all_heads(hp)


class PermuteQK(TextModel):
    """Q/K rows (weights and biases) in llama.cpp's interleaved rope order (rotary_row_order)."""

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            return rotary_row_order(shape[0], self.n_head)
        if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            return rotary_row_order(shape[0], self.n_head_kv)
        return super().row_order_for(hf_name, shape)


class LlamaVocab(TextModel):
    """The vocabulary as LlamaModel.set_vocab writes it (see tokenizer.py)."""

    llama_set_vocab = True


class Llama(PermuteQK, LlamaVocab, TextModel):
    """LlamaModel: TextModel's keys plus vocab_size and the rope dimension count, Q/K permuted,
    llama3 rope scaling as a rope_freqs tensor."""

    gguf_arch = gguf.MODEL_ARCH.LLAMA
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM")
    # LlamaConfig's; its __post_init__ fills in num_key_value_heads and head_dim
    defaults: ClassVar[dict] = dict(
        vocab_size=32000, max_position_embeddings=2048, num_attention_heads=32, rms_norm_eps=1e-6,
        rope_theta=10000.0, num_key_value_heads=all_heads, head_dim=per_head, tie_word_embeddings=False,
        attention_bias=False, mlp_bias=False)
    global_tensors = DECODER_GLOBALS
    layer_tensors = ATTENTION + DENSE_FFN
    # LlamaAttention: q/k/v/o with bias=config.attention_bias; LlamaMLP: bias=config.mlp_bias
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": "attention_bias", "out_bias": "attention_bias",
                                        "mlp_bias": "mlp_bias"}

    def metadata(self) -> Metadata:
        # LlamaModel.set_gguf_parameters: TextModel's keys, the vocabulary size and the rope
        # dimension count (head_dim, or hidden_size / heads)
        md = super().metadata()
        md.add(self.key(K.LLM.VOCAB_SIZE), int(self.hp.require("vocab_size")))
        md.add(self.key(K.Rope.DIMENSION_COUNT), self.head_dim)
        return md

    def extra_tensors(self) -> list[SourceTensor]:
        if str(self.rope.get("rope_type", "")).lower() != "llama3":
            return []
        factors = llama3_rope_factors(self.rope, self.head_dim)
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        return [SourceTensor(name, factors.shape, None, "F32", generate=lambda: factors)]


class Mistral(Llama):
    """MistralForCausalLM: Llama as llama.cpp converts and runs it (arch `llama`), with
    MistralConfig's defaults."""

    hf_architectures = ("MistralForCausalLM",)
    defaults: ClassVar[dict] = {**Llama.defaults, "max_position_embeddings": 131072, "num_key_value_heads": 8}
    # MistralAttention and MistralMLP have no biases (MistralConfig has no flags for them)
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": False, "out_bias": False, "mlp_bias": False}

"""Phi-3 (Phi3ForCausalLM): fused QKV and gate|up matrices, NEOX rope, LongRoPE factors.

Mirrors llama.cpp's converter (conversion/phi.py, Phi3MiniModel, a TextModel) and what llama.cpp
loads (src/models/phi3.cpp):

- `self_attn.qkv_proj` (Q rows, then K, then V) and `mlp.gate_up_proj` (gate rows, then up) are
  written as they are, as attn_qkv and a 2*n_ff-row ffn_up: llama.cpp's phi3 splits the fused
  QKV output the same way and its SWIGLU takes silu of the first half times the second, which
  is transformers' `gate, up = gate_up.chunk(2)`. No Q/K row permutation: llama.cpp runs phi3
  with NEOX rope, Hugging Face's rotate-half layout (and rows of a fused matrix could not be
  permuted by head anyway).
- partial rotary (`partial_rotary_factor`, Phi-4-mini's 0.75; at top level in transformers-4
  configs, in rope_parameters in transformers 5's, see Hparams.rope): rope.dimension_count is
  int(factor * n_embd) // n_head, the converter's formula; NEOX rotates only those dimensions.
- LongRoPE (`rope_type` "longrope", or its old name "su"): llama.cpp takes the per-frequency
  divisors as two generated tensors, rope_factors_long and rope_factors_short, and picks the
  long ones when the context it is given (n_ctx_seq) exceeds rope.scaling.original_context_length
  (llama_model::get_rope_factors); transformers picks them when the sequence exceeds
  original_max_position_embeddings. The cos/sin scale is rope.scaling.attn_factor, the
  converter's sqrt(1 + ln(s) / ln(original)) with s = context_length / original, 1 when s <= 1.
- its own key set: no vocab_size, no key/value_length, no rope.scaling.type, but always
  rope.scaling.original_context_length and attention.sliding_window (0 for none, which the
  converter uses to tell Phi-4 from the others; llama.cpp runs phi3 without sliding windows).

Config defaults are transformers' Phi3Config's, which the converter sees through AutoConfig.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import gguf
import numpy as np

from ..errors import CheckpointError, UnsupportedError
from ..types import Metadata, SourceTensor
from ..validate.model import Dim
from .base import DECODER_GLOBALS, TextModel, W
from .llama import all_heads

K = gguf.Keys
T = gguf.MODEL_TENSOR


class Phi3(TextModel):
    gguf_arch = gguf.MODEL_ARCH.PHI3
    hf_architectures = ("Phi3ForCausalLM",)
    # Phi3MiniModel.set_vocab: sentencepiece, or gpt2 BPE for GPT2Tokenizer (not LlamaModel's);
    # NEOX rope: HF's rotate-half layout is what llama.cpp expects (no Q/K permutation)
    # Phi3Config's (no head_dim); its __post_init__ fills num_key_value_heads in, and the rope
    # standardization partial_rotary_factor and rope_theta
    defaults: ClassVar[dict] = dict(
        vocab_size=32064, max_position_embeddings=4096, original_max_position_embeddings=4096,
        num_attention_heads=32, num_key_value_heads=all_heads, rms_norm_eps=1e-5, rope_theta=10000.0,
        partial_rotary_factor=1.0, tie_word_embeddings=False)
    global_tensors = DECODER_GLOBALS
    # Phi3Attention's fused qkv_proj and Phi3MLP's gate_up_proj, no biases
    layer_tensors = (W(T.ATTN_NORM, "embd"), W(T.ATTN_QKV, "qkv", "embd"), W(T.ATTN_OUT, "embd", "q"),
                     W(T.FFN_NORM, "embd"), W(T.FFN_UP, "gate_up", "embd"), W(T.FFN_DOWN, "embd", "ff"))

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        self.n_ctx = int(self.hp.require("n_positions", "max_position_embeddings"))
        self.n_ctx_orig = int(self.rope["original_max_position_embeddings"])
        self.n_rot = int(float(self.rope["partial_rotary_factor"]) * self.n_embd) // self.n_head

    def dims(self) -> dict[str, Dim]:
        dims = super().dims()
        q, kv = dims["q"], dims["kv"]
        dims["qkv"] = Dim(q.size + 2 * kv.size, f"{q.key} + 2 x {kv.key}")
        if "ff" in dims:
            dims["gate_up"] = Dim(2 * dims["ff"].size, f"2 x {dims['ff'].key}")
        return dims

    def metadata(self) -> Metadata:
        # Phi3MiniModel.set_gguf_parameters (not TextModel's, but the same where both write)
        md, key = super().metadata(), self.key
        md.add(key(K.LLM.CONTEXT_LENGTH), self.n_ctx)
        md.add(key(K.Rope.SCALING_ORIG_CTX_LEN), self.n_ctx_orig)
        md.add(key(K.Rope.DIMENSION_COUNT), self.n_rot)
        md.add(key(K.Attention.SLIDING_WINDOW), int(self.hp.get("sliding_window") or 0))  # 0: none
        for template in (K.Attention.KEY_LENGTH, K.Attention.VALUE_LENGTH):  # never written for phi3
            md.items.pop(key(template), None)
        return md

    def add_rope_scaling(self, md: Metadata) -> None:
        """Phi3MiniModel's only rope scaling key: LongRoPE's attention factor (no scaling type)."""
        if self.longrope_factors() is not None:
            md.add(self.key(K.Rope.SCALING_ATTN_FACTOR), self.longrope_attn_factor())

    def longrope_factors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(long, short) divisors per rotary frequency, or None without LongRoPE."""
        long, short = self.rope.get("long_factor"), self.rope.get("short_factor")
        if not long:  # the converter's test: no long factors, no LongRoPE
            return None
        # transformers' Phi3Config reads "su" (and "yarn") as longrope, and so does the converter,
        # which sees the config through it.
        rope_type = str(self.rope.get("rope_type", "")).lower()
        if rope_type not in ("longrope", "su", "yarn"):
            raise UnsupportedError(f"Phi-3 rope scaling {rope_type or 'without a type'} with long_factor is not "
                                   "supported; qconvert converts LongRoPE ('longrope' / 'su')")
        if short is None or len(long) != len(short) or len(long) != self.n_rot // 2:
            raise CheckpointError(
                f"LongRoPE needs long_factor and short_factor of {self.n_rot // 2} values each (half the "
                f"{self.n_rot} rotary dimensions); config.json has {len(long)} and {len(short or [])}")
        # Generated tensors are the correctly rounded float32 of their exact value (qconvert/exact.py);
        # here that value is the config's number as JSON gives it (a float64, which transformers and
        # the converter's torch.tensor(..., float32) read too), and NumPy's float64 -> float32 cast
        # rounds to nearest, ties to even (IEEE 754): correctly rounded, in one step.
        return np.array(long, dtype=np.float64).astype(np.float32), np.array(short, dtype=np.float64).astype(np.float32)

    def longrope_attn_factor(self) -> float:
        """conversion/phi.py: transformers' default LongRoPE attention factor for the ratio of
        context lengths (an explicit `attention_factor` or `factor` in the config is ignored, as
        the converter ignores it)."""
        scale = self.n_ctx / self.n_ctx_orig
        return math.sqrt(1 + math.log(scale) / math.log(self.n_ctx_orig)) if scale > 1.0 else 1.0

    def extra_tensors(self) -> list[SourceTensor]:
        factors = self.longrope_factors()
        if factors is None:
            return []
        out = []
        for kind, values in zip((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT), factors):
            name = gguf.TENSOR_NAMES[kind] + ".weight"
            out.append(SourceTensor(name, values.shape, None, "F32", generate=lambda v=values: v))
        return out

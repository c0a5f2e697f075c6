"""Phi-3 (Phi3ForCausalLM): fused QKV and gate|up matrices, NEOX rope, LongRoPE factors.

Mirrors llama.cpp's converter (conversion/phi.py, Phi3MiniModel) and what llama.cpp loads
(src/models/phi3.cpp):

- `self_attn.qkv_proj` (Q rows, then K, then V) and `mlp.gate_up_proj` (gate rows, then up) are
  written as they are, as attn_qkv and a 2*n_ff-row ffn_up: llama.cpp's phi3 splits the fused
  QKV output the same way and its SWIGLU takes silu of the first half times the second, which
  is transformers' `gate, up = gate_up.chunk(2)`. No Q/K row permutation: llama.cpp runs phi3
  with NEOX rope, Hugging Face's rotate-half layout (and rows of a fused matrix could not be
  permuted by head anyway).
- partial rotary (`partial_rotary_factor`, Phi-4-mini's 0.75): rope.dimension_count is
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

import gguf
import numpy as np

from ..errors import CheckpointError, UnsupportedError
from .base import Metadata, ModelFacts, SourceTensor
from .llama import Llama

K = gguf.Keys

# Phi3Config defaults (transformers models/phi3/configuration_phi3.py)
DEFAULT_ORIGINAL_CONTEXT = 4096
DEFAULT_RMS_EPS = 1e-5


class Phi3(Llama):
    gguf_arch = gguf.MODEL_ARCH.PHI3
    hf_architectures = ("Phi3ForCausalLM",)
    llama_set_vocab = False  # Phi3MiniModel.set_vocab: sentencepiece, or gpt2 BPE for GPT2Tokenizer

    def __init__(self, config: dict):
        super().__init__(config)
        hp = self.hp
        self.n_ctx = int(hp.require("n_positions", "max_position_embeddings"))
        self.n_ctx_orig = int(self.rope.get("original_max_position_embeddings", DEFAULT_ORIGINAL_CONTEXT))
        # transformers 5 keeps the factor in rope_parameters, transformers 4 configs at top level
        rot_pct = float(self.rope.get("partial_rotary_factor", hp.get("partial_rotary_factor", default=1.0)))
        self.n_rot = int(rot_pct * self.n_embd) // self.n_head

    def metadata(self) -> Metadata:
        hp, md, key = self.hp, Metadata(), self.key
        md.add(key(K.LLM.CONTEXT_LENGTH), self.n_ctx)
        md.add(key(K.Rope.SCALING_ORIG_CTX_LEN), self.n_ctx_orig)
        md.add(key(K.LLM.EMBEDDING_LENGTH), self.n_embd)
        md.add(key(K.LLM.FEED_FORWARD_LENGTH), int(hp.require("intermediate_size")))
        md.add(key(K.LLM.BLOCK_COUNT), self.n_blocks)
        md.add(key(K.Attention.HEAD_COUNT), self.n_head)
        md.add(key(K.Attention.HEAD_COUNT_KV), self.n_head_kv)
        md.add(key(K.Attention.LAYERNORM_RMS_EPS), float(hp.get("rms_norm_eps", default=DEFAULT_RMS_EPS)))
        md.add(key(K.Rope.DIMENSION_COUNT), self.n_rot)
        md.add(key(K.Rope.FREQ_BASE), float(self.rope.get("rope_theta", 10000.0)))
        md.add(key(K.Attention.SLIDING_WINDOW), int(hp.get("sliding_window", default=0)))
        if self.longrope_factors() is not None:
            md.add(key(K.Rope.SCALING_ATTN_FACTOR), self.longrope_attn_factor())
        return md

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
        # float64 -> float32 with rounding to nearest, as the converter's torch.tensor(..., float32)
        return np.array(long, dtype=np.float32), np.array(short, dtype=np.float32)

    def longrope_attn_factor(self) -> float:
        """conversion/phi.py: transformers' default LongRoPE attention factor for the ratio of
        context lengths (an explicit `attention_factor` or `factor` in the config is ignored, as
        the converter ignores it)."""
        scale = self.n_ctx / self.n_ctx_orig
        return math.sqrt(1 + math.log(scale) / math.log(self.n_ctx_orig)) if scale > 1.0 else 1.0

    def model_facts(self) -> ModelFacts:
        # llama.cpp names phi3 sizes 1B/3B/14B only (load_arch_hparams): never LLM_TYPE_70B
        return ModelFacts(n_layer=self.n_blocks, n_gqa=self.n_head // self.n_head_kv)

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        return None  # NEOX rope: HF's rotate-half layout is what llama.cpp expects

    def extra_tensors(self) -> list[SourceTensor]:
        factors = self.longrope_factors()
        if factors is None:
            return []
        out = []
        for kind, values in zip((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT), factors):
            name = gguf.TENSOR_NAMES[kind] + ".weight"
            out.append(SourceTensor(name, values.shape, None, "F32", generate=lambda v=values: v))
        return out

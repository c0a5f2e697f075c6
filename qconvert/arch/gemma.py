"""Gemma 2 (Gemma2ForCausalLM) and Gemma 3 text (Gemma3ForCausalLM): decoders with Gemma's twists.

Mirrors llama.cpp's converter (conversion/gemma.py: Gemma2Model, Gemma3Model, each a TextModel)
and what llama.cpp loads (src/models/gemma2.cpp, gemma3.cpp):

- RMSNorm weights are stored as w and applied as (1 + w): the norm tensors get 1 added (every
  `*norm.weight`, Gemma 3's q_norm/k_norm included), in float32 after decoding, as transformers
  computes `1.0 + self.weight.float()`. The converter upcasts bf16 (and f32) tensors to float32
  before adding, so for those checkpoints the bytes are the same; a float16 checkpoint it keeps
  in float16 (conversion/base.py prepare_tensors), so its norms come out as 1 + w rounded to
  float16, up to half a float16 step (2**-11 relative) from what transformers multiplies by.
  Ours are exact; tests/test_converter_equality.py asserts that difference on exactly the norm
  tensors of a float16 checkpoint.
- NEOX rope (llama.cpp's llama_model_rope_type): no Q/K row permutation.
- the embedding is scaled by sqrt(n_embd) and GELU is the tanh approximation in llama.cpp's
  graph itself (`ggml_scale(inpL, sqrtf(n_embd))`, LLM_FFN_GELU): nothing to write. Only the
  tanh GELU that Gemma uses (`gelu_pytorch_tanh`) is accepted.
- the attention scale is not a key: llama.cpp uses 1/sqrt(head_dim), or 1/sqrt(n_embd/n_head)
  for the 27B models (46 layers for Gemma 2, 62 for Gemma 3), where Hugging Face uses
  query_pre_attn_scalar**-0.5. A config on which the two disagree is refused.
- sliding-window layers (`layer_pattern`, see layers.py): llama.cpp assumes every 2nd layer is
  global (Gemma 2) or every 6th (Gemma 3) unless `attention.sliding_window_pattern` lists them.
  The converter writes no such list; we write one (one bool per layer) only when the config's
  layer_types differ from that assumption, which the converter would silently get wrong.
- Gemma 2 ties the output to the embedding in llama.cpp (no output tensor): a stray lm_head is
  skipped, as the converter's filter_tensors does. Gemma 3 may have one.
- the vocabulary: the converter's set_vocab is the plain sentencepiece one (not LlamaModel's)
  plus `add_space_prefix = False`. (Its Gemma 3 falls back to a gpt2 BPE without tokenizer.model;
  Gemma's tokenizer.json is a byte-fallback BPE, which tokenizer.py asks tokenizer.model for.)

Config defaults are transformers' Gemma2Config / Gemma3TextConfig's, which the converter sees
through AutoConfig: Gemma 3's hub configs (4B-27B) leave the vocabulary size, head counts, head
size and attention scale out of their text_config.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import gguf
import numpy as np

from ..errors import UnsupportedError
from ..types import Metadata, SourceTensor, TensorInfo
from .base import ATTENTION, DECODER_GLOBALS, DENSE_FFN, QK_NORM, TextModel, W
from .layers import LayerPattern

K = gguf.Keys
T = gguf.MODEL_TENSOR

# GELU variants that are the tanh approximation llama.cpp computes (transformers' ACT2FN names).
TANH_GELU = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def add_one(x: np.ndarray) -> None:
    """Gemma's RMSNorm offset, in float32 as transformers' `1.0 + self.weight.float()`."""
    x += np.float32(1.0)


class Gemma(TextModel):
    """What Gemma 2 and Gemma 3 share (the converter has no common class: each is a TextModel):
    norms stored as w, NEOX rope, tanh GELU, the attention scale, sliding-window layers."""

    spm_add_space_prefix = False  # Gemma2Model/Gemma3Model.set_vocab: add_add_space_prefix(False)
    global_tensors = DECODER_GLOBALS
    # Gemma2DecoderLayer / Gemma3DecoderLayer: a norm after the attention and around the FFN
    # (pre_feedforward_layernorm is llama.cpp's ffn_norm), q/k/v/o biases per attention_bias,
    # none in the MLP
    layer_tensors = ATTENTION + (W(T.ATTN_POST_NORM, "embd"),) + DENSE_FFN + (W(T.FFN_POST_NORM, "embd"),)
    tensor_flag_keys: ClassVar[dict] = {"qkv_bias": "attention_bias", "out_bias": "attention_bias", "mlp_bias": False}
    # The sliding-window layers: transformers' layer_types, or all but every n-th layer
    # (sliding_window_pattern); n is llama.cpp's assumption too (load_swa_pattern's n_pattern)
    layer_pattern: ClassVar[LayerPattern]
    # the model size whose attention scale uses n_embd / n_head
    n_layer_27b: ClassVar[int]

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        self.check_supported()

    # -- what llama.cpp cannot express ---------------------------------------------------------

    def check_supported(self) -> None:
        hp = self.hp
        act = hp.get("hidden_activation", "hidden_act")
        if act not in TANH_GELU:
            raise UnsupportedError(
                f"{self.arch_name} with activation {act!r}: llama.cpp computes GELU's tanh approximation "
                f"({', '.join(TANH_GELU)})")
        # gemma2.cpp / gemma3.cpp: f_attention_scale (no key)
        expected = self.n_embd / self.n_head if self.n_blocks == self.n_layer_27b else self.head_dim
        scalar = float(hp.require("query_pre_attn_scalar"))
        if not math.isclose(scalar, expected, rel_tol=1e-6):
            raise UnsupportedError(
                f"{self.arch_name} with query_pre_attn_scalar {scalar:g}: llama.cpp scales attention by "
                f"1/sqrt({expected:g}) for a {self.n_blocks}-layer model and has no key to change it")

    def sliding_layers(self) -> list[bool]:
        """Which layers use the sliding window, as transformers builds them."""
        return self.layer_pattern.layers(self.hp, self.n_blocks)

    def add_swa_layout(self, md: Metadata) -> None:
        """The per-layer list, only where llama.cpp's assumption (llama_hparams::set_swa_pattern)
        would differ from the config."""
        sliding = self.sliding_layers()
        if sliding != self.layer_pattern.assumed(self.n_blocks):
            md.add(self.key(K.Attention.SLIDING_WINDOW_PATTERN), sliding, gguf.GGUFValueType.ARRAY)

    # -- tensors -------------------------------------------------------------------------------

    def tensors(self, infos: dict[str, TensorInfo]) -> list[SourceTensor]:
        # Gemma2Model/Gemma3Model.modify_tensors: `if name.endswith("norm.weight"): data + 1`
        return [replace(t, transform=add_one) if t.src is not None and t.src.endswith("norm.weight") else t
                for t in super().tensors(infos)]


class Gemma2(Gemma):
    """Gemma 2: attention and final soft-capping, no output tensor, every 2nd layer global."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA2
    hf_architectures = ("Gemma2ForCausalLM",)
    # llama.cpp's gemma2 has no output tensor (it reuses token_embd): Gemma2Model.filter_tensors
    skip_patterns = TextModel.skip_patterns + (r"^lm_head\.weight$",)

    # Gemma2Config's
    defaults: ClassVar[dict] = dict(
        vocab_size=256000, max_position_embeddings=8192, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, rms_norm_eps=1e-6, rope_theta=10000.0, query_pre_attn_scalar=256, sliding_window=4096,
        final_logit_softcapping=30.0, attn_logit_softcapping=50.0, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, attention_bias=False)
    tensor_flag_keys: ClassVar[dict] = {**Gemma.tensor_flag_keys, "output": False}  # lm_head: skipped, see above
    layer_pattern = LayerPattern("layer_types", "sliding_attention", "sliding_window_pattern", interval=2,
                                 nth_marked=False)
    n_layer_27b = 46

    def check_supported(self) -> None:
        if not self.hp.get("tie_word_embeddings"):
            # the lm_head is skipped (as the converter does) and llama.cpp multiplies by
            # token_embd instead: right only when transformers ties the two
            raise UnsupportedError(f"{self.arch_name} with tie_word_embeddings false: llama.cpp's {self.arch_name} has "
                                   "no output tensor and uses the token embedding, not the lm_head")
        super().check_supported()

    def metadata(self) -> Metadata:
        # Gemma2Model.set_gguf_parameters: TextModel's keys but the rope ones, and its own
        md, key = super().metadata(), self.key
        for name, template in (("attn_logit_softcapping", K.LLM.ATTN_LOGIT_SOFTCAPPING),
                               ("final_logit_softcapping", K.LLM.FINAL_LOGIT_SOFTCAPPING)):
            if self.hp.raw.get(name) is None:  # explicitly null: llama.cpp would cap anyway
                raise UnsupportedError(f"gemma2 without {name}: llama.cpp's gemma2 always soft-caps")
            md.add(key(template), float(self.hp.raw[name]))
        md.add(key(K.Attention.SLIDING_WINDOW), int(self.hp.require("sliding_window")))
        self.add_swa_layout(md)
        # The converter writes no rope keys for Gemma 2; llama.cpp's defaults are theta 10000 and
        # no scaling. Written only where the config says otherwise.
        if float(self.rope["rope_theta"]) == 10000.0:
            del md.items[key(K.Rope.FREQ_BASE)]
        return md


class Gemma3(Gemma):
    """Gemma 3's text model: q_norm/k_norm, no attention soft-capping, a separate rope base (and
    no scaling) for the sliding-window layers, every 6th layer global, an optional lm_head (the
    output when untied: llama.cpp's gemma3 loads it if present).

    Gemma3ForConditionalGeneration (the 4B-27B checkpoints) holds the same language model under
    `language_model.` beside a vision tower and projector: as the converter (TextModel's
    filter_tensors), we write the language model and leave the vision part to an mmproj file."""

    gguf_arch = gguf.MODEL_ARCH.GEMMA3
    hf_architectures = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    skip_patterns = TextModel.skip_patterns + (r"(^|\.)vision_tower\.", r"(^|\.)multi_modal_projector\.")

    # Gemma3TextConfig's (no soft-capping by default; default_theta: global 1e6, local 10000)
    defaults: ClassVar[dict] = dict(
        vocab_size=262_208, max_position_embeddings=131072, num_attention_heads=8, num_key_value_heads=4,
        head_dim=256, rms_norm_eps=1e-6, rope_theta=1_000_000.0, rope_local_base_freq=10000.0,
        query_pre_attn_scalar=256, sliding_window=4096, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, attention_bias=False)
    layer_tensors = Gemma.layer_tensors + QK_NORM
    layer_pattern = LayerPattern("layer_types", "sliding_attention", "sliding_window_pattern", interval=6,
                                 nth_marked=False)
    n_layer_27b = 62

    def check_supported(self) -> None:
        super().check_supported()
        if self.hp.raw.get("attn_logit_softcapping") is not None:
            # the converter asserts it away too: llama.cpp's gemma3 graph has no attention cap
            raise UnsupportedError("gemma3 with attn_logit_softcapping: llama.cpp's gemma3 does not soft-cap attention")
        local = self.hp.local_rope()
        if local.get("rope_type", "default") != "default":
            raise UnsupportedError(
                f"gemma3 with {local['rope_type']} rope scaling on sliding-window layers: llama.cpp "
                "scales only the global layers' rope")

    def map_name(self, hf_name: str) -> str:
        # language_model.model.layers.0... (transformers 4 and 5 saves) -> model.layers.0...
        return super().map_name(hf_name.replace("language_model.", ""))

    def metadata(self) -> Metadata:
        # Gemma3Model.set_gguf_parameters: TextModel's keys (the global layers' rope in
        # rope.freq_base and scaling, the sliding-window layers' in rope.freq_base_swa), then
        # its own, the same values where both write
        md, key = super().metadata(), self.key
        if final_cap := self.hp.get("final_logit_softcapping"):
            md.add(key(K.LLM.FINAL_LOGIT_SOFTCAPPING), float(final_cap))
        # gemma3.cpp: a sliding_window key switches the sliding-window layers on. The converter
        # writes it unless sliding_window_pattern is 1; we write it when some layer slides.
        if any(self.sliding_layers()):
            md.add(key(K.Attention.SLIDING_WINDOW), int(self.hp.require("sliding_window")))
            self.add_swa_layout(md)
        return md

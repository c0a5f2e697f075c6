"""GPT-2 (GPT2LMHeadModel): learned positions, LayerNorm with biases, fused QKV, Conv1D layers.

Mirrors llama.cpp's converter (conversion/gpt2.py, GPT2Model, a TextModel) and what llama.cpp
loads (src/models/gpt2.cpp):

- GPT-2's Conv1D layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) store their weight as
  [in, out], the transpose of nn.Linear's; the converter transposes them, and so do we
  (`SourceTensor.transpose`). c_attn stays one fused Q|K|V matrix, which llama.cpp's gpt2 takes
  as attn_qkv.
- wpe (learned positions) becomes position_embd, which llama.cpp needs with exactly
  context_length rows and which stays F32 in every file (the planner's NEVER_QUANTIZED, as the
  converter's POS_EMBD rule and llama-quantize).
- no rope, no head_count_kv (llama.cpp defaults it to head_count), no vocab_size key.
- the tied lm_head is not in the checkpoint; llama.cpp then uses token_embd as the output.
- the causal-mask buffers `attn.bias` / `attn.masked_bias` that older checkpoints carry are
  skipped; checkpoints name tensors with or without the `transformer.` prefix, and gguf's
  TensorNameMap knows both.

Two settings are read where the converter hard-codes them, identical on every GPT-2 release:
context_length from n_positions (the rows of wpe, which llama.cpp checks; the converter reads
n_ctx, which transformers 5's GPT2Config no longer has and which real configs set equal to it),
and feed_forward_length from n_inner when set (the converter writes 4 * n_embd, which is
transformers' default for n_inner = null, as in every GPT-2 config).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import gguf

from ..types import Metadata, SourceTensor, TensorInfo
from ..validate.model import Dim
from .base import B, TextModel, W

K = gguf.Keys
T = gguf.MODEL_TENSOR

# GPT-2's Conv1D layers: weight stored [in, out] (transformers pytorch_utils.Conv1D).
CONV1D_WEIGHTS = (".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight")


class GPT2(TextModel):
    gguf_arch = gguf.MODEL_ARCH.GPT2
    hf_architectures = ("GPT2LMHeadModel",)
    skip_patterns = TextModel.skip_patterns + (r"\.attn\.bias$", r"\.attn\.masked_bias$")
    # GPT2Config's (n_inner None: the model's FFN is 4 * n_embd wide)
    defaults: ClassVar[dict] = dict(vocab_size=50257, n_positions=1024, n_head=12, layer_norm_epsilon=1e-5,
                                    tie_word_embeddings=True)
    # GPT2Model: every LayerNorm and Conv1D with a bias (shapes here as written, Conv1D transposed)
    global_tensors = (W(T.TOKEN_EMBD, "vocab", "embd"), W(T.POS_EMBD, "ctx", "embd"),
                      W(T.OUTPUT_NORM, "embd"), B(T.OUTPUT_NORM, "embd"), W(T.OUTPUT, "vocab", "embd", when="output"))
    layer_tensors = (
        W(T.ATTN_NORM, "embd"), B(T.ATTN_NORM, "embd"),
        W(T.ATTN_QKV, "qkv", "embd"), B(T.ATTN_QKV, "qkv"),
        W(T.ATTN_OUT, "embd", "embd"), B(T.ATTN_OUT, "embd"),
        W(T.FFN_NORM, "embd"), B(T.FFN_NORM, "embd"),
        W(T.FFN_UP, "ff", "embd"), B(T.FFN_UP, "ff"),
        W(T.FFN_DOWN, "embd", "ff"), B(T.FFN_DOWN, "embd"),
    )

    def dims(self) -> dict[str, Dim]:
        hp = self.hp
        embd_key = hp.which("n_embd", "hidden_size")
        n_inner = hp.get("n_inner")
        return {
            "vocab": Dim(int(hp.require("vocab_size")), "vocab_size"),
            "embd": Dim(self.n_embd, embd_key),
            "ctx": Dim(int(hp.require("n_positions", "n_ctx", "max_position_embeddings")),
                       hp.which("n_positions", "n_ctx", "max_position_embeddings")),
            "qkv": Dim(3 * self.n_embd, f"3 x {embd_key}"),
            "ff": Dim(int(n_inner), "n_inner") if n_inner is not None else Dim(4 * self.n_embd, f"4 x {embd_key}"),
        }

    def metadata(self) -> Metadata:
        # GPT2Model.set_gguf_parameters: TextModel's keys, but the context length from n_positions
        # and the feed-forward length n_inner or, when null, 4 * n_embd (see the module docstring)
        md, key = super().metadata(), self.key
        md.add(key(K.LLM.CONTEXT_LENGTH), int(self.hp.require("n_positions", "n_ctx", "max_position_embeddings")))
        md.add(key(K.LLM.FEED_FORWARD_LENGTH), int(self.hp.get("n_inner") or 4 * self.n_embd))
        return md

    def tensors(self, infos: dict[str, TensorInfo]) -> list[SourceTensor]:
        return [replace(t, shape=t.shape[::-1], transpose=True) if t.src and t.src.endswith(CONV1D_WEIGHTS) else t
                for t in super().tensors(infos)]

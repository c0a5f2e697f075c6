"""BERT encoders (BertModel, BertForMaskedLM) for sentence embeddings: llama.cpp's `bert`.

Mirrors llama.cpp's converter (conversion/bert.py BertModel over conversion/base.py TextModel)
and what llama.cpp loads for LLM_ARCH_BERT (src/models/bert.cpp):

- tensors: word, position and token-type embeddings, the embedding LayerNorm, and per layer
  q/k/v/output with biases, the two LayerNorms and the GELU FFN (up, down) with biases; all
  named by gguf's TensorNameMap. The `bert.` prefix of BertForMaskedLM and the old TF names
  `gamma`/`beta` are undone first, as the converter's `filter_tensors` does; the pooler, the
  pre-training heads (`cls.*`) and the `position_ids` buffer are dropped, as it drops them.
  No row reordering: llama.cpp's BERT has no rope.
- position_embd and token_types stay F32 (the planner's NEVER_QUANTIZED, as llama-quantize's
  `tensor_allows_quantization` and the converter keep them).
- metadata: the TextModel keys a BertConfig has, `attention.causal = false`, and the pooling
  type from sentence-transformers' `modules.json` when the checkpoint has one (the converter's
  `_try_set_pooling_type`); without it no key, and llama.cpp pools nothing (per-token output).
  `tokenizer.ggml.token_type_count` (type_vocab_size) is written here: llama.cpp refuses a BERT
  without it. The vocabulary itself is tokenizer.py's WordPiece export.

Where config.json lacks a key, the value is BertConfig's default: the converter reads the config
through transformers, which fills them in.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gguf

from ..errors import CheckpointError, UnsupportedError
from ..reader import read_json
from ..validate.model import Dim
from ..types import Metadata
from .base import B, TextModel, W

K = gguf.Keys
T = gguf.MODEL_TENSOR

# sentence-transformers' Pooling config -> llama.cpp's pooling type, in the order the converter
# tests the flags (TextModel._try_set_pooling_type).
POOLING_FLAGS = (
    ("pooling_mode_mean_tokens", gguf.PoolingType.MEAN),
    ("pooling_mode_cls_token", gguf.PoolingType.CLS),
    ("pooling_mode_lasttoken", gguf.PoolingType.LAST),
)
POOLING_MODES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}

# llama.cpp's BERT graph always applies ggml_gelu (the tanh form; HF's "gelu" is the erf form,
# which llama.cpp runs the same way for every BERT it supports).
GELU_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast")


class Bert(TextModel):
    gguf_arch = gguf.MODEL_ARCH.BERT
    hf_architectures = ("BertModel", "BertForMaskedLM")
    skip_patterns = TextModel.skip_patterns + (
        r"(^|\.)embeddings\.position_ids$",        # an index buffer (arange), not a weight
        r"^(bert\.)?pooler\.",                     # the [CLS] head: embeddings are the last hidden states
        r"^cls\.(predictions|seq_relationship)\.",  # BertForMaskedLM's / pre-training heads
    )

    # BertConfig's (and transformers 4's position_embedding_type; 5 has absolute positions only)
    defaults: ClassVar[dict] = dict(
        vocab_size=30522, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
        type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", position_embedding_type="absolute")
    # BertModel: three embeddings and their LayerNorm; per layer q/k/v/output, the FFN and two
    # LayerNorms, all with biases. No final norm, no output (the heads are skipped).
    global_tensors = (W(T.TOKEN_EMBD, "vocab", "embd"), W(T.TOKEN_TYPES, "types", "embd"), W(T.POS_EMBD, "ctx", "embd"),
                      W(T.TOKEN_EMBD_NORM, "embd"), B(T.TOKEN_EMBD_NORM, "embd"))
    layer_tensors = (
        W(T.ATTN_Q, "embd", "embd"), B(T.ATTN_Q, "embd"), W(T.ATTN_K, "embd", "embd"), B(T.ATTN_K, "embd"),
        W(T.ATTN_V, "embd", "embd"), B(T.ATTN_V, "embd"), W(T.ATTN_OUT, "embd", "embd"), B(T.ATTN_OUT, "embd"),
        W(T.ATTN_OUT_NORM, "embd"), B(T.ATTN_OUT_NORM, "embd"),
        W(T.FFN_UP, "ff", "embd"), B(T.FFN_UP, "ff"), W(T.FFN_DOWN, "embd", "ff"), B(T.FFN_DOWN, "embd"),
        W(T.LAYER_OUT_NORM, "embd"), B(T.LAYER_OUT_NORM, "embd"),
    )
    tensor_flag_keys: ClassVar[dict] = {"output": False}

    def __init__(self, config: dict, model_dir: Path | None = None):
        super().__init__(config, model_dir)
        act = self.hp.get("hidden_act")
        if act not in GELU_ACTS:
            raise UnsupportedError(f"BERT with hidden_act {act!r}: llama.cpp's BERT runs GELU only")
        position = self.hp.get("position_embedding_type")
        if position not in (None, "absolute"):  # transformers 4's BertModel reads null as absolute
            raise UnsupportedError(
                f"BERT with position_embedding_type {position!r}: llama.cpp's BERT has absolute positions only")

    def dims(self) -> dict[str, Dim]:
        hp = self.hp
        return {"vocab": Dim(int(hp.require("vocab_size")), "vocab_size"),
                "embd": Dim(int(hp.require("hidden_size")), "hidden_size"),
                "types": Dim(int(hp.require("type_vocab_size")), "type_vocab_size"),
                "ctx": Dim(int(hp.require("max_position_embeddings")), "max_position_embeddings"),
                "ff": Dim(int(hp.require("intermediate_size")), "intermediate_size")}

    def metadata(self) -> Metadata:
        # BertModel.set_gguf_parameters: TextModel's keys, then its own
        md, key = super().metadata(), self.key
        md.add(key(K.Attention.CAUSAL), False)
        if (pooling := self.pooling_type()) is not None:
            md.add(key(K.LLM.POOLING_TYPE), int(pooling.value))
        # BertModel.set_vocab: llama.cpp checks token_types' rows against it
        md.add(K.Tokenizer.TOKEN_TYPE_COUNT, int(self.hp.require("type_vocab_size")))
        return md

    def pooling_type(self) -> gguf.PoolingType | None:
        """The Pooling module of sentence-transformers' modules.json, as llama.cpp's type."""
        if self.model_dir is None or not (self.model_dir / "modules.json").is_file():
            return None
        listing = self.model_dir / "modules.json"
        modules = read_json(listing, list)
        if not all(isinstance(m, dict) and isinstance(m.get("path", ""), str) for m in modules):
            raise CheckpointError(f"{listing}: expected a list of modules, objects with a 'type' and a 'path'")
        path = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
        if path is None:
            return None
        config = self.model_dir / path / "config.json"
        if not config.is_file():
            raise CheckpointError(f"{config} is missing (modules.json names it)")
        pooling = read_json(config)
        for flag, kind in POOLING_FLAGS:
            if pooling.get(flag):
                return kind
        if (mode := pooling.get("pooling_mode")) in POOLING_MODES:
            return POOLING_MODES[mode]
        wanted = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
        raise UnsupportedError(
            f"{path}/config.json asks for pooling {', '.join(map(str, wanted)) or 'none'}; "
            "llama.cpp pools by mean, CLS or last token only")

    def map_name(self, hf_name: str) -> str:
        # BertModel.filter_tensors: BertForMaskedLM's `bert.` prefix, TF-era LayerNorm names
        name = hf_name.removeprefix("bert.")
        if name.endswith(".gamma"):
            name = name[: -len(".gamma")] + ".weight"
        elif name.endswith(".beta"):
            name = name[: -len(".beta")] + ".bias"
        return super().map_name(name)


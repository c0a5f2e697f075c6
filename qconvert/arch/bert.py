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

import json

import gguf

from ..errors import CheckpointError, UnsupportedError
from .base import Architecture, Metadata

K = gguf.Keys

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


class Bert(Architecture):
    gguf_arch = gguf.MODEL_ARCH.BERT
    hf_architectures = ("BertModel", "BertForMaskedLM")
    skip_patterns = Architecture.skip_patterns + (
        r"(^|\.)embeddings\.position_ids$",        # an index buffer (arange), not a weight
        r"^(bert\.)?pooler\.",                     # the [CLS] head: embeddings are the last hidden states
        r"^cls\.(predictions|seq_relationship)\.",  # BertForMaskedLM's / pre-training heads
    )

    def __init__(self, config: dict):
        super().__init__(config)
        hp = self.hp
        self.n_embd = int(hp.require("hidden_size"))
        self.n_head = int(hp.require("num_attention_heads"))
        act = hp.get("hidden_act", default="gelu")
        if act not in GELU_ACTS:
            raise UnsupportedError(f"BERT with hidden_act {act!r}: llama.cpp's BERT runs GELU only")
        position = hp.get("position_embedding_type", default="absolute")
        if position != "absolute":
            raise UnsupportedError(
                f"BERT with position_embedding_type {position!r}: llama.cpp's BERT has absolute positions only")

    def metadata(self) -> Metadata:
        hp, md, key = self.hp, Metadata(), self.key
        md.add(key(K.LLM.BLOCK_COUNT), self.n_blocks)
        md.add(key(K.LLM.CONTEXT_LENGTH), int(hp.get("max_position_embeddings", default=512)))
        md.add(key(K.LLM.EMBEDDING_LENGTH), self.n_embd)
        md.add(key(K.LLM.FEED_FORWARD_LENGTH), int(hp.get("intermediate_size", default=3072)))
        md.add(key(K.Attention.HEAD_COUNT), self.n_head)
        if (n_head_kv := hp.get("num_key_value_heads")) is not None:
            md.add(key(K.Attention.HEAD_COUNT_KV), int(n_head_kv))
        md.add(key(K.Attention.LAYERNORM_EPS), float(hp.get("layer_norm_eps", default=1e-12)))
        md.add(key(K.Attention.CAUSAL), False)
        if (pooling := self.pooling_type()) is not None:
            md.add(key(K.LLM.POOLING_TYPE), int(pooling.value))
        # BertModel.set_vocab: llama.cpp checks token_types' rows against it
        md.add(K.Tokenizer.TOKEN_TYPE_COUNT, int(hp.get("type_vocab_size", default=2)))
        return md

    def pooling_type(self) -> gguf.PoolingType | None:
        """The Pooling module of sentence-transformers' modules.json, as llama.cpp's type."""
        if self.model_dir is None or not (self.model_dir / "modules.json").is_file():
            return None
        modules = _read_json(self.model_dir / "modules.json")
        path = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
        if path is None:
            return None
        pooling = _read_json(self.model_dir / path / "config.json")
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


def _read_json(path) -> dict | list:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing (modules.json names it)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None

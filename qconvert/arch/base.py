"""The base of the adapter tree: `TextModel`, what every text model shares.

An adapter turns a checkpoint into (a) GGUF metadata keys for its hyper-parameters and (b) a
list of `SourceTensor`s: which GGUF tensor comes from which checkpoint tensor, with its rows in
which order. It decides nothing about types (that is the planner) and does no I/O of its own.

The tree mirrors llama.cpp's converter (its `conversion/` package): `TextModel` here is its
conversion/base.py TextModel (block count, context, embedding, heads, norm epsilons, rope theta
and scaling keys, names through gguf.TensorNameMap); the opt-in pieces are mixins a family lists
among its bases (llama.py: LlamaModel's Q/K row permutation and vocabulary rules; moe.py: experts
stacked into 3-D tensors) or data it states (layers.py: which layers slide or skip rope); and
each family's adapter states only what differs from its parent, as data where it can
(`defaults`, `layer_tensors`, `tensor_flag_keys`). No adapter inherits something only to undo
it: Qwen2 derives from TextModel, as the converter's Qwen2Model does, not from Llama.

Configs in the wild come from transformers 4 (`rope_theta`, `rope_scaling`, `torch_dtype`) and
transformers 5 (`rope_parameters`, `dtype`); `Hparams` reads both. Many leave out settings whose
value is their transformers config class's default (Gemma 3's hub configs give hardly more than
the sizes); llama.cpp's converter reads configs through transformers, which fills them in, and
each adapter's `defaults` does the same here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import gguf
import numpy as np

from ..errors import CheckpointError, UnsupportedError
from ..reader import DTYPES
from ..types import Metadata, ModelFacts, SourceTensor, TensorInfo
from ..validate.model import Dim, Expected, check_config, listing

K = gguf.Keys
T = gguf.MODEL_TENSOR


@dataclass(frozen=True)
class SizeRule:
    """When an architecture's llama.cpp loader calls a model LLM_TYPE_70B."""

    n_layer: int
    gqa: bool = False                # only with grouped-query attention (n_head_kv != n_head)
    not_n_expert: int | None = None  # never with this many experts

    def matches(self, n_layer: int, n_head: int, n_head_kv: int, n_expert: int) -> bool:
        return (n_layer == self.n_layer and (not self.gqa or n_head_kv != n_head)
                and n_expert != self.not_n_expert)


# llama.cpp's LLM_TYPE_70B: the one model type llama-quantize's rules look at (llama-quant.cpp
# llama_tensor_get_type_impl: attn_v Q3_K/Q4_K -> Q5_K; the rest test n_expert and n_gqa, and the
# architecture only for falcon, glm5-next and bailingmoe3). Each architecture's loader decides it
# (load_arch_hparams in src/models/<arch>.cpp); one not listed here is never 70B: qwen3, qwen3moe,
# phi3, gemma2, gemma3, gpt2 and bert name their sizes without it.
LLM_TYPE_70B: dict[gguf.MODEL_ARCH, SizeRule] = {
    # models/llama.cpp: 80 layers are 70B with GQA (65B without); 8 experts are sized 8x7B / 8x22B
    gguf.MODEL_ARCH.LLAMA: SizeRule(n_layer=80, gqa=True, not_n_expert=8),
    # models/qwen2.cpp: any 80-layer model (Qwen1.5-72B, without GQA, and Qwen2-72B, with it)
    gguf.MODEL_ARCH.QWEN2: SizeRule(n_layer=80),
}


class UnknownTensor(CheckpointError):
    """A checkpoint tensor without a GGUF name for the architecture (`TextModel.tensors`
    reports all of them in one error)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Expect:
    """One tensor an adapter expects in every checkpoint of its family (per layer, or once):
    its GGUF kind, weight or bias, its NumPy shape as names of the sizes `TextModel.dims`
    gives, and `when`, a flag of `TextModel.tensor_flags` that says whether the config has it
    (None: always)."""

    kind: gguf.MODEL_TENSOR
    shape: tuple[str, ...]
    part: str = "weight"
    when: str | None = None


def W(kind: gguf.MODEL_TENSOR, *shape: str, when: str | None = None) -> Expect:
    return Expect(kind, shape, "weight", when)


def B(kind: gguf.MODEL_TENSOR, *shape: str, when: str | None = None) -> Expect:
    return Expect(kind, shape, "bias", when)


# What a llama.cpp decoder (LLM_ARCH_LLAMA and the families built like it) loads: the embedding,
# the final norm and the output unless tied; per layer the attention and a SwiGLU FFN, each
# after its RMSNorm. The biases are there where the family's config says (`tensor_flags`), as
# transformers' LlamaAttention / LlamaMLP build them (attention_bias, mlp_bias).
DECODER_GLOBALS = (W(T.TOKEN_EMBD, "vocab", "embd"), W(T.OUTPUT_NORM, "embd"),
                   W(T.OUTPUT, "vocab", "embd", when="output"))
ATTENTION = (
    W(T.ATTN_NORM, "embd"),
    W(T.ATTN_Q, "q", "embd"), B(T.ATTN_Q, "q", when="qkv_bias"),
    W(T.ATTN_K, "kv", "embd"), B(T.ATTN_K, "kv", when="qkv_bias"),
    W(T.ATTN_V, "kv", "embd"), B(T.ATTN_V, "kv", when="qkv_bias"),
    W(T.ATTN_OUT, "embd", "q"), B(T.ATTN_OUT, "embd", when="out_bias"),
)
QK_NORM = (W(T.ATTN_Q_NORM, "head"), W(T.ATTN_K_NORM, "head"))  # Qwen3, Gemma 3: per-head RMSNorm
DENSE_FFN = (
    W(T.FFN_NORM, "embd"),
    W(T.FFN_GATE, "ff", "embd"), B(T.FFN_GATE, "ff", when="mlp_bias"),
    W(T.FFN_UP, "ff", "embd"), B(T.FFN_UP, "ff", when="mlp_bias"),
    W(T.FFN_DOWN, "embd", "ff"), B(T.FFN_DOWN, "embd", when="mlp_bias"),
)


# The config keys behind the size names of Expect.shape, for a config that lacks one.
DIM_KEYS = {"vocab": "vocab_size", "embd": "hidden_size", "ff": "intermediate_size", "head": "head_dim",
            "ctx": "max_position_embeddings", "types": "type_vocab_size", "expert": "num_local_experts"}


@dataclass
class Hparams:
    """config.json, flattened (`text_config` merged in) and readable by several key spellings."""

    raw: dict

    def get(self, *keys: str, default: Any = None) -> Any:
        for k in keys:
            if k in self.raw and self.raw[k] is not None:
                return self.raw[k]
        return default

    def which(self, *keys: str) -> str:
        """The spelling of a setting that config.json uses (the first one, if it has none)."""
        return next((k for k in keys if self.raw.get(k) is not None), keys[0])

    def require(self, *keys: str) -> Any:
        value = self.get(*keys)
        if value is None:
            raise CheckpointError(f"config.json has no {' / '.join(keys)}")
        return value

    def rope(self) -> dict:
        """Rope settings in one dict whatever the config style: rope_type, rope_theta, factor...

        transformers 5 writes `rope_parameters` (with rope_theta inside, possibly per attention
        kind); transformers 4 writes top-level `rope_theta` and an optional `rope_scaling`."""
        params = dict(self.get("rope_parameters", "rope_scaling", default={}) or {})
        if "full_attention" in params:
            params = dict(params["full_attention"])
        if "rope_theta" not in params and (theta := self.get("rope_theta")) is not None:
            params["rope_theta"] = theta
        if "rope_type" not in params and "type" in params:
            params["rope_type"] = params["type"]
        # the converter's TextModel.__init__ mirrors these top-level settings into its rope dict
        for name, spellings in (("original_max_position_embeddings", ("original_max_position_embeddings",)),
                                ("partial_rotary_factor", ("partial_rotary_factor", "rope_pct", "rope_percent"))):
            if name not in params and (value := self.get(*spellings)) is not None:
                params[name] = value
        return params

    def local_rope(self) -> dict:
        """The sliding-window layers' own rope, if the config gives them one (Gemma 3):
        transformers 5's rope_parameters.sliding_attention, or a transformers-4 local base
        frequency (the spellings the converter's TextModel.__init__ looks for)."""
        params = self.get("rope_parameters", "rope_scaling", default={}) or {}
        if "sliding_attention" in params:
            return dict(params["sliding_attention"])
        if "full_attention" in params:
            return {}
        theta = self.get("local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                         "rope_local_base_freq")
        return {} if theta is None else {"rope_theta": theta}


def flatten_config(config: dict) -> dict:
    """Multimodal wrappers nest the language model's settings under text_config."""
    if isinstance(config.get("text_config"), dict):
        return {**config, **config["text_config"]}
    return dict(config)


# The spellings of the sizes every text model has, in the order TextModel.find_hparam tries them.
EMBD_KEYS = ("hidden_size", "n_embd", "dim")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")
HEAD_KV_KEYS = ("num_key_value_heads", "n_kv_heads")
FF_KEYS = ("intermediate_size", "n_inner", "hidden_dim")


# TextModel.set_gguf_parameters' integer settings: GGUF key, config names it tries in order.
# (Its context-length list goes on to generation settings such as max_length, which configs of
# transformers 4 carry with a default of 20; none of the families here needs them.)
TEXT_MODEL_COUNTS = (
    (K.LLM.CONTEXT_LENGTH, ("max_position_embeddings", "n_ctx", "n_positions")),
    (K.LLM.EMBEDDING_LENGTH, EMBD_KEYS),
    (K.LLM.FEED_FORWARD_LENGTH, FF_KEYS),
    (K.Attention.HEAD_COUNT, HEAD_KEYS),
    (K.Attention.HEAD_COUNT_KV, HEAD_KV_KEYS),
    (K.LLM.EXPERT_COUNT, ("num_local_experts", "num_experts", "n_routed_experts")),
    (K.LLM.EXPERT_USED_COUNT, ("num_experts_per_tok", "num_experts_per_token", "top_k_experts")),
)
TEXT_MODEL_EPS = (
    (K.Attention.LAYERNORM_RMS_EPS, ("rms_norm_eps", "norm_eps")),
    (K.Attention.LAYERNORM_EPS, ("layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")),
)


class TextModel:
    """The root of the adapter tree (the converter's conversion/base.py TextModel). Subclasses set
    `gguf_arch` and `hf_architectures`, list the pieces they use among their bases, and state what
    differs as data; they override a method only where data cannot say it."""

    gguf_arch: ClassVar[gguf.MODEL_ARCH]
    hf_architectures: ClassVar[tuple[str, ...]] = ()
    # Checkpoint tensors that llama.cpp has no use for (recomputed at load time).
    skip_patterns: ClassVar[tuple[str, ...]] = (r"\.rotary_emb\.inv_freq$", r"\.attention\.masked_bias$",
                                                r"\.attention\.bias$")
    # Whether llama.cpp converts the family with LlamaModel.set_vocab, which adds tokenizer_config's
    # add_prefix_space and a no-BOS rule for 49152-token vocabularies (see tokenizer.py).
    llama_set_vocab: ClassVar[bool] = False
    # tokenizer.ggml.add_space_prefix that the family's set_vocab writes for a SentencePiece vocab
    # (Gemma's: False), or None to leave it to the tokenizer files.
    spm_add_space_prefix: ClassVar[bool | None] = None
    # The config-class defaults of transformers for the settings the adapter reads, applied to
    # config.json's settings (text_config merged in) once, in __init__: the converter reads the
    # config through transformers (AutoConfig), which fills them in. A value applies to a key the
    # file does not have; an explicit null stays null. A function of the Hparams (the other
    # defaults applied) is what the config class's __post_init__ computes, and applies to an
    # absent or a null key alike (LlamaConfig's head_dim: hidden_size / num_attention_heads).
    defaults: ClassVar[dict[str, Any]] = {}
    # The tensors the family has, once and in every layer (see Expect; check_tensors in
    # validate/model.py compares them with the checkpoint's).
    global_tensors: ClassVar[tuple[Expect, ...]] = ()
    layer_tensors: ClassVar[tuple[Expect, ...]] = ()
    # The flags `Expect.when` names: True or False for the whole family, or the config.json key
    # whose bool says. "output" (the lm_head) is derived from tie_word_embeddings (`tensor_flags`).
    tensor_flag_keys: ClassVar[dict[str, bool | str]] = {"qkv_bias": False, "out_bias": False, "mlp_bias": False}
    # The rope scalings the architecture's llama.cpp graph applies as transformers does (through
    # TextModel's keys: linear, yarn), where a config may ask for others it would ignore (llama3's
    # rope_freqs tensor, which only some graphs load); None: not checked here.
    rope_types: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: dict, model_dir: Path | None = None):
        """`model_dir`, the checkpoint folder, is for adapters that read files besides
        config.json (BERT reads sentence-transformers' modules.json for the pooling type)."""
        flat = flatten_config(config)
        for key, value in self.defaults.items():
            if key not in flat and not callable(value):
                flat[key] = value
        check_config(flat)  # before anything is computed or built from the values
        self.hp = Hparams(flat)
        for key, value in self.defaults.items():
            if callable(value) and flat.get(key) is None:
                flat[key] = value(self.hp)
        self.model_dir = model_dir
        self.n_blocks = int(self.hp.require("num_hidden_layers", "n_layer", "num_layers"))
        self.name_map = gguf.get_tensor_name_map(self.gguf_arch, self.n_blocks)
        self.rope = self.hp.rope()
        hp = self.hp
        self.n_embd = int(hp.require(*EMBD_KEYS))
        self.n_head = int(hp.require(*HEAD_KEYS))
        # llama.cpp's values where the config (after `defaults`) has none: as many KV heads as
        # heads, heads of n_embd / n_head
        self.n_head_kv = int(hp.get(*HEAD_KV_KEYS, default=self.n_head))
        self.head_dim = int(hp.get("head_dim", default=self.n_embd // self.n_head))
        rope_type = str(self.rope.get("rope_type", "default")).lower()
        if self.rope_types is not None and rope_type not in self.rope_types:
            raise UnsupportedError(f"{self.arch_name} with {rope_type} rope scaling: llama.cpp's {self.arch_name} "
                                   f"applies {', '.join(self.rope_types)} rope only")

    @property
    def arch_name(self) -> str:
        return gguf.MODEL_ARCH_NAMES[self.gguf_arch]

    def key(self, template: str) -> str:
        return template.format(arch=self.arch_name)

    # -- metadata -------------------------------------------------------------------------------

    def metadata(self) -> Metadata:
        """The GGUF keys of the model's settings; by default `text_model_metadata`'s (a family's
        adapter adds its own keys to them)."""
        return self.text_model_metadata()

    def text_model_metadata(self) -> Metadata:
        """The keys the converter's TextModel.set_gguf_parameters (conversion/base.py) writes:
        each where the config (with `defaults`) has the setting, under the same names. Adapters
        add, drop or change theirs (key order does not matter: llama.cpp looks keys up by name)."""
        hp, md, key = self.hp, Metadata(), self.key
        md.add(key(K.LLM.BLOCK_COUNT), self.n_blocks)
        for template, names in TEXT_MODEL_COUNTS:
            if (value := hp.get(*names)) is not None:
                md.add(key(template), int(value))
        if hp.raw.get("is_causal") is False:
            md.add(key(K.Attention.CAUSAL), False)
        self.add_rope_scaling(md)
        if (theta := self.rope.get("rope_theta")) is not None:
            md.add(key(K.Rope.FREQ_BASE), float(theta))
        if (local_theta := hp.local_rope().get("rope_theta")) is not None:
            md.add(key(K.Rope.FREQ_BASE_SWA), float(local_theta))
        for template, names in TEXT_MODEL_EPS:
            if (value := hp.get(*names)) is not None:
                md.add(key(template), float(value))
        if (head_dim := hp.get("head_dim")) is not None:
            md.add(key(K.Attention.KEY_LENGTH), int(head_dim))
            md.add(key(K.Attention.VALUE_LENGTH), int(head_dim))
        return md

    def add_rope_scaling(self, md: Metadata) -> None:
        """TextModel's rope scaling keys: linear and yarn. (llama3's is a rope_freqs tensor, see
        llama.py; Phi-3's LongRoPE has its own keys, see phi3.py.)"""
        rope, key = self.rope, self.key
        rope_type, factor = rope.get("rope_type"), rope.get("factor")
        if rope_type == "linear" and factor is not None:
            md.add(key(K.Rope.SCALING_TYPE), gguf.RopeScalingType.LINEAR.value)
            md.add(key(K.Rope.SCALING_FACTOR), float(factor))
        elif rope_type == "yarn" and factor is not None:
            md.add(key(K.Rope.SCALING_TYPE), gguf.RopeScalingType.YARN.value)
            md.add(key(K.Rope.SCALING_FACTOR), float(factor))
            md.add(key(K.Rope.SCALING_ORIG_CTX_LEN), int(rope["original_max_position_embeddings"]))
            for names, dst in ((("extrapolation_factor",), K.Rope.SCALING_YARN_EXT_FACTOR),
                               (("attention_factor", "attn_factor"), K.Rope.SCALING_YARN_ATTN_FACTOR),
                               (("beta_fast",), K.Rope.SCALING_YARN_BETA_FAST),
                               (("beta_slow",), K.Rope.SCALING_YARN_BETA_SLOW)):
                if (value := next((rope[n] for n in names if rope.get(n) is not None), None)) is not None:
                    md.add(key(dst), float(value))

    def model_facts(self) -> ModelFacts:
        """What llama-quantize's type rules read about the model besides each tensor."""
        n_head, n_head_kv = self.n_head, self.n_head_kv
        n_expert = int(self.hp.get("num_local_experts", "num_experts", "n_routed_experts", default=0))
        rule = LLM_TYPE_70B.get(self.gguf_arch)
        return ModelFacts(n_layer=self.n_blocks, n_gqa=n_head // n_head_kv, n_expert=n_expert,
                          is_70b=rule is not None and rule.matches(self.n_blocks, n_head, n_head_kv, n_expert))

    # -- tensors --------------------------------------------------------------------------------

    def dims(self) -> dict[str, Dim]:
        """The sizes the config fixes, by the names `global_tensors` and `layer_tensors` use: a
        decoder's here (families with other shapes, GPT-2 and BERT, name theirs)."""
        hp = self.hp
        heads, kv_heads = hp.which(*HEAD_KEYS), hp.which(*HEAD_KV_KEYS)
        dims = {
            "vocab": Dim(int(hp.require("vocab_size")), "vocab_size"),
            "embd": Dim(self.n_embd, hp.which(*EMBD_KEYS)),
            "head": Dim(self.head_dim, "head_dim"),
            "q": Dim(self.n_head * self.head_dim, f"{heads} x head_dim"),
            "kv": Dim(self.n_head_kv * self.head_dim, f"{kv_heads} x head_dim"),
        }
        if (n_ff := hp.get(*FF_KEYS)) is not None:
            dims["ff"] = Dim(int(n_ff), hp.which(*FF_KEYS))
        return dims

    def tensor_flags(self) -> dict[str, bool | None]:
        """Each `Expect.when` flag: True (the tensor must be there), False (must not), None (may:
        a tied model's lm_head, which llama.cpp loads when present, as the converter writes it)."""
        hp = self.hp
        flags: dict[str, bool | None] = {
            flag: bool(hp.get(key, default=False)) if isinstance(key, str) else key
            for flag, key in self.tensor_flag_keys.items()}
        # transformers' PretrainedConfig ties by default (the adapters' `defaults` say where not)
        flags.setdefault("output", None if hp.get("tie_word_embeddings", default=True) else True)
        return flags

    def expected_tensors(self) -> dict[str, Expected]:
        """Every GGUF tensor the checkpoint must give (required) or may give, with its shape."""
        dims, flags = self.dims(), self.tensor_flags()

        def shape(e: Expect) -> tuple[Dim, ...]:
            missing = [d for d in e.shape if d not in dims]
            if missing:  # a size the config lacks (a Llama config without intermediate_size)
                keys = " / ".join(DIM_KEYS.get(d, d) for d in missing)
                raise CheckpointError(f"config.json has no {keys}, which sizes {self.arch_name}'s "
                                      f"{gguf.TENSOR_NAMES[e.kind].format(bid='N')}")
            return tuple(dims[d] for d in e.shape)

        out: dict[str, Expected] = {}
        for specs, bids in ((self.global_tensors, [None]), (self.layer_tensors, range(self.n_blocks))):
            for e in specs:
                flag = flags[e.when] if e.when is not None else True
                if flag is False:
                    continue
                dims_of = shape(e)
                for bid in bids:
                    out[f"{gguf.TENSOR_NAMES[e.kind].format(bid=bid)}.{e.part}"] = Expected(dims_of, flag is True)
        return out

    def tensor_context(self) -> str:
        """The config settings that decide which tensors a checkpoint has, for error messages."""
        hp = self.hp
        keys = {key for key in self.tensor_flag_keys.values() if isinstance(key, str)} | {"tie_word_embeddings"}
        settings = [f"{k} {str(bool(hp.get(k))).lower()}" for k in sorted(keys) if k in hp.raw]
        return ", ".join([f"{hp.which('num_hidden_layers', 'n_layer', 'num_layers')} {self.n_blocks}", *settings])

    def map_name(self, hf_name: str) -> str:
        mapped = self.name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UnknownTensor(hf_name)
        return mapped

    def unknown_tensors_error(self, names: list[str]) -> CheckpointError:
        """Checkpoint tensors that have no GGUF name: layers beyond the config's count, or tensors
        of a variant qconvert does not know."""
        layers = sorted({int(m[1]) for n in names if (m := re.search(r"\.(\d+)\.", n)) and int(m[1]) >= self.n_blocks})
        why = (f"config.json says {self.n_blocks} layers but the checkpoint has layer {layers[0]}" if layers
               else "is the checkpoint a variant qconvert does not know?")
        return CheckpointError(f"checkpoint has {len(names)} tensor{'s' if len(names) > 1 else ''} with no GGUF "
                               f"name for architecture {self.arch_name}: {listing(names)}; {why}")

    def row_order_for(self, hf_name: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """How the tensor's first axis is reordered for llama.cpp, or None to keep it."""
        return None

    def extra_tensors(self) -> list[SourceTensor]:
        """Tensors that the checkpoint does not have but llama.cpp needs (e.g. rope_freqs)."""
        return []

    def sources_for(self, name: str, info: TensorInfo) -> list[SourceTensor]:
        """The GGUF tensor that the checkpoint tensor `name` gives (one, by default)."""
        return [SourceTensor(self.map_name(name), info.shape, name, info.dtype,
                             row_order=self.row_order_for(name, info.shape))]

    def skipped(self, name: str) -> bool:
        return any(re.search(p, name) for p in self.skip_patterns)

    def tensors(self, infos: dict[str, TensorInfo]) -> list[SourceTensor]:
        """GGUF tensors in write order (the reader yields shards in name order, names sorted)."""
        return self.collect(infos, self.sources_for)

    def collect(self, infos: dict[str, TensorInfo],
                sources_for: Callable[[str, TensorInfo], Iterable[SourceTensor]]) -> list[SourceTensor]:
        """The generated tensors, then what `sources_for` gives for each checkpoint tensor not
        skipped, written where it is read (none for an expert waiting for the rest of its stack,
        see moe.py); every tensor without a GGUF name in one error."""
        out = list(self.extra_tensors())
        unknown: list[str] = []
        for name, info in infos.items():
            if self.skipped(name):
                continue
            if info.dtype not in DTYPES:  # integer buffers are fine only where skipped above
                raise UnsupportedError(
                    f"tensor {name} has dtype {info.dtype}; supported dtypes are {', '.join(DTYPES)}")
            try:
                out.extend(sources_for(name, info))
            except UnknownTensor as e:  # all of them in one error
                unknown.append(e.name)
        if unknown:
            raise self.unknown_tensors_error(unknown)
        seen: set[str] = set()
        for t in out:
            if t.gguf_name in seen:
                raise CheckpointError(f"two checkpoint tensors map to {t.gguf_name}")
            seen.add(t.gguf_name)
        # Generated tensors first, then shards in name order and tensors sorted by name within
        # each: the order llama.cpp's converter writes (blk.10 before blk.2).
        return out

"""config.json values, the checkpoint's tensors against what the adapter expects of them, and
what llama.cpp's loader refuses beyond the tensors.

Three checks, all before anything large is allocated or written:

- `check_config`: every config.json value qconvert reads has the JSON type its meaning needs
  (a count is an integer, not 4096.0, "4096" or true; an epsilon a finite number; a flag a
  bool) and a value inside a sane range. The rules are data (`CONFIG_RULES`, one line per key,
  every spelling of it); the caps are documented beside them. Sizes are checked exactly later,
  against the tensors; the caps only stop what would be built from the config alone before
  that (gguf's name map has an entry per layer, llama3's rope factors one per frequency, the
  tokenizer pads to vocab_size) from growing without bound.
- `check_tensors`: the adapter's `expected_tensors()` (every GGUF tensor the config implies,
  with its shape) against the tensors it mapped from the checkpoint. Missing, unexpected and
  mis-shaped tensors are one error that lists them; where the shapes disagree with the config,
  the config key is named.
- `check_loadable`: llama.cpp's loader rules that look at more than the tensors (see
  LOADER_TOKEN_RULES), on the file as it would be written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import CheckpointError

if TYPE_CHECKING:
    from ..arch.base import TextModel
    from ..types import SourceTensor
    from ..convert import Job

# -- config.json --------------------------------------------------------------------------------

# The caps. Two are llama.cpp's own, which its loader enforces with GGML_ASSERT (an abort, not an
# error: llama_model::load_hparams in src/llama-model.cpp); the others are far beyond any released
# model (the widest hidden size is ~25k, the largest vocabularies ~260k tokens), so a value beyond
# one is a typo or an attack, not a model. The exact sizes are checked against the tensors.
MAX_LAYERS = 512           # LLAMA_MAX_LAYERS (src/llama-hparams.h); gguf's name map has ~100 names a layer
MAX_EXPERTS = 1024         # LLAMA_MAX_EXPERTS (src/llama-hparams.h)
MAX_WIDTH = 1 << 20        # any one dimension: hidden, FFN, head sizes and counts
MAX_TOKENS = (1 << 31) - 1  # llama.cpp's llama_token is int32_t; the exact bound is the embedding's rows
MAX_CONTEXT = (1 << 32) - 1  # written as GGUF UINT32 (llama.cpp's n_ctx_train is uint32_t)


@dataclass(frozen=True)
class Rule:
    """What one config.json value must be. `kind` is "int" (a JSON integer, not a bool or a
    float), "number" (an integer or a finite float), "bool", "str", "dict" or "list";
    `lo`/`hi` bound a number, inclusive; `above` makes `lo` exclusive. A null is always
    allowed: Hparams reads it as absent."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    above: bool = False

    def expected(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        what = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
                "dict": "an object", "list": "a list"}[self.kind]
        if self.lo is not None and self.hi is not None and not self.above:
            return f"{what} from {num(self.lo)} to {num(self.hi)}"
        bounds = []
        if self.lo is not None:
            bounds.append(f"{'>' if self.above else '>='} {num(self.lo)}")
        if self.hi is not None:
            bounds.append(f"<= {num(self.hi)}")
        return f"{what} {' and '.join(bounds)}" if bounds else what

    def accepts(self, value: Any) -> bool:
        if self.kind == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif self.kind == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else:
            ok = isinstance(value, {"bool": bool, "str": str, "dict": dict, "list": list}[self.kind])
        if not ok or self.kind not in ("int", "number"):
            return ok
        if self.lo is not None and (value <= self.lo if self.above else value < self.lo):
            return False
        return self.hi is None or value <= self.hi


def _rules(spellings: str, rule: Rule) -> dict[str, Rule]:
    return {key: rule for key in spellings.split()}


COUNT = Rule("int", 1, MAX_WIDTH)
POSITIVE = Rule("number", 0, above=True)
EPS = Rule("number", 0, 1)
FLAG = Rule("bool")

# Every config.json key qconvert reads (all spellings Hparams tries), after text_config is merged in.
CONFIG_RULES: dict[str, Rule] = {
    **_rules("num_hidden_layers n_layer num_layers", Rule("int", 1, MAX_LAYERS)),
    **_rules("hidden_size n_embd dim", COUNT),
    **_rules("intermediate_size n_inner hidden_dim moe_intermediate_size", COUNT),
    **_rules("num_attention_heads n_head n_heads num_key_value_heads n_kv_heads head_dim", COUNT),
    "vocab_size": Rule("int", 1, MAX_TOKENS),
    "type_vocab_size": Rule("int", 1, MAX_TOKENS),
    **_rules("max_position_embeddings n_ctx n_positions original_max_position_embeddings",
             Rule("int", 1, MAX_CONTEXT)),
    **_rules("num_local_experts num_experts n_routed_experts", Rule("int", 1, MAX_EXPERTS)),
    **_rules("num_experts_per_tok num_experts_per_token top_k_experts", Rule("int", 1, MAX_EXPERTS)),
    "decoder_sparse_step": Rule("int", 0, MAX_LAYERS),
    "mlp_only_layers": Rule("list"),
    "layer_types": Rule("list"),
    "sliding_window": Rule("int", 0, MAX_CONTEXT),  # Phi-3 writes 0 for none
    "sliding_window_pattern": Rule("int", 1, MAX_LAYERS),
    **_rules("rms_norm_eps norm_eps layer_norm_eps layer_norm_epsilon norm_epsilon", EPS),
    **_rules("rope_theta local_rope_theta rope_local_theta rope_theta_local swa_rope_theta rope_local_base_freq",
             POSITIVE),
    **_rules("partial_rotary_factor rope_pct rope_percent", Rule("number", 0, 1, above=True)),
    **_rules("query_pre_attn_scalar attn_logit_softcapping final_logit_softcapping", POSITIVE),
    **_rules("tie_word_embeddings attention_bias mlp_bias norm_topk_prob is_causal", FLAG),
    **_rules("hidden_act hidden_activation position_embedding_type", Rule("str")),
    **_rules("rope_scaling rope_parameters", Rule("dict")),
}

# Inside rope_scaling / rope_parameters (and their per-attention-kind sub-objects).
ROPE_RULES: dict[str, Rule] = {
    "rope_type": Rule("str"), "type": Rule("str"),
    "rope_theta": POSITIVE, "factor": POSITIVE,
    "original_max_position_embeddings": Rule("int", 1, MAX_CONTEXT),
    "low_freq_factor": POSITIVE, "high_freq_factor": POSITIVE,
    "extrapolation_factor": Rule("number"), "attention_factor": Rule("number"), "attn_factor": Rule("number"),
    "beta_fast": Rule("number"), "beta_slow": Rule("number"),
    "partial_rotary_factor": Rule("number", 0, 1, above=True),
    "long_factor": Rule("list"), "short_factor": Rule("list"),
}


def _found(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else \
        f"{value!r}"
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{text} ({type(value).__name__})" if isinstance(value, (bool, str, float)) else text


def _check(where: str, key: str, value: Any, rule: Rule) -> None:
    if value is None or rule.accepts(value):
        return
    raise CheckpointError(f"config.json: {where}{key} is {_found(value)}; expected {rule.expected()}")


def check_config(config: dict) -> None:
    """Every value qconvert reads from config.json (text_config merged in), against CONFIG_RULES.

    >>> check_config({"hidden_size": 64, "rope_theta": 10000})
    >>> check_config({"num_hidden_layers": 4.0})
    Traceback (most recent call last):
    ...
    qconvert.errors.CheckpointError: config.json: num_hidden_layers is 4.0 (float); expected an integer from 1 to 512
    """
    for key, rule in CONFIG_RULES.items():
        _check("", key, config.get(key), rule)
    for key in ("rope_scaling", "rope_parameters"):
        rope = config.get(key)
        if not rope:
            continue
        # transformers 5 may nest one rope dict per attention kind (Gemma 3)
        nested = {k: v for k, v in rope.items() if isinstance(v, dict)}
        for where, params in [(f"{key}.", rope)] + [(f"{key}.{k}.", v) for k, v in nested.items()]:
            for name, rule in ROPE_RULES.items():
                _check(where, name, params.get(name), rule)
            for name in ("long_factor", "short_factor"):
                values = params.get(name) or []
                if not all(Rule("number").accepts(v) for v in values):
                    bad = next(v for v in values if not Rule("number").accepts(v))
                    raise CheckpointError(f"config.json: {where}{name} holds {_found(bad)}; expected numbers")
                if len(values) > MAX_WIDTH:
                    raise CheckpointError(f"config.json: {where}{name} has {len(values)} values; "
                                          f"expected at most {MAX_WIDTH}")
    # llama.cpp's grouped-query attention shares each KV head among n_head / n_head_kv heads
    # (llama_hparams::n_gqa), and picks n_expert_used of n_expert (load_hparams asserts
    # n_expert_used <= n_expert)
    for a, b in ((("num_attention_heads", "n_head", "n_heads"), ("num_key_value_heads", "n_kv_heads")),
                   (("num_local_experts", "num_experts", "n_routed_experts"),
                    ("num_experts_per_tok", "num_experts_per_token", "top_k_experts"))):
        ka = next((k for k in a if config.get(k) is not None), None)
        kb = next((k for k in b if config.get(k) is not None), None)
        if ka is None or kb is None:
            continue
        va, vb = config[ka], config[kb]
        if ka.startswith(("num_attention", "n_head")) and va % vb:
            raise CheckpointError(f"config.json: {ka} {va} is not a multiple of {kb} {vb}; "
                                  "each key/value head must serve the same number of attention heads")
        if not ka.startswith(("num_attention", "n_head")) and vb > va:
            raise CheckpointError(f"config.json: {kb} {vb} is more than the {ka} {va}")


# -- tensors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dim:
    """One size the config fixes: its value and the config.json key(s) it comes from."""

    size: int
    key: str


@dataclass(frozen=True)
class Expected:
    """One GGUF tensor the config implies. `required` False: allowed, not needed (a tied
    model's lm_head)."""

    shape: tuple[Dim, ...]
    required: bool = True

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.shape)


# How many names a list shows before "and N more".
SHOW = 4


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:SHOW])
    return shown + (f" and {len(names) - SHOW} more" if len(names) > SHOW else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_LAYER = re.compile(r"^blk\.(\d+)\.")
# What the tensors that are not per layer are in Hugging Face's terms, for a missing one.
ROLES = {"output.weight": "the lm_head", "output_norm.weight": "the final norm", "output_norm.bias": "the final norm",
         "token_embd.weight": "the token embedding", "position_embd.weight": "the position embedding",
         "token_types.weight": "the token type embedding", "token_embd_norm.weight": "the embedding LayerNorm",
         "token_embd_norm.bias": "the embedding LayerNorm"}


def _hf_name(gguf_name: str, present: dict[str, SourceTensor], hf_names: dict[str, tuple[Any, str]]) -> str:
    """The checkpoint name a missing GGUF tensor would have, in the checkpoint's own spelling:
    another layer's tensor of the same kind with the layer number changed; else, of the
    spellings gguf's TensorNameMap (`hf_names`) knows for it, the one most like the names the
    layer does have; else the GGUF name."""
    m = _LAYER.match(gguf_name)
    if m is None:
        return f"{gguf_name} ({ROLES[gguf_name]})" if gguf_name in ROLES else gguf_name
    bid, rest = m[1], gguf_name[m.end():]
    for name, s in present.items():
        other = _LAYER.match(name)
        if other is not None and name[other.end():] == rest and s.src is not None:
            # the first ".N." of a checkpoint name is its layer (experts come after it)
            return s.src.replace(f".{other[1]}.", f".{bid}.", 1)
    base, _, part = gguf_name.rpartition(".")
    siblings = [s.src for n, s in present.items() if n.startswith(f"blk.{bid}.") and s.src is not None]
    words = {w for src in siblings for w in src.split(".")}
    prefixes = {src[:src.index(f".{bid}.") + len(bid) + 2] for src in siblings if f".{bid}." in src}
    candidates = [hf for hf, (_, gguf) in hf_names.items() if gguf == base and hf.startswith(tuple(prefixes))]
    if not candidates:
        return gguf_name
    return max(candidates, key=lambda hf: len(words & set(hf.split(".")))) + "." + part


def check_tensors(adapter: TextModel, sources: Iterable[SourceTensor]) -> None:
    """The adapter's mapped tensors against `adapter.expected_tensors()`: one error listing the
    missing, the unexpected and the mis-shaped ones, naming the config keys behind the shapes."""
    expected = adapter.expected_tensors()
    present = {s.gguf_name: s for s in sources if s.src is not None}  # generated ones are ours
    missing = [_hf_name(n, present, adapter.name_map.mapping) for n, e in expected.items()
               if e.required and n not in present]
    unexpected = [s.src for n, s in present.items() if n not in expected]
    misshaped = [(s, expected[n]) for n, s in present.items() if n in expected and s.shape != expected[n].sizes]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    if missing:
        parts.append(f"lacks {_plural(len(missing), 'tensor')} {listing(missing)}")
    if unexpected:
        parts.append(f"has {_plural(len(unexpected), 'unexpected tensor')} {listing(unexpected)}")
    if misshaped:
        keys: dict[str, int] = {}
        shown = []
        for s, e in misshaped:
            if len(s.shape) == len(e.shape):
                keys.update({d.key: d.size for d, got in zip(e.shape, s.shape) if d.size != got})
            # as stored: GPT-2's Conv1D weights transposed, experts one tensor each
            found, dims = (s.shape[::-1], e.shape[::-1]) if s.transpose else (s.shape, e.shape)
            name = f"the {len(s.stack)} experts of {s.src}" if s.stack else s.src
            if s.stack:
                found, dims = found[1:], dims[1:]
            want = ", ".join(f"{d.key} {d.size}" for d in dims)
            shown.append(f"{name} {'are' if s.stack else 'is'} {list(found)}, expected [{want}]")
        disagree = ", ".join(f"{k} {v}" for k, v in keys.items())
        parts.append(f"disagrees with config.json's {disagree or 'sizes'} in {_plural(len(misshaped), 'tensor')}: "
                     + "; ".join(shown[:SHOW]) + (f"; and {len(shown) - SHOW} more" if len(shown) > SHOW else ""))
    raise CheckpointError(f"checkpoint {'; '.join(parts)} (config: {adapter.tensor_context()})")


# -- what llama.cpp's loader refuses beyond the tensors ------------------------------------------

# llama_vocab::impl::load (src/llama-vocab.cpp) sets token attributes by the model's general.name:
# for a name containing "phi-3" or "phi3" (lowercased) it looks these tokens up with
# `token_to_id.at()`, which throws when one is missing, and llama.cpp refuses the file. Any
# architecture: the name, not the arch, decides. (Its other name rules only warn.)
LOADER_TOKEN_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("phi-3", "phi3"), ("</s>", "<unk>", "<s>", "<|endoftext|>")),
)


def check_loadable(job: Job) -> None:
    """Refuse a conversion whose file llama.cpp would not load for a reason beyond its tensors."""
    name = job.general_name()
    tokens = set(job.tokenizer.tokens)
    for words, needed in LOADER_TOKEN_RULES:
        if any(w in name.lower() for w in words) and (lacking := [t for t in needed if t not in tokens]):
            raise CheckpointError(
                f"general.name {name!r} makes llama.cpp look up the tokens {', '.join(needed)} (its Phi-3 rule in "
                f"llama_vocab::impl::load), and the vocabulary lacks {', '.join(lacking)}: llama.cpp would refuse the "
                "file. Rename the model (--override-kv general.name=str:NAME) or its folder")

"""Which GGUF type each tensor gets, and why: a pure function from tensor metadata to a table.

A recipe (one per `-t` value) is a default type and an ordered list of rules; the first rule
that matches a tensor decides its type. Then a type the tensor's rows cannot hold (row length
not a multiple of its block) falls back as llama-quantize's `tensor_type_fallback` does, and
the reason says so. Nothing here reads tensor data; `qconvert quantize --dry-run` prints this.

The rules are llama.cpp's (src/llama-quant.cpp, `llama_tensor_get_type_impl`):
- only 2-D and larger `.weight` tensors are quantized; norms, 1-D tensors, the MoE router and
  position/token-type embeddings stay F32 (the converter does the same for F16/BF16/Q8_0);
- the output tensor (or the token embedding when tied to it) gets Q6_K, or Q8_0 when its rows
  are not a multiple of the default type's block;
- the K mixes give attn_v and ffn_down more bits in some layers. llama-quantize counts those
  tensors as it walks its weights map, which is ordered by layer number, then name
  (llama-model-loader.h `weight_name_comparer`), so `facts` counts in that order, whatever the
  order the tensors are written in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import gguf

from . import quants
from .errors import QuantizationError, UnsupportedError
from .types import ModelFacts, PlanRow, SourceTensor

T = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# Tensors llama.cpp never quantizes (llama-quant.cpp `tensor_allows_quantization`, and the
# converter's list of tensors it always writes as F32).
NEVER_QUANTIZED = re.compile(r"_norm\.weight$|ffn_gate_inp(_shexp)?\.weight$|^position_embd\.|"
                             r"^token_types\.|^rope_freqs\.|ssm_conv1d")


@dataclass(frozen=True)
class Overrides:
    """llama-quantize's options, and what it lacks: --no-fallback."""

    pure: bool = False                       # only the default type (no mix rules)
    output_tensor_type: T | None = None
    token_embedding_type: T | None = None
    leave_output_tensor: bool = False        # output.weight stays as in the checkpoint
    tensor_types: tuple[tuple[str, T], ...] = ()  # (regex, type): the first that matches wins
    has_imatrix: bool = False
    no_fallback: bool = False

    def manual_type(self, name: str) -> tuple[str, T] | None:
        """llama-quantize lower-cases each pattern and regex-searches the tensor name; the first
        pattern that matches decides."""
        for pattern, qtype in self.tensor_types:
            if re.search(pattern.lower(), name):
                return pattern, qtype
        return None


@dataclass(frozen=True)
class Facts:
    """One tensor as the rules see it."""

    t: SourceTensor
    category: str             # llama-quantize's tensor category
    i: int                    # its index among tensors of that category (llama-quantize's counter)
    n: int                    # how many there are (n_layer for the FFN counters)
    model: ModelFacts
    tied: bool                # token_embd doubles as the output tensor
    default: T                # the recipe's default type
    opts: Overrides           # the user's overrides (llama-quantize's options)


Predicate = Callable[[Facts], bool]


@dataclass(frozen=True)
class Rule:
    matches: Predicate
    qtype: T
    reason: str


@dataclass(frozen=True)
class Recipe:
    """A llama-quantize file type: its default type and its rules, first match wins. Its name is
    the file type's (`mix_name`)."""

    file_type: FT
    default: T
    rules: tuple[Rule, ...] = ()

    @property
    def name(self) -> str:
        return mix_name(self.file_type)

    @property
    def quantized(self) -> bool:
        return not quants.is_float(self.default)


def mix_name(ft: FT) -> str:
    """The name llama-quantize gives a file type (its ftype table), from gguf's LlamaFileType.

    >>> mix_name(FT.MOSTLY_Q4_K_M), mix_name(FT.ALL_F32)
    ('Q4_K_M', 'F32')
    """
    return ft.name.removeprefix("MOSTLY_").removeprefix("ALL_")


# -- categories and counters (llama-quant.cpp tensor_get_category) ----------------------------

def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                     ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                     ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                     ("ffn_down", "ffn_down")):
        if key in name:
            return cat
    return "other"


def use_more_bits(i: int, n: int) -> bool:
    """llama-quantize's layers that get more bits: the first and last eighth, every third between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


# -- predicates --------------------------------------------------------------------------------

def quantizable(t: SourceTensor) -> bool:
    return t.n_dims >= 2 and t.gguf_name.endswith("weight") and not NEVER_QUANTIZED.search(t.gguf_name)


def is_output(f: Facts) -> bool:
    return f.category == "output" or (f.tied and f.category == "token_embd")


def cat(*names: str) -> Predicate:
    return lambda f: f.category in names and not is_output(f)


def both(*preds: Predicate) -> Predicate:
    return lambda f: all(p(f) for p in preds)


def more_bits(f: Facts) -> bool:
    return use_more_bits(f.i, f.n)


def first(fraction: int) -> Predicate:
    """The first n/fraction tensors of the category (llama-quantize's `i_layer < n_layer/8`)."""
    return lambda f: f.i < f.n // fraction


def first_attn_v(k: int) -> Predicate:
    return lambda f: f.i < k


def n_expert(k: int) -> Predicate:
    return lambda f: f.model.n_expert == k


def gqa_at_least(k: int) -> Predicate:
    return lambda f: f.model.n_gqa >= k


def with_imatrix(f: Facts) -> bool:
    return f.opts.has_imatrix


def without_imatrix(f: Facts) -> bool:
    return not f.opts.has_imatrix


def rows_misfit_default(f: Facts) -> bool:
    return f.t.shape[-1] % quants.block_size(f.default) != 0


# Output tensor: Q8_0 when its rows do not fit the default type's block, else Q6_K (or Q8_0
# for the Q8_0 mix). Every quantized mix starts with these.
OUTPUT = (
    Rule(both(is_output, rows_misfit_default), T.Q8_0, "output tensor, rows not whole default blocks: Q8_0"),
    Rule(both(is_output, lambda f: f.default != T.Q8_0), T.Q6_K, "output tensor: Q6_K"),
    Rule(is_output, T.Q8_0, "output tensor"),
)
# 8-expert models (Mixtral): attn_v and attn_k go to Q8_0 in every mix.
EXPERTS8 = (
    Rule(both(cat("attn_v", "attn_k"), n_expert(8)), T.Q8_0, "8-expert model: attn_v/attn_k Q8_0"),
)


def stacked_experts(f: Facts) -> bool:
    """A 3-D (or larger) tensor of more than one expert: llama-quantize's `tensor->ne[2] > 1`."""
    return len(f.t.shape) >= 3 and f.t.shape[-3] > 1


# MXFP4_MOE: only the expert stacks are MXFP4, every other matrix Q8_0, the output tensor (or the
# tied token embedding) Q8_0 whatever its rows (llama_tensor_get_type_impl's MXFP4_MOE branches,
# which come before the token embedding's and the mixes' rules, so none of those apply).
# (llama.cpp's BailingMoE3 exception, expert roles only, concerns an architecture qconvert refuses.)
MXFP4_MOE = (
    Rule(is_output, T.Q8_0, "output tensor: Q8_0 (MXFP4_MOE)"),
    Rule(stacked_experts, T.MXFP4, "expert tensor (MXFP4_MOE)"),
    Rule(lambda f: True, T.Q8_0, "not an expert tensor: Q8_0 (MXFP4_MOE)"),
)
# The ternary mixes: an untied token embedding is Q4_K (llama_tensor_get_type_impl's TOKEN_EMBD
# branch for TQ1_0/TQ2_0); the output tensor and 8-expert rules are every mix's.
TOKEN_EMBD_Q4_K = Rule(cat("token_embd"), T.Q4_K, "token embedding: Q4_K")


def mix(ft: FT, default: T, *rules: Rule) -> Recipe:
    return Recipe(ft, default, OUTPUT + EXPERTS8 + rules)


ATTN_V, FFN_DOWN, ATTN_OUT = cat("attn_v"), cat("ffn_down"), cat("attn_output")
ATTN_OUT_8X = both(ATTN_OUT, n_expert(8))

# llama_tensor_get_type_impl tests the IQ4_NL and IQ4_XS ftypes together: the same rules for both
IQ4_RULES = (
    Rule(both(ATTN_V, gqa_at_least(4)), T.Q5_K, "attn_v, GQA >= 4"),
    Rule(both(FFN_DOWN, first(8), without_imatrix), T.Q5_K, "ffn_down, first n/8 layers, without imatrix"),
    Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts"),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(FT.ALL_F32, T.F32),
    Recipe(FT.MOSTLY_F16, T.F16),
    Recipe(FT.MOSTLY_BF16, T.BF16),
    mix(FT.MOSTLY_Q8_0, T.Q8_0),
    mix(FT.MOSTLY_Q4_0, T.Q4_0,
        Rule(both(FFN_DOWN, first(8), with_imatrix), T.Q4_1, "ffn_down, first n/8 layers, with imatrix")),
    mix(FT.MOSTLY_Q4_1, T.Q4_1),
    mix(FT.MOSTLY_Q5_0, T.Q5_0,
        Rule(both(FFN_DOWN, first(8), with_imatrix), T.Q5_1, "ffn_down, first n/8 layers, with imatrix")),
    mix(FT.MOSTLY_Q5_1, T.Q5_1),
    mix(FT.MOSTLY_Q2_K, T.Q2_K,
        Rule(both(ATTN_V, gqa_at_least(4)), T.Q4_K, "attn_v, GQA >= 4"),
        Rule(ATTN_V, T.Q3_K, "attn_v"),
        Rule(FFN_DOWN, T.Q3_K, "ffn_down"),
        Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts"),
        Rule(ATTN_OUT, T.Q3_K, "attn_output")),
    mix(FT.MOSTLY_Q3_K_S, T.Q3_K,
        Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts")),
    mix(FT.MOSTLY_Q3_K_M, T.Q3_K,
        Rule(both(ATTN_V, first_attn_v(2)), T.Q5_K, "attn_v, first 2"),
        Rule(ATTN_V, T.Q4_K, "attn_v"),
        Rule(both(FFN_DOWN, first(16)), T.Q5_K, "ffn_down, first n/16 layers"),
        Rule(FFN_DOWN, T.Q4_K, "ffn_down"),
        Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts"),
        Rule(ATTN_OUT, T.Q4_K, "attn_output")),
    mix(FT.MOSTLY_Q3_K_L, T.Q3_K,
        Rule(ATTN_V, T.Q5_K, "attn_v"),
        Rule(FFN_DOWN, T.Q5_K, "ffn_down"),
        Rule(both(ATTN_OUT, lambda f: f.model.n_expert != 8), T.Q5_K, "attn_output")),
    mix(FT.MOSTLY_Q4_K_S, T.Q4_K,
        Rule(both(ATTN_V, first_attn_v(4)), T.Q5_K, "attn_v, first 4"),
        Rule(both(FFN_DOWN, first(8)), T.Q5_K, "ffn_down, first n/8 layers"),
        Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts")),
    mix(FT.MOSTLY_Q4_K_M, T.Q4_K,
        Rule(both(ATTN_V, more_bits), T.Q6_K, "attn_v, use_more_bits layer"),
        Rule(both(FFN_DOWN, more_bits), T.Q6_K, "ffn_down, use_more_bits layer"),
        Rule(ATTN_OUT_8X, T.Q5_K, "attn_output, 8 experts")),
    mix(FT.MOSTLY_Q5_K_S, T.Q5_K),
    mix(FT.MOSTLY_Q5_K_M, T.Q5_K,
        Rule(both(ATTN_V, more_bits), T.Q6_K, "attn_v, use_more_bits layer"),
        Rule(both(FFN_DOWN, more_bits), T.Q6_K, "ffn_down, use_more_bits layer")),
    mix(FT.MOSTLY_Q6_K, T.Q6_K),
    mix(FT.MOSTLY_TQ1_0, T.TQ1_0, TOKEN_EMBD_Q4_K),
    mix(FT.MOSTLY_TQ2_0, T.TQ2_0, TOKEN_EMBD_Q4_K),
    mix(FT.MOSTLY_IQ4_NL, T.IQ4_NL, *IQ4_RULES),
    mix(FT.MOSTLY_IQ4_XS, T.IQ4_XS, *IQ4_RULES),
    # gguf-py names MXFP4_MOE's file type from 0.19 on; with an older gguf the mix is not offered
    *([Recipe(FT.MOSTLY_MXFP4_MOE, T.MXFP4, MXFP4_MOE)] if "MOSTLY_MXFP4_MOE" in FT.__members__ else []),
)}
# Mixes that need a newer gguf package than the one installed: name -> the gguf version that has them
NEEDS_NEWER_GGUF = {"MXFP4_MOE": "0.19"} if "MOSTLY_MXFP4_MOE" not in FT.__members__ else {}

# llama-quantize's tensor_type_fallback: a 256-block type whose rows do not fit goes to a
# 32-block type; a 32-block type that still does not fit goes to F16.
FALLBACKS: dict[T, T] = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
                         T.TQ1_0: T.Q4_0, T.TQ2_0: T.Q4_0,
                         T.IQ4_XS: T.IQ4_NL}


def recipe_for(name: str) -> Recipe:
    """The mix named `name`, case-insensitive: the one parser of `-t` and of a manifest's types."""
    key = name.strip().upper()
    recipe = RECIPES.get(key)
    if key in NEEDS_NEWER_GGUF:
        raise UnsupportedError(f"{key} needs the gguf package {NEEDS_NEWER_GGUF[key]} or newer (pip install -U gguf): "
                               "the installed one names no such llama.cpp file type")
    if recipe is None or recipe.name not in available():
        raise UnsupportedError(f"unknown type {name!r}; supported: {', '.join(available())}")
    return recipe


def check_writable(rows: list[PlanRow], recipe: Recipe) -> None:
    """A plan naming a type qconvert has no quantizer for is an error, never a silent substitute."""
    cannot = [r for r in rows if r.qtype not in quants.SUPPORTED]
    if cannot:
        raise UnsupportedError(
            f"{recipe.name} needs {', '.join(sorted({r.qtype.name for r in cannot}))} for "
            f"{cannot[0].gguf_name}{f' and {len(cannot) - 1} more' if len(cannot) > 1 else ''}, which "
            "qconvert cannot write yet")


def available() -> list[str]:
    """Recipe names qconvert can write."""
    return [r.name for r in RECIPES.values() if r.default in quants.SUPPORTED]


def fit(qtype: T, cols: int) -> tuple[T, str]:
    """llama-quantize's fallback for rows that are not whole blocks of `qtype`."""
    if cols % quants.block_size(qtype) == 0:
        return qtype, ""
    nxt = FALLBACKS.get(qtype, qtype)
    if cols % quants.block_size(nxt):
        nxt = T.F16
    block = quants.block_size(qtype)
    return nxt, f"; fallback {qtype.name}->{nxt.name}: row length {cols} is not a multiple of {block}"


def choose(f: Facts, recipe: Recipe) -> tuple[T, str, T | None]:
    """llama-quantize's llama_tensor_get_type: overrides, then the mix's rules, then fallback."""
    t, opts = f.t, f.opts
    if opts.leave_output_tensor and f.category == "output":
        return SOURCE_TYPES.get(t.src_dtype, T.F32), "left as in the checkpoint (--leave-output-tensor)", None
    if not quantizable(t):
        return T.F32, "not quantized (1-D, norm or kept F32 as llama.cpp does)", None
    if opts.token_embedding_type is not None and f.category == "token_embd":
        return exact(opts.token_embedding_type, t, "--token-embedding-type")
    if opts.output_tensor_type is not None and f.category == "output":
        return exact(opts.output_tensor_type, t, "--output-tensor-type")
    if not recipe.quantized:
        return recipe.default, f"{recipe.name}", None
    qtype, reason = recipe.default, f"{recipe.name} default"
    if (manual := opts.manual_type(t.gguf_name)) is not None:
        qtype, reason = manual[1], f"--tensor-type {manual[0]}={manual[1].name}"
    elif opts.pure:
        reason = f"{recipe.name} default (--pure)"
    elif opts.output_tensor_type is not None and is_output(f):
        # reached by a token_embd tied to the output; unlike the exact type above, it may fall back
        qtype, reason = opts.output_tensor_type, "tied output tensor: --output-tensor-type"
    else:
        for rule in recipe.rules:
            if rule.matches(f):
                qtype, reason = rule.qtype, rule.reason
                break
        if f.category == "attn_v" and f.model.is_70b and qtype in (T.Q3_K, T.Q4_K) and not is_output(f):
            qtype, reason = T.Q5_K, f"{reason}; 70B model: attn_v Q5_K"
    final, why = fit(qtype, t.shape[-1])
    return final, reason + why, (qtype if final != qtype else None)


# --leave-output-tensor keeps the checkpoint's own precision.
SOURCE_TYPES = {"F32": T.F32, "F16": T.F16, "BF16": T.BF16}


def exact(qtype: T, t: SourceTensor, option: str) -> tuple[T, str, None]:
    """A type the user named for one tensor: llama-quantize applies no fallback to it, so rows
    that do not fit are an error rather than a corrupt file."""
    if t.shape[-1] % quants.block_size(qtype):
        raise QuantizationError(f"{option} {qtype.name}: {t.gguf_name} has rows of {t.shape[-1]}, not a "
                                f"multiple of {qtype.name}'s block of {quants.block_size(qtype)}")
    return qtype, option, None


def facts(tensors: list[SourceTensor], model: ModelFacts, default: T, opts: Overrides) -> list[Facts]:
    """Each tensor with its category and llama-quantize's counter for that category."""
    cats = [category(t.gguf_name) for t in tensors]
    tied = "output" not in cats
    n_attn_v = sum(c == "attn_v" for c in cats)
    index: dict[int, int] = {}
    seen: dict[str, int] = {}
    for k in sorted(range(len(tensors)), key=lambda k: llama_quantize_order(tensors[k].gguf_name)):
        index[k] = seen.get(cats[k], 0)
        # llama-quantize advances a counter only when its mix rules run for the tensor
        if quantizable(tensors[k]) and not opts.pure and opts.manual_type(tensors[k].gguf_name) is None:
            seen[cats[k]] = index[k] + 1
    out = []
    for k, (t, c) in enumerate(zip(tensors, cats)):
        i = index[k]
        if c in ("ffn_down", "ffn_gate", "ffn_up") and model.n_expert > 1:
            # llama-quantize reads the layer from the name for MoE models
            m = re.match(r"blk\.(\d+)\.", t.gguf_name)
            i = int(m.group(1)) if m else i
        n = n_attn_v if c == "attn_v" else model.n_layer
        out.append(Facts(t, c, i, n, model, tied, default, opts))
    return out


def llama_quantize_order(name: str) -> tuple[int, str]:
    """The order of llama.cpp's weights map: layer number (-1 outside blocks), then name."""
    m = re.match(r"blk\.(\d+)\.", name)
    return (int(m.group(1)) if m else -1, name)


def plan(tensors: list[SourceTensor], recipe: Recipe, model: ModelFacts | None = None,
         opts: Overrides | None = None) -> list[PlanRow]:
    """The type of every tensor under `recipe`, in write order."""
    opts = opts or Overrides()
    model = model or ModelFacts(n_layer=1 + max((int(m.group(1)) for t in tensors
                                                 if (m := re.match(r"blk\.(\d+)\.", t.gguf_name))), default=-1))
    rows = []
    for f in facts(tensors, model, recipe.default, opts):
        qtype, reason, wanted = choose(f, recipe)
        t = f.t
        rows.append(PlanRow(t.src, t.gguf_name, t.shape, t.src_dtype, qtype, reason, wanted))
    fell = [r for r in rows if r.fell_back]
    if opts.no_fallback and fell:
        shown = ", ".join(f"{r.gguf_name} ({r.wanted.name}->{r.qtype.name}, rows of {r.shape[-1]})"
                          for r in fell[:3])
        raise QuantizationError(
            f"--no-fallback: {len(fell)} tensor{'s' if len(fell) > 1 else ''} would fall back, their rows "
            f"not being whole blocks of the planned type: {shown}{' ...' if len(fell) > 3 else ''}; "
            "choose another -t, or --tensor-type for them")
    return rows


def summarize(rows: list[PlanRow]) -> tuple[int, float]:
    """(total tensor bytes, bits per weight) of a plan."""
    nbytes = sum(r.nbytes for r in rows)
    n = sum(r.n_elements for r in rows)
    return nbytes, 8.0 * nbytes / max(n, 1)

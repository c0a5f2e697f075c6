"""Which GGUF type each tensor gets, and why: a pure function from tensor metadata to a table.

A recipe (one per `-t` value) is an ordered list of rules; the first rule that matches a tensor
decides its type. After the rule, a type that cannot hold the tensor (row length not a multiple
of its block, or a type qconvert cannot write yet) falls back along FALLBACKS, and the reason
says so. Nothing here reads tensor data; `qconvert quantize --dry-run` prints this table.

The rules follow llama.cpp: 1-D tensors and norms stay F32 (convert_hf_to_gguf.py and
llama-quantize both do this), and llama-quantize's Q4_0 puts the output tensor (or the token
embedding when it is tied to the output) in Q6_K, or Q8_0 when its rows are not a multiple of 256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import gguf
import numpy as np

from . import quants
from .arch import SourceTensor
from .errors import UnsupportedError

T = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# Tensors llama.cpp keeps in F32 whatever the file type (llama-quantize's and the converter's lists).
ALWAYS_F32 = re.compile(r"(^|\.)(ffn_gate_inp|ffn_gate_inp_shexp|position_embd|token_types|rope_freqs)(\.|$)")


@dataclass(frozen=True)
class PlanRow:
    src: str | None          # checkpoint tensor name (None for generated tensors)
    gguf_name: str
    shape: tuple[int, ...]   # NumPy shape; GGUF stores it reversed
    src_dtype: str
    qtype: T
    reason: str

    @property
    def nbytes(self) -> int:
        return quants.row_nbytes(self.qtype, self.shape[-1]) * (
            int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class Context:
    """What rules may look at besides the tensor itself."""

    has_output: bool  # the model has its own output.weight (not tied to token_embd)


Predicate = Callable[[SourceTensor, Context], bool]


@dataclass(frozen=True)
class Rule:
    matches: Predicate
    qtype: T
    reason: str


@dataclass(frozen=True)
class Recipe:
    name: str
    file_type: FT
    default: T
    rules: tuple[Rule, ...] = ()


def is_1d_or_norm(t: SourceTensor, ctx: Context) -> bool:
    return t.n_dims <= 1 or t.gguf_name.endswith("_norm.weight")


def is_always_f32(t: SourceTensor, ctx: Context) -> bool:
    return bool(ALWAYS_F32.search(t.gguf_name)) or not t.gguf_name.endswith(".weight")


def is_output(t: SourceTensor, ctx: Context) -> bool:
    """output.weight, or token_embd.weight when the model ties its output to it."""
    return t.gguf_name == "output.weight" or (not ctx.has_output and t.gguf_name == "token_embd.weight")


def output_row_multiple_of_256(t: SourceTensor, ctx: Context) -> bool:
    return is_output(t, ctx) and t.shape[-1] % 256 == 0


KEEP_F32 = (
    Rule(is_1d_or_norm, T.F32, "1-D or norm: kept F32"),
    Rule(is_always_f32, T.F32, "kept F32 as llama.cpp does"),
)

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("F32", FT.ALL_F32, T.F32, KEEP_F32),
    Recipe("F16", FT.MOSTLY_F16, T.F16, KEEP_F32),
    Recipe("BF16", FT.MOSTLY_BF16, T.BF16, KEEP_F32),
    Recipe("Q8_0", FT.MOSTLY_Q8_0, T.Q8_0, KEEP_F32),
    Recipe("Q4_0", FT.MOSTLY_Q4_0, T.Q4_0, KEEP_F32 + (
        Rule(output_row_multiple_of_256, T.Q6_K, "output tensor: Q6_K as llama-quantize"),
        Rule(is_output, T.Q8_0, "output tensor: Q8_0 as llama-quantize (rows not a multiple of 256)"),
    )),
)}

# Where a type goes when it cannot hold a tensor: llama-quantize's fallbacks for the K-quants,
# F16 after that.
FALLBACKS: dict[T, T] = {
    T.Q6_K: T.Q8_0, T.Q5_K: T.Q5_1, T.Q4_K: T.Q5_0, T.Q3_K: T.Q4_0, T.Q2_K: T.Q4_0,
    T.Q8_0: T.F16, T.Q4_0: T.F16, T.Q4_1: T.F16, T.Q5_0: T.F16, T.Q5_1: T.F16,
}


def recipe_for(name: str) -> Recipe:
    recipe = RECIPES.get(name.upper())
    if recipe is None:
        raise UnsupportedError(f"unknown type {name!r}; supported: {', '.join(RECIPES)}")
    return recipe


def block_size(qtype: T) -> int:
    return gguf.GGML_QUANT_SIZES[qtype][0]


def choose(t: SourceTensor, recipe: Recipe, ctx: Context) -> tuple[T, str]:
    qtype, reason = recipe.default, f"{recipe.name} default"
    for rule in recipe.rules:
        if rule.matches(t, ctx):
            qtype, reason = rule.qtype, rule.reason
            break
    while True:
        cols = t.shape[-1]
        if qtype not in quants.SUPPORTED:
            nxt = FALLBACKS[qtype]
            reason = f"{reason}; fallback {qtype.name}->{nxt.name}: qconvert cannot write {qtype.name} yet"
        elif cols % block_size(qtype):
            nxt = FALLBACKS[qtype]
            reason = (f"{reason}; fallback {qtype.name}->{nxt.name}: row length {cols} is not a "
                      f"multiple of {block_size(qtype)}")
        else:
            return qtype, reason
        qtype = nxt


def plan(tensors: list[SourceTensor], recipe: Recipe) -> list[PlanRow]:
    """The type of every tensor under `recipe`, in write order."""
    ctx = Context(has_output=any(t.gguf_name == "output.weight" for t in tensors))
    rows = []
    for t in tensors:
        qtype, reason = choose(t, recipe, ctx)
        rows.append(PlanRow(t.src, t.gguf_name, t.shape, t.src_dtype, qtype, reason))
    return rows


def summarize(rows: list[PlanRow]) -> tuple[int, float]:
    """(total tensor bytes, bits per weight) of a plan."""
    nbytes = sum(r.nbytes for r in rows)
    n = sum(r.n_elements for r in rows)
    return nbytes, 8.0 * nbytes / max(n, 1)

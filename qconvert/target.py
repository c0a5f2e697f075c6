"""The best file that fits a budget: each tensor's type chosen to minimize the model's expected
damage within a byte budget (issue 14's --target-size / --target-bpw; the library half).

The damage of storing tensor t in type q is estimated as

    D(t, q) = s(t) * E(t, q),   E(t, q) = sum over rows i, columns j of  (w_j / mean(w)) * (x_ij - q(x)_ij)^2

where w_j is the importance matrix's mean squared activation of input column j (llama-imatrix's
per-column figure) and q(x) is x quantized by qconvert's quantizer for q (with the same importance
matrix, as the file would be) and dequantized. The weights are taken relative to the tensor's
mean: they say which inputs matter within a tensor, not how loud a layer's inputs are. (Weighing
by w_j itself, the expected squared error of the tensor's outputs, made the plans worse than
llama-quantize's mixes on SmolLM2: a deeper layer's louder inputs count its errors many times
over, though the residual stream they land in is as much louder.) Without an importance matrix w_j = 1: the plain
squared error, which knows nothing of which columns the model leans on (`Errors.weighted` says
which). s(t) is a sensitivity per tensor class (SENSITIVITY): how much a unit of output error in
that class costs the model, 1 for every class until measured.

E is estimated on a deterministic sample of each tensor's rows (`sample_ranges`: up to
SAMPLE_ROWS rows in groups spread over the tensor, each group inside one expert) and scaled to
the whole tensor; the same model, importance matrix and types give the same estimates, and the
same plan.

The choice is a multiple-choice knapsack, solved exactly by dynamic programming over the budget
in units of `granularity` bytes (`solve`): every tensor's size in a type is known before writing
(and rounded UP to whole units, so the plan never exceeds the budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gguf
import numpy as np

from . import quants
from .errors import UsageError

T = gguf.GGMLQuantizationType

# Rows per tensor the errors are estimated on, and the rows read together (one positional read)
SAMPLE_ROWS = 256
GROUP = 16
# How much a unit of output error costs the model, per tensor class (planner.category); the
# classes missing here count 1
SENSITIVITY: dict[str, float] = {}
# Budget units of the dynamic program: the budget is cut into about this many
UNITS = 1 << 15


# Types never chosen for a budget: the ternary ones are for models trained ternary (BitNet); on
# ordinary weights their relative error is about 0.8 (verify.py's measurements)
EXCLUDED = frozenset({T.TQ1_0, T.TQ2_0})


def candidate_types(cols: int, types: tuple[T, ...] | None = None) -> list[T]:
    """The types a tensor with rows of `cols` weights may take: every quantized type qconvert writes
    whose block divides the rows (or `types`, filtered the same way), and F16, smallest first."""
    pool = types if types is not None else tuple(t for t in quants.SUPPORTED
                                                 if not quants.is_float(t) and t not in EXCLUDED) + (T.F16,)
    fit = [t for t in pool if cols % quants.block_size(t) == 0]
    return sorted(fit, key=lambda t: (quants.get(t).bits, t.value))


def sample_ranges(n_rows: int, per_part: int, sample: int = SAMPLE_ROWS, group: int = GROUP) -> list[tuple[int, int]]:
    """Row ranges (lo, hi) to estimate a tensor's error on: every row when there are at most `sample`,
    else sample // group groups of `group` rows spread evenly, none crossing a multiple of `per_part`
    (an expert's rows of a stacked tensor: locate_rows reads within one expert).

    >>> sample_ranges(10, 10)
    [(0, 10)]
    >>> sample_ranges(1000, 1000, sample=32, group=16)
    [(0, 16), (984, 1000)]
    """
    if n_rows <= sample:
        return [(lo, min(lo + per_part, n_rows)) for lo in range(0, n_rows, per_part)]
    count = max(1, sample // group)
    starts = np.linspace(0, n_rows - group, count).round().astype(np.int64)
    out = []
    for lo in starts.tolist():
        hi = min(lo + group, (lo // per_part + 1) * per_part)
        if not out or lo >= out[-1][1]:
            out.append((lo, hi))
    return out


@dataclass(frozen=True)
class Errors:
    """E(t, q) for one tensor: the estimated weighted squared error of each candidate type, over the
    whole tensor; `weighted` is False when no importance matrix weighed the columns."""

    name: str
    errors: dict[T, float]
    weighted: bool
    sampled_rows: int


def tensor_errors(name: str, x_of, n_rows: int, cols: int, per_part: int, types: list[T],
                  weights: np.ndarray | None) -> Errors:
    """Estimate E(t, q) for every type in `types`. `x_of(lo, hi)` gives rows lo..hi of the tensor as
    float32 [hi - lo, cols] (convert/verify's reading functions); `weights` is the importance matrix
    of the tensor (n_expert x cols), or None."""
    sums = dict.fromkeys(types, 0.0)
    seen = 0
    for lo, hi in sample_ranges(n_rows, per_part):
        x = np.ascontiguousarray(x_of(lo, hi), dtype=np.float32)
        w = None if weights is None else np.ascontiguousarray(weights[lo // per_part], dtype=np.float32)
        for q in types:
            qt = quants.get(q)
            packed = quants.quantize_rows(q, x, w)
            back = qt.dequantize_blocks(packed.reshape(-1, qt.type_size)).reshape(x.shape)
            d = (x.astype(np.float64) - back) ** 2
            # the columns weighed relative to the tensor's mean: which inputs matter within the tensor,
            # not how loud its inputs are (a deeper layer's louder inputs do not make its errors matter more)
            sums[q] += float((d * (w / w.mean())).sum() if w is not None and w.mean() > 0 else d.sum())
        seen += hi - lo
    scale = n_rows / seen
    return Errors(name, {q: s * scale for q, s in sums.items()}, weights is not None, seen)


@dataclass(frozen=True)
class Item:
    """One tensor of the knapsack: its candidate types, each one's size in the file (bytes, padded as
    the writer pads) and damage (sensitivity x error)."""

    name: str
    types: tuple[T, ...]
    nbytes: tuple[int, ...]
    damage: tuple[float, ...]


def solve(items: list[Item], budget: int, units: int = UNITS) -> list[int]:
    """The index of each item's type that minimizes the total damage with the total size within
    `budget` bytes: a multiple-choice knapsack, solved exactly by dynamic programming over the bytes
    the budget leaves beyond every item's smallest type, cut into `units` units (each type's extra
    bytes rounded up to whole units: the result never exceeds the budget, and is optimal among the
    plans whose rounded sizes fit; with one byte a unit, optimal). Ties go to the smaller type.
    UsageError if even the smallest types do not fit.

    >>> a = Item("a", (T.Q4_0, T.Q8_0), (10, 20), (5.0, 1.0))
    >>> b = Item("b", (T.Q4_0, T.Q8_0), (10, 20), (9.0, 1.0))
    >>> solve([a, b], 30), solve([a, b], 40), solve([a, b], 20)
    ([0, 1], [1, 1], [0, 0])
    """
    smallest = sum(min(it.nbytes) for it in items)
    if smallest > budget:
        raise UsageError(f"the target leaves {budget} bytes for the quantized tensors; their smallest types "
                         f"take {smallest}")
    # the program runs over what each type costs beyond the item's smallest, within what the budget
    # leaves beyond the smallest plan: that plan (0 units) is always within reach, whatever the rounding
    spare = budget - smallest
    grain = max(1, math.ceil(spare / units))
    cap = spare // grain

    def cost(it: Item, j: int) -> int:
        return math.ceil((it.nbytes[j] - min(it.nbytes)) / grain)

    dp = np.full(cap + 1, np.inf)
    dp[0] = 0.0
    choices = np.zeros((len(items), cap + 1), dtype=np.int16)
    for k, it in enumerate(items):
        best = np.full(cap + 1, np.inf)
        pick = np.zeros(cap + 1, dtype=np.int16)
        for j, dmg in enumerate(it.damage):
            c = cost(it, j)
            if c > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[c:] = dp[:cap + 1 - c] + dmg
            better = cand < best  # strict: an equal damage keeps the earlier, smaller type
            best[better] = cand[better]
            pick[better] = j
        dp, choices[k] = best, pick
    end = int(np.argmin(dp))  # the least damage over every total size within the budget
    assert np.isfinite(dp[end]), "the smallest plan is always within reach"
    out = [0] * len(items)
    for k in range(len(items) - 1, -1, -1):
        j = int(choices[k, end])
        out[k] = j
        end -= cost(items[k], j)
    assert end == 0, end
    return out


@dataclass(frozen=True)
class Budget:
    """--target-size (every byte of the output's files) or --target-bpw (bits per weight over every
    tensor, as the report counts them)."""

    nbytes: int | None = None
    bpw: float | None = None

    def __post_init__(self) -> None:
        assert (self.nbytes is None) != (self.bpw is None), self

    @property
    def option(self) -> str:
        return "--target-size" if self.nbytes is not None else "--target-bpw"

    @property
    def label(self) -> str:
        """The output's type in reports and the provenance record: "target-size=4500000000"."""
        return f"target-size={self.nbytes}" if self.nbytes is not None else f"target-bpw={self.bpw:g}"

    @property
    def name(self) -> str:
        """For default file names: "target-4.5G", "target-4.25bpw"."""
        if self.bpw is not None:
            return f"target-{self.bpw:g}bpw"
        for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("K", 10**3)):
            if self.nbytes >= size:
                return f"target-{self.nbytes / size:.4g}{unit}"
        return f"target-{self.nbytes}"


# A plan's general.file_type: llama-quantize's file type named after the type holding most weights
# (llama.cpp shows it, and nothing reads it for loading); the K types' medium mixes
FILE_TYPES: dict[T, gguf.LlamaFileType] = {
    T.Q2_K: gguf.LlamaFileType.MOSTLY_Q2_K, T.Q3_K: gguf.LlamaFileType.MOSTLY_Q3_K_M,
    T.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M, T.Q5_K: gguf.LlamaFileType.MOSTLY_Q5_K_M,
}


def file_type(rows) -> gguf.LlamaFileType:
    weights: dict[T, int] = {}
    for r in rows:
        weights[r.qtype] = weights.get(r.qtype, 0) + r.n_elements
    main = max(sorted(weights, key=lambda t: t.value), key=lambda t: weights[t])
    return FILE_TYPES.get(main) or gguf.LlamaFileType[f"MOSTLY_{main.name}" if main != T.F32 else "ALL_F32"]


def choose(job, budget: Budget):
    """`job`, an F16 plan of its model (every quantizable tensor F16), with each quantizable tensor's
    type chosen to minimize the estimated damage within `budget`; its rows' reasons give each
    tensor's trade. The file's other bytes (header, 1-D tensors, padding) are counted exactly."""
    from dataclasses import replace

    from .convert import output_files
    from .planner import Recipe, category, quantizable
    from .verify import source_rows
    from .writer import padded

    model = job.model
    sources = {s.gguf_name: s for s in model.sources}
    variable = [k for k, r in enumerate(job.rows) if r.qtype == T.F16 and quantizable(sources[r.gguf_name])]
    if not variable:
        raise UsageError("the model has no tensor to quantize: a target size or bits per weight means nothing here")
    if budget.nbytes is not None:
        total = sum(f.nbytes for f in output_files(job, model.checkpoint.path / "target.gguf"))
        avail = budget.nbytes - (total - sum(padded(job.rows[k].nbytes) for k in variable))
        size = padded
    else:
        n_weights = sum(r.n_elements for r in job.rows)
        fixed = set(range(len(job.rows))) - set(variable)
        avail = math.floor(budget.bpw * n_weights / 8) - sum(job.rows[k].nbytes for k in fixed)
        size = int
    items, estimates = [], []
    for k in variable:
        row = job.rows[k]
        src = sources[row.gguf_name]
        cols = row.shape[-1]
        n_rows = row.n_elements // cols
        n_expert = row.shape[0] if len(row.shape) == 3 else 1
        weights = model.imatrix.for_tensor(row.gguf_name, cols, n_expert) if model.imatrix is not None else None
        types = candidate_types(cols)
        est = tensor_errors(row.gguf_name, lambda lo, hi, src=src: source_rows(model.checkpoint, src, lo, hi),
                            n_rows, cols, n_rows // n_expert, types, weights)
        s = SENSITIVITY.get(category(row.gguf_name), 1.0)
        items.append(Item(row.gguf_name, tuple(types),
                          tuple(size(row.n_elements // quants.block_size(t) * quants.get(t).type_size) for t in types),
                          tuple(s * est.errors[t] for t in types)))
        estimates.append(est)
    if avail < sum(min(it.nbytes) for it in items):
        least = sum(min(it.nbytes) for it in items) - avail
        what = f"{budget.nbytes + least} bytes" if budget.nbytes is not None else \
            f"{budget.bpw + 8 * least / sum(r.n_elements for r in job.rows):.3f} bits per weight"
        given = budget.nbytes if budget.nbytes is not None else f"{budget.bpw:g}"
        raise UsageError(f"{budget.option} {given}: too small for this model; the smallest file qconvert can make "
                         f"takes {what}")
    picks = solve(items, avail)
    rows = list(job.rows)
    for k, it, est, j in zip(variable, items, estimates, picks):
        q = it.types[j]
        smaller = [i for i in range(len(it.types)) if it.nbytes[i] < it.nbytes[j]]
        alt = min(smaller, key=lambda i: (it.damage[i], -it.nbytes[i])) if smaller else None
        trade = ("" if alt is None else f"; {it.types[alt].name} would save {it.nbytes[j] - it.nbytes[alt]} B "
                 f"for {it.damage[alt] - it.damage[j]:.3g} more")
        rows[k] = replace(rows[k], qtype=q, reason=f"target: {q.name}, damage {it.damage[j]:.3g}"
                          f"{'' if est.weighted else ' (unweighted: no imatrix)'}{trade}")
    main = file_type(rows)
    return replace(job, rows=rows, recipe=Recipe(main, rows[variable[0]].qtype), target=budget)

"""The pipeline: checkpoint -> adapter -> plan -> quantize -> GGUF. Decides nothing itself.

`prepare` does everything that can fail on bad input (config, shards, architecture, tokenizer,
plan) before any output file exists; `convert` then streams tensors through the quantizers.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from . import arch as arch_registry
from . import quants
from .arch import Architecture, SourceTensor
from .errors import UsageError
from .imatrix import Imatrix, load_imatrix
from .options import KVOverride
from .planner import Overrides, PlanRow, Recipe, check_writable, plan, recipe_for
from .reader import Checkpoint
from .tokenizer import load_tokenizer
from .writer import write_gguf

# Rows handed to one worker at a time: big enough to amortize dispatch, small enough to balance.
CHUNK_ELEMENTS = 1 << 20


@dataclass
class Job:
    """Everything known about a conversion before the first byte is written."""

    checkpoint: Checkpoint
    arch: Architecture
    recipe: Recipe
    sources: list[SourceTensor]
    rows: list[PlanRow]
    tokenizer: object
    imatrix: Imatrix | None = None
    kv_overrides: tuple[KVOverride, ...] = ()

    def add_metadata(self, writer: gguf.GGUFWriter) -> None:
        n_params = sum(r.n_elements for r in self.rows if r.src is not None)
        meta = gguf.Metadata.load(None, self.checkpoint.path, None, n_params)
        if meta.name is None:
            meta.name = self.checkpoint.path.resolve().name
        if meta.size_label is None and n_params > 0:
            meta.size_label = gguf.size_label(n_params, 0, 0, 0)
        writer.add_type(gguf.GGUFType.MODEL)
        meta.set_gguf_meta_model(writer)
        self.arch.metadata().write_to(writer)
        writer.add_file_type(self.recipe.file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self.tokenizer.write_to(writer)
        # as llama-quantize: the user's --override-kv first, then the imatrix record
        extra = [(o.key, o.value, o.vtype) for o in self.kv_overrides]
        extra += self.imatrix.metadata() if self.imatrix is not None else []
        for key, value, vtype in extra:
            writer.kv_data[0].pop(key, None)
            writer.add_key_value(key, value, vtype)

    def quant_weights(self, row: PlanRow) -> np.ndarray | None:
        """The imatrix weights for a tensor's rows (n_expert x n_per_row), if any."""
        if self.imatrix is None or row.qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16,
                                                 gguf.GGMLQuantizationType.BF16):
            return None
        n_expert = row.shape[0] if len(row.shape) == 3 else 1
        return self.imatrix.for_tensor(row.gguf_name, row.shape[-1], n_expert)


@dataclass
class Result:
    path: Path
    rows: list[PlanRow]
    nbytes: int
    seconds: float


def prepare(model_dir: str | Path, qtype: str, overrides: Overrides | None = None,
            imatrix: str | Path | None = None, kv_overrides: tuple[KVOverride, ...] = ()) -> Job:
    recipe = recipe_for(qtype)
    ckpt = Checkpoint.open(model_dir)
    adapter = arch_registry.for_config(ckpt.config)
    sources = adapter.tensors(ckpt.tensors)
    tokenizer = load_tokenizer(ckpt.path, adapter.hp.raw)
    matrix = load_imatrix(imatrix) if imatrix is not None else None
    overrides = overrides or Overrides()
    if matrix is not None:
        overrides = replace(overrides, has_imatrix=True)
    rows = plan(sources, recipe, adapter.model_facts(), overrides)
    check_writable(rows, recipe)
    job = Job(ckpt, adapter, recipe, sources, rows, tokenizer, matrix, tuple(kv_overrides))
    for row in rows:  # size mismatches fail now, before any output exists
        job.quant_weights(row)
    return job


def check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give a file path for the output")
    if not out.parent.is_dir():
        raise UsageError(f"output folder {out.parent} does not exist")


def convert(
    model_dir: str | Path,
    out: str | Path,
    qtype: str = "Q8_0",
    *,
    overwrite: bool = False,
    threads: int | None = None,
    on_tensor: Callable[[PlanRow, int], None] | None = None,
    overrides: Overrides | None = None,
    imatrix: str | Path | None = None,
    kv_overrides: tuple[KVOverride, ...] = (),
) -> Result:
    """Convert a checkpoint folder to a GGUF file at `out`. `on_tensor(row, source_bytes)` is
    called after each tensor (the CLI's progress bar)."""
    out = Path(out)
    check_output(out, overwrite)
    job = prepare(model_dir, qtype, overrides, imatrix, kv_overrides)
    sources = {s.gguf_name: s for s in job.sources}
    threads = threads or os.cpu_count() or 1
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        def produce(row: PlanRow) -> np.ndarray:
            src = sources[row.gguf_name]
            data = quantize_tensor(load_f32(job.checkpoint, src), row.qtype, pool, threads,
                                   job.quant_weights(row))
            if on_tensor is not None:
                on_tensor(row, job.checkpoint.tensors[src.src].nbytes if src.src else data.nbytes)
            return data

        write_gguf(out, job.arch.arch_name, job.add_metadata, job.rows, produce)
    job.checkpoint.close()
    return Result(out, job.rows, out.stat().st_size, time.perf_counter() - start)


def load_f32(ckpt: Checkpoint, src: SourceTensor) -> np.ndarray:
    """The tensor as llama.cpp will see it, in float32 (decoded, transformed)."""
    arr = src.generate() if src.generate is not None else ckpt.load(src.src)
    if src.transform is not None:
        arr = src.transform(arr)
    assert arr.shape == src.shape, (src.gguf_name, arr.shape, src.shape)
    return arr


def quantize_tensor(arr: np.ndarray, qtype: gguf.GGMLQuantizationType, pool: ThreadPoolExecutor,
                    threads: int, quant_weights: np.ndarray | None = None) -> np.ndarray:
    """Quantize all rows of `arr`, split in chunks over the pool. Rows are independent, so the
    bytes do not depend on the number of threads. `quant_weights` (n_expert x n_per_row) are
    the imatrix weights; a 3-D tensor's expert e uses row e."""
    x = np.ascontiguousarray(arr.reshape(-1, arr.shape[-1]), dtype=np.float32)
    n_rows, cols = x.shape
    rows_per_expert = n_rows // (quant_weights.shape[0] if quant_weights is not None else 1)
    out = np.empty((n_rows, quants.row_nbytes(qtype, cols)), dtype=np.uint8)
    step = max(1, CHUNK_ELEMENTS // max(cols, 1))
    # chunks never straddle two experts, so each uses one row of weights
    starts = [lo for e in range(0, n_rows, rows_per_expert)
              for lo in range(e, e + rows_per_expert, step)]

    def work(lo: int) -> None:
        hi = min(lo + step, (lo // rows_per_expert + 1) * rows_per_expert)
        if quant_weights is None:
            out[lo:hi] = quants.quantize_rows(qtype, x[lo:hi])
        else:
            out[lo:hi] = quants.quantize_rows(qtype, x[lo:hi], quant_weights[lo // rows_per_expert])

    if threads <= 1 or len(starts) == 1:
        for lo in starts:
            work(lo)
    else:
        list(pool.map(work, starts))
    return out.reshape(-1)

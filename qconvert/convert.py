"""The pipeline: checkpoint -> adapter -> plan -> quantize -> GGUF. Decides nothing itself.

`prepare_model` reads and validates everything type-independent once (config, shards,
architecture, tensors, tokenizer, importance matrix), `plan_job` plans one output type from it
(`prepare` is the two in one): everything that can fail on bad input fails before any output
file exists. `write_many` then streams the model's tensors once through the quantizers of every
output, `write` for one output.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Container, Iterable, Iterator

import gguf
import numpy as np

from . import arch as arch_registry
from . import provenance, quants
from .arch import TextModel
from .errors import CheckpointError, QConvertError, UsageError
from .imatrix import Imatrix, load_imatrix
from .options import KVOverride
from .planner import Overrides, Recipe, check_writable, plan, recipe_for
from .reader import DTYPES, Checkpoint
from .target import Budget
from .tokenizer import GGUFTokenizer, load_tokenizer
from .types import Metadata, PlanRow, SourceTensor
from .validate.model import check_loadable, check_tensors
from .validate.values import decode_and_measure, first_bad_row
from .writer import FileLayout, OutputFile, OutputWriter, Split, layout, other_forms

# Weights handed to one worker at a time: big enough to amortize dispatch, small enough that
# a window of them in flight is a few tens of MB whatever the model.
CHUNK_ELEMENTS = 1 << 20


@dataclass
class Model:
    """Everything type-independent about a checkpoint, read and validated once (`prepare_model`):
    any number of jobs (`plan_job`, one per output type) share it, and `write_many` reads its
    tensors once for all of them."""

    checkpoint: Checkpoint
    arch: TextModel
    metadata: Metadata  # the adapter's keys for the model's settings
    sources: list[SourceTensor]
    tokenizer: GGUFTokenizer
    imatrix: Imatrix | None = None
    # what the user named the model by, for the provenance record: a Hub id with its resolved
    # commit ("org/name@0123abc"), or None for a folder (its name is recorded then)
    ref: str | None = None

    @property
    def input_paths(self) -> list[Path]:
        """Every file a conversion reads or may read (`input_files`, and the shards wherever
        they are), for `write`'s refusal to write over one and for the provenance record."""
        paths = {t.file for t in self.checkpoint.tensors.values()}
        paths.update(input_files(self.checkpoint.path, self.imatrix.path if self.imatrix is not None else None))
        return sorted(paths)

    @property
    def source_bytes(self) -> int:
        """Checkpoint bytes a conversion reads (skipped tensors excluded; a tensor split in
        two by row selections counts once)."""
        return sum(read_nbytes(s) for s in self.sources)


@dataclass
class Job:
    """One output of a model: its type's plan and the options that shape the file, everything
    known before the first byte is written."""

    model: Model
    recipe: Recipe
    rows: list[PlanRow]
    overrides: Overrides = field(default_factory=Overrides)
    kv_overrides: tuple[KVOverride, ...] = ()
    # write NaN/Inf and values that overflow the output type instead of refusing them
    allow_nonfinite: bool = False
    split: Split | None = None
    target: Budget | None = None  # the types chosen within this budget (target.choose), not by the recipe

    @property
    def type_name(self) -> str:
        """The output's type as reports and the provenance record give it: the mix, or the budget."""
        return self.target.label if self.target is not None else self.recipe.name

    # the model's parts, as the job's (what the chunk loop and the validators read)
    checkpoint = property(lambda self: self.model.checkpoint)
    arch = property(lambda self: self.model.arch)
    metadata = property(lambda self: self.model.metadata)
    sources = property(lambda self: self.model.sources)
    tokenizer = property(lambda self: self.model.tokenizer)
    imatrix = property(lambda self: self.model.imatrix)
    input_paths = property(lambda self: self.model.input_paths)
    source_bytes = property(lambda self: self.model.source_bytes)

    def model_meta(self, n_params: int = 0) -> gguf.Metadata:
        """general.* as gguf finds them in the checkpoint (model card, config, folder name; a Hub
        cache snapshot's folder is named after its commit, so there the repo's name)."""
        from .hub import name_after_repo
        meta = name_after_repo(gguf.Metadata.load(None, self.checkpoint.path, None, n_params), self.checkpoint.path,
                               n_params)
        if meta.name is None:
            meta.name = self.checkpoint.path.resolve().name
        return meta

    def general_name(self) -> str:
        """general.name as the file will hold it: --override-kv's, else the checkpoint's."""
        override = next((o.value for o in self.kv_overrides if o.key == gguf.Keys.General.NAME), None)
        return str(override) if override is not None else self.model_meta().name

    def add_metadata(self, writer: gguf.GGUFWriter) -> None:
        n_params, shared, per_expert, n_expert = parameter_counts(self.rows)
        meta = self.model_meta(n_params)
        if meta.size_label is None and n_params > 0:
            meta.size_label = gguf.size_label(n_params, shared, per_expert, n_expert)
        writer.add_type(gguf.GGUFType.MODEL)
        meta.set_gguf_meta_model(writer)
        self.metadata.write_to(writer)
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


def parameter_counts(rows: list[PlanRow]) -> tuple[int, int, int, int]:
    """(total, shared, one expert's, experts) parameters, as gguf's GGUFWriter
    .get_total_parameter_count counts them for the size label ("8x90K" for an MoE model): a
    3-D `_exps.` tensor counts once per expert in the total and once in the per-expert sum."""
    total = shared = per_expert = expert_sum = n_expert_tensors = 0
    for r in rows:
        if r.src is None:
            continue
        if "_exps." in r.gguf_name and len(r.shape) >= 3:
            n = r.shape[-2 if ".bias" in r.gguf_name else -3]
            per_expert += r.n_elements // n
            expert_sum += n
            n_expert_tensors += 1
        else:
            shared += r.n_elements
        total += r.n_elements
    return total, shared, per_expert, expert_sum // n_expert_tensors if n_expert_tensors else 0


@dataclass
class Result:
    """A written output: `path` is the file llama.cpp is given (the first of a set), `nbytes`
    the total of `files`, each with its SHA-256."""

    path: Path
    rows: list[PlanRow]
    nbytes: int
    seconds: float
    files: list[OutputFile] = field(default_factory=list)


def prepare_model(model_dir: str | Path, imatrix: str | Path | None = None, *, ref: str | None = None) -> Model:
    """Open and validate everything about a checkpoint that does not depend on the output type:
    config, shards, architecture, tensors, tokenizer, importance matrix. `ref` is how the user
    named the model when it was not a folder (a Hub id and commit), for the provenance record."""
    ckpt = Checkpoint.open(model_dir)
    adapter = arch_registry.for_config(ckpt.config, ckpt.path)
    metadata = adapter.metadata()  # a setting llama.cpp cannot run (e.g. BERT's pooling) fails here
    sources = adapter.tensors(ckpt.tensors)
    check_tensors(adapter, sources)  # every tensor the config implies, no other, shapes: before the tokenizer pads
    # the config with the adapter's defaults: its vocab_size fixes the token count
    tokenizer = load_tokenizer(ckpt.path, adapter.hp.raw, adapter.llama_set_vocab,
                               spm_add_space_prefix=adapter.spm_add_space_prefix)
    check_vocab(tokenizer, sources, adapter.hp.get("vocab_size"))
    matrix = load_imatrix(imatrix) if imatrix is not None else None
    return Model(ckpt, adapter, metadata, sources, tokenizer, matrix, ref)


def plan_job(model: Model, qtype: str, overrides: Overrides | None = None, kv_overrides: tuple[KVOverride, ...] = (),
             allow_nonfinite: bool = False, split: Split | None = None, target: Budget | None = None) -> Job:
    """The plan of one output of `model` in type `qtype` (a type or llama-quantize mix name), or,
    with `target`, in the types that fit that budget best (qtype unused), checked as far as it can
    be before writing: types that fit, what llama.cpp's loader needs, the importance matrix's sizes."""
    recipe = recipe_for("F16" if target is not None else qtype)
    overrides = overrides or Overrides()
    if target is not None and overrides != Overrides():
        raise UsageError(f"{target.option} chooses every tensor's "
                         "type: it does not combine with --pure, --tensor-type, --output-tensor-type, "
                         "--token-embedding-type, --leave-output-tensor or --no-fallback")
    if model.imatrix is not None:
        overrides = replace(overrides, has_imatrix=True)
    rows = plan(model.sources, recipe, model.arch.model_facts(), overrides)
    job = Job(model, recipe, rows, overrides, tuple(kv_overrides), allow_nonfinite, split)
    if target is not None:
        from . import target as targets
        job = targets.choose(job, target)
    check_writable(job.rows, job.recipe)
    check_loadable(job)  # what llama.cpp's loader refuses beyond the tensors
    for row in job.rows:  # size mismatches fail now, before any output exists
        job.quant_weights(row)
    return job


def prepare(model_dir: str | Path, qtype: str, overrides: Overrides | None = None,
            imatrix: str | Path | None = None, kv_overrides: tuple[KVOverride, ...] = (),
            allow_nonfinite: bool = False, split: Split | None = None, *, ref: str | None = None,
            target: Budget | None = None) -> Job:
    """`prepare_model` and `plan_job` in one: a single output. The type is checked first (the
    cheapest error)."""
    if target is None:
        recipe_for(qtype)
    return plan_job(prepare_model(model_dir, imatrix, ref=ref), qtype, overrides, kv_overrides, allow_nonfinite, split,
                    target)


# The tensors whose rows are the vocabulary: llama.cpp loads them with shape {n_embd, n_vocab},
# n_vocab being the tokenizer's token count (llama_model's load_arch_tensors), and refuses the file
# when the rows differ.
VOCAB_TENSORS = ("token_embd.weight", "output.weight")


def check_vocab(tokenizer: GGUFTokenizer, sources: list[SourceTensor], vocab_size: int | None) -> None:
    """The token list (padded to config.json's vocab_size with [PAD{i}] tokens, as the converter
    pads it) must have one token per row of the embedding and of the output matrix."""
    n_tokens = len(tokenizer.tokens)
    for s in sources:
        if s.gguf_name in VOCAB_TENSORS and s.shape[0] != n_tokens:
            padded = f"padded to vocab_size {vocab_size}" if vocab_size is not None else "config.json has no vocab_size"
            raise CheckpointError(
                f"{s.src} has {s.shape[0]} rows but the vocabulary has {n_tokens} tokens (the tokenizer's, "
                f"{padded}); llama.cpp needs one row per token")


def default_output_name(model_dir: str | Path, qtype: str) -> str:
    """The output's file name when none is given: the checkpoint folder's name (the repo's for a
    Hub cache snapshot, hub.model_name) and the type.

    >>> default_output_name("models/SmolLM2-135M", "q8_0")
    'SmolLM2-135M-Q8_0.gguf'
    """
    from .hub import model_name
    return f"{model_name(model_dir)}-{qtype.upper()}.gguf"


def output_path(out: str | Path | None, model_dir: str | Path, qtype: str) -> Path:
    """Where `-o OUT` writes: OUT itself, or, when OUT is an existing folder or ends with a path
    separator ("models/"), the default name inside it; the default name in the current folder
    when OUT is None. (A str keeps its trailing separator; a Path has already dropped it.)"""
    if out is None:
        return Path(default_output_name(model_dir, qtype))
    text = os.fspath(out)
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)) or Path(text).is_dir():
        return Path(text) / default_output_name(model_dir, qtype)
    return Path(text)


def input_files(model_dir: str | Path, imatrix: str | Path | None = None) -> list[Path]:
    """The files a conversion of `model_dir` may read, listed without parsing anything: every file
    of the checkpoint folder and of its subfolders (config, index, shards, tokenizer files, the
    model card, sentence-transformers' module configs...) except GGUF files, which are outputs
    there, and the importance matrix. The folder's listing rather than a list of names: besides
    qconvert's readers, gguf's Metadata and SpecialVocab open files of their own choosing, and
    index entries are plain names inside the folder (validated when the checkpoint is opened)."""
    found: list[Path] = []
    with contextlib.suppress(OSError):  # no folder, no access: Checkpoint.open says so
        for p in Path(model_dir).iterdir():
            if p.is_dir():
                with contextlib.suppress(OSError):
                    found.extend(p.iterdir())
            else:
                found.append(p)
    # outputs, and the temporaries outputs are written under (writer.temporary_path), are no inputs
    found = [p for p in found
             if p.suffix.lower() != ".gguf" and not (p.name.startswith(".") and p.suffix == ".partial")]
    return sorted(found + ([Path(imatrix)] if imatrix is not None else []))


# What `stat` says a path is, for the refusal of anything but a regular file (stat.S_IFMT)
_FILE_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
               stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def check_output(out: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse a target whose replacement could destroy something: only a new path, or with
    `overwrite` an existing regular file, may be written, and never one of `inputs` (compared by
    device and inode after following symlinks, so a link, a hard link or another spelling of an
    input is caught: os.replace would unlink the checkpoint's own file). `convert` and the CLI
    call it before reading the checkpoint with `input_files`, `write` again with the prepared
    job's inputs before the first byte is written."""
    try:
        st = out.stat()  # follows symlinks: a link to /dev/null is a device
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise UsageError(f"output {out} cannot be checked ({e.strerror})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise UsageError(f"output {out} is {kind}; qconvert writes only regular files (even with --overwrite): "
                         "give a file path")
    for path in inputs if st is not None else ():
        try:
            src = path.stat()
        except OSError:  # vanished or unreadable: it cannot be the existing target then
            continue
        if (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino):
            same = "" if os.path.abspath(path) == os.path.abspath(out) else f" (the same file as {path})"
            raise UsageError(f"output {out} is an input of this conversion{same}; writing it would destroy it, "
                             "even with --overwrite: give another output path")
    if st is not None and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"output folder {out.parent} does not exist")


def convert(
    model_dir: str | Path,
    out: str | Path | None,
    qtype: str = "Q8_0",
    *,
    overwrite: bool = False,
    threads: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    overrides: Overrides | None = None,
    imatrix: str | Path | None = None,
    kv_overrides: tuple[KVOverride, ...] = (),
    allow_nonfinite: bool = False,
    split: Split | None = None,
) -> Result:
    """Convert a checkpoint folder to a GGUF file at `out` (see `output_path` for a folder or
    None), or a set of files with `split`: `prepare`, then `write`."""
    target = output_path(out, model_dir, qtype)
    if split is None:  # the cheapest errors first (a set's names are known once it is planned)
        check_output(target, overwrite, input_files(model_dir, imatrix))
    job = prepare(model_dir, qtype, overrides, imatrix, kv_overrides, allow_nonfinite, split)
    return write(job, target, overwrite=overwrite, threads=threads, on_progress=on_progress)


def output_files(job: Job, target: Path) -> list[FileLayout]:
    """The files `write` makes for `job` at `target`, their headers serialized: the job's
    metadata and, last, its provenance record (the input files as they are now)."""
    record = provenance.dumps(provenance.expected(job))

    def add_metadata(writer: gguf.GGUFWriter) -> None:
        job.add_metadata(writer)
        writer.kv_data[0].pop(provenance.KEY, None)  # ours, even after an --override-kv of it
        writer.add_string(provenance.KEY, record)

    return layout(Path(target), job.arch.arch_name, add_metadata, job.rows, job.split)


def predict_files(job: Job, target: str | Path) -> list[OutputFile]:
    """The files `write(job, target)` would write and the exact size of each (sha256 None)."""
    return [OutputFile(f.path, f.nbytes, None) for f in output_files(job, Path(target))]


def write(job: Job, out: Path, *, overwrite: bool = False, threads: int | None = None,
          on_progress: Callable[[int], None] | None = None) -> Result:
    """Quantize and write a prepared job (`write_many` with one output; its failure raised).
    `on_progress(source_bytes)` is called as each chunk of the checkpoint is written; the calls
    add up to `job.source_bytes`.

    The target is checked first (`check_output`, now against the job's input files). On any
    exception, including the CLI's Interrupted, queued chunks are cancelled so that the workers
    stop after the chunk they hold, and the writer deletes its temporary files."""
    result = write_many([(job, Path(out))], overwrite=overwrite, threads=threads, on_progress=on_progress)[0]
    if isinstance(result, BaseException):
        raise result
    return result


def write_many(outputs: list[tuple[Job, Path]], *, overwrite: bool = False, threads: int | None = None,
               on_progress: Callable[[int], None] | None = None) -> list[Result | QConvertError]:
    """Write several outputs of one model in ONE pass over its tensors: each chunk of the
    checkpoint is read and decoded once, then quantized to each output's types. Every job must
    come from the same `Model` (`plan_job`); its checkpoint is closed at the end.

    Returns, in order, each output's Result or the QConvertError that stopped it. An output
    refused before the pass (`check_output`, two outputs at one path) or failing during it (a
    value its type cannot hold, a write error) is aborted, its temporaries removed, and the
    others go on; a failure reading the checkpoint fails every output not finished yet. Other
    exceptions (the CLI's Interrupted, bugs) abort everything and propagate."""
    if not outputs:
        return []
    model = outputs[0][0].model
    assert all(job.model is model for job, _ in outputs), "write_many: every job must come from the same Model"
    results: list[Result | QConvertError | None] = [None] * len(outputs)
    writers: dict[int, OutputWriter] = {}
    replaced: dict[int, list[Path]] = {}  # earlier forms of each output, removed once it is in place
    stopped: set[int] = set()  # outputs the workers no longer quantize for (read by them, so never shrinks)
    taken: dict[Path, int] = {}
    threads = threads or os.cpu_count() or 1
    start = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=threads)

    def fail(i: int, error: QConvertError) -> None:
        stopped.add(i)
        if i in writers:
            writers.pop(i).abort()
        results[i] = error

    try:
        # every output planned (and its provenance taken) before any temporary exists
        for i, (job, out) in enumerate(outputs):
            try:
                files = output_files(job, Path(out))
                for f in files:
                    check_output(f.path, overwrite, job.input_paths)
                    path = Path(os.path.abspath(f.path))
                    if path in taken:
                        raise UsageError(f"output {f.path} is written twice (outputs {taken[path] + 1} and {i + 1})")
                    taken[path] = i
                replaced[i] = other_forms(Path(out), [f.path for f in files])
                for stale in replaced[i]:
                    check_output(stale, overwrite, job.input_paths)
                writers[i] = OutputWriter(files)
            except QConvertError as e:
                fail(i, e)
        for i in list(writers):
            try:
                writers[i].open()
            except QConvertError as e:
                fail(i, e)
        jobs = [job for job, _ in outputs]
        try:
            chunks = tensor_chunks(jobs, stopped) if writers else iter(())
            for parts, nbytes in in_order(pool, chunks, window=window(threads)):
                for i, part in enumerate(parts):
                    if i not in writers:
                        continue
                    if isinstance(part, QConvertError):
                        fail(i, part)
                        continue
                    try:
                        writers[i].write(part)
                    except QConvertError as e:
                        fail(i, e)
                if on_progress is not None:
                    on_progress(nbytes)
                if not writers:
                    break
        except QConvertError as e:  # reading the checkpoint: every output still open fails
            for i in list(writers):
                fail(i, e)
        for i in list(writers):
            try:
                files = writers.pop(i).finish()
            except QConvertError as e:
                fail(i, e)
                continue
            for stale in replaced[i]:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            results[i] = Result(files[0].path, outputs[i][0].rows, sum(f.nbytes for f in files),
                                time.perf_counter() - start, files)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        # without cancel_futures, shutdown would first run every chunk still queued
        pool.shutdown(wait=True, cancel_futures=True)
        model.checkpoint.close()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


# A chunk's work: (one part per output -- its GGUF bytes, the error that stopped it, or None
# for an output no longer written -- and the checkpoint bytes it consumed)
ChunkJob = Callable[[], tuple[list, int]]
# One output's view of a chunk: its type, the imatrix weights of the chunk's rows, whether to
# refuse values the type cannot hold
Target = tuple[gguf.GGMLQuantizationType, "np.ndarray | None", bool]


def window(threads: int) -> int:
    """Chunks in flight in a pass with `threads` workers (`in_order`): each worker busy and as
    many results queued for the writer."""
    return 2 * threads + 2


def chunk_peak(jobs: list[Job]) -> int:
    """The most memory one chunk of a `write_many` pass over `jobs` (one model's) holds: its rows
    as read, decoded to float32 (twice for a tensor read whole: transposed or reordered copies),
    and quantized for every output. A pass holds at most `window(threads)` of these, whatever the
    model's size: what a scheduler should reserve for it (batch_ray), beyond the process itself."""
    peak = 0
    for k, src in enumerate(jobs[0].sources):
        cols = src.shape[-1]
        whole = reads_whole(src)
        n = src.n_elements if whole else min(src.n_elements, max(1, CHUNK_ELEMENTS // cols) * cols)
        read = n * DTYPES[src.src_dtype].itemsize if src.sources else 0
        out = sum(-(-job.rows[k].nbytes * n // src.n_elements) for job in jobs)
        peak = max(peak, read + (8 if whole else 4) * n + out)
    return peak


def read_nbytes(src: SourceTensor) -> int:
    """Checkpoint bytes behind a GGUF tensor: its elements in the stored dtype (0 if generated)."""
    return src.n_elements * DTYPES[src.src_dtype].itemsize if src.sources else 0


def tensor_chunks(jobs: list[Job], stopped: Container[int] = ()) -> Iterator[ChunkJob]:
    """One job per chunk of rows, every tensor in write order, each quantizing the chunk for
    every output (`jobs`, all of one model: the same tensors in the same order) except those in
    `stopped`. A job returns the parts and how many checkpoint bytes it consumed. Chunks never
    straddle two experts of a 3-D tensor, so each uses one row of the importance matrix."""
    first = jobs[0]
    for k, src in enumerate(first.sources):
        rows = [job.rows[k] for job in jobs]
        assert all(r.gguf_name == src.gguf_name for r in rows), (src.gguf_name, [r.gguf_name for r in rows])
        weights = [job.quant_weights(row) for job, row in zip(jobs, rows)]
        checks = [not job.allow_nonfinite for job in jobs]
        if reads_whole(src):
            targets = [(r.qtype, w[0] if w is not None else None, c) for r, w, c in zip(rows, weights, checks)]
            yield partial(whole_tensor, first.checkpoint, src, targets, stopped)
            continue
        cols = src.shape[-1]
        n_rows = src.n_elements // cols
        # a chunk stays within one expert: one read (one stacked source), one imatrix row
        per_expert = n_rows // (src.shape[0] if len(src.shape) == 3 else 1)
        step = max(1, CHUNK_ELEMENTS // cols)
        for start in range(0, n_rows, per_expert):
            e = start // per_expert
            targets = [(r.qtype, w[e] if w is not None else None, c) for r, w, c in zip(rows, weights, checks)]
            end = start + per_expert
            for lo in range(start, end, step):
                yield partial(row_chunk, first.checkpoint, src, targets, stopped, lo, min(lo + step, end))


class WorkerBuffers(threading.local):
    """Each worker's read and decode buffers, reused from chunk to chunk: fresh multi-MB arrays
    per chunk cost page faults that took about a quarter of a Q8_0 conversion's time."""

    def __init__(self) -> None:
        self.raw = bytearray()
        self.f32 = np.empty(0, np.float32)

    def read_space(self, nbytes: int) -> bytearray:
        if len(self.raw) < nbytes:
            self.raw = bytearray(nbytes)
        return self.raw

    def decode_space(self, n: int) -> np.ndarray:
        if self.f32.size < n:
            self.f32 = np.empty(n, np.float32)
        return self.f32


_buffers = WorkerBuffers()


def reads_whole(src: SourceTensor) -> bool:
    """Whether a tensor is read in one piece (generated, 1-D or transposed: small, or read whole
    anyway) rather than in chunks of rows."""
    return src.generate is not None or len(src.shape) < 2 or src.transpose


def locate_rows(src: SourceTensor, lo: int, hi: int) -> tuple[str, slice | np.ndarray]:
    """Where rows lo..hi of a chunked GGUF tensor are in the checkpoint: the tensor's name (one
    expert's for a stacked tensor: the rows lie in one expert) and its rows there (a slice, or
    the rows in Q/K order). Shared by the conversion and `verify`."""
    name = src.src
    if src.stack:
        per_part = src.n_elements // src.shape[-1] // len(src.stack)
        name = src.stack[lo // per_part]
        lo, hi = lo % per_part, (hi - 1) % per_part + 1
    return name, (src.row_order[lo:hi] if src.row_order is not None else slice(lo, hi))


def whole_source(ckpt: Checkpoint, src: SourceTensor) -> np.ndarray:
    """A tensor `reads_whole` as float32 rows of the GGUF tensor, before its transform: generated,
    or loaded, transposed and put in row order. Shared by the conversion and `verify`."""
    if src.generate is not None:
        arr = src.generate().astype(np.float32)
    else:
        assert not src.stack, src.gguf_name  # stacked tensors are 3-D: chunked by row_chunk
        arr = ckpt.load(src.src)
        if src.transpose:
            arr = arr.T
        if src.row_order is not None:
            arr = arr.reshape(-1, arr.shape[-1])[src.row_order]
    x = np.ascontiguousarray(arr.reshape(-1, src.shape[-1]), dtype=np.float32)
    assert x.size == src.n_elements, (src.gguf_name, arr.shape, src.shape)
    return x


def row_chunk(ckpt: Checkpoint, src: SourceTensor, targets: list[Target], stopped: Container[int],
              lo: int, hi: int) -> tuple[list, int]:
    """Rows lo..hi of the GGUF tensor, read from the checkpoint and decoded once, quantized for
    each target. The results are new arrays (they wait in the write queue); the intermediates
    are reused."""
    name, rows = locate_rows(src, lo, hi)
    info = ckpt.tensors[name]
    picked = ckpt.read_rows(name, rows, _buffers.read_space)
    check = any(c for i, (_, _, c) in enumerate(targets) if i not in stopped)
    magnitude = None  # measured while decoding where that is free (validate/values.py)
    if info.dtype == "F32" and picked.flags.c_contiguous and src.transform is None:
        x = picked
    elif check and src.transform is None and info.scale is None:
        x, magnitude = decode_and_measure(picked, info.dtype, _buffers.decode_space(picked.size))
    else:  # a float8 weight is scaled by its blocks here, the chunk's rows only
        x = ckpt.decode_rows(name, picked, rows, _buffers.decode_space(picked.size))
    if src.transform is not None:
        src.transform(x)

    def where(row: int) -> tuple[str, int]:
        return name, int(rows[row]) if isinstance(rows, np.ndarray) else rows.start + row

    return quantize_targets(src, x, targets, stopped, magnitude, where), picked.nbytes


def whole_tensor(ckpt: Checkpoint, src: SourceTensor, targets: list[Target],
                 stopped: Container[int]) -> tuple[list, int]:
    """A generated, 1-D or transposed tensor (small, or read whole anyway), in one piece."""
    x = whole_source(ckpt, src)
    nbytes = read_nbytes(src)
    if src.transform is not None:
        src.transform(x)

    def where(row: int) -> tuple[str | None, int]:
        return src.src, row if src.row_order is None else int(src.row_order[row])

    return quantize_targets(src, x, targets, stopped, None, where, "column" if src.transpose else "row"), nbytes


def quantize_targets(src: SourceTensor, x: np.ndarray, targets: list[Target], stopped: Container[int],
                     magnitude, where: Callable[[int], tuple[str | None, int]], axis: str = "row") -> list:
    """`x` (decoded rows, left untouched) quantized for each target not stopped: its bytes, or
    the CheckpointError of a value its type cannot hold (that output alone fails)."""
    parts: list = []
    for i, (qtype, weights, check) in enumerate(targets):
        if i in stopped:
            parts.append(None)
            continue
        out = quants.quantize_rows(qtype, x, weights)
        if check and (bad := first_bad_row(x, quants.get(qtype), out, magnitude)) is not None:
            row, what = bad
            name, at = where(row)
            try:
                raise_bad_value(src, name, at, what, axis)
            except CheckpointError as e:
                parts.append(e)
                continue
        out = out.reshape(-1)
        # F32 output may be a view of the reused buffers: copy it before the next chunk overwrites them
        parts.append(out.copy() if qtype == gguf.GGMLQuantizationType.F32 else out)
    return parts


def raise_bad_value(src: SourceTensor, name: str | None, row: int, what: str, axis: str = "row") -> None:
    """Refuse a tensor whose values llama.cpp cannot run (validate/values.py), naming the
    checkpoint tensor and the first bad row in it."""
    where = f"tensor {name}" if name is not None else f"generated tensor {src.gguf_name}"
    raise CheckpointError(f"{where}: {what} in {axis} {row} (written as {src.gguf_name}); "
                          f"llama.cpp cannot run it. Pass --allow-nonfinite to write it anyway")


def in_order(pool: ThreadPoolExecutor, jobs: Iterator[Callable[[], tuple]], window: int) -> Iterator[tuple]:
    """Run jobs on the pool, at most `window` at a time, yielding results in submission order:
    reading and quantizing the next chunks overlaps writing this one, and memory stays bounded
    by the window whatever the model size."""
    pending: deque = deque()
    for fn in jobs:
        pending.append(pool.submit(fn))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


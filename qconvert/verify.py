"""verify: is a GGUF file sound, and is it its checkpoint's?

`verify(path)` checks what a file holds on its own: its structure (gguf_read's strict reader:
header, offsets, alignment, known types; a split set complete, given any of its files) and that
every block's fp16 scale fields, and every value of a float tensor, are finite
(ggml_validate_row_data's rule, which llama-quantize applies to its output rows). It reads the
scale fields in place over a memory map, a chunk of rows at a time.

`verify(path, model_dir)` also compares every tensor with the checkpoint: the file's bytes are
dequantized with gguf-py's decoders (an implementation independent of qconvert's), the
checkpoint's tensor is read as the conversion reads it (the architecture adapter's
SourceTensors: Q/K row orders, stacked experts, norm offsets, transposes, generated tensors), and
for each tensor the report gives the relative RMS error, the largest absolute error, and whether
the bytes are exactly what qconvert's quantizers make of those values in the file's type. A tensor
missing, extra, of another shape, with a non-finite scale, or with an error beyond its type's
limit (LIMITS) is a problem; so is a file of another architecture, or one whose settings (the
adapter's metadata keys: head counts, rope, norm epsilons...) hold other values. llama.cpp's
converter and llama-quantize write the same bytes as qconvert for the types both have, so their
files come out exact too (llama-quantize run on an F16 file of an F32 checkpoint quantizes values
rounded once more: within the limits, `exact` false).

A file quantized with an importance matrix records it (quantize.imatrix.*); the bytes of its
weighted types can be checked only when verify is given that matrix (`imatrix`), else their
`exact` is null with the reason "imatrix".

The report is data (VerifyReport, problem codes and numbers); report.text_verify renders it.
Memory stays bounded: each tensor is read in chunks of about CHUNK_ELEMENTS weights (a tensor the
conversion itself reads whole, a transposed or generated one, is read whole here too).
"""

from __future__ import annotations

import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType

from . import arch as arch_registry
from . import quants
from .convert import in_order, locate_rows, reads_whole, whole_source
from .errors import UsageError
from .gguf_read import GGUFArray, GGUFFile, GGUFTensorInfo, read_gguf_set
from .imatrix import Imatrix, load_imatrix
from .reader import Checkpoint
from .types import SourceTensor
from .validate.model import check_tensors

CHUNK_ELEMENTS = 1 << 20  # weights compared at a time (a few MB of float32 intermediates)

# The largest relative RMS error (sqrt(sum (file - checkpoint)^2 / sum checkpoint^2)) each type
# may show before a tensor fails. Measured with scripts/measure_verify_limits.py (qconvert's
# quantizers, gguf-py's decoders), the worst tensor of: gaussian rows, Student-t (3 degrees of
# freedom) rows, every matrix of tests/fixtures/models, and SmolLM2-135M's matrices:
#
#   type   worst measured (source)     limit
#   F32    0                           1e-6   (float32 rounding of a transform computed elsewhere)
#   F16    2.16e-4 (fixtures)          6.5e-4 (3x)
#   BF16   1.71e-3 (fixtures)          5.2e-3 (3x)
#   Q8_0   8.45e-3 (Student-t)         0.026  (3x)
#   Q6_K   2.56e-2 (Student-t)         0.077  (3x)
#   Q5_K   4.71e-2 (Student-t)         0.14   (3x)
#   Q5_1   5.33e-2 (SmolLM2)           0.16   (3x)
#   Q5_0   6.66e-2 (Student-t)         0.20   (3x)
#   Q4_K   9.31e-2 (Student-t)         0.28   (3x)
#   Q4_1   0.100   (Student-t)         0.30   (3x)
#   Q4_0   0.129   (Student-t)         0.39   (3x)
#   Q3_K   0.191   (Student-t)         0.57   (3x)
#   Q2_K   0.352   (Student-t)         0.75   (2.1x: 3x would pass an all-zero tensor, whose error is 1)
#   MXFP4  0.144   (Student-t)         0.43   (3x)
#
# and for types only llama.cpp writes (qconvert can judge but not re-make them: exact is null),
# llama-quantize's files (no importance matrix) of the llama-k256-bf16 fixture and of a copy with
# Student-t weights (scripts/measure_verify_limits.py --llama-quantize):
#
#   IQ4_NL 0.105   (Student-t)         0.32   (3x)
#   IQ4_XS 0.107   (Student-t)         0.32   (3x)
#   IQ3_S  0.282   (Student-t)         0.75   (2.7x, as Q2_K)
#
# The other types (IQ2/IQ1, which llama-quantize makes only with an importance matrix; TQ1_0/TQ2_0,
# ternary, whose error on ordinary weights is near 1: 0.83 on SmolLM2's) have no limit: verify
# reports them as unsupported_type, unless their bytes are exactly qconvert's (TQ1_0/TQ2_0).
# (SmolLM2's checkpoint is rebuilt from a quantized GGUF, so its weights sit on a grid: its Q4_1
# and K-quant errors are lower than random data's.) A wrong file is far beyond these: another
# model's weights of the same shape give about 1.4, zeros 1, a tensor of flipped bytes more.
LIMITS: dict[T, float] = {
    T.F32: 1e-6, T.F16: 6.5e-4, T.BF16: 5.2e-3, T.Q8_0: 0.026, T.Q6_K: 0.077, T.Q5_K: 0.14, T.Q5_1: 0.16,
    T.Q5_0: 0.20, T.Q4_K: 0.28, T.Q4_1: 0.30, T.Q4_0: 0.39, T.Q3_K: 0.57, T.Q2_K: 0.75, T.MXFP4: 0.43,
    T.IQ4_NL: 0.32, T.IQ4_XS: 0.32, T.IQ3_S: 0.75,
}

# Tensor problem codes (TensorCheck.problem), worst first when a tensor has several
MISSING = "missing"                    # the checkpoint gives this tensor; the file lacks it
EXTRA = "extra"                        # the file has a tensor the checkpoint does not give
SHAPE = "shape"                        # the file's shape is not the checkpoint's (expected_shape)
NONFINITE = "nonfinite"                # NaN/Inf in an fp16 scale field or a float value (nonfinite: how many)
UNSUPPORTED_TYPE = "unsupported_type"  # a type without a limit here (no measured error bound)
ERROR = "error"                        # rel_rms beyond limit

# Why TensorCheck.exact is None
NO_MODEL = "no_model"                  # no checkpoint to compare with
IMATRIX = "imatrix"                    # the file was quantized with an importance matrix (quantize.imatrix.*)
                                       # and verify was not given it (--imatrix)
NOT_COMPARED = "not_compared"          # missing, extra or mis-shaped: nothing to compare
TYPE_NOT_WRITTEN = "type_not_written"  # qconvert has no quantizer for the file's type

# File problem codes (VerifyReport.problems)
ARCHITECTURE = "architecture"          # general.architecture is not the checkpoint's
METADATA = "metadata"                  # a setting the architecture writes (head counts, rope, norm eps...) has
                                       # another value in the file (VerifyReport.metadata)

FLOAT_VIEWS = {T.F32: np.float32, T.F16: np.float16, T.F64: np.float64}


@dataclass
class TensorCheck:
    name: str
    type: str | None                   # in the file (None when missing)
    shape: list[int] | None            # in the file, GGUF order (None when missing)
    problem: str | None = None         # a code above, or None
    nonfinite: int = 0                 # blocks with a NaN/Inf fp16 field, or NaN/Inf values of a float tensor
    rel_rms: float | None = None       # with a model: sqrt(sum (file - checkpoint)^2 / sum checkpoint^2)
    max_abs: float | None = None       # with a model: max |file - checkpoint|
    limit: float | None = None         # the type's rel_rms limit (LIMITS)
    exact: bool | None = None          # the bytes equal qconvert's quantization of the checkpoint's values
    exact_unknown: str | None = NO_MODEL  # why exact is None (a code above)
    expected_shape: list[int] | None = None  # the checkpoint's, GGUF order (with a model)
    file: int = 0                      # index in VerifyReport.files


@dataclass
class MetadataCheck:
    """A key the checkpoint's architecture adapter writes, and what the file holds for it."""

    key: str
    expected: Any                      # the checkpoint's value
    found: Any = None                  # the file's (None when absent)
    problem: str | None = None         # "differs", "absent" (absent alone does not fail: llama.cpp's converter
                                       # leaves out some keys qconvert writes, e.g. defaults)


@dataclass
class VerifyReport:
    command: str                       # "verify"
    ok: bool
    files: list[Path]                  # the file, or the members of a split set in order
    model: Path | None                 # the checkpoint folder compared with (a Hub snapshot for a repo id)
    model_ref: str | None              # MODEL as given (the folder, or org/name[@revision])
    architecture: str | None           # the file's general.architecture
    expected_architecture: str | None  # the checkpoint's (with a model)
    imatrix: bool                      # the file records an importance matrix (quantize.imatrix.*)
    problems: list[str]                # file-level codes
    failed: list[str]                  # the names of the tensors with a problem
    tensors: list[TensorCheck] = field(default_factory=list)
    metadata: list[MetadataCheck] = field(default_factory=list)  # with a model: the adapter's keys not as expected
    seconds: float = 0.0


def verify(path: str | Path, model_dir: str | Path | None = None, *, model_ref: str | None = None,
           imatrix: str | Path | None = None, threads: int | None = None,
           on_start: Callable[[int], None] | None = None,
           on_progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the GGUF file (or split set) at `path`, and with `model_dir` compare it with that
    checkpoint folder (`model_ref`: how the user named it, by default the folder). Raises
    GGUFError when the file is not well-formed GGUF at all (nothing can then be checked tensor
    by tensor); any other problem is in the report (`ok` False). `imatrix`, the importance matrix
    the file was made with, lets the bytes of the types quantized with it be checked too.
    `on_start(total)` is called once with the number of weights to check, `on_progress(n)` with
    the weights checked as chunks complete (the calls add up to total)."""
    start = time.perf_counter()
    if imatrix is not None and model_dir is None:
        raise UsageError(f"--imatrix {imatrix} needs MODEL: the bytes are checked against the checkpoint's values")
    files = read_gguf_set(Path(path))  # every file of a split set, or GGUFError naming the one missing
    first = files[0]
    arch_field = first.fields.get(gguf.Keys.General.ARCHITECTURE)
    architecture = arch_field.value if arch_field is not None and isinstance(arch_field.value, str) else None
    recorded = any(k.startswith("quantize.imatrix.") for k in first.fields)
    matrix = load_imatrix(imatrix) if imatrix is not None else None
    located = [(i, t) for i, f in enumerate(files) for t in f.tensors]

    sources: dict[str, SourceTensor] = {}
    ckpt = expected_arch = None
    metadata: list[MetadataCheck] = []
    if model_dir is not None:
        ckpt = Checkpoint.open(model_dir)
        adapter = arch_registry.for_config(ckpt.config, ckpt.path)
        source_list = adapter.tensors(ckpt.tensors)
        check_tensors(adapter, source_list)
        sources = {s.gguf_name: s for s in source_list}
        expected_arch = adapter.arch_name
        metadata = check_metadata(first, adapter.metadata().items)

    checks: list[TensorCheck] = []
    work: list[Work] = []
    for index, info in located:
        c = TensorCheck(info.name, info.type.name, list(info.shape), file=index)
        checks.append(c)
        src = sources.get(info.name)
        if ckpt is not None:
            c.limit = LIMITS.get(info.type)
            if src is None:
                c.problem, c.exact_unknown = EXTRA, NOT_COMPARED
            elif list(reversed(src.shape)) != c.shape:
                c.problem, c.exact_unknown, c.expected_shape = SHAPE, NOT_COMPARED, list(reversed(src.shape))
            else:
                c.expected_shape = c.shape
                c.exact_unknown = exact_unknown(info.type, recorded and matrix is None)
        # compared only where there is something to compare and a limit or qconvert's bytes to
        # judge it by (the integer types have no decoder; the others without a limit or bytes
        # to compare with fail as unsupported_type)
        compared = src if c.problem is None and (c.limit is not None or c.exact_unknown is None) else None
        work.append((c, info, compared, weights_for(matrix, info, compared)))
    if ckpt is not None:
        present = {info.name for _, info in located}
        for name, src in sources.items():
            if name not in present:
                checks.append(TensorCheck(name, None, None, MISSING, exact_unknown=NOT_COMPARED,
                                          expected_shape=list(reversed(src.shape))))

    if on_start is not None:
        on_start(sum(n_weights(info) for _, info, _, _ in work))
    try:
        run_checks(files, work, ckpt, threads, on_progress)
    finally:
        if ckpt is not None:
            ckpt.close()

    problems = [ARCHITECTURE] if ckpt is not None and architecture != expected_arch else []
    if any(m.problem == "differs" for m in metadata):
        problems.append(METADATA)
    failed = [c.name for c in checks if c.problem is not None]
    return VerifyReport("verify", not failed and not problems, [f.path for f in files],
                        Path(model_dir) if model_dir is not None else None,
                        model_ref if model_ref is not None or model_dir is None else str(model_dir),
                        architecture, expected_arch, recorded,
                        problems, failed, checks, metadata, time.perf_counter() - start)


def check_metadata(f: GGUFFile, expected: dict[str, tuple[Any, GGUFValueType]]) -> list[MetadataCheck]:
    """The adapter's keys (hyper-parameters: what llama.cpp builds the graph from) that the file
    lacks or holds with another value; floats compared as the float32 GGUF stores."""
    out: list[MetadataCheck] = []
    for key, (value, vtype) in expected.items():
        field_ = f.fields.get(key)
        if field_ is None:
            out.append(MetadataCheck(key, value, None, "absent"))
            continue
        found = field_.value
        if isinstance(found, GGUFArray):
            same = (isinstance(value, (list, tuple)) and found.count == len(value)
                    and list(found.head) == list(value)[:len(found.head)])
            found = list(found.head)
        elif vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64) and isinstance(found, float):
            same = np.float32(found) == np.float32(value)
        else:
            same = found == value and isinstance(found, bool) == isinstance(value, bool)
        if not same:
            out.append(MetadataCheck(key, value, found, "differs"))
    return out


# A tensor to check: its report entry, its info, its checkpoint source when it is compared, and the
# importance matrix rows it was quantized with when verify has them
Work = tuple[TensorCheck, GGUFTensorInfo, SourceTensor | None, np.ndarray | None]


@dataclass
class Sums:
    """What a chunk contributes to a tensor's figures."""

    nonfinite: int = 0
    err_ss: float = 0.0
    ref_ss: float = 0.0
    max_abs: float = 0.0
    exact: bool | None = None
    elements: int = 0


def run_checks(files: list[GGUFFile], work: list[Work],
               ckpt: Checkpoint | None, threads: int | None, on_progress: Callable[[int], None] | None) -> None:
    """Every tensor's chunks through the pool (in order, a bounded window in flight), their sums
    folded into each TensorCheck."""
    threads = threads or os.cpu_count() or 1
    maps: list[mmap.mmap] = []
    try:
        for f in files:
            with open(f.path, "rb") as fh:
                maps.append(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        totals: dict[int, Sums] = {}
        with ThreadPoolExecutor(max_workers=threads) as pool:
            jobs = chunk_jobs(files, maps, work, ckpt)
            for key, sums in in_order(pool, jobs, window=2 * threads + 2):
                add(totals.setdefault(key, Sums()), sums)
                if on_progress is not None:
                    on_progress(sums.elements)
        for key, (c, info, src, _) in enumerate(work):
            finish(c, info, src, totals.get(key, Sums()), ckpt is not None)
    finally:
        for m in maps:
            try:
                m.close()
            except BufferError:  # after an error, views of it may live on in a traceback: unmapped with them
                pass


def add(total: Sums, s: Sums) -> None:
    total.nonfinite += s.nonfinite
    total.err_ss += s.err_ss
    total.ref_ss += s.ref_ss
    total.max_abs = float(np.maximum(total.max_abs, s.max_abs))  # a NaN stays
    total.elements += s.elements
    if s.exact is not None:
        total.exact = s.exact if total.exact is None else total.exact and s.exact


def finish(c: TensorCheck, info: GGUFTensorInfo, src: SourceTensor | None, s: Sums, with_model: bool) -> None:
    """A tensor's figures and its problem code from its chunks' sums."""
    c.nonfinite = s.nonfinite
    if src is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            c.rel_rms = float(np.sqrt(s.err_ss / s.ref_ss)) if s.ref_ss > 0 else (0.0 if s.err_ss == 0 else np.inf)
        c.max_abs = float(s.max_abs)
        if c.exact_unknown is None:
            c.exact = bool(s.exact)
    if c.problem is not None:
        return
    if c.nonfinite:
        c.problem = NONFINITE
    elif with_model and c.limit is None:
        # no error bound tells a right file from a wrong one (TQ1_0/TQ2_0), but qconvert's own
        # bytes for the checkpoint's values do
        if not c.exact:
            c.problem = UNSUPPORTED_TYPE
    elif src is not None and not c.rel_rms <= c.limit:  # NaN fails too
        c.problem = ERROR


def chunk_jobs(files, maps, work, ckpt) -> Iterator[Callable[[], tuple[int, Sums]]]:
    """One job per chunk of rows of every tensor; a job returns (tensor index in `work`, Sums).
    A chunk stays within one expert of a stacked tensor (one checkpoint tensor per read), and a
    tensor the conversion reads whole is one chunk."""
    for key, (c, info, src, weights) in enumerate(work):
        data = tensor_bytes(files[c.file], maps[c.file], info)
        exact = src is not None and c.exact_unknown is None
        cols = info.shape[0]
        n_rows = data.shape[0]
        if src is not None and reads_whole(src):
            w = weights[0] if weights is not None else None
            yield partial(check_chunk, key, data, info.type, ckpt, src, 0, n_rows, exact, w)
            continue
        # a chunk stays within one expert (of a 3-D tensor): one read, one imatrix row
        per_part = n_rows // (info.shape[2] if len(info.shape) == 3 else 1)
        step = max(1, CHUNK_ELEMENTS // cols)
        for first in range(0, n_rows, per_part):
            w = weights[first // per_part] if weights is not None else None
            for lo in range(first, first + per_part, step):
                hi = min(lo + step, first + per_part)
                yield partial(check_chunk, key, data[lo:hi], info.type, ckpt, src, lo, hi, exact, w)


def weights_for(matrix: Imatrix | None, info: GGUFTensorInfo, src: SourceTensor | None) -> np.ndarray | None:
    """The importance matrix rows (n_expert x row length) a tensor of the file was quantized
    with, as the conversion takes them (convert.Job.quant_weights); None without one."""
    qt = quants.REGISTRY.get(info.type)
    if matrix is None or src is None or qt is None or qt.imatrix == "ignored":
        return None
    return matrix.for_tensor(info.name, info.shape[0], info.shape[2] if len(info.shape) == 3 else 1)


def exact_unknown(qtype: T, imatrix: bool) -> str | None:
    """Why a tensor of `qtype` cannot be checked for exact bytes, or None when it can: qconvert
    must write the type, and an importance matrix the file was made with (`imatrix`: and that
    verify was not given) must not matter to it (ggml ignores one for Q8_0 and the float types)."""
    qt = quants.REGISTRY.get(qtype)
    if qt is None:
        return TYPE_NOT_WRITTEN
    return IMATRIX if imatrix and qt.imatrix != "ignored" else None


def n_weights(info: GGUFTensorInfo) -> int:
    return int(np.prod(info.shape, dtype=np.int64))


def tensor_bytes(f: GGUFFile, buf: mmap.mmap, info: GGUFTensorInfo) -> np.ndarray:
    """The tensor's data as u8[rows, row bytes], a view of the mapped file."""
    block, type_size = gguf.GGML_QUANT_SIZES[info.type]
    row_bytes = info.shape[0] // block * type_size
    raw = np.frombuffer(buf, np.uint8, info.nbytes, f.data_offset + info.offset)
    return raw.reshape(-1, row_bytes)


def check_chunk(key: int, data: np.ndarray, qtype: T, ckpt: Checkpoint | None, src: SourceTensor | None,
                lo: int, hi: int, exact: bool, weights: np.ndarray | None = None) -> tuple[int, Sums]:
    """Rows lo..hi of a tensor (`data`, their bytes): non-finite fields or values, and with a
    source, the error against the checkpoint's rows and whether the bytes are qconvert's."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    s = Sums(nonfinite=count_nonfinite(data, qtype), elements=data.size // type_size * block)
    if src is None or ckpt is None:
        return key, s
    x = source_rows(ckpt, src, lo, hi)
    y = gguf.quants.dequantize(data, qtype).reshape(x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        # float32 differences, summed per row in float32 and across rows in float64: a relative
        # error near 1e-8 of the sums, for a tenth of the time of float64 copies
        d = y - x
        s.err_ss = float(np.einsum("ij,ij->i", d, d).sum(dtype=np.float64))
        s.ref_ss = float(np.einsum("ij,ij->i", x, x).sum(dtype=np.float64))
        s.max_abs = float(np.abs(d).max(initial=0.0))
    if exact:
        s.exact = bool(np.array_equal(quants.quantize_rows(qtype, x, weights), data))
    return key, s


def count_nonfinite(data: np.ndarray, qtype: T) -> int:
    """Blocks of `data` (u8[rows, row bytes] of `qtype`) whose fp16 scale fields are NaN/Inf
    (the registry's fp16_fields) or whose E8M0 exponents are NaN (e8m0_fields), or NaN/Inf values
    of a float tensor; for another type gguf-py can decode, blocks whose decoded values are not
    all finite. Integer types have none."""
    if data.size == 0:
        return 0
    if qtype in FLOAT_VIEWS:
        return int((~np.isfinite(np.ascontiguousarray(data).view(FLOAT_VIEWS[qtype]))).sum())
    if qtype == T.BF16:  # all exponent bits set: 0x7F80 of the bfloat16
        bits = np.ascontiguousarray(data).view(np.uint16)
        return int(((bits & np.uint16(0x7F80)) == np.uint16(0x7F80)).sum())
    qt = quants.REGISTRY.get(qtype)
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = data.reshape(-1, type_size)
    if qt is not None:
        bad = np.zeros(blocks.shape[0], bool)
        for offset in qt.fp16_fields:  # an fp16 is Inf or NaN when its exponent bits, 0x7C of its high byte, are set
            bad |= (blocks[:, offset + 1] & np.uint8(0x7C)) == np.uint8(0x7C)
        for offset in qt.e8m0_fields:  # E8M0's NaN
            bad |= blocks[:, offset] == np.uint8(0xFF)
        return int(bad.sum())
    try:
        values = gguf.quants.dequantize(data, qtype)
    except NotImplementedError:  # the integer types: nothing can be non-finite
        return 0
    return int((~np.isfinite(values.reshape(-1, block))).any(axis=1).sum())


def source_rows(ckpt: Checkpoint, src: SourceTensor, lo: int, hi: int) -> np.ndarray:
    """Rows lo..hi of the GGUF tensor `src` (seen as 2-D [rows, row length]) as float32 from the
    checkpoint: the values the conversion quantizes, read by the conversion's own functions
    (convert.locate_rows, whole_source). Rows within one expert of a stacked tensor, or any rows
    of a tensor the conversion reads whole."""
    if reads_whole(src):
        x = whole_source(ckpt, src)[lo:hi]
    else:
        name, rows = locate_rows(src, lo, hi)
        x = np.ascontiguousarray(ckpt.decode_rows(name, ckpt.read_rows(name, rows), rows))
    if src.transform is not None:
        x = x.copy() if not x.flags.writeable else x
        src.transform(x)
    return x

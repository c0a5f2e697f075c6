"""Reports: what a command did, as data, rendered in one place as text for people or JSON for machines.

Every command builds a report dataclass (`QuantizeReport`, `InspectReport`, the verify and batch
reports, `ErrorReport`); nothing below the CLI builds an English sentence. `emit` writes one:
with `--json`, one JSON object on stdout; else the text renderer's lines on stdout. JSON objects
carry `schema_version` and `qconvert_version` and follow the JSON Schema shipped beside this
module (`schema/report.schema.json`, `SCHEMA_PATH`): a consumer checks `schema_version` and
reads the schema for field meanings. The schema changes its version when a field changes
meaning or disappears; new fields may appear within a version.

Conventions of the JSON: sizes in bytes (`bytes`), times in seconds (`seconds`), tensor shapes
in GGUF order (ggml's ne: the row length first, as `inspect` and llama.cpp's tools print them),
types by their ggml names ("Q4_K"), paths as given or as written.
(pip's `--report` installation report, with its versioned schema, is the model.)
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("schema") / "report.schema.json"


def to_json(obj: Any) -> Any:
    """A report as JSON-able data: dataclasses as objects (fields in order), paths as strings,
    enums by name, tuples as lists, non-finite floats as null (JSON has no NaN).

    >>> import gguf
    >>> to_json({"t": gguf.GGMLQuantizationType.Q4_K, "p": Path("a/b"), "x": (1, float("nan"))})
    {'t': 'Q4_K', 'p': 'a/b', 'x': [1, None]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.name
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # NumPy scalars
        return to_json(obj.item())
    return obj


def as_document(report: Any) -> dict:
    """The JSON object of a report: `schema_version`, `qconvert_version`, `command` and `ok`,
    then its other fields in order."""
    data = to_json(report)
    head = {"schema_version": SCHEMA_VERSION, "qconvert_version": __version__, "command": data.pop("command"),
            "ok": data.pop("ok")}  # what a reader checks first, first
    return {**head, **data}


def emit(report: Any, as_json: bool, *, quiet: bool = False) -> None:
    """Print a report: one JSON object on stdout with `as_json`, else its text (nothing with
    `quiet`, which keeps only errors)."""
    if as_json:
        sys.stdout.write(json.dumps(as_document(report), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    if quiet:
        return
    text = render(report)
    if text:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def render(report: Any) -> str:
    """The text of a report: `text_error` for a failure, else `text_<command>` of this module."""
    if isinstance(report, ErrorReport):
        return text_error(report)
    return globals()[f"text_{report.command}"](report)


# ---------------------------------------------------------------------------------------------
# errors

@dataclass
class ErrorDetail:
    kind: str       # errors.py's class `kind`: usage, checkpoint, unsupported, tokenizer, ...
    message: str    # the one line the CLI prints after "error: "
    exit_code: int


@dataclass
class ErrorReport:
    command: str | None
    error: ErrorDetail
    ok: bool = False


def text_error(r: ErrorReport) -> str:
    return f"error: {r.error.message}"


# ---------------------------------------------------------------------------------------------
# quantize (and its --dry-run plan)

@dataclass
class InputFile:
    name: str       # relative to the model folder
    bytes: int


@dataclass
class InputReport:
    path: Path                  # the model folder (a Hub snapshot for a repo id)
    ref: str                    # MODEL as given on the command line
    repo_id: str | None         # for a Hub id: the repo and the commit it resolved to
    commit: str | None
    files: list[InputFile]


@dataclass
class TensorReport:
    name: str                   # GGUF name
    source: str | None          # checkpoint tensor (None when generated, e.g. rope_freqs)
    shape: list[int]            # GGUF order
    source_dtype: str
    type: str                   # the type written
    reason: str                 # the planner's rule
    wanted: str | None          # the rule's type when the rows could not hold it (a fallback)
    bytes: int


@dataclass
class OutputFileReport:
    path: Path
    bytes: int
    sha256: str | None          # None in a plan (--dry-run)


@dataclass
class QuantizeReport:
    command: str                # "quantize"
    dry_run: bool
    input: InputReport
    output: Path | list[Path]   # the file, or the files of a split set
    files: list[OutputFileReport]
    bytes: int                  # the output's size (of every file of a split set)
    type: str                   # -t as a canonical name ("Q4_K_M")
    architecture: str
    parameters: int
    bits_per_weight: float      # over the tensors' weights (metadata excluded)
    tensor_bytes: int
    fallbacks: int              # tensors that fell back from the rule's type
    seconds: float | None       # None in a plan
    tensors: list[TensorReport]
    ok: bool = True


def quantize_report(job, source, files, seconds: float | None) -> QuantizeReport:
    """The report of a conversion (`files` written, with their hashes) or of its plan (`files`
    predicted by convert.predict_files, `seconds` None). `job` is convert.Job, `source` the
    MODEL argument resolved (hub.ModelSource)."""
    from .convert import parameter_counts
    from .planner import summarize

    root = job.checkpoint.path
    inputs = []
    for p in job.input_paths:
        try:
            name = p.relative_to(root).as_posix()
        except ValueError:  # a shard elsewhere (the index's), the importance matrix
            name = str(p)
        inputs.append(InputFile(name, p.stat().st_size))
    tensor_bytes, bpw = summarize(job.rows)
    tensors = tensor_reports(job.rows)
    out_files = [OutputFileReport(f.path, f.nbytes, f.sha256) for f in files]
    output = out_files[0].path if len(out_files) == 1 else [f.path for f in out_files]
    return QuantizeReport(
        command="quantize", dry_run=seconds is None,
        input=InputReport(root, source.ref, source.repo_id, source.commit, inputs), output=output,
        files=out_files, bytes=sum(f.bytes for f in out_files), type=job.type_name,
        architecture=job.arch.arch_name, parameters=parameter_counts(job.rows)[0], bits_per_weight=bpw,
        tensor_bytes=tensor_bytes, fallbacks=sum(r.fell_back for r in job.rows), seconds=seconds,
        tensors=tensors)


def tensor_reports(rows) -> list[TensorReport]:
    """A plan's rows (types.PlanRow) as the report lists them."""
    return [TensorReport(r.gguf_name, r.src, list(reversed(r.shape)), r.src_dtype, r.qtype.name, r.reason,
                         r.wanted.name if r.wanted is not None else None, r.nbytes) for r in rows]


def text_quantize(r: QuantizeReport) -> str:
    if r.dry_run:
        return text_plan(r)
    where = r.output if not isinstance(r.output, list) else f"{r.output[0]} (+{len(r.output) - 1} files)"
    lines = [f"wrote {where} ({r.bytes / 2**20:.1f} MiB, {len(r.tensors)} tensors, "
             f"{r.bits_per_weight:.2f} bits per weight) in {r.seconds:.1f} s"]
    if (line := fallback_line(r.tensors, r.bits_per_weight)) is not None:
        lines.append(line)
    return "\n".join(lines)


def text_plan(r: QuantizeReport) -> str:
    width = max((len(t.name) for t in r.tensors), default=6)
    lines = [f"{'tensor':<{width}}  {'shape':<16} {'from':<5} {'type':<5} reason"]
    for t in r.tensors:
        shape = "x".join(str(d) for d in t.shape)
        lines.append(f"{t.name:<{width}}  {shape:<16} {t.source_dtype:<5} {t.type:<5} {t.reason}")
    lines.append(f"{len(r.tensors)} tensors, {r.tensor_bytes / 2**20:.1f} MiB of tensor data, "
                 f"{r.bits_per_weight:.2f} bits per weight")
    files = ", ".join(f"{f.path} ({f.bytes} bytes)" for f in r.files)
    lines.append(f"would write {files}")
    if (line := fallback_line(r.tensors, r.bits_per_weight)) is not None:
        lines.append(line)
    return "\n".join(lines)


def fallback_line(tensors: list[TensorReport], bits_per_weight: float) -> str | None:
    """One line on what fallbacks did: how many tensors, which type changes, bits per weight."""
    fell = [t for t in tensors if t.wanted is not None]
    if not fell:
        return None
    changes: dict[str, int] = {}
    for t in fell:
        key = f"{t.wanted}->{t.type}"
        changes[key] = changes.get(key, 0) + 1
    detail = ", ".join(f"{k} x{n}" for k, n in sorted(changes.items()))
    intended = wanted_bits_per_weight(tensors)
    return (f"{len(fell)} of {len(tensors)} tensors fell back ({detail}): {bits_per_weight:.2f} bits per "
            f"weight instead of {intended:.2f}")


def wanted_bits_per_weight(tensors: list[TensorReport]) -> float:
    """Bits per weight had every tensor got its rule's type."""
    import gguf
    bits = n = 0
    for t in tensors:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.wanted or t.type]]
        count = math.prod(t.shape)
        bits += 8 * size * count / block
        n += count
    return bits / max(n, 1)


# ---------------------------------------------------------------------------------------------
# inspect

@dataclass
class ArrayValue:
    type: str                   # GGUF value type of the elements
    count: int
    head: list                  # the first elements


@dataclass
class MetadataEntry:
    key: str
    type: str                   # GGUF value type
    value: Any                  # a scalar, or ArrayValue


@dataclass
class InspectTensor:
    name: str
    type: str
    shape: list[int]            # GGUF order
    offset: int                 # in the data section
    bytes: int
    file: int = 0               # index in `files` for a split set


@dataclass
class InspectFile:
    path: Path
    bytes: int
    tensors: int


@dataclass
class InspectReport:
    command: str                # "inspect"
    path: Path                  # as given (any member of a split set)
    files: list[InspectFile]    # one, or the members of a split set in order
    bytes: int
    version: int
    alignment: int
    metadata: list[MetadataEntry]
    tensors: list[InspectTensor] | None = None  # None with --no-tensors
    ok: bool = True


SHOWN_ITEMS = 5  # array elements printed before "..."
SHOWN_CHARS = 120  # a value longer than this is cut, ending in "..."


def short_repr(value, limit: int = SHOWN_CHARS) -> str:
    """repr(value) cut to `limit` characters, without building the repr of a long string (four
    times its size when it is all control bytes).

    >>> len(short_repr("x" * 10**6)), short_repr("x" * 200)[-5:], short_repr(7)
    (120, 'xx...', '7')
    """
    if isinstance(value, str) and len(value) > limit:
        # repr picks its quotes from the whole string: the suffix makes the prefix pick the same
        # (double quotes only when there is a ' and no "), and falls beyond what is shown
        suffix = ("'" if '"' not in value else "'\"") if "'" in value else ""
        text = repr(value[:limit] + suffix)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def text_inspect(r: InspectReport) -> str:
    n_tensors = sum(f.tensors for f in r.files)
    if len(r.files) == 1:
        lines = [f"{r.path}: GGUF, {len(r.metadata)} metadata keys, {n_tensors} tensors"]
    else:
        lines = [f"{r.path}: GGUF split set of {len(r.files)} files, {len(r.metadata)} metadata keys, "
                 f"{n_tensors} tensors"]
        lines += [f"  file {i + 1}: {f.path} ({f.bytes} bytes, {f.tensors} tensors)" for i, f in enumerate(r.files)]
    for m in r.metadata:
        if isinstance(m.value, ArrayValue):
            head = ", ".join(repr(v) for v in m.value.head[:SHOWN_ITEMS])
            shown = f"[{head}{', ...' if m.value.count > SHOWN_ITEMS else ''}] ({m.value.count} items)"
        else:
            shown = short_repr(m.value)
        lines.append(f"  {m.key} = {shown}")
    if r.tensors is not None:
        width = max((len(t.name) for t in r.tensors), default=6)
        file_col = "  file" if len(r.files) > 1 else ""
        lines.append(f"  {'tensor':<{width}}  {'type':<5} {'shape':<18} bytes{file_col}")
        for t in r.tensors:
            shape = "x".join(str(d) for d in t.shape)
            where = f"  {t.file + 1}" if len(r.files) > 1 else ""
            lines.append(f"  {t.name:<{width}}  {t.type:<5} {shape:<18} {t.bytes}{where}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# verify (qconvert/verify.py builds VerifyReport)

# what verify's codes mean, for people
VERIFY_PROBLEMS = {
    "missing": "missing from the file", "extra": "not in the checkpoint", "shape": "shape differs",
    "nonfinite": "NaN/Inf scales or values", "unsupported_type": "no error limit for this type",
    "error": "error beyond the limit", "architecture": "architecture differs",
    "metadata": "settings differ from the checkpoint's",
}
VERIFY_EXACT_UNKNOWN = {
    "imatrix": "made with an importance matrix: give it with --imatrix to check these bytes",
    "type_not_written": "a type qconvert does not write",
}


def text_verify(r) -> str:
    """The table of a VerifyReport (qconvert/verify.py): one line per tensor, then the verdict."""
    def num(v, fmt: str, width: int) -> str:
        return f"{'-':>{width}}" if v is None else format(v, f"{width}{fmt}")

    def shown(t) -> str:
        if t.problem == "shape":
            return f"shape differs: {'x'.join(map(str, t.shape))}, checkpoint {'x'.join(map(str, t.expected_shape))}"
        if t.problem == "nonfinite":
            return f"{t.nonfinite} NaN/Inf scales or values"
        return VERIFY_PROBLEMS.get(t.problem, t.problem) if t.problem else ""

    with_model = r.model is not None
    width = max((len(t.name) for t in r.tensors), default=6)
    where = str(r.files[0]) if len(r.files) == 1 else f"{r.files[0]} (split set of {len(r.files)} files)"
    lines = [where + (f" against {r.model_ref}" if with_model else "")]
    head = f"{'tensor':<{width}}  {'type':<6}"
    columns = f" {'rel RMS':>9} {'max abs':>9} {'limit':>8} {'exact':<5} problem" if with_model else " problem"
    lines.append(head + columns)
    for t in r.tensors:
        row = f"{t.name:<{width}}  {t.type or '-':<6}"
        if with_model:
            exact = "-" if t.exact is None else "yes" if t.exact else "no"
            row += f" {num(t.rel_rms, '.2e', 9)} {num(t.max_abs, '.2e', 9)} {num(t.limit, '.2g', 8)} {exact:<5} "
        else:
            row += " "
        lines.append((row + shown(t)).rstrip())
    for code in r.problems:
        detail = f": file {r.architecture}, checkpoint {r.expected_architecture}" if code == "architecture" else ""
        lines.append(f"file: {VERIFY_PROBLEMS.get(code, code)}{detail}")
    for m in r.metadata:
        if m.problem == "differs":
            lines.append(f"  {m.key} = {short_repr(m.found)}, checkpoint {short_repr(m.expected)}")
    absent = [m.key for m in r.metadata if m.problem == "absent"]
    if absent:
        lines.append(f"keys qconvert would write that the file lacks: {', '.join(absent)}")
    unknown = {t.exact_unknown for t in r.tensors if t.exact_unknown in VERIFY_EXACT_UNKNOWN}
    for code in sorted(unknown):
        lines.append(f"exact not known: {VERIFY_EXACT_UNKNOWN[code]}")
    if r.ok:
        against = "matches its checkpoint" if with_model else "is sound (give MODEL to compare with a checkpoint)"
        lines.append(f"OK: {len(r.tensors)} tensors, the file {against} ({r.seconds:.1f} s)")
    else:
        failed = ", ".join(r.failed[:10]) + (f" and {len(r.failed) - 10} more" if len(r.failed) > 10 else "")
        lines.append("FAILED: " + "; ".join(filter(None, [
            f"{len(r.failed)} tensor{'s' if len(r.failed) != 1 else ''}: {failed}" if r.failed else "",
            ", ".join(VERIFY_PROBLEMS.get(c, c) for c in r.problems)])))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# batch (qconvert/batch.py builds BatchReport)

BATCH_VERBS = {"made": "made", "skipped": "up to date", "failed": "FAILED", "planned": "would make"}


def text_batch(r) -> str:
    """One line an output (what happened to it, its size or its error), then the totals."""
    lines = []
    for o in r.outputs:
        head = f"{BATCH_VERBS[o.status]:<10} {o.path}"
        if o.node is not None:  # --ray: where, and the attempts lost on the way
            lost = ", ".join(r.kind for r in o.retries)
            head += f" on {o.node}" + (f" after {len(o.retries)} lost attempt(s) ({lost})" if o.retries else "")
        if o.error is not None:
            lines.append(f"{head}: {o.error.message}")
        elif len(o.files) > 1:
            lines.append(f"{head} ({o.bytes / 2**20:.1f} MiB in {len(o.files)} files)")
        else:
            lines.append(f"{head} ({o.bytes / 2**20:.1f} MiB)")
    t = r.totals
    counts = [f"{n} {word}" for n, word in ((t.made, "made"), (t.planned, "to make"), (t.skipped, "up to date"),
                                           (t.failed, "failed")) if n]
    lines.append(f"{t.outputs} outputs: {', '.join(counts) or 'none'} ({t.bytes / 2**20:.1f} MiB) in {t.seconds:.1f} s")
    return "\n".join(lines)

# ---------------------------------------------------------------------------------------------


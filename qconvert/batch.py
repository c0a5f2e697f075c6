"""Many models into many types from one TOML manifest, incrementally: `qconvert batch MANIFEST.toml`.

    output_dir = "gguf"                  # relative to the manifest's folder (default: that folder)
    name = "{model}-{type}.gguf"         # {model}: the model folder's (or repo id's) last part
    threads = 8                          # optional; `--threads` wins

    [[job]]
    model = "ckpt/llama-ft-step1000"     # folder (relative to the manifest) or Hub id
    types = ["F16", "Q8_0", "Q4_K_M"]
    imatrix = "imatrix.gguf"             # any quantize option by its long name, - or _

`load_manifest` validates the whole file at the boundary: a bad manifest is one ManifestError
naming the key and the job (exit 2, kind "manifest") before any checkpoint is read. `run_batch`
then, for each job: prepares the model once (convert.prepare_model), plans each type
(plan_job), skips the outputs whose recorded provenance matches what this run would write
(provenance.expected/matches), and makes the rest in ONE pass over the model's tensors
(convert.write_many). A job that fails
(a bad checkpoint, a type that cannot be planned, a value a type cannot hold) fails its outputs,
never the others. The result is a BatchReport: data, rendered by report.py.

sha256 of a skipped output is recomputed from the file, not recorded: the file cannot hold its
own hash, a record beside it can go stale, and hashing reads at disk speed (about 1 s a GB),
far cheaper than the conversion the skip saved.
"""

from __future__ import annotations

import os
import string
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .errors import ManifestError, QConvertError, UnsupportedError, UsageError
from .hub import looks_like_hub_id, model_name
from .options import KVOverride, T, parse_kv_override, parse_size, parse_tensor_type, parse_type

if TYPE_CHECKING:
    from .convert import Job, Model

DEFAULT_NAME = "{model}-{type}.gguf"
TOP_KEYS = ("output_dir", "name", "threads", "job")
# quantize's long options, by the name they take in a manifest (dashes become underscores)
FLAG_KEYS = ("pure", "leave_output_tensor", "no_fallback", "allow_nonfinite")
JOB_KEYS = ("model", "types", "imatrix", "output_tensor_type", "token_embedding_type", "tensor_type",
            "override_kv", "split_max_size", "split_max_tensors", *FLAG_KEYS)
NAME_FIELDS = ("model", "type")


@dataclass(frozen=True)
class JobSpec:
    """One [[job]] of a manifest, validated: quantize's options as their parsed values."""

    index: int                     # 1 for the first [[job]]
    model: str                     # as written: a folder (relative to the manifest) or a Hub id
    folder: Path | None            # the folder, when `model` names an existing one
    label: str                     # {model} in the name template
    types: tuple[str, ...]         # recipe names, upper case (planner.RECIPES)
    outputs: tuple[Path, ...]      # one target per type, in the same order
    imatrix: Path | None = None
    pure: bool = False
    output_tensor_type: T | None = None
    token_embedding_type: T | None = None
    leave_output_tensor: bool = False
    tensor_type: tuple[tuple[str, T], ...] = ()
    override_kv: tuple[KVOverride, ...] = ()
    no_fallback: bool = False
    allow_nonfinite: bool = False
    split_max_size: int | None = None
    split_max_tensors: int | None = None

    def overrides(self):
        from .planner import Overrides
        return Overrides(pure=self.pure, output_tensor_type=self.output_tensor_type,
                         token_embedding_type=self.token_embedding_type,
                         leave_output_tensor=self.leave_output_tensor, tensor_types=self.tensor_type,
                         no_fallback=self.no_fallback)

    def split(self):
        if self.split_max_size is None and self.split_max_tensors is None:
            return None
        from .writer import Split
        return Split(max_bytes=self.split_max_size, max_tensors=self.split_max_tensors)


@dataclass(frozen=True)
class Manifest:
    path: Path
    output_dir: Path
    name: str
    threads: int | None
    jobs: tuple[JobSpec, ...]


# ---- the manifest --------------------------------------------------------------------------------

def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest; every refusal is a ManifestError naming the key (and the
    job, 1-based, in file order)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"manifest {path}: not valid TOML ({e})") from None
    except OSError as e:
        raise ManifestError(f"manifest {path} cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest {path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    base = path.resolve().parent
    where = f"manifest {path}"
    top = normalized(data, TOP_KEYS, where)
    output_dir = base / expect(top, "output_dir", str, where, ".")
    name = expect(top, "name", str, where, DEFAULT_NAME)
    check_template(name, where)
    threads = positive_int(top, "threads", where)
    jobs = top.get("job")
    if jobs is None:
        raise ManifestError(f"{where}: no [[job]]; add one with model = \"...\" and types = [...]")
    if not isinstance(jobs, list) or not all(isinstance(j, dict) for j in jobs):
        raise ManifestError(f"{where}: job must be an array of tables ([[job]])")
    specs = tuple(job_spec(i, job, base, output_dir, name, f"{where}: job {i}")
                  for i, job in enumerate(jobs, start=1))
    check_collisions(specs, where)
    return Manifest(path, output_dir, name, threads, specs)


def normalized(table: dict, known: tuple[str, ...], where: str) -> dict:
    """The table with `-` in keys read as `_` (quantize's --long-names), unknown or doubled keys
    refused."""
    out: dict = {}
    for key, value in table.items():
        k = key.replace("-", "_")
        if k not in known:
            raise ManifestError(f"{where}: unknown key {key!r}; known: {', '.join(known)}")
        if k in out:
            raise ManifestError(f"{where}: key {key!r} given twice (as - and _)")
        out[k] = value
    return out


def expect(table: dict, key: str, kind: type, where: str, default: Any = None) -> Any:
    value = table.get(key, default)
    # TOML's booleans are Python bools, which are ints too: an int key refuses them
    if value is not default and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise ManifestError(f"{where}: {key} must be {TOML_KINDS[kind]}, not {toml_kind(value)}")
    return value


TOML_KINDS = {str: "a string", bool: "true or false", int: "an integer", list: "an array"}


def toml_kind(value: Any) -> str:
    for kind, text in ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a float"),
                       (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return text
    return type(value).__name__  # dates and times


def positive_int(table: dict, key: str, where: str) -> int | None:
    value = expect(table, key, int, where)
    if value is not None and value < 1:
        raise ManifestError(f"{where}: {key} must be at least 1, not {value}")
    return value


def strings(table: dict, key: str, where: str) -> list[str]:
    value = expect(table, key, list, where, [])
    for item in value:
        if not isinstance(item, str):
            raise ManifestError(f"{where}: {key} must be an array of strings, not one holding {toml_kind(item)}")
    return value


def check_template(name: str, where: str) -> None:
    """`name` may use {model} and {type}, nothing else, and must name a .gguf file below
    output_dir (an output elsewhere in a checkpoint folder would read as one of its inputs)."""
    try:
        parts = list(string.Formatter().parse(name))
    except ValueError as e:
        raise ManifestError(f"{where}: name {name!r}: {e}") from None
    for _, field_name, spec, conversion in parts:
        if field_name is None:
            continue
        if field_name not in NAME_FIELDS or spec or conversion:
            raise ManifestError(f"{where}: name {name!r}: unknown field {{{field_name}}}; use {{model}} and {{type}}")
    if Path(name).is_absolute() or ".." in Path(name).parts:
        raise ManifestError(f"{where}: name {name!r} must be a path below output_dir")
    if not name.lower().endswith(".gguf"):
        raise ManifestError(f"{where}: name {name!r} must end with .gguf")


def job_spec(index: int, job: dict, base: Path, output_dir: Path, name: str, where: str) -> JobSpec:
    from .planner import recipe_for

    job = normalized(job, JOB_KEYS, where)
    model = expect(job, "model", str, where)
    if not model:
        raise ManifestError(f"{where}: model is missing; give a folder (relative to the manifest) or a Hub id")
    types = strings(job, "types", where)
    if not types:
        raise ManifestError(f"{where}: types must list at least one type, e.g. [\"Q8_0\"]")
    try:
        types = [recipe_for(t).name for t in types]  # the one parser of mix names, -t's
    except UnsupportedError as e:
        raise ManifestError(f"{where}: types: {e}") from None
    # a folder beside the manifest wins, as a local path wins over a Hub id in hub.resolve_model;
    # what does not read as a repo id is a folder, missing now (the job fails when it runs)
    folder = base / model if (base / model).is_dir() or not looks_like_hub_id(model) else None
    # {model}: the folder's name (a Hub cache snapshot's repo name), or the repo id's name part
    label = model_name(folder) if folder is not None else model.partition("@")[0].rsplit("/", 1)[-1]
    outputs = tuple(output_dir / name.format(model=label, type=t) for t in types)
    opts: dict[str, Any] = {}
    for key in FLAG_KEYS:
        opts[key] = expect(job, key, bool, where, False)
    if (imatrix := expect(job, "imatrix", str, where)) is not None:
        opts["imatrix"] = base / imatrix
    for key in ("output_tensor_type", "token_embedding_type"):
        if (value := expect(job, key, str, where)) is not None:
            opts[key] = boundary(where, key, parse_type, value, key)
    opts["tensor_type"] = tuple(boundary(where, "tensor_type", parse_tensor_type, t)
                                for t in strings(job, "tensor_type", where))
    opts["override_kv"] = tuple(boundary(where, "override_kv", parse_kv_override, o)
                                for o in strings(job, "override_kv", where))
    size = job.get("split_max_size")
    if size is not None:
        if isinstance(size, str):
            size = boundary(where, "split_max_size", parse_size, size)
        elif not isinstance(size, int) or isinstance(size, bool):
            raise ManifestError(f"{where}: split_max_size must be a size (\"50G\", \"300M\") or bytes, "
                                f"not {toml_kind(size)}")
        if size < 1:
            raise ManifestError(f"{where}: split_max_size must be positive, not {size}")
        opts["split_max_size"] = size
    opts["split_max_tensors"] = positive_int(job, "split_max_tensors", where)
    return JobSpec(index, model, folder, label, tuple(types), outputs, **opts)


def boundary(where: str, key: str, parse: Callable, *args: Any) -> Any:
    """A value through quantize's own parser; its refusal named with the manifest's key."""
    try:
        return parse(*args)
    except UsageError as e:
        message = str(e)
        for prefix in (f"--{key.replace('_', '-')}: ", f"--{key.replace('_', '-')} "):  # the parser's own naming
            message = message.removeprefix(prefix)
        raise ManifestError(f"{where}: {key}: {message}") from None


def check_collisions(specs: tuple[JobSpec, ...], where: str) -> None:
    seen: dict[str, tuple[int, str]] = {}
    for spec in specs:
        for qtype, out in zip(spec.types, spec.outputs):
            key = os.path.normcase(os.path.abspath(out))
            if key in seen:
                job, other = seen[key]
                first = f"job {job} ({other})" if (job, other) != (spec.index, qtype) else f"job {job}"
                raise ManifestError(f"{where}: job {spec.index} ({qtype}) and {first} both write {out}; "
                                    "give name a {model} and {type}, or list each type once")
            seen[key] = (spec.index, qtype)


# ---- the run -------------------------------------------------------------------------------------

@dataclass
class BatchFile:
    path: Path
    bytes: int
    sha256: str | None


@dataclass
class BatchError:
    kind: str       # errors.py's kind of the error ("checkpoint", "quantization", ...)
    message: str    # its one line


@dataclass
class BatchOutput:
    job: int        # the [[job]], 1-based
    model: str      # as the manifest gives it
    type: str
    path: Path      # the target (a split set's files are in `files`)
    status: str     # "made", "skipped" (provenance matched), "failed"; "planned" in a dry run
    bytes: int | None = None          # all files of the output
    sha256: str | None = None         # the file's, when the output is one file
    files: list[BatchFile] = field(default_factory=list)
    seconds: float | None = None      # of the pass that made it (shared by the outputs of a model)
    error: BatchError | None = None
    node: str | None = None           # the Ray node that made it or failed it (batch_ray); None locally
    retries: list[BatchError] = field(default_factory=list)  # each lost attempt (batch_ray), why


@dataclass
class BatchTotals:
    outputs: int
    made: int
    skipped: int
    failed: int
    planned: int
    bytes: int      # of made and skipped outputs (planned ones in a dry run)
    seconds: float


@dataclass
class BatchReport:
    command: str    # "batch"
    ok: bool        # no output failed
    manifest: Path
    force: bool
    dry_run: bool
    totals: BatchTotals
    outputs: list[BatchOutput]


class Progress(Protocol):
    def update(self, n: int) -> object: ...
    def close(self) -> object: ...


# on_progress(model label, checkpoint bytes its pass reads) -> a progress (a tqdm bar will do),
# updated with the bytes read as the pass goes and closed after it
ProgressFactory = Callable[[str, int], Progress]


def run_batch(manifest: Manifest, *, force: bool = False, dry_run: bool = False, threads: int | None = None,
              on_progress: ProgressFactory | None = None) -> BatchReport:
    """Make every output of the manifest that is missing or out of date (all of them with
    `force`), one pass per model; nothing written with `dry_run` (the report then lists what
    would be made, "planned", with the exact bytes). Failures are in the report, not raised
    (except an interrupt)."""
    start = time.perf_counter()
    threads = threads or manifest.threads
    outputs: list[BatchOutput] = []
    for spec in manifest.jobs:
        outputs.extend(run_job(spec, force=force, dry_run=dry_run, threads=threads, on_progress=on_progress))
    counts = {s: sum(o.status == s for o in outputs) for s in ("made", "skipped", "failed", "planned")}
    totals = BatchTotals(len(outputs), **counts, bytes=sum(o.bytes or 0 for o in outputs if o.status != "failed"),
                         seconds=time.perf_counter() - start)
    return BatchReport("batch", counts["failed"] == 0, manifest.path, force, dry_run, totals, outputs)


def run_job(spec: JobSpec, *, force: bool, dry_run: bool, threads: int | None,
            on_progress: ProgressFactory | None) -> list[BatchOutput]:
    """One model's work, wherever it runs (the local loop, a Ray task of batch_ray): prepare it
    once, plan each type, skip what is up to date, make the rest in one pass."""
    entries = entries_of(spec)
    model = open_model(spec, entries)
    if model is None:
        return entries
    try:
        pending = plan_outputs(spec, model, entries, force=force, dry_run=dry_run)
        if pending:
            make(spec, pending, threads, on_progress)
    finally:
        model.checkpoint.close()
    return entries


def check_job(spec: JobSpec, *, force: bool) -> tuple[list[BatchOutput], int]:
    """The half of `run_job` a driver does before handing the job to another machine (batch_ray):
    the entries with those up to date ("skipped") or that cannot be made ("failed") decided and
    the others pending (status ""), and the most memory one chunk of the pass over the pending
    ones holds (convert.chunk_peak; 0 when nothing is pending)."""
    from . import convert

    entries = entries_of(spec)
    model = open_model(spec, entries)
    if model is None:
        return entries, 0
    try:
        pending = plan_outputs(spec, model, entries, force=force, dry_run=False)
        return entries, convert.chunk_peak([job for _, job in pending]) if pending else 0
    finally:
        model.checkpoint.close()


def entries_of(spec: JobSpec) -> list[BatchOutput]:
    return [BatchOutput(spec.index, spec.model, t, out, "") for t, out in zip(spec.types, spec.outputs)]


def open_model(spec: JobSpec, entries: list[BatchOutput]) -> Model | None:
    """The job's model prepared (convert.prepare_model), or None with every entry failed."""
    from . import convert

    try:
        folder, ref = locate(spec)
        return convert.prepare_model(folder, spec.imatrix, ref=ref)
    except (QConvertError, OSError) as e:
        for entry in entries:
            failed(entry, e)
        return None


def plan_outputs(spec: JobSpec, model: Model, entries: list[BatchOutput], *, force: bool,
                 dry_run: bool) -> list[tuple[BatchOutput, Job]]:
    """Plan each entry's type: mark those up to date "skipped" (those of a dry run "planned"),
    those that cannot be made "failed", and return the others with their jobs, to be made."""
    from . import convert, provenance

    pending: list[tuple[BatchOutput, Job]] = []
    for entry in entries:
        try:
            job = convert.plan_job(model, entry.type, spec.overrides(), spec.override_kv, spec.allow_nonfinite,
                                   spec.split())
            if not force and provenance.matches(entry.path, provenance.expected(job)):
                entry.status = "skipped"
                describe(entry, convert.predict_files(job, entry.path), hashed=not dry_run)
                continue
            if not force and entry.path.exists() and provenance.read(entry.path) is None:
                # not an output of qconvert's: someone's file, never replaced behind their back
                raise UsageError(f"{entry.path} exists and records no qconvert provenance; remove it or "
                                 "pass --force to replace it")
            if dry_run:
                entry.status = "planned"
                describe(entry, convert.predict_files(job, entry.path), hashed=False)
                continue
            entry.path.parent.mkdir(parents=True, exist_ok=True)
            pending.append((entry, job))
        except (QConvertError, OSError) as e:
            failed(entry, e)
    return pending


def make(spec: JobSpec, pending: list[tuple[BatchOutput, Job]], threads: int | None,
         on_progress: ProgressFactory | None) -> None:
    """The pending outputs of one model, in one pass (convert.write_many)."""
    from . import convert

    bar = on_progress(spec.label, pending[0][1].source_bytes) if on_progress is not None else None
    try:
        results = convert.write_many([(job, entry.path) for entry, job in pending], overwrite=True,
                                     threads=threads, on_progress=bar.update if bar is not None else None)
    except (QConvertError, OSError) as e:  # the checkpoint could not be read: every output of the pass
        for entry, _ in pending:
            failed(entry, e)
        return
    finally:
        if bar is not None:
            bar.close()
    for (entry, _), result in zip(pending, results):
        if isinstance(result, BaseException):
            failed(entry, result)
            continue
        entry.status = "made"
        entry.seconds = result.seconds
        describe(entry, result.files, hashed=True)


def describe(entry: BatchOutput, files: list, hashed: bool) -> None:
    """Fill the entry's files, bytes and sha256 from the engine's OutputFiles (hashing a file
    whose hash the engine did not compute, when `hashed`)."""
    from .provenance import sha256_file

    entry.files = [BatchFile(Path(f.path), f.nbytes, (f.sha256 or sha256_file(Path(f.path))) if hashed else None)
                   for f in files]
    entry.bytes = sum(f.bytes for f in entry.files)
    entry.sha256 = entry.files[0].sha256 if len(entry.files) == 1 else None


def failed(entry: BatchOutput, e: BaseException) -> BatchOutput:
    entry.status = "failed"
    entry.error = error_of(e)
    return entry


def error_of(e: BaseException) -> BatchError:
    if isinstance(e, OSError):
        message = f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
        return BatchError("os", message)
    assert isinstance(e, QConvertError), e
    return BatchError(e.kind, " ".join(str(e).split()))


def locate(spec: JobSpec) -> tuple[Path, str | None]:
    """The job's checkpoint folder, and the Hub id and commit it came from (None for a folder):
    the manifest's folder-relative path, or a Hub id resolved (downloaded or found in the cache)
    by hub.resolve_model."""
    if spec.folder is not None:
        return spec.folder, None
    from .hub import resolve_hub_id  # not resolve_model: a folder counts beside the manifest, not here
    source = resolve_hub_id(spec.model)
    return source.path, source.provenance_ref

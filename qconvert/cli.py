"""Command line: parse, call one library function, print. Errors become one line and an exit code.

Exit codes: 0 done, 1 bad input or failed conversion, 2 usage (bad option or argument, unsafe or
existing output), 130 interrupted (SIGINT, Ctrl-C), 143 terminated (SIGTERM).

Every failure is one line on stderr, `error: <what>`, and no traceback; set QCONVERT_DEBUG=1 to get
the traceback instead. Usage errors come from click, which recent typer (0.29) vendors as
typer._click, so `import click` fails in a clean install: they are recognized by their shape
(exit_code and format_message), not their class.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer

from . import __version__, report
from .errors import Interrupted, QConvertError

if TYPE_CHECKING:
    from .hub import ModelSource

# no_args_is_help prints the help with an exit code that changed across click versions (0, then
# 2 from 8.2): without it, a bare `qconvert` is click's "Missing command" usage error, 2 with all
app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="Convert Hugging Face checkpoints to GGUF files for llama.cpp.")

# a str, not a Path: MODEL may be a Hub id (model_source)
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", show_default=False, help="Checkpoint folder (config.json, "
                                         "*.safetensors, tokenizer files), or a Hugging Face repo id org/name"
                                         "[@revision] (a local folder of that name wins).")]
def type_help() -> str:
    """-t's help: the mixes qconvert can write, from the planner's table (itself from the type registry)."""
    from .planner import available

    return f"Output type, one of llama-quantize's: {', '.join(available())}."


TypeOpt = Annotated[str, typer.Option("--type", "-t", help=type_help())]
# a str, not a Path: Path drops the trailing separator that makes "-o models/" a folder
OutOpt = Annotated[Optional[str], typer.Option("--output", "-o", show_default=False, help="GGUF file to write, or "
                                               "a folder to write it in (default: the model folder's name and the "
                                               "type, e.g. SmolLM2-Q8_0.gguf, in the current folder).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", "-j", min=1,
                                                   help="Quantization threads (default: all cores).")]
# Output for machines: one JSON object on stdout (schema: qconvert/schema/report.schema.json)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as one JSON object on stdout (schema: "
                                       "qconvert/schema/report.schema.json); human lines go to stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (and --json's report).")]
ProgressOpt = Annotated[Optional[bool], typer.Option("--progress/--no-progress", show_default=False,
                                                     help="Force or hide progress bars (default: shown when "
                                                     "stderr is a terminal).")]


def wants_progress(progress: bool | None, quiet: bool) -> bool:
    """Progress bars only on a terminal unless forced: a log or a CI job gets no control codes."""
    if quiet:
        return False
    return progress if progress is not None else sys.stderr.isatty()


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"qconvert {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Convert Hugging Face checkpoints to GGUF files for llama.cpp."""


@app.command()
def quantize(
    model: ModelArg,
    qtype: TypeOpt = "Q8_0",
    output: OutOpt = None,
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the per-tensor plan and the exact size of the "
                                          "output; write nothing.")] = False,
    progress: ProgressOpt = None,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
    imatrix: Annotated[Optional[Path], typer.Option(
        "--imatrix", help="Importance matrix from llama-imatrix (GGUF or legacy .dat).")] = None,
    pure: Annotated[bool, typer.Option("--pure", help="Every quantized tensor in the default type: no mix "
                                       "rules (fallbacks still apply).")] = False,
    output_tensor_type: Annotated[Optional[str], typer.Option(
        "--output-tensor-type", help="Type of output.weight.")] = None,
    token_embedding_type: Annotated[Optional[str], typer.Option(
        "--token-embedding-type", help="Type of token_embd.weight.")] = None,
    leave_output_tensor: Annotated[bool, typer.Option(
        "--leave-output-tensor", help="Keep output.weight as in the checkpoint.")] = False,
    tensor_type: Annotated[Optional[list[str]], typer.Option(
        "--tensor-type", help="PATTERN=TYPE: tensors whose GGUF name matches the regex get TYPE; the first "
        "matching pattern wins, as in llama-quantize. Repeatable.")] = None,
    override_kv: Annotated[Optional[list[str]], typer.Option(
        "--override-kv", help="KEY=TYPE:VALUE metadata to write (TYPE int, float, bool, str). Repeatable.")] = None,
    no_fallback: Annotated[bool, typer.Option(
        "--no-fallback", help="Fail, listing the tensors, instead of falling back to another type when "
        "rows do not fit the chosen type's blocks.")] = False,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Write NaN/Inf weights, and values too large for the output type, instead of "
        "refusing the checkpoint (llama-quantize refuses such rows; llama.cpp cannot run them).")] = False,
    split_max_size: Annotated[Optional[str], typer.Option(
        "--split-max-size", help="Split the output as llama.cpp's gguf-split does, at most this much tensor data a "
        "file (e.g. 50G, 300M; powers of 1000): OUTPUT-00001-of-0000N.gguf...")] = None,
    split_max_tensors: Annotated[Optional[int], typer.Option(
        "--split-max-tensors", min=1, help="Split the output, at most this many tensors a file.")] = None,
    target_size: Annotated[Optional[str], typer.Option(
        "--target-size", help="Instead of -t: choose each tensor's type to lose the least (by the importance "
        "matrix's weighted error) in a file of at most this size (e.g. 4.5G, 800M; powers of 1000).")] = None,
    target_bpw: Annotated[Optional[float], typer.Option(
        "--target-bpw", help="Instead of -t: the same within this many bits per weight (e.g. 4.25).")] = None,
) -> None:
    """Convert MODEL to a GGUF file of the given type."""
    from . import convert as conv
    from .options import parse_kv_override, parse_size, parse_target, parse_tensor_type, parse_type
    from .planner import Overrides
    from .writer import Split

    overrides = Overrides(
        pure=pure,
        output_tensor_type=parse_type(output_tensor_type, "--output-tensor-type") if output_tensor_type else None,
        token_embedding_type=(parse_type(token_embedding_type, "--token-embedding-type")
                              if token_embedding_type else None),
        leave_output_tensor=leave_output_tensor,
        tensor_types=tuple(parse_tensor_type(t) for t in tensor_type or ()),
        no_fallback=no_fallback,
    )
    kv = tuple(parse_kv_override(o) for o in override_kv or ())
    split = None
    if split_max_size is not None or split_max_tensors is not None:
        split = Split(parse_size(split_max_size) if split_max_size is not None else None, split_max_tensors)
    target = parse_target(target_size, target_bpw)
    source = model_source(model, wants_progress(progress, quiet))
    model_dir = source.path
    out = conv.output_path(output, model_dir, target.name if target is not None else qtype)
    if not dry_run and split is None:  # before reading the checkpoint: the cheapest errors first
        conv.check_output(out, overwrite, conv.input_files(model_dir, imatrix))
    job = conv.prepare(model_dir, qtype, overrides, imatrix, kv, allow_nonfinite, split, ref=source.provenance_ref,
                       target=target)
    if dry_run:
        report.emit(report.quantize_report(job, source, conv.predict_files(job, out), None), json_, quiet=quiet)
        return
    with progress_bar(wants_progress(progress, quiet), total=job.source_bytes, unit="B", desc=out.name) as bar:
        result = conv.write(job, out, overwrite=overwrite, threads=threads, on_progress=bar.update if bar else None)
    report.emit(report.quantize_report(job, source, result.files, result.seconds), json_, quiet=quiet)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="GGUF file.", show_default=False)],
    tensors: Annotated[bool, typer.Option("--tensors/--no-tensors", help="List the tensors.")] = True,
    json_: JsonOpt = False,
) -> None:
    """Print a GGUF file's metadata and tensor table."""
    from .gguf_info import inspect_report
    report.emit(inspect_report(path, tensors=tensors), json_)


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(metavar="FILE", help="GGUF file (or any file of a split set).",
                                         show_default=False)],
    model: Annotated[Optional[str], typer.Argument(
        metavar="MODEL", show_default=False, help="Checkpoint to compare every tensor with: a folder, or a Hugging "
        "Face repo id (org/name or org/name@revision).")] = None,
    imatrix: Annotated[Optional[Path], typer.Option(
        "--imatrix", help="The importance matrix the file was made with: its tensors' bytes are then checked "
        "too (without it, those of the types quantized with one are not).")] = None,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = None,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Check a GGUF file's structure and scales; with MODEL, compare every tensor with the checkpoint.
    Exit 1 naming the tensors when any is missing, extra, mis-shaped or beyond its type's error limit."""
    from .verify import verify as run_verify
    source = model_source(model, wants_progress(progress, quiet)) if model is not None else None
    with progress_bar(wants_progress(progress, quiet), unit="weights", desc=path.name) as bar:
        result = run_verify(path, source.path if source else None, model_ref=source.ref if source else None,
                            imatrix=imatrix, threads=threads, on_start=bar.reset if bar is not None else None,
                            on_progress=bar.update if bar is not None else None)
    report.emit(result, json_, quiet=quiet)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def batch(
    manifest: Annotated[Path, typer.Argument(
        help="TOML manifest: output_dir, name, and one job table per model (model, types, quantize's options by "
        "their long names).", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Remake every output, also those whose recorded "
                                        "provenance matches this run, and replace files at the outputs' paths "
                                        "that qconvert did not write.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be made and skipped, with the exact "
                                          "sizes; write nothing.")] = False,
    threads: ThreadsOpt = None,
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="Run each model's pass as a task on the Ray cluster at ADDRESS ('auto': "
        "RAY_ADDRESS or the cluster running here), whose nodes share the models and output_dir at the same paths. "
        "Needs qconvert[ray].", show_default=False)] = None,
    progress: ProgressOpt = None,
    quiet: QuietOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Convert the models of MANIFEST into their types, one pass per model, skipping outputs that are
    up to date. Exit 1 if any output failed."""
    from .batch import load_manifest, run_batch

    plan = load_manifest(manifest)
    if ray is not None:
        from .batch_ray import import_ray, run_batch_ray
        import_ray()  # without Ray, --ray is refused (exit 2, how to install it), also with --dry-run
    if ray is not None and not dry_run:  # a dry run reads headers only: nothing for a cluster to do
        result = run_batch_ray(plan, ray, force=force, threads=threads)
    else:
        bars = progress_bars() if wants_progress(progress, quiet) else None
        result = run_batch(plan, force=force, dry_run=dry_run, threads=threads, on_progress=bars)
    report.emit(result, json_, quiet=quiet)
    if not result.ok:
        if quiet and not json_:  # --quiet keeps the errors
            for o in result.outputs:
                if o.error is not None:
                    typer.echo(f"error: {o.path}: {o.error.message}", err=True)
        raise typer.Exit(1)


def progress_bars():
    """batch's on_progress: a bar on stderr for each model's pass."""
    from tqdm import tqdm
    return lambda label, total: tqdm(total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr)


@contextlib.contextmanager
def progress_bar(show: bool, **options) -> Iterator:
    """A tqdm bar on stderr (unit_scale, `options`) while the block runs, or None when not `show`."""
    if not show:
        yield None
        return
    from tqdm import tqdm
    bar = tqdm(unit_scale=True, file=sys.stderr, **options)
    try:
        yield bar
    finally:
        bar.close()


def model_source(model: str, progress: bool) -> ModelSource:
    """MODEL as every command takes it (quantize, verify, batch), resolved once at the boundary: a
    folder, or a Hub id downloaded or found in the cache (hub.resolve_model). `progress`: the Hub's
    download bars (off with --quiet or when stderr is not a terminal)."""
    from .hub import resolve_model
    return resolve_model(model, progress=progress)


def main() -> None:
    """Console entry point: run the app; every failure becomes one line and an exit code (above),
    and with --json also an error report on stdout."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        code = app(prog_name="qconvert", standalone_mode=False)
    except QConvertError as e:
        fail(str(e), e.exit_code, e)
    except OSError as e:  # ENOSPC while writing, EACCES on the output folder...
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e), 1, e)
    except Interrupted as e:
        fail("interrupted" if e.signum == signal.SIGINT else "terminated", e.exit_code, e)
    except Exception as e:
        if (usage := usage_error(e)) is not None:
            fail(*usage, e)
        raise
    # standalone_mode=False returns typer.Exit's code (--help, --version) instead of exiting
    sys.exit(code if isinstance(code, int) else 0)


def on_signal(signum: int, frame) -> None:
    """SIGINT/SIGTERM: raise Interrupted in the main thread (Python runs handlers there, also
    while it waits on the worker pool). A second signal during the cleanup is ignored, so the
    temporary file is always removed; SIGKILL remains for a cleanup that hangs."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def usage_error(e: Exception) -> tuple[str, int] | None:
    """(one-line message, exit code) for click's exceptions (UsageError, NoSuchOption,
    BadParameter...: anything with exit_code and format_message), else None. Duck-typed: older
    typer raises `click`'s classes, recent typer those of its vendored `typer._click`, and
    `import click` fails in a clean install of the latter."""
    exit_code, format_message = getattr(e, "exit_code", None), getattr(e, "format_message", None)
    if not isinstance(exit_code, int) or not callable(format_message):
        if isinstance(e, typer.Abort):  # click's Abort (an EOF at a prompt): no message of its own
            return "aborted", 1
        return None
    message = " ".join(str(format_message()).split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    command = getattr(ctx, "command_path", None) or "qconvert"
    return f"{message} (see '{command} --help')", exit_code


def fail(message: str, code: int, exc: BaseException | None) -> None:
    """Print the one line on stderr (and, with --json, the error report on stdout) and exit."""
    if os.environ.get("QCONVERT_DEBUG") and exc is not None:
        raise exc
    typer.echo(f"error: {message}", err=True)
    argv = sys.argv[1:]
    if "--json" in argv:  # read from argv: a usage error stops parsing before the command sees --json
        command = next((a for a in argv if not a.startswith("-")), None)
        kind = getattr(exc, "kind", None) or ("os" if isinstance(exc, OSError) else "usage" if code == 2 else "error")
        report.emit(report.ErrorReport(command, report.ErrorDetail(kind, message, code)), True)
    sys.exit(code)

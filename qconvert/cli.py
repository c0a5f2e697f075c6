"""Command line: parse, call one library function, print. Errors become one line and an exit code.

Set QCONVERT_DEBUG=1 to get the traceback instead of the one-line error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import QConvertError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Convert Hugging Face checkpoints to GGUF files for llama.cpp.")

ModelDir = Annotated[Path, typer.Argument(help="Checkpoint folder: config.json, *.safetensors, tokenizer files.",
                                          show_default=False)]
TypeOpt = Annotated[str, typer.Option("--type", "-t", help="Output type: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, "
                                      "Q5_1, Q2_K, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K (llama-quantize's mixes).")]
OutOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="GGUF file to write (default: the model "
                                                "folder's name and the type, e.g. SmolLM2-Q8_0.gguf).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", "-j", min=1,
                                                   help="Quantization threads (default: all cores).")]


@app.command()
def quantize(
    model_dir: ModelDir,
    qtype: TypeOpt = "Q8_0",
    output: OutOpt = None,
    threads: ThreadsOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the per-tensor plan; write nothing.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
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
) -> None:
    """Convert MODEL_DIR to a GGUF file of the given type."""
    from . import convert as conv
    from .options import parse_kv_override, parse_tensor_type, parse_type
    from .planner import Overrides, fallback_summary, summarize

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
    out = output or Path(f"{model_dir.resolve().name}-{qtype.upper()}.gguf")
    if not dry_run:
        conv.check_output(out, overwrite)  # before reading the checkpoint: the cheapest error first
    job = conv.prepare(model_dir, qtype, overrides, imatrix, kv, allow_nonfinite)
    if dry_run:
        print_plan(job.rows)
        return
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=job.source_bytes, unit="B", unit_scale=True, desc=out.name, file=sys.stderr)
    try:
        result = conv.write(job, out, threads=threads, on_progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    _, bpw = summarize(result.rows)
    typer.echo(f"wrote {result.path} ({result.nbytes / 2**20:.1f} MiB, {len(result.rows)} tensors, "
               f"{bpw:.2f} bits per weight) in {result.seconds:.1f} s")
    if (line := fallback_summary(result.rows)) is not None:
        typer.echo(line)


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="GGUF file.", show_default=False)],
    tensors: Annotated[bool, typer.Option("--tensors/--no-tensors", help="List the tensors.")] = True,
) -> None:
    """Print a GGUF file's metadata and tensor table."""
    from .gguf_info import describe
    typer.echo(describe(path, tensors=tensors))


def print_plan(rows) -> None:
    from .planner import fallback_summary, summarize
    width = max(len(r.gguf_name) for r in rows)
    typer.echo(f"{'tensor':<{width}}  {'shape':<16} {'from':<5} {'type':<5} reason")
    for r in rows:
        shape = "x".join(str(d) for d in reversed(r.shape))
        typer.echo(f"{r.gguf_name:<{width}}  {shape:<16} {r.src_dtype:<5} {r.qtype.name:<5} {r.reason}")
    nbytes, bpw = summarize(rows)
    typer.echo(f"{len(rows)} tensors, {nbytes / 2**20:.1f} MiB of tensor data, {bpw:.2f} bits per weight")
    if (line := fallback_summary(rows)) is not None:
        typer.echo(line)


def main() -> None:
    """Console entry point: run the app; QConvertError and I/O errors become one line."""
    try:
        app(standalone_mode=False)
    except QConvertError as e:
        fail(str(e), e.exit_code, e)
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e), 1, e)
    except KeyboardInterrupt:
        fail("interrupted", 130, None)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # click's usage errors and anything else
        import click
        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            fail("aborted", 1, e)
        raise


def fail(message: str, code: int, exc: BaseException | None) -> None:
    if os.environ.get("QCONVERT_DEBUG") and exc is not None:
        raise exc
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)

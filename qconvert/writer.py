"""Streaming GGUF output: header, metadata and tensor infos first, then one tensor at a time.

The file is written beside the target under a temporary name (`.NAME.PID.partial`) and renamed
over the target only when every byte is out and on disk (fsync of the file before the rename, of
the folder after it, as a crash-safe replace needs: see rename(2) and fsync(2)), so an interrupted
or failed run never leaves a file at the target path, and a power cut never leaves an empty or
half-written one under the target's name. The temporaries a killed run (SIGKILL, a crash) could
not remove are removed by the next run for the same target once their process is gone.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import gguf
import numpy as np

from . import quants
from .errors import OutputError
from .planner import PlanRow


def temporary_path(target: Path, pid: int) -> Path:
    """Where process `pid` writes `target` before the rename."""
    return target.with_name(f".{target.name}.{pid}.partial")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`; renamed onto it on success, deleted on any failure
    (including the BaseException the CLI raises on SIGINT/SIGTERM). The caller flushes and
    fsyncs the file before leaving the block; the folder is fsynced after the rename, so the new
    name is on disk too."""
    remove_stale_temporaries(target)
    tmp = temporary_path(target, os.getpid())
    try:
        yield tmp
        os.replace(tmp, target)
        fsync_folder(target.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete the `.NAME.PID.partial` files of `target` whose process is gone (a run killed with
    SIGKILL, or a crash, cannot clean up after itself); those of live processes, which may be
    writing the same target right now, are left alone. Returns what was removed."""
    prefix, suffix = f".{target.name}.", ".partial"
    removed = []
    try:
        names = os.listdir(target.parent)
    except OSError:  # the caller's check_output reports a missing folder; nothing to clean here
        return removed
    for name in names:
        pid = name[len(prefix):-len(suffix)] if name.startswith(prefix) and name.endswith(suffix) else ""
        if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        # best effort: another run may have removed it first, or it is not ours to remove (a folder)
        with contextlib.suppress(OSError):
            (target.parent / name).unlink()
            removed.append(target.parent / name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (signal 0 checks without sending anything, kill(2))."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OverflowError:  # not a PID this system can have
        return False
    return True


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (the entry lives in the folder, not in the file). Best
    effort: some file systems refuse fsync on a folder (EINVAL), and the file is in place by now,
    so a failure here must not report the conversion as failed."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_gguf(
    target: Path,
    arch_name: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    rows: list[PlanRow],
    chunks: Iterable[np.ndarray],
) -> None:
    """Write a GGUF at `target`. `chunks` yields the tensor data as uint8 arrays, in row order,
    each tensor's bytes in one or more consecutive chunks; it is consumed after the header is on
    disk, so the whole output never has to be in memory. A failed write (ENOSPC...) is an
    OutputError naming the target; errors from `chunks` (reading the checkpoint) pass through."""
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(tmp, arch_name)
        try:
            add_metadata(writer)
            for row in rows:
                # A byte shape: the writer turns its last axis back into elements for raw_dtype.
                byte_shape = (*row.shape[:-1], quants.row_nbytes(row.qtype, row.shape[-1]))
                writer.add_tensor_info(row.gguf_name, byte_shape, np.dtype(np.uint8), row.nbytes,
                                       raw_dtype=row.qtype)
            with writing(target):
                writer.write_header_to_file()
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
            write_tensor_data(writer, rows, iter(chunks), target)
            # every byte on disk before atomic_path renames the file into place: after a crash the
            # target holds either the old file or the whole new one (close() alone only flushes
            # Python's buffer to the page cache)
            with writing(target):
                for f in writer.fout or ():
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):  # the first error is the one to report
                writer.close()
            raise
        with writing(target):
            writer.close()


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """An OSError of the output file (ENOSPC, EDQUOT, EFBIG, EIO) as an error naming the target."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from e


def write_tensor_data(writer: gguf.GGUFWriter, rows: list[PlanRow], chunks: Iterator[np.ndarray],
                      target: Path) -> None:
    """Tensor data chunk by chunk, aligned exactly as GGUFWriter.write_tensor_data aligns whole
    tensors (padding before each tensor to the file offset, after it to its own size)."""
    fout = writer.fout[0]
    for row in rows:
        with writing(target):
            writer.write_padding(fout, fout.tell())
        left = row.nbytes
        while left > 0:
            chunk = next(chunks)
            assert chunk.dtype == np.uint8 and chunk.nbytes <= left, (row.gguf_name, chunk.nbytes, left)
            with writing(target):
                fout.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            left -= chunk.nbytes
        with writing(target):
            writer.write_padding(fout, row.nbytes)
    assert next(chunks, None) is None, "more tensor data than tensors"


@dataclass(frozen=True)
class Split:
    """How to cut an output into a set of files, as llama.cpp's gguf-split does: at most
    `max_bytes` of tensor data (each tensor padded to the alignment) or `max_tensors` tensors a
    file. None: no limit of that kind."""

    max_bytes: int | None = None
    max_tensors: int | None = None

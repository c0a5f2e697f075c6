"""Streaming GGUF output: header, metadata and tensor infos first, then tensor data as it comes.

An output is one file, or a set of files cut as llama.cpp's gguf-split cuts them (`Split`):
`NAME-00001-of-00003.gguf`..., the first holding every metadata key, each holding the `split.*`
keys. `layout` serializes each file's header in memory (so sizes are known exactly before
anything is written), `OutputWriter` is pushed the tensor data chunk by chunk, so that one pass
over a checkpoint can feed several outputs.

Each file is written beside its target under a temporary name (`.NAME.PID.partial`) and renamed
over the target only when every byte is out and on disk (fsync of the file before the rename, of
the folder after it, as a crash-safe replace needs: see rename(2) and fsync(2)), so an interrupted
or failed run never leaves a file at the target path, and a power cut never leaves an empty or
half-written one under the target's name. In a set, the first file (the one llama.cpp is given,
and the one holding the provenance record) is renamed last. The temporaries a killed run
(SIGKILL, a crash) could not remove are removed by the next run for the same target once their
process is gone. A Ray task's temporaries also carry its attempt's tag (`.NAME.PID-TAG.partial`,
`tagged_temporaries`), so that the driver can remove exactly those of an attempt lost on any node
(`remove_tagged_temporaries`): a PID means nothing on another machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gguf
import numpy as np
from gguf.gguf_writer import WriterState

from . import quants
from .errors import OutputError
from .gguf_read import SPLIT_COUNT, SPLIT_NAME, SPLIT_NO, SPLIT_TENSORS_COUNT, split_member
from .types import PlanRow


# The tag of the attempt this process writes for (a Ray task's), set by tagged_temporaries
_attempt_tag: str | None = None


@contextlib.contextmanager
def tagged_temporaries(tag: str) -> Iterator[None]:
    """The temporaries written inside carry `tag` in their names (a Ray task's attempt id)."""
    global _attempt_tag
    assert tag.isalnum(), tag  # a name part that cannot be mistaken for a PID or a separator
    previous, _attempt_tag = _attempt_tag, tag
    try:
        yield
    finally:
        _attempt_tag = previous


def temporary_path(target: Path, pid: int, tag: str | None = None) -> Path:
    """Where process `pid` writes `target` before the rename (for the attempt `tag`, if any)."""
    return target.with_name(f".{target.name}.{pid}{'-' + tag if tag else ''}.partial")


def remove_tagged_temporaries(folder: Path, tag: str) -> list[Path]:
    """Delete every temporary of the attempt `tag` in `folder` (its process is known to be gone: the
    driver saw the attempt lost, or cancelled and waited for it). Returns what was removed."""
    removed = []
    with contextlib.suppress(OSError):
        for p in folder.glob(f".*.*-{tag}.partial"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


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


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """An OSError of the output file (ENOSPC, EDQUOT, EFBIG, EIO) as an error naming the target."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror or e}") from e


@dataclass(frozen=True)
class Split:
    """How to cut an output into a set of files, as llama.cpp's gguf-split does: at most
    `max_bytes` of tensor data (each tensor padded to the alignment) or `max_tensors` tensors a
    file. None: no limit of that kind."""

    max_bytes: int | None = None
    max_tensors: int | None = None


ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT


def padded(n: int, alignment: int = ALIGNMENT) -> int:
    """`n` rounded up to a multiple of `alignment` (ggml's GGML_PAD)."""
    return -(-n // alignment) * alignment


def split_rows(rows: list[PlanRow], split: Split | None) -> list[list[PlanRow]]:
    """The tensors of each file, as gguf-split's split_strategy groups them: a new file when this
    tensor's data (padded to the alignment) would take the file's past `max_bytes`, or when the
    file already has `max_tensors`. Metadata does not count (gguf-split's limit is soft). Unlike
    gguf-split, which gives up when the first tensor alone exceeds `max_bytes`, that tensor stays
    in the first file (as every later oversized tensor gets a file of its own)."""
    if split is None or (split.max_bytes is None and split.max_tensors is None):
        return [list(rows)]
    groups: list[list[PlanRow]] = [[]]
    size = 0
    for row in rows:
        n = padded(row.nbytes)
        full = ((split.max_bytes is not None and size + n > split.max_bytes)
                or (split.max_tensors is not None and len(groups[-1]) >= split.max_tensors))
        if full and groups[-1]:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += n
    return groups


def member_path(target: Path, index: int, count: int) -> Path:
    """File `index` (from 0) of a set of `count` written for `target`, named as llama.cpp's
    llama_split_path names them ("%s-%05d-of-%05d.gguf", the prefix being the target without
    its .gguf suffix).

    >>> member_path(Path("out/m.gguf"), 0, 3).as_posix()
    'out/m-00001-of-00003.gguf'
    """
    stem = target.name[:-len(".gguf")] if target.name.lower().endswith(".gguf") else target.name
    return split_member(target.with_name(stem), index, count)


@dataclass(frozen=True)
class OutputFile:
    """One written (or predicted) file: where, how many bytes, and their SHA-256 (None before
    the file exists)."""

    path: Path
    nbytes: int
    sha256: str | None = None


@dataclass(frozen=True)
class FileLayout:
    """One file of an output: its path, its tensors, and its header (magic to tensor infos,
    padded to the alignment) already serialized."""

    path: Path
    rows: tuple[PlanRow, ...]
    header: bytes

    @property
    def nbytes(self) -> int:
        """The file's exact size: the header, then each tensor's data padded to the alignment."""
        return len(self.header) + sum(padded(r.nbytes) for r in self.rows)


def layout(target: Path, arch_name: str, add_metadata: Callable[[gguf.GGUFWriter], None], rows: list[PlanRow],
           split: Split | None = None) -> list[FileLayout]:
    """The files of an output at `target`: one, or a set (split.* keys as gguf-split writes them:
    every key in the first file followed by split.no u16, split.count u16, split.tensors.count i32;
    the other files those three only). A set of one file is the plain file, without split keys."""
    groups = split_rows(rows, split)
    if len(groups) == 1:
        return [FileLayout(target, tuple(rows), serialize_header(arch_name, add_metadata, rows))]
    files = []
    for i, group in enumerate(groups):
        def add(writer: gguf.GGUFWriter, i: int = i) -> None:
            if i == 0:
                add_metadata(writer)
            else:  # gguf-split's later files hold the split keys alone, not even the architecture
                writer.kv_data[0].clear()
            writer.add_uint16(SPLIT_NO, i)
            writer.add_uint16(SPLIT_COUNT, len(groups))
            writer.add_int32(SPLIT_TENSORS_COUNT, len(rows))
        files.append(FileLayout(member_path(target, i, len(groups)), tuple(group),
                                serialize_header(arch_name, add, group)))
    return files


def serialize_header(arch_name: str, add_metadata: Callable[[gguf.GGUFWriter], None], rows: list[PlanRow]) -> bytes:
    """What gguf's GGUFWriter writes before the tensor data, built in memory, padded to the
    alignment as the data section starts."""
    writer = gguf.GGUFWriter(None, arch_name)
    add_metadata(writer)
    for row in rows:
        # A byte shape: the writer turns its last axis back into elements for raw_dtype.
        byte_shape = (*row.shape[:-1], quants.row_nbytes(row.qtype, row.shape[-1]))
        writer.add_tensor_info(row.gguf_name, byte_shape, np.dtype(np.uint8), row.nbytes, raw_dtype=row.qtype)
    buf = io.BytesIO()
    writer.fout, writer.state = [buf], WriterState.EMPTY  # a file already open: the writer writes to it
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    data = buf.getvalue()
    assert writer.data_alignment == ALIGNMENT, writer.data_alignment
    return data + bytes(padded(len(data)) - len(data))


class OutputWriter:
    """Push-style output of the files `layout` planned: `open()` creates the temporaries and
    writes the headers, `write(chunk)` appends tensor data (uint8, in row order, a tensor's bytes
    in one or more consecutive chunks, never across two tensors), `finish()` syncs and renames
    everything into place and returns what was written, `abort()` removes the temporaries. A
    failed write (ENOSPC...) is an OutputError naming the file; the writer is then aborted."""

    def __init__(self, files: list[FileLayout]):
        self.files = files
        self._out: list = []  # open temporaries, one per file
        self._hashes = [hashlib.sha256() for _ in files]
        self._file = 0  # the file being filled, its tensor, and the bytes that tensor still needs
        self._row = 0
        self._left = files[0].rows[0].nbytes if files[0].rows else 0
        self._pid = os.getpid()
        self._tag = _attempt_tag

    def temporaries(self) -> list[Path]:
        return [temporary_path(f.path, self._pid, self._tag) for f in self.files]

    def open(self) -> None:
        try:
            for f, tmp in zip(self.files, self.temporaries()):
                remove_stale_temporaries(f.path)
                with writing(f.path):
                    self._out.append(open(tmp, "wb"))
                self._put(len(self._out) - 1, f.header)
            self._skip_empty()
        except BaseException:
            self.abort()
            raise

    def _put(self, i: int, data) -> None:
        with writing(self.files[i].path):
            self._out[i].write(data)
        self._hashes[i].update(data)

    def _skip_empty(self) -> None:
        """Move past finished tensors (padding each) and files, to where the next byte goes."""
        while self._file < len(self.files) and self._left == 0:
            rows = self.files[self._file].rows
            if self._row < len(rows):
                n = rows[self._row].nbytes
                self._put(self._file, bytes(padded(n) - n))
                self._row += 1
            if self._row < len(rows):
                self._left = rows[self._row].nbytes
            else:
                self._file, self._row = self._file + 1, 0
                self._left = self.files[self._file].rows[0].nbytes if self._file < len(self.files) else 0

    def write(self, chunk: np.ndarray) -> None:
        assert chunk.dtype == np.uint8 and 0 < chunk.nbytes <= self._left, (chunk.nbytes, self._left)
        try:
            self._put(self._file, memoryview(np.ascontiguousarray(chunk)).cast("B"))
            self._left -= chunk.nbytes
            self._skip_empty()
        except BaseException:
            self.abort()
            raise

    def finish(self) -> list[OutputFile]:
        """Every byte on disk before the renames: after a crash each target holds either its old
        file or the whole new one (close() alone only flushes Python's buffer to the page cache).
        The first file, which llama.cpp opens and which names the others, is renamed last."""
        assert self._file == len(self.files), "tensor data missing"
        try:
            for f, out in zip(self.files, self._out):
                with writing(f.path):
                    out.flush()
                    os.fsync(out.fileno())
                    out.close()
            temporaries = self.temporaries()
            for i in [*range(1, len(self.files)), 0]:
                with writing(self.files[i].path):
                    os.replace(temporaries[i], self.files[i].path)
        except BaseException:
            self.abort()
            raise
        for folder in dict.fromkeys(f.path.parent for f in self.files):
            fsync_folder(folder)
        return [OutputFile(f.path, f.nbytes, h.hexdigest()) for f, h in zip(self.files, self._hashes)]

    def abort(self) -> None:
        """Close and delete the temporaries (those already renamed into place stay)."""
        for out in self._out:
            with contextlib.suppress(OSError):  # the first error is the one to report
                out.close()
        for tmp in self.temporaries():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def other_forms(target: Path, files: list[Path]) -> list[Path]:
    """Files beside `target` that an earlier run wrote for it in another form than `files`: the
    plain file, or the members of a set of another count. Replacing an output replaces these
    too, so that a target name always stands for one output (`gguf_read.find_first_member`)."""
    stem = target.name[:-len(".gguf")] if target.name.lower().endswith(".gguf") else target.name
    keep = {f.name for f in files}
    try:
        names = os.listdir(target.parent)
    except OSError:  # check_output reports a missing folder
        return []
    found = [n for n in names if n not in keep
             and (n == target.name or ((m := SPLIT_NAME.fullmatch(n)) is not None and m["prefix"] == stem))]
    return sorted(target.parent / n for n in found)

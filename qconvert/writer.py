"""Streaming GGUF output: header, metadata and tensor infos first, then one tensor at a time.

The file is written beside the target under a temporary name and renamed over the target only
when every byte is out, so an interrupted or failed run never leaves a file at the target path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import gguf
import numpy as np

from . import quants
from .planner import PlanRow


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`; renamed onto it on success, deleted on any failure."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_gguf(
    target: Path,
    arch_name: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    rows: list[PlanRow],
    chunks: Iterable[np.ndarray],
) -> None:
    """Write a GGUF at `target`. `chunks` yields the tensor data as uint8 arrays, in row order,
    each tensor's bytes in one or more consecutive chunks; it is consumed after the header is on
    disk, so the whole output never has to be in memory."""
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(tmp, arch_name)
        try:
            add_metadata(writer)
            for row in rows:
                # A byte shape: the writer turns its last axis back into elements for raw_dtype.
                byte_shape = (*row.shape[:-1], quants.row_nbytes(row.qtype, row.shape[-1]))
                writer.add_tensor_info(row.gguf_name, byte_shape, np.dtype(np.uint8), row.nbytes,
                                       raw_dtype=row.qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            write_tensor_data(writer, rows, iter(chunks))
        finally:
            writer.close()


def write_tensor_data(writer: gguf.GGUFWriter, rows: list[PlanRow], chunks: Iterator[np.ndarray]) -> None:
    """Tensor data chunk by chunk, aligned exactly as GGUFWriter.write_tensor_data aligns whole
    tensors (padding before each tensor to the file offset, after it to its own size)."""
    fout = writer.fout[0]
    for row in rows:
        writer.write_padding(fout, fout.tell())
        left = row.nbytes
        while left > 0:
            chunk = next(chunks)
            assert chunk.dtype == np.uint8 and chunk.nbytes <= left, (row.gguf_name, chunk.nbytes, left)
            fout.write(memoryview(np.ascontiguousarray(chunk)).cast("B"))
            left -= chunk.nbytes
        writer.write_padding(fout, row.nbytes)
    assert next(chunks, None) is None, "more tensor data than tensors"

"""Streaming GGUF output: header, metadata and tensor infos first, then one tensor at a time.

The file is written beside the target under a temporary name and renamed over the target only
when every byte is out, so an interrupted or failed run never leaves a file at the target path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

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
    produce: Callable[[PlanRow], np.ndarray],
) -> None:
    """Write a GGUF at `target`. `produce(row)` returns the row's tensor bytes (uint8, exactly
    row.nbytes); it is called once per row, in order, after the header is on disk."""
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
            for row in rows:
                data = produce(row)
                assert data.dtype == np.uint8 and data.nbytes == row.nbytes, (row.gguf_name, data.nbytes)
                writer.write_tensor_data(data)
        finally:
            writer.close()


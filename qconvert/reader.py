"""Read a Hugging Face checkpoint directory without torch: config, safetensors headers, tensors.

Every shard is validated when the checkpoint is opened (header parses, every tensor's bytes lie
inside the file, dtypes are floats we decode or integer buffers an adapter skips), so a bad
checkpoint fails before any output exists.
Tensor data is read on demand with positional reads (`read_rows`: just the rows asked for, into
memory the caller owns) rather than through a memory map, whose touched pages would stay
resident and make the process's memory grow with the model's size.

The safetensors format: 8 bytes little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data,
offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import CheckpointError, QConvertError, UnsupportedError

# safetensors dtype -> (numpy storage dtype, bytes per element). BF16 is stored as uint16 and
# widened by a shift: a bfloat16 is the top half of a float32.
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
}
# Integer tensors a checkpoint may hold besides its weights (BERT's `embeddings.position_ids`
# buffer): accepted in a header so an adapter can skip them, never decoded (arch/base.py refuses
# one that is not skipped).
OTHER_DTYPES: dict[str, np.dtype] = {
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its shard, absolute byte offset, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    offset: int
    nbytes: int

    @property
    def n_rows(self) -> int:
        """Rows of the tensor seen as 2-D [prod(shape[:-1]), shape[-1]]."""
        return int(np.prod(self.shape[:-1], dtype=np.int64)) if len(self.shape) > 1 else 1


def decode_to_f32(raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Widen stored values to float32 (exact for F16 and BF16), into `out` (a float32 array of at
    least raw.size elements, reused by the caller) when given, else into a new array.

    >>> decode_to_f32(np.array([0x3F80, 0xC000], dtype="<u2"), "BF16").tolist()
    [1.0, -2.0]
    """
    dst = np.empty(raw.shape, np.float32) if out is None else out[:raw.size].reshape(raw.shape)
    if dtype == "BF16":
        np.left_shift(raw, 16, out=dst.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(dst, raw, casting="safe")
    return dst


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse one shard's header; return (header dict, absolute offset where data begins)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path.name}: file is {size} bytes, too short for a safetensors header")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{path.name}: corrupt safetensors header (declares {n} header bytes, file has {size})")
            text = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"missing shard {path.name} in {path.parent}") from None
    try:
        header = json.loads(text)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path.name}: corrupt safetensors header ({e})") from None
    return header, 8 + n


class Checkpoint:
    """A checkpoint directory: `config` (dict) and `tensors` (name -> TensorInfo), read lazily.

    Reads are thread-safe (os.pread on one descriptor per shard)."""

    def __init__(self, path: Path, config: dict, tensors: dict[str, TensorInfo]):
        self.path = path
        self.config = config
        self.tensors = tensors
        self._fds: dict[Path, int] = {}

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory (expected a Hugging Face checkpoint folder)")
        config = load_config(path)
        tensors: dict[str, TensorInfo] = {}
        for shard in shard_files(path):
            tensors.update(scan_shard(shard))
        if not tensors:
            raise CheckpointError(f"{path}: the safetensors files hold no tensors")
        return cls(path, config, tensors)

    def _pread(self, file: Path, offset: int, nbytes: int,
               scratch: Callable[[int], bytearray] | None = None) -> memoryview:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds.setdefault(file, os.open(file, os.O_RDONLY))
        buf = scratch(nbytes) if scratch is not None else bytearray(nbytes)
        view, done = memoryview(buf)[:nbytes], 0
        while done < nbytes:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise CheckpointError(f"{file.name} ended early (was it truncated while converting?)")
            done += n
        return view

    def read_rows(self, name: str, rows: slice | np.ndarray | None = None,
                  scratch: Callable[[int], bytearray] | None = None) -> np.ndarray:
        """Stored values of some rows of the tensor seen as 2-D [rows, last axis] (all rows if
        `rows` is None; a 1-D tensor is one row). For an index array, one read covers the span
        from its smallest to its largest row, and the rows are picked from it in order.
        `scratch(nbytes)`, if given, supplies the bytearray (at least nbytes) the bytes are read
        into, so a caller can reuse one; the result may then be a view of it."""
        t = self.tensors[name]
        dtype = DTYPES[t.dtype]
        cols = t.shape[-1] if t.shape else 1
        row_bytes = cols * dtype.itemsize
        if rows is None:
            rows = slice(0, t.n_rows)
        if isinstance(rows, slice):
            lo, hi, _ = rows.indices(t.n_rows)
            pick = None
        else:
            lo, hi = int(rows.min()), int(rows.max()) + 1
            pick = rows - lo
        raw = np.frombuffer(self._pread(t.file, t.offset + lo * row_bytes, (hi - lo) * row_bytes, scratch), dtype=dtype)
        raw = raw.reshape(hi - lo, cols)
        return raw if pick is None else raw[pick]

    def raw(self, name: str) -> np.ndarray:
        """The stored values of a whole tensor, in its own shape."""
        return self.read_rows(name).reshape(self.tensors[name].shape)

    def load(self, name: str) -> np.ndarray:
        """One tensor decoded to a new float32 array of its own shape."""
        return decode_to_f32(self.raw(name), self.tensors[name].dtype)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def read_json(path: Path, expect: type | tuple[type, ...] = dict, *, missing_ok: bool = False,
              error: type[QConvertError] = CheckpointError) -> Any:
    """A JSON file of the checkpoint, parsed, or one line saying what is wrong with it: `error`
    for a missing file (None instead with `missing_ok`), one that does not parse, or a top-level
    value that is not an `expect` (a JSON object by default).

    >>> read_json(Path("no-such-file.json"), missing_ok=True) is None
    True
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{path} is missing") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        wanted = " or ".join(_JSON_KINDS.get(t, t.__name__) for t in kinds)
        raise error(f"{path}: expected {wanted}, found {_JSON_KINDS.get(type(value), type(value).__name__)}")
    return value


_JSON_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def load_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face checkpoint folder?)")
    return read_json(cfg)


def shard_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint: from the index if there is one, else the files."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index.name}: not a valid safetensors index ({e})") from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CheckpointError(
                f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"(listed in {index.name}) in {path}")
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(path.glob("*.safetensors"))
    if found:
        return found
    hint = ""
    if any(path.glob("*.bin")) or any(path.glob("*.pth")):
        hint = "; PyTorch .bin/.pth weights are not supported, save the model with safe_serialization=True"
    raise CheckpointError(f"{path}: no safetensors weights (model.safetensors or an index){hint}")


def scan_shard(file: Path) -> dict[str, TensorInfo]:
    header, data_start = read_safetensors_header(file)
    size = file.stat().st_size
    out: dict[str, TensorInfo] = {}
    # Sorted by name, as safetensors' own readers list them: llama.cpp's converter writes tensors
    # in this order, and so do we.
    for name, meta in sorted(header.items()):
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file.name}: corrupt safetensors header entry for {name!r}") from None
        if dtype not in DTYPES and dtype not in OTHER_DTYPES:
            raise UnsupportedError(
                f"{file.name}: tensor {name} has dtype {dtype}; supported dtypes are "
                f"{', '.join(DTYPES)}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * (DTYPES.get(dtype) or OTHER_DTYPES[dtype]).itemsize
        if end - begin != nbytes or begin < 0:
            raise CheckpointError(
                f"{file.name}: corrupt safetensors header: {name} {dtype}{list(shape)} needs {nbytes} "
                f"bytes, offsets give {end - begin}")
        if data_start + end > size:
            raise CheckpointError(
                f"{file.name} is truncated: tensor {name} ends at byte {data_start + end}, "
                f"the file has {size}")
        out[name] = TensorInfo(name, dtype, shape, file, data_start + begin, nbytes)
    return out

"""Read a Hugging Face checkpoint directory without torch: config, safetensors headers, tensors.

Every shard and the index are validated when the checkpoint is opened, as strictly as the
safetensors library does (the rules live in validate/safetensors.py), and only regular files are
read (`open_regular`), so a bad checkpoint fails before any output exists; dtypes must then be
floats we decode or integer buffers an adapter skips.

Pre-quantized FP8 checkpoints (validate/quantization.py) are read as any other: each float8
weight's block scales are taken out of `tensors` and attached to the weight's TensorInfo, so
adapters see one tensor of dtype F8_E4M3 / F8_E5M2, and `decode_rows` gives its real values,
the float8 values times their block's scale, a chunk of rows at a time.
Tensor data is read on demand with positional reads (`read_rows`: just the rows asked for, into
memory the caller owns) rather than through a memory map, whose touched pages would stay
resident and make the process's memory grow with the model's size.

The safetensors format: 8 bytes little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the data,
offsets relative to the end of the header.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import CheckpointError, QConvertError, UnsupportedError
from .types import BlockScales, TensorInfo
from .validate.quantization import MODELOPT_FILE, check_quantization, pair_block_scales
from .validate.safetensors import (INDEX_NAME, HeaderEntry, check_shards, header_length, index_weight_map, show,
                                   strict_json, validate_header)

# safetensors dtype -> (numpy storage dtype, bytes per element). BF16 is stored as uint16 and
# widened by a shift: a bfloat16 is the top half of a float32. The float8 types are bytes,
# widened through a table of their 256 values (F8_TABLES) and scaled by their blocks (decode_rows).
DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}


def f8_value(code: int, dtype: str) -> float:
    """The value of one float8 byte, exactly (every one is a float32).

    F8_E4M3 is the "fn" variant (torch.float8_e4m3fn, OCP FP8 E4M3): sign, 4 exponent bits of bias
    7, 3 mantissa bits, no infinities; exponent and mantissa all ones (0x7F, 0xFF) is NaN, so the
    largest value is 448. F8_E5M2 is IEEE-like (torch.float8_e5m2): sign, 5 exponent bits of bias
    15, 2 mantissa bits, exponent all ones is Inf (mantissa 0) or NaN. Exponent 0 is subnormal.

    >>> [f8_value(c, "F8_E4M3") for c in (0x38, 0x7E, 0x01, 0xB8)]
    [1.0, 448.0, 0.001953125, -1.0]
    >>> [f8_value(c, "F8_E5M2") for c in (0x3C, 0x7B, 0x7C, 0x01)]
    [1.0, 57344.0, inf, 1.52587890625e-05]
    """
    e_bits, m_bits = (4, 3) if dtype == "F8_E4M3" else (5, 2)
    bias = (1 << (e_bits - 1)) - 1
    sign = -1.0 if code & 0x80 else 1.0
    e, m = (code >> m_bits) & ((1 << e_bits) - 1), code & ((1 << m_bits) - 1)
    top = (1 << e_bits) - 1
    if dtype == "F8_E4M3" and e == top and m == (1 << m_bits) - 1:
        return math.nan
    if dtype == "F8_E5M2" and e == top:
        return sign * math.inf if m == 0 else math.nan
    if e == 0:
        return sign * math.ldexp(m, 1 - bias - m_bits)
    return sign * math.ldexp((1 << m_bits) + m, e - bias - m_bits)


F8_TABLES: dict[str, np.ndarray] = {
    dtype: np.array([f8_value(code, dtype) for code in range(256)], dtype=np.float32)
    for dtype in ("F8_E4M3", "F8_E5M2")}
# Integer tensors a checkpoint may hold besides its weights (BERT's `embeddings.position_ids`
# buffer): accepted in a header so an adapter can skip them, never decoded (arch/base.py refuses
# one that is not skipped).
OTHER_DTYPES: dict[str, np.dtype] = {
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}


def decode_to_f32(raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Widen stored values to float32 (exact for F16 and BF16), into `out` (a float32 array of at
    least raw.size elements, reused by the caller) when given, else into a new array.

    >>> decode_to_f32(np.array([0x3F80, 0xC000], dtype="<u2"), "BF16").tolist()
    [1.0, -2.0]
    """
    dst = np.empty(raw.shape, np.float32) if out is None else out[:raw.size].reshape(raw.shape)
    if dtype == "BF16":
        np.left_shift(raw, 16, out=dst.view(np.uint32), dtype=np.uint32)
    elif dtype in F8_TABLES:  # unscaled: Checkpoint.decode_rows applies the block scales
        np.take(F8_TABLES[dtype], raw, out=dst, mode="clip")  # a byte indexes all 256: "clip" never clips
    else:
        np.copyto(dst, raw, casting="safe")
    return dst


def open_regular(path: Path) -> int:
    """A read-only descriptor on `path`, which must be a regular file once symlinks are followed
    (a Hugging Face cache snapshot links each file to ../../blobs/HASH; that is fine).

    A FIFO, device, socket or directory under a checkpoint's file name is refused without being
    read: reading a FIFO blocks until someone writes, a device may never end. The name is stat'ed
    first so that such a file is not even opened (opening some devices has effects); the open
    itself uses O_NONBLOCK, so that a FIFO swapped in after the stat cannot block it, and the
    descriptor is fstat'ed, so that what is read is what was checked. (O_NONBLOCK changes nothing
    for the regular file it then is.)"""
    _check_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _check_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message: "a directory", "a FIFO ..."."""
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _check_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{show(str(path))} is {file_kind(mode)}; expected a regular file")


def read_regular(path: Path) -> bytes:
    """The whole content of a regular file (see open_regular), at most the size fstat gave: a file
    that grows while read cannot make this allocate more."""
    fd = open_regular(path)
    try:
        return _pread_exact(fd, path, 0, os.fstat(fd).st_size, ended_early_ok=True)
    finally:
        os.close(fd)


def _pread_exact(fd: int, path: Path, offset: int, nbytes: int, ended_early_ok: bool = False) -> bytes:
    chunks, done = [], 0
    while done < nbytes:
        chunk = os.pread(fd, nbytes - done, offset + done)
        if not chunk:
            if ended_early_ok:
                break
            raise CheckpointError(f"{show(path.name)} ended early (was it truncated while converting?)")
        chunks.append(chunk)
        done += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one read is the rule: no copy


def read_safetensors_header(fd: int, file: Path) -> tuple[list[HeaderEntry], int]:
    """Read and validate one shard's header from its descriptor; return its tensors (sorted by
    name) and the absolute offset where the data begins. All rules in validate/safetensors.py."""
    size = os.fstat(fd).st_size
    n = header_length(show(file.name), _pread_exact(fd, file, 0, min(8, size)), size)
    entries, _ = validate_header(show(file.name), _pread_exact(fd, file, 8, n), size)
    return entries, 8 + n


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
        """Open a checkpoint folder, validating config.json's form, every shard's header and the
        index (validate/safetensors.py) before anything else reads them. Each shard stays open on
        the descriptor its header was validated through, so the data read later is that file's."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory (expected a Hugging Face checkpoint folder)")
        config = load_config(path)
        # a quantization qconvert does not read is refused before any shard is opened
        blocks = check_quantization(config, os.path.lexists(path / MODELOPT_FILE))
        files, weight_map = shard_files(path)
        fds: dict[Path, int] = {}
        try:
            found: dict[Path, list[HeaderEntry]] = {}
            starts: dict[Path, int] = {}
            missing = []
            for file in files:
                try:
                    fds[file] = open_regular(file)
                except FileNotFoundError:
                    missing.append(file.name)
                    continue
                found[file], starts[file] = read_safetensors_header(fds[file], file)
            if missing:
                listed = f" (listed in {INDEX_NAME})" if weight_map is not None else ""
                raise CheckpointError(f"missing shard{'s' if len(missing) > 1 else ''} "
                                      f"{', '.join(map(show, missing))}{listed} in {path}")
            check_shards({f.name: (e.name for e in entries) for f, entries in found.items()}, weight_map)
            tensors: dict[str, TensorInfo] = {}
            for file, entries in found.items():
                for e in entries:
                    if e.dtype not in DTYPES and e.dtype not in OTHER_DTYPES:
                        raise UnsupportedError(
                            f"{show(file.name)}: tensor {show(e.name)} has dtype {e.dtype}; supported dtypes are "
                            f"{', '.join(DTYPES)}")
                    tensors[e.name] = TensorInfo(e.name, e.dtype, e.shape, file, starts[file] + e.begin,
                                                 e.end - e.begin)
            if not tensors:
                raise CheckpointError(f"{path}: the safetensors files hold no tensors")
            tensors = attach_block_scales(tensors, blocks)
        except BaseException:
            for fd in fds.values():
                os.close(fd)
            raise
        ckpt = cls(path, config, tensors)
        ckpt._fds = fds
        return ckpt

    def _pread(self, file: Path, offset: int, nbytes: int,
               scratch: Callable[[int], bytearray] | None = None) -> memoryview:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds.setdefault(file, open_regular(file))
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
        return self._read_rows(self.tensors[name], rows, scratch)

    def _read_rows(self, t: TensorInfo, rows: slice | np.ndarray | None = None,
                   scratch: Callable[[int], bytearray] | None = None) -> np.ndarray:
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
        """One tensor decoded to a new float32 array of its own shape (a float8 one scaled)."""
        return self.decode_rows(name, self.read_rows(name)).reshape(self.tensors[name].shape)

    def decode_rows(self, name: str, raw: np.ndarray, rows: slice | np.ndarray | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
        """The float32 values of rows of a tensor from their stored values (`raw`, what
        `read_rows(name, rows)` returned), into `out` as decode_to_f32 does. A float8 weight's
        rows are multiplied by the scales of their blocks: the scale rows these rows lie in are
        read (a few hundred bytes), never the whole tensor.

        The arithmetic is llama.cpp's converter's (ModelBase.dequant_model, "fp8": weight.float()
        * scale.float() repeated over its block): each float8 value, exact in float32, times its
        block's scale, exact in float32, one float32 product, rounded once."""
        t = self.tensors[name]
        x = decode_to_f32(raw, t.dtype, out)
        if t.scale is None:
            return x
        assert t.blocks is not None and x.ndim == 2, (name, x.shape)
        if rows is None:
            rows = slice(0, t.n_rows)
        index = np.arange(*rows.indices(t.n_rows)) if isinstance(rows, slice) else np.asarray(rows)
        if index.size == 0:
            return x
        block_row = index // t.blocks.rows
        first = int(block_row.min())
        grid = decode_to_f32(self._read_rows(t.scale, slice(first, int(block_row.max()) + 1)), t.scale.dtype)
        per_row = grid[block_row - first]  # [rows, column blocks]: each row's scales
        n, cols = x.shape
        whole, edge = divmod(cols, t.blocks.cols)
        if whole:  # the full column blocks, as a [rows, blocks, block] view of x
            view = np.lib.stride_tricks.as_strided(
                x, (n, whole, t.blocks.cols), (x.strides[0], t.blocks.cols * x.strides[1], x.strides[1]),
                writeable=True)
            np.multiply(view, per_row[:, :whole, None], out=view)
        if edge:  # the last block, cut at the tensor's right edge
            np.multiply(x[:, whole * t.blocks.cols:], per_row[:, whole:whole + 1], out=x[:, whole * t.blocks.cols:])
        return x

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:  # a conversion that fails after opening must not leak descriptors
        self.close()


def attach_block_scales(tensors: dict[str, TensorInfo], blocks: BlockScales | None) -> dict[str, TensorInfo]:
    """The checkpoint's tensors as adapters see them: each float8 weight with its block scales
    attached, the scale tensors no longer listed (validate/quantization.py checks the pairs)."""
    pairs = pair_block_scales({n: (t.dtype, t.shape) for n, t in tensors.items()}, blocks)
    if not pairs:
        return tensors
    scales = set(pairs.values())
    return {name: replace(t, scale=tensors[pairs[name]], blocks=blocks) if name in pairs else t
            for name, t in tensors.items() if name not in scales}


def read_json(path: Path, expect: type | tuple[type, ...] = dict, *, missing_ok: bool = False,
              error: type[QConvertError] = CheckpointError) -> Any:
    """A JSON file of the checkpoint, parsed, or one line saying what is wrong with it: `error`
    for a missing file (None instead with `missing_ok`), one that does not parse, or a top-level
    value that is not an `expect` (a JSON object by default).

    >>> read_json(Path("no-such-file.json"), missing_ok=True) is None
    True
    """
    try:
        value = json.loads(read_regular(path).decode("utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(f"{path} is missing") from None
    except CheckpointError as e:  # not a regular file: said in the caller's class
        raise error(str(e)) from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        wanted = " or ".join(_JSON_KINDS.get(t, t.__name__) for t in kinds)
        raise error(f"{path}: expected {wanted}, found {_JSON_KINDS.get(type(value), type(value).__name__)}")
    return value


_JSON_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "a number", float: "a number",
               bool: "a boolean", type(None): "null"}


def load_config(path: Path) -> dict:
    config = read_json(path / "config.json", missing_ok=True)
    if config is None:
        raise CheckpointError(f"{path}: no config.json (is this a Hugging Face checkpoint folder?)")
    return config


def shard_files(path: Path) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a checkpoint and its index's weight_map: the files the index
    names if there is one (validated, see validate/safetensors.py), else model.safetensors, else
    every *.safetensors file. A name that exists as something other than a regular file (a FIFO,
    a directory) is taken at its word, and refused when opened, rather than skipped."""
    index = path / INDEX_NAME
    if os.path.lexists(index):
        try:
            weight_map = index_weight_map(strict_json(read_regular(index), INDEX_NAME), INDEX_NAME)
        except FileNotFoundError:  # a dangling symlink
            raise CheckpointError(f"{index} is missing (a symlink to nowhere)") from None
        except OSError as e:
            raise CheckpointError(f"{index} cannot be read ({e.strerror})") from None
        return [path / n for n in sorted(set(weight_map.values()))], weight_map
    single = path / "model.safetensors"
    if os.path.lexists(single):
        return [single], None
    found = sorted(path.glob("*.safetensors"))
    if found:
        return found, None
    hint = ""
    if any(path.glob("*.bin")) or any(path.glob("*.pth")):
        hint = "; PyTorch .bin/.pth weights are not supported, save the model with safe_serialization=True"
    raise CheckpointError(f"{path}: no safetensors weights (model.safetensors or an index){hint}")

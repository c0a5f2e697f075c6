"""Strict GGUF reading: the file's structure checked against the rules llama.cpp loads it by.

`read_gguf(path)` walks the header, the metadata and the tensor infos of a GGUF file and returns
them as data (`GGUFFile`), or raises `GGUFError` naming the file, what is wrong and where (byte
offset, key or tensor). It never builds anything from an unchecked count or length: every count
is bounded by the bytes that remain before anything is allocated or looped over, so a damaged
file costs at most time and memory proportional to its own size (nothing is sized from a count;
string values are decoded, and CPython's decoder may briefly take up to four times a string's
bytes), and a FIFO or device path is refused before it is read (opening one for reading could
block forever).

The rules are those of ggml's `gguf_init_from_file_impl` (ggml/src/gguf.cpp) and of
llama.cpp's model loader, which is what decides whether a file loads:

- magic `GGUF`, version 2 or 3 (v1 is refused by ggml; a larger value is a newer format or a
  big-endian file);
- keys non-empty and unique, value types known, no arrays of arrays, strings and arrays within
  the file; `general.alignment`, if present, a UINT32 power of two (default 32);
- tensor names shorter than GGML_MAX_NAME (64) and unique, 1 to GGML_MAX_DIMS (4) dimensions,
  each positive, a known ggml type, rows a whole number of that type's blocks;
- tensor data laid out in order, each tensor at the running offset padded to the alignment (ggml
  refuses any other offset, so gaps, overlaps and misaligned offsets are all refused), and inside
  the file (llama_model_loader: "tensor data is not within the file bounds").

Array values are not kept whole: a field records its element type, count and offset and the first
few elements (what `inspect` shows), so the memory used stays small whatever the file holds.
"""

from __future__ import annotations

import bisect
import mmap
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
from gguf import GGMLQuantizationType, GGUFValueType

from .errors import GGUFError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # ggml's gguf.cpp: v1 "is no longer supported", above GGUF_VERSION (3) unknown
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
MAX_NAME = 64  # GGML_MAX_NAME: a tensor name is stored with its NUL, so at most 63 bytes
MAX_DIMS = 4  # GGML_MAX_DIMS
INT64_MAX = 2**63 - 1  # ggml keeps dimensions and sizes as int64_t
HEADER_BYTES = 4 + 4 + 8 + 8  # magic, version, tensor count, metadata key count
# The least bytes one entry can take, to bound counts by the bytes that remain: a key (8-byte
# length, at least 1 byte) + a 4-byte type + a 1-byte value; a tensor info with a 1-byte name,
# 4-byte n_dims, one 8-byte dimension, a 4-byte type and an 8-byte offset.
MIN_KV_BYTES = 8 + 1 + 4 + 1
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8
HEAD_ITEMS = 8  # array elements kept for display
MAX_STRING_BYTES = 2**30  # GGUF_MAX_STRING_LENGTH: ggml refuses longer strings
MAX_ARRAY_ITEMS = 2**30  # GGUF_MAX_ARRAY_ELEMENTS: and longer arrays

# struct formats of the fixed-size value types (little-endian, as every GGUF llama.cpp loads here).
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.FLOAT64: "<d",
    GGUFValueType.BOOL: "<B",  # ggml reads an int8 and takes any non-zero byte as true
}
STRING_LENGTH_BYTES = 8


@dataclass(frozen=True)
class GGUFArray:
    """An array value: its element type and count, where its elements start, and the first few."""

    item_type: GGUFValueType
    count: int
    offset: int
    head: tuple


@dataclass(frozen=True)
class GGUFField:
    """One metadata entry: its key, value type, value (a GGUFArray for arrays) and byte offset."""

    key: str
    type: GGUFValueType
    value: Any
    offset: int


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor: shape as stored (ggml's ne, innermost first), type, data offset relative to
    the data section, size in bytes, and the byte where its info starts."""

    name: str
    shape: tuple[int, ...]
    type: GGMLQuantizationType
    offset: int
    nbytes: int
    info_offset: int


@dataclass(frozen=True)
class GGUFFile:
    """What a well-formed GGUF file holds, as far as its structure goes."""

    path: Path
    size: int
    version: int
    alignment: int
    fields: dict[str, GGUFField]
    tensors: tuple[GGUFTensorInfo, ...]
    data_offset: int  # byte where the data section starts (tensor offsets are relative to it)


def read_gguf(path: Path) -> GGUFFile:
    """Check the structure of the GGUF file at `path` and return it; GGUFError if it is damaged."""
    path = Path(path)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise GGUFError(f"{path}: empty file, not a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _Parser(path, buf, size).parse()


def _open_regular(path: Path):
    """Open `path` for reading if it is a regular file. O_NONBLOCK so that opening a FIFO does not
    wait for a writer; the check is on the open descriptor, so nothing can be swapped in between."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise GGUFError(f"{path}: no such file") from None
    except OSError as e:
        raise GGUFError(f"{path}: cannot be opened: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "not a regular file")
        raise GGUFError(f"{path}: is {kind}, expected a GGUF file")
    return os.fdopen(fd, "rb")


def _show(name: str) -> str:
    """A key or tensor name as it appears in a message: quoted, control characters escaped, so that
    a damaged name cannot break the one-line error."""
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_list(enum) -> str:
    return ", ".join(t.name for t in enum)


class _Parser:
    """A cursor over the file's bytes. Every read names what it reads, for the error message."""

    def __init__(self, path: Path, buf: mmap.mmap, size: int):
        self.path, self.buf, self.size, self.pos = path, buf, size, 0

    def fail(self, message: str) -> GGUFError:
        return GGUFError(f"{self.path}: {message}")

    def remaining(self) -> int:
        return self.size - self.pos

    def take(self, n: int, what: str) -> int:
        """Advance past `n` bytes that must be in the file; return where they start."""
        if n > self.remaining():
            raise self.fail(f"truncated: {what} at byte {self.pos} needs {n} bytes, the file ends at byte {self.size}")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string_bytes(self, what: str) -> bytes:
        at = self.pos
        n = self.unpack("<Q", f"the length of {what}")
        if n > self.remaining():
            raise self.fail(f"{what} at byte {at} is {n} bytes long, beyond the end of the file "
                            f"({self.remaining()} bytes remain)")
        if n > MAX_STRING_BYTES:
            raise self.fail(f"{what} at byte {at} is {n} bytes long, llama.cpp reads at most {MAX_STRING_BYTES}")
        start = self.take(n, what)
        return self.buf[start:start + n]

    def name(self, what: str) -> str:
        at = self.pos
        raw = self.string_bytes(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} at byte {at} is not UTF-8 (byte {e.start} of {raw[:40]!r})") from None

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        t = self.unpack("<I", what)
        try:
            return GGUFValueType(t)
        except ValueError:
            raise self.fail(f"{what} at byte {at} is {t}, not a GGUF value type; "
                            f"known: {_type_list(GGUFValueType)}") from None

    def scalar(self, vtype: GGUFValueType, what: str):
        if vtype == GGUFValueType.STRING:
            return self.string_bytes(what).decode("utf-8", errors="replace")
        value = self.unpack(SCALAR_FORMATS[vtype], what)
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def parse(self) -> GGUFFile:
        magic = bytes(self.buf[:4])
        if magic != MAGIC[:len(magic)]:
            raise self.fail(f"not a GGUF file: it begins with {magic!r} (byte 0), a GGUF file with {MAGIC!r}")
        self.take(HEADER_BYTES, "the GGUF header (magic, version, tensor and key counts)")
        self.pos = 4
        version = self.unpack("<I", "the version")
        if version not in VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            hint = (f" (byte-swapped it reads {swapped}: a big-endian GGUF, which llama.cpp cannot load here)"
                    if swapped in VERSIONS else "")
            raise self.fail(f"GGUF version {version} (byte 4) is not supported, expected 2 or 3{hint}")
        n_tensors = self.unpack("<Q", "the tensor count")
        n_kv = self.unpack("<Q", "the metadata key count")
        room = self.remaining()
        if n_tensors > room // MIN_TENSOR_INFO_BYTES:
            raise self.fail(f"the header says {n_tensors} tensors (byte 8), but the {room} bytes after the "
                            f"header hold at most {room // MIN_TENSOR_INFO_BYTES} tensor infos: the count is "
                            f"damaged or the file truncated")
        room -= n_tensors * MIN_TENSOR_INFO_BYTES
        if n_kv > room // MIN_KV_BYTES:
            raise self.fail(f"the header says {n_kv} metadata keys (byte 16), but the {self.remaining()} bytes "
                            f"after the header hold at most {room // MIN_KV_BYTES} besides {n_tensors} tensor infos: "
                            f"the count is damaged or the file truncated")
        fields = self.parse_fields(n_kv)
        alignment = self.alignment(fields)
        tensors = self.parse_tensor_infos(n_tensors)
        data_offset = _padded(self.pos, alignment)
        if tensors and data_offset > self.size:
            raise self.fail(f"truncated: the tensor data would start at byte {data_offset} (after the tensor infos, "
                            f"aligned to {alignment}), the file ends at byte {self.size}")
        self.check_layout(tensors, data_offset, alignment)
        return GGUFFile(self.path, self.size, version, alignment, fields, tuple(tensors), data_offset)

    def parse_fields(self, n_kv: int) -> dict[str, GGUFField]:
        fields: dict[str, GGUFField] = {}
        for i in range(n_kv):
            at = self.pos
            key = self.name(f"metadata key {i}")
            if not key:
                raise self.fail(f"metadata key {i} at byte {at} is empty")
            if key in fields:
                raise self.fail(f"metadata key {_show(key)} appears twice (bytes {fields[key].offset} and {at})")
            what = f"the value of {_show(key)}"
            vtype = self.value_type(f"the value type of {_show(key)}")
            if vtype == GGUFValueType.ARRAY:
                value = self.array(key, what)
            else:
                value = self.scalar(vtype, what)
            fields[key] = GGUFField(key, vtype, value, at)
        return fields

    def array(self, key: str, what: str) -> GGUFArray:
        at = self.pos
        item_type = self.value_type(f"the element type of {_show(key)}")
        if item_type == GGUFValueType.ARRAY:  # ggml's gguf.cpp: "has invalid GGUF type"
            raise self.fail(f"{_show(key)} (byte {at}) is an array of arrays, which llama.cpp does not read")
        count = self.unpack("<Q", f"the element count of {_show(key)}")
        start = self.pos
        item_bytes = (STRING_LENGTH_BYTES if item_type == GGUFValueType.STRING
                      else struct.calcsize(SCALAR_FORMATS[item_type]))
        if count > self.remaining() // item_bytes:  # for strings, the lengths alone
            raise self.fail(f"{_show(key)} (byte {at}) is an array of {count} {item_type.name} needing at least "
                            f"{count * item_bytes} bytes, but only {self.remaining()} remain")
        if count > MAX_ARRAY_ITEMS:
            raise self.fail(f"{_show(key)} (byte {at}) is an array of {count} elements, llama.cpp reads at most "
                            f"{MAX_ARRAY_ITEMS}")
        if item_type == GGUFValueType.STRING:
            head = [self.scalar(item_type, f"element {j} of {_show(key)}") for j in range(min(count, HEAD_ITEMS))]
            for j in range(len(head), count):  # the rest only checked: at most remaining/8 iterations
                n = self.unpack("<Q", f"the length of element {j} of {_show(key)}")
                if n > min(self.remaining(), MAX_STRING_BYTES):
                    raise self.fail(f"element {j} of {_show(key)} at byte {self.pos - 8} is {n} bytes long, beyond "
                                    f"the end of the file ({self.remaining()} bytes remain)")
                self.pos += n
        else:
            fmt = SCALAR_FORMATS[item_type]
            self.take(count * item_bytes, what)
            head = [self.read_at(fmt, start + j * item_bytes, item_type) for j in range(min(count, HEAD_ITEMS))]
        return GGUFArray(item_type, count, start, tuple(head))

    def read_at(self, fmt: str, at: int, vtype: GGUFValueType):
        value = struct.unpack_from(fmt, self.buf, at)[0]
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def alignment(self, fields: dict[str, GGUFField]) -> int:
        field = fields.get("general.alignment")
        if field is None:
            return DEFAULT_ALIGNMENT
        if field.type != GGUFValueType.UINT32:  # ggml: "must be of type u32"
            raise self.fail(f"general.alignment (byte {field.offset}) is a {field.type.name}, expected a UINT32")
        a = field.value
        if a == 0 or a & (a - 1):
            raise self.fail(f"general.alignment (byte {field.offset}) is {a}, expected a power of two")
        return a

    def parse_tensor_infos(self, n_tensors: int) -> list[GGUFTensorInfo]:
        tensors: list[GGUFTensorInfo] = []
        seen: dict[str, int] = {}
        for i in range(n_tensors):
            at = self.pos
            name = self.name(f"the name of tensor {i}")
            if len(name.encode("utf-8")) >= MAX_NAME:
                raise self.fail(f"the name of tensor {i} (byte {at}) is {len(name.encode())} bytes long, "
                                f"llama.cpp allows at most {MAX_NAME - 1}: {_show(name)}")
            if name in seen:
                raise self.fail(f"tensor name {_show(name)} appears twice (tensors {seen[name]} and {i}, byte {at})")
            seen[name] = i
            where = f"tensor {_show(name)} (info at byte {at})"
            n_dims = self.unpack("<I", f"the dimension count of tensor {_show(name)}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self.fail(f"{where} has {n_dims} dimensions, expected 1 to {MAX_DIMS}")
            shape = tuple(self.unpack("<Q", f"dimension {j} of tensor {_show(name)}") for j in range(n_dims))
            for j, d in enumerate(shape):
                if not 0 < d <= INT64_MAX:
                    raise self.fail(f"{where} has dimension {j} of {d}, expected a positive size")
            n_elements = 1
            for d in shape:
                n_elements *= d
            if n_elements > INT64_MAX:
                raise self.fail(f"{where} has shape {'x'.join(map(str, shape))}, more elements than int64 holds")
            type_at = self.pos
            t = self.unpack("<I", f"the type of tensor {_show(name)}")
            if t not in _QUANT_TYPES:
                raise self.fail(f"{where} has type {t} (byte {type_at}), not a ggml type; "
                                f"known: {', '.join(q.name for q in _QUANT_TYPES.values())}")
            qtype = _QUANT_TYPES[t]
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            if shape[0] % block:
                raise self.fail(f"{where} is {qtype.name} with rows of {shape[0]} elements, not a multiple of "
                                f"{qtype.name}'s block of {block}")
            offset = self.unpack("<Q", f"the data offset of tensor {_show(name)}")
            tensors.append(GGUFTensorInfo(name, shape, qtype, offset, n_elements // block * type_size, at))
        return tensors

    def check_layout(self, tensors: list[GGUFTensorInfo], data_offset: int, alignment: int) -> None:
        """Each tensor at the running offset, padded to the alignment, and inside the file: ggml
        refuses any other offset ("tensor '%s' has offset %lu, expected %zu")."""
        expected = 0
        starts: list[int] = []
        for t in tensors:
            where = f"tensor {_show(t.name)} (info at byte {t.info_offset})"
            if t.offset % alignment:
                raise self.fail(f"{where} has data offset {t.offset}, not a multiple of the alignment {alignment}")
            end = data_offset + t.offset + t.nbytes
            if end > self.size:
                raise self.fail(f"{where}: its {t.nbytes} bytes of data end at byte {end}, beyond the end of the "
                                f"file ({self.size} bytes)")
            if t.offset < expected:
                other = tensors[bisect.bisect_right(starts, t.offset) - 1]
                raise self.fail(f"{where} has data offset {t.offset}, which overlaps tensor {_show(other.name)} "
                                f"(offsets {other.offset} to {other.offset + _padded(other.nbytes, alignment)} "
                                f"with its padding)")
            if t.offset != expected:
                raise self.fail(f"{where} has data offset {t.offset}, expected {expected}: llama.cpp requires tensor "
                                f"data in order, each padded to the alignment {alignment}")
            starts.append(t.offset)
            expected = t.offset + _padded(t.nbytes, alignment)


def _padded(n: int, alignment: int) -> int:
    """`n` rounded up to a multiple of `alignment` (ggml's GGML_PAD)."""
    return -(-n // alignment) * alignment


# ggml's types by number: the ones gguf-py knows sizes for (removed types such as Q4_2 are absent).
_QUANT_TYPES: dict[int, GGMLQuantizationType] = {int(q): q for q in GGMLQuantizationType if q in gguf.GGML_QUANT_SIZES}


# -- split sets (llama.cpp's gguf-split and its loader, llama_model_loader) -------------------------

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT = "split.no", "split.count", "split.tensors.count"
# llama_split_path's "%s-%05d-of-%05d.gguf"; the numbers grow wider past 99999
SPLIT_NAME = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5,})-of-(?P<count>\d{5,})\.gguf")
_SPLIT_TYPES = {SPLIT_NO: GGUFValueType.UINT16, SPLIT_COUNT: GGUFValueType.UINT16,
                SPLIT_TENSORS_COUNT: GGUFValueType.INT32}


def split_member(prefix: Path, index: int, count: int) -> Path:
    """File `index` (from 0) of a set of `count` named after `prefix`, as llama_split_path names it.

    >>> split_member(Path("m"), 1, 3).name
    'm-00002-of-00003.gguf'
    """
    return prefix.with_name(f"{prefix.name}-{index + 1:05d}-of-{count:05d}.gguf")


def _split_keys(info: GGUFFile) -> tuple[int, int, int] | None:
    """(split.no, split.count, split.tensors.count) of a member, None for a plain file; a key
    present with another type than gguf-split writes, or missing beside the others, is an error."""
    present = {k: info.fields[k] for k in _SPLIT_TYPES if k in info.fields}
    if not present:
        return None
    for key, vtype in _SPLIT_TYPES.items():
        if key not in present:
            raise GGUFError(f"{info.path}: has {', '.join(present)} but no {key}, as a split set's file needs")
        if present[key].type != vtype:
            raise GGUFError(f"{info.path}: {key} is a {present[key].type.name}, expected a {vtype.name}")
    return present[SPLIT_NO].value, present[SPLIT_COUNT].value, present[SPLIT_TENSORS_COUNT].value


def read_gguf_set(path: Path) -> list[GGUFFile]:
    """Every file of the split set `path` belongs to (given its first file or any member), in
    order, each checked by `read_gguf`; `[read_gguf(path)]` for a file that is not part of a set
    (no split keys, or split.count 0 or 1, as gguf-split's merge leaves it). GGUFError when a
    member is missing, the names do not follow llama.cpp's NAME-00001-of-00003.gguf, the split
    keys disagree (split.no 0..n-1 in order, one split.count), the tensor counts do not add up
    to split.tensors.count, or a tensor name appears in two files."""
    path = Path(path)
    info = read_gguf(path)
    keys = _split_keys(info)
    if keys is None or keys[1] <= 1:
        return [info]
    no, count, total = keys
    m = SPLIT_NAME.fullmatch(path.name)
    if m is None or int(m["no"]) != no + 1 or int(m["count"]) != count:
        raise GGUFError(f"{path}: file {no + 1} of a split set of {count} must be named "
                        f"NAME-{no + 1:05d}-of-{count:05d}.gguf for llama.cpp to find the others")
    prefix = path.with_name(m["prefix"])
    files: list[GGUFFile] = []
    owner: dict[str, Path] = {}
    for i in range(count):
        member = split_member(prefix, i, count)
        if i == no:
            f = info
        elif not os.path.lexists(member):
            raise GGUFError(f"{member}: missing, file {i + 1} of the split set of {count} that {path.name} belongs to")
        else:
            f = read_gguf(member)
        got = _split_keys(f)
        if got is None or got[:2] != (i, count) or got[2] != total:
            raise GGUFError(f"{member}: split keys {got} (split.no, split.count, split.tensors.count), expected "
                            f"({i}, {count}, {total}) as file {i + 1} of this set")
        for t in f.tensors:
            if t.name in owner:
                raise GGUFError(f"{member}: tensor {_show(t.name)} is also in {owner[t.name]}")
            owner[t.name] = member
        files.append(f)
    if len(owner) != total:
        raise GGUFError(f"{split_member(prefix, 0, count)}: the set's {count} files hold {len(owner)} tensors, "
                        f"split.tensors.count says {total}")
    return files


def find_first_member(path: Path) -> Path | None:
    """The file to read for an output at `path`: `path` itself if it exists, else the first file
    of the one split set written for it (`NAME-00001-of-N.gguf` beside `NAME.gguf`), else None."""
    if os.path.lexists(path):
        return path
    stem = path.name[:-len(".gguf")] if path.name.lower().endswith(".gguf") else path.name
    try:
        names = os.listdir(path.parent)
    except OSError:
        return None
    found = [n for n in names if (m := SPLIT_NAME.fullmatch(n)) and m["prefix"] == stem and int(m["no"]) == 1]
    return path.with_name(found[0]) if len(found) == 1 else None

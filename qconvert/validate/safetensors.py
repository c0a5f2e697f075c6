"""What a valid safetensors shard and index are: the one place that knows.

A shard is 8 bytes little-endian N, N bytes of UTF-8 JSON, then the data:

    {"NAME": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...,
     "__metadata__": {"KEY": "VALUE", ...}}

with offsets relative to the first byte after the header. The rules are those of the
`safetensors` library itself (huggingface/safetensors, `SafeTensors::read_metadata` and
`Metadata::validate` in safetensors/src/tensor.rs), so that a file qconvert accepts is one
`safe_open` accepts, and the reader may trust every offset it computes:

- N is at most 100,000,000 (its MAX_HEADER_SIZE) and 8 + N fits in the file;
- the header is UTF-8 JSON (no NaN/Infinity, which serde_json refuses) and an object;
- every entry has a known dtype, a shape of non-negative integers and data_offsets [begin, end];
- sorted by offsets, the entries start at 0 and are contiguous: each begins where the previous
  ended (no gaps, no overlaps), and end - begin == prod(shape) * itemsize;
- the last end is exactly the data's length: 8 + N + end == the file's size (no trailing bytes,
  no truncation);
- `__metadata__`, if present, maps strings to strings.

Stricter than the library on points that can only hide mistakes: a name given twice in one
header (the library keeps one of them silently), a string that is not valid Unicode (a lone
surrogate escape such as "\\udc80", which cannot be written as UTF-8 into a GGUF), and a tensor
name that is not printable (a newline in a name would break every one-line message about it).

Across files: no tensor in two shards, and with `model.safetensors.index.json` (transformers'
sharded format, `{"metadata": {...}, "weight_map": {tensor: shard file}}`) the index and the
shards agree both ways, and every shard it names is a plain file name in the checkpoint folder.

The functions here are pure: the reader does the I/O and hands over bytes and sizes. Every error
is a CheckpointError naming the file and the tensor or key, what was expected and what was found.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import CheckpointError

# The library's MAX_HEADER_SIZE (decimal, not 100 MiB).
MAX_HEADER_BYTES = 100_000_000

# Every dtype of the safetensors format with a whole number of bytes per element (Dtype::size in
# tensor.rs; the sub-byte F4/F6 types are refused as unknown, qconvert decodes none of them).
# Knowing the size of a dtype qconvert does not decode still lets a header be checked fully
# before saying "unsupported dtype".
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
}

INDEX_NAME = "model.safetensors.index.json"

# Shapes and offsets are usize in the library (64 bits); NumPy's are int64.
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class HeaderEntry:
    """One tensor of a validated header; `begin` and `end` are relative to the data's start."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def show(text: str) -> str:
    """A name from a file as it can go into a one-line message: as is when printable, else its
    repr (a newline or a lone surrogate would break the line or the terminal's encoding).

    >>> show("model.norm.weight"), show("a\\nb")
    ('model.norm.weight', "'a\\\\nb'")
    """
    return text if text and text.isprintable() and _is_unicode(text) else repr(text)


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    """What a JSON value is, for 'found ...' in messages."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the number {value}" if abs(value) < 10**30 else "a number of more than 30 digits"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value!r}" if len(value) <= 60 else f"a string of {len(value)} characters"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


def _is_count(value: Any) -> bool:
    """A non-negative JSON integer: not a bool (True is an int in Python), not 64.0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _reject_duplicates(where: str) -> Any:
    """An object_pairs_hook for json.loads that refuses a key given twice, naming it."""
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise CheckpointError(f"{where}: key {show(key)} appears twice; each name must appear once")
            out[key] = value
        return out
    return hook


def _reject_constant(where: str) -> Any:
    def hook(name: str) -> Any:
        raise CheckpointError(f"{where}: not valid JSON ({name} is not a JSON number)")
    return hook


def strict_json(text: bytes, where: str) -> Any:
    """Parse UTF-8 JSON as strictly as serde_json (no NaN/Infinity, no UTF-16), and stricter in
    refusing a key given twice in one object. Errors name `where` (the file, or its header)."""
    try:
        decoded = text.decode("utf-8")  # json.loads(bytes) would also guess UTF-16/32
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where}: not UTF-8 (byte {e.start} is {text[e.start]:#04x})") from None
    try:
        value = json.loads(decoded, object_pairs_hook=_reject_duplicates(where),
                           parse_constant=_reject_constant(where))
    except ValueError as e:  # json.JSONDecodeError, and ints of more than 4300 digits
        raise CheckpointError(f"{where}: not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{where}: not valid JSON (nested too deeply)") from None
    return value


def header_length(file: str, prefix: bytes, size: int) -> int:
    """N from a shard's first 8 bytes, checked against the file's `size`."""
    if len(prefix) < 8:
        raise CheckpointError(f"{file}: file is {size} bytes, too short for a safetensors header (8-byte length "
                              "then the JSON header)")
    n = int.from_bytes(prefix[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{file}: corrupt safetensors header: its length field says {n} bytes, more than "
                              f"the format's limit of {MAX_HEADER_BYTES}")
    if 8 + n > size:
        raise CheckpointError(f"{file}: corrupt safetensors header: its length field says {n} bytes, the file "
                              f"has {size - 8} after it")
    return n


def validate_header(file: str, text: bytes, size: int) -> tuple[list[HeaderEntry], dict[str, str]]:
    """Check one shard's header `text` (the N bytes after the length) against the file's `size`;
    return its tensors sorted by name, and its `__metadata__` ({} if absent)."""
    where = f"{file}: corrupt safetensors header"
    header = strict_json(text, where)
    if not isinstance(header, dict):
        raise CheckpointError(f"{where}: expected a JSON object, found {_kind(header)}")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict):
        raise CheckpointError(f"{where}: __metadata__ must be an object of strings, found {_kind(metadata)}")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise CheckpointError(f"{where}: __metadata__ entry {show(key)} must be a string, found {_kind(value)}")
        if not _is_unicode(key) or not _is_unicode(value):
            raise CheckpointError(f"{where}: __metadata__ entry {show(key)} is not valid Unicode")
    entries = [_entry(where, name, meta) for name, meta in header.items()]
    # As Metadata::validate: in offset order, each tensor begins where the previous one ended.
    data = size - 8 - len(text)
    expected = 0
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin != expected:
            gap = "overlaps the previous tensor" if e.begin < expected else "leaves a gap after the previous tensor"
            raise CheckpointError(
                f"{where}: tensor {show(e.name)} begins at data byte {e.begin}, expected {expected} "
                f"(where the previous tensor ends); it {gap}")
        expected = e.end
    if expected != data:
        last = max(entries, key=lambda e: (e.end, e.begin)).name if entries else None
        ends = f"its header's tensors end at data byte {expected}" + (f" (tensor {show(last)})" if last else "")
        fault = "is truncated" if expected > data else f"has {data - expected} trailing bytes"
        raise CheckpointError(f"{file} {fault}: {ends}, the file holds {data} bytes of data after the header")
    return sorted(entries, key=lambda e: e.name), metadata


def _entry(where: str, name: str, meta: Any) -> HeaderEntry:
    tensor = f"tensor {show(name)}"
    if not _is_unicode(name):
        raise CheckpointError(f"{where}: {tensor}: the name is not valid Unicode")
    if not name.isprintable():  # a newline or a control character: no architecture has one, and it
        # would break every one-line message naming the tensor downstream
        raise CheckpointError(f"{where}: {tensor}: the name is not printable text")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{where}: {tensor}: expected an object with dtype, shape and data_offsets, "
                              f"found {_kind(meta)}")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in meta]
    if missing:
        raise CheckpointError(f"{where}: {tensor}: missing {', '.join(missing)}")
    dtype, shape, offsets = meta["dtype"], meta["shape"], meta["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise CheckpointError(f"{where}: {tensor}: unknown dtype {_kind(dtype)} (the format's dtypes are "
                              f"{', '.join(DTYPE_SIZES)})")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CheckpointError(f"{where}: {tensor}: shape must be a list of non-negative integers, "
                              f"found {_shape_text(shape)}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o) for o in offsets)
            or offsets[1] < offsets[0] or offsets[1] > INT64_MAX):
        raise CheckpointError(f"{where}: {tensor}: data_offsets must be [begin, end] with 0 <= begin <= end, "
                              f"found {_shape_text(offsets)}")
    if math.prod(max(d, 1) for d in shape) > INT64_MAX:  # [0, 2**70] holds no bytes, but no array has it
        raise CheckpointError(f"{where}: {tensor}: shape {_shape_text(shape)} has more than 2^63 elements "
                              "(ignoring zero dimensions)")
    begin, end = offsets
    nbytes = math.prod(shape) * DTYPE_SIZES[dtype]  # Python ints: no overflow to wrap around
    if end - begin != nbytes:
        raise CheckpointError(
            f"{where}: {tensor}: {dtype} {_shape_text(shape)} needs {_count_text(nbytes)} bytes, "
            f"its data_offsets [{begin}, {end}] hold {end - begin}")
    return HeaderEntry(name, dtype, tuple(shape), begin, end)


def _count_text(n: int) -> str:
    return str(n) if n < 10**30 else "more than 10^30"


def _shape_text(value: Any) -> str:
    if isinstance(value, list) and len(value) <= 8:
        return "[" + ", ".join(_kind(v).removeprefix("the number ") for v in value) + "]"
    return _kind(value)


# --- across shards and the index ---------------------------------------------------------------

def index_weight_map(index: Any, where: str = INDEX_NAME) -> dict[str, str]:
    """The weight_map of a parsed index, checked: {tensor name: shard file name}, every shard a
    plain file name in the checkpoint folder."""
    if not isinstance(index, dict):
        raise CheckpointError(f"{where}: expected a JSON object, found {_kind(index)}")
    if "weight_map" not in index:
        raise CheckpointError(f"{where}: no weight_map (expected {{tensor name: shard file}})")
    weight_map = index["weight_map"]
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{where}: weight_map must be an object {{tensor name: shard file}}, "
                              f"found {_kind(weight_map)}")
    if not weight_map:
        raise CheckpointError(f"{where}: weight_map is empty (it should list every tensor)")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{where}: weight_map entry {show(name)} must be a shard file name, "
                                  f"found {_kind(shard)}")
        if not _is_unicode(name) or not _is_unicode(shard):
            raise CheckpointError(f"{where}: weight_map entry {show(name)} is not valid Unicode")
        check_shard_name(shard, f"{where}: weight_map entry {show(name)}")
    return weight_map


def check_shard_name(shard: str, where: str) -> None:
    """A shard named by an index must be a file directly in the checkpoint folder: no absolute
    path, no folder part, no `..` (an index must not send the reader elsewhere on the disk).
    The file itself may be a symlink (the Hugging Face cache links snapshots/REV/FILE to
    ../../blobs/HASH): the name is checked, not where the link points."""
    if shard in ("", ".", "..") or "/" in shard or "\\" in shard or "\0" in shard or shard[1:2] == ":":
        raise CheckpointError(f"{where}: shard {show(shard)} is not a plain file name in the checkpoint folder "
                              "(absolute paths, folders and .. are refused)")


def check_shards(shards: dict[str, Iterable[str]], weight_map: dict[str, str] | None,
                 index: str = INDEX_NAME) -> None:
    """`shards` maps each shard file name to its tensors' names. No tensor may be in two shards;
    with an index, its weight_map and the shards must agree both ways."""
    home: dict[str, str] = {}
    for shard, names in shards.items():
        for name in names:
            if name in home:
                raise CheckpointError(f"tensor {show(name)} is in two shards, {show(home[name])} and {show(shard)}; "
                                      "each tensor must be stored once")
            home[name] = shard
    if weight_map is None:
        return
    for name, shard in weight_map.items():
        if home.get(name) != shard:
            found = f"it is in {show(home[name])}" if name in home else "no shard holds it"
            raise CheckpointError(f"{index}: tensor {show(name)} is listed in {show(shard)}, but {found}")
    for name, shard in home.items():
        if name not in weight_map:
            raise CheckpointError(f"{show(shard)}: tensor {show(name)} is not listed in {index}'s weight_map")

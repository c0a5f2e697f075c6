"""Describe a GGUF file: metadata (long arrays shortened) and the tensor table.

The file is read by gguf_read.read_gguf, which checks its whole structure first: a damaged file
is one GGUFError naming what is wrong and where, never a traceback or a huge allocation.
"""

from __future__ import annotations

from pathlib import Path

from .gguf_read import GGUFArray, GGUFField, read_gguf_set

SHOWN_ITEMS = 5  # array elements printed before "..."
SHOWN_CHARS = 120  # a value longer than this is cut, ending in "..."


def field_value(field: GGUFField) -> str:
    value = field.value
    if isinstance(value, GGUFArray):
        head = ", ".join(repr(v) for v in value.head[:SHOWN_ITEMS])
        return f"[{head}{', ...' if value.count > SHOWN_ITEMS else ''}] ({value.count} items)"
    return short_repr(value)


def short_repr(value, limit: int = SHOWN_CHARS) -> str:
    """repr(value) cut to `limit` characters, without building the repr of a long string (four
    times its size when it is all control bytes).

    >>> len(short_repr("x" * 10**6)), short_repr("x" * 200)[-5:], short_repr(7)
    (120, 'xx...', '7')
    """
    if isinstance(value, str) and len(value) > limit:
        # repr picks its quotes from the whole string: the suffix makes the prefix pick the same
        # (double quotes only when there is a ' and no "), and falls beyond what is shown
        suffix = ("'" if '"' not in value else "'\"") if "'" in value else ""
        text = repr(value[:limit] + suffix)
    else:
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def describe(path: Path, tensors: bool = True) -> str:
    """The file's metadata and tensors; for a member of a split set, the whole set (the first
    file's metadata, every file's tensors)."""
    files = read_gguf_set(path)
    info = files[0]
    if len(files) == 1:
        lines = [f"{path}: GGUF, {len(info.fields)} metadata keys, {len(info.tensors)} tensors"]
    else:
        n_tensors = sum(len(f.tensors) for f in files)
        lines = [f"{path}: GGUF split set of {len(files)} files, {len(info.fields)} metadata keys, {n_tensors} tensors"]
        lines += [f"  file {i + 1}: {f.path} ({f.size} bytes, {len(f.tensors)} tensors)" for i, f in enumerate(files)]
    for name, field in info.fields.items():
        lines.append(f"  {name} = {field_value(field)}")
    if tensors:
        rows = [(t, i) for i, f in enumerate(files) for t in f.tensors]
        width = max((len(t.name) for t, _ in rows), default=6)
        file_col = "  file" if len(files) > 1 else ""
        lines.append(f"  {'tensor':<{width}}  {'type':<5} {'shape':<18} bytes{file_col}")
        for t, i in rows:
            shape = "x".join(str(d) for d in t.shape)
            where = f"  {i + 1}" if len(files) > 1 else ""
            lines.append(f"  {t.name:<{width}}  {t.type.name:<5} {shape:<18} {t.nbytes}{where}")
    return "\n".join(lines)

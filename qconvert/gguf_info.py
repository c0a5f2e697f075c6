"""Describe a GGUF file: metadata (long arrays shortened) and the tensor table.

The file is read by gguf_read.read_gguf, which checks its whole structure first: a damaged file
is one GGUFError naming what is wrong and where, never a traceback or a huge allocation.
"""

from __future__ import annotations

from pathlib import Path

from .gguf_read import GGUFArray, GGUFField, read_gguf

SHOWN_ITEMS = 5  # array elements printed before "..."


def field_value(field: GGUFField) -> str:
    value = field.value
    if isinstance(value, GGUFArray):
        head = ", ".join(repr(v) for v in value.head[:SHOWN_ITEMS])
        return f"[{head}{', ...' if value.count > SHOWN_ITEMS else ''}] ({value.count} items)"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def describe(path: Path, tensors: bool = True) -> str:
    info = read_gguf(path)
    lines = [f"{path}: GGUF, {len(info.fields)} metadata keys, {len(info.tensors)} tensors"]
    for name, field in info.fields.items():
        lines.append(f"  {name} = {field_value(field)}")
    if tensors:
        width = max((len(t.name) for t in info.tensors), default=6)
        lines.append(f"  {'tensor':<{width}}  {'type':<5} {'shape':<18} bytes")
        for t in info.tensors:
            shape = "x".join(str(d) for d in t.shape)
            lines.append(f"  {t.name:<{width}}  {t.type.name:<5} {shape:<18} {t.nbytes}")
    return "\n".join(lines)
